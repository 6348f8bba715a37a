// PayoutService against an in-memory ledger and a scripted upstream: the
// ordering guarantees (durable intent before the call, nothing sent on a
// replay, the key freed only when certainly not sent) and every branch of
// the flow, without a network.

#include "server/flow/payout_service.h"

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/aopay_codec.h"
#include "common/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/flow/reconciler.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

namespace aopay {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

// A ledger in memory. Calls back inline; can be told to fail.
class FakeLedger final : public Ledger {
 public:
  void Close() override {}
  void EventsAfter(int64_t, int,
                   Callback<absl::StatusOr<EventBatch>> done) override {
    done(absl::UnimplementedError("not in the fake"));
  }
  void OutboxDue(
      absl::Time, int,
      Callback<absl::StatusOr<std::vector<OutboxEvent>>> done) override {
    done(absl::UnimplementedError("not in the fake"));
  }
  void OutboxSettle(int64_t, std::optional<absl::Time>,
                    Callback<absl::Status> done) override {
    done(absl::UnimplementedError("not in the fake"));
  }
  void OutboxWaiting(Callback<absl::StatusOr<OutboxBacklog>> done) override {
    done(absl::UnimplementedError("not in the fake"));
  }
  bool fail_writes = false;
  // When set, the next Apply is applied and then answered UNAVAILABLE: a
  // commit whose answer was lost.
  bool lose_next_apply_answer = false;
  // When set, every Apply fails with it (a constraint or a row the ledger
  // cannot read: not worth writing again).
  std::optional<absl::Status> fail_applies_with;
  std::vector<std::string> log;  // "insert po_..", "apply po_.. 1->2", ...

  // When set, inserts wait in `held_inserts`, in order, until
  // RunHeldInserts(): a write still queued at the ledger.
  bool hold_inserts = false;
  std::vector<std::function<void()>> held_inserts;
  void RunHeldInserts() {
    hold_inserts = false;
    std::vector<std::function<void()>> held = std::move(held_inserts);
    held_inserts.clear();
    for (auto& insert : held) insert();
  }

  void Insert(InsertRequest request,
              Callback<absl::StatusOr<InsertResult>> done) override {
    if (hold_inserts) {
      held_inserts.push_back(
          [this, request = std::move(request), done = std::move(done)] {
            Insert(request, done);
          });
      return;
    }
    if (fail_writes) return done(LedgerUnavailableError("disk full"));
    const Payout& payout = request.payout;
    log.push_back("insert " + payout.payout_id);
    InsertResult result;
    for (auto& [id, stored] : rows_) {
      if (stored.payout.client == payout.client &&
          stored.payout.request_id == payout.request_id) {
        result.existing = stored;
        return done(result);
      }
    }
    if (request.max_payout_paise.has_value() &&
        payout.amount_paise > *request.max_payout_paise) {
      result.over_max_payout = true;
      return done(result);
    }
    if (request.daily_limit.has_value()) {
      const DailyLimit& limit = *request.daily_limit;
      int64_t spent = 0;
      for (auto& [id, stored] : rows_) {
        const Payout& other = stored.payout;
        if (other.client == payout.client &&
            other.create_time >= limit.day_start &&
            other.create_time < limit.day_end &&
            std::find(std::begin(kStatesOutsideDailyLimit),
                      std::end(kStatesOutsideDailyLimit),
                      other.state) == std::end(kStatesOutsideDailyLimit)) {
          spent += other.amount_paise;
        }
      }
      if (spent + payout.amount_paise > limit.limit_paise) {
        result.over_daily_limit = true;
        result.spent_paise = spent;
        return done(result);
      }
    }
    rows_[payout.payout_id] =
        StoredPayout{payout, std::move(request.fingerprint), {}};
    result.inserted = true;
    done(result);
  }

  // When set, called as each Apply begins (an outcome being written).
  std::function<void()> on_apply;

  void Apply(PayoutChange change,
             Callback<absl::StatusOr<StoredPayout>> done) override {
    if (on_apply) on_apply();
    if (fail_writes) return done(LedgerUnavailableError("disk full"));
    if (fail_applies_with.has_value()) return done(*fail_applies_with);
    auto it = rows_.find(change.payout_id);
    if (it == rows_.end()) return done(NotFoundError("payout"));
    StoredPayout& row = it->second;
    if (row.payout.state != change.expected_state ||
        (change.expected_update_time.has_value() &&
         absl::ToUnixMicros(row.payout.update_time) !=
             absl::ToUnixMicros(*change.expected_update_time))) {
      return done(absl::AbortedError("state changed"));
    }
    log.push_back(absl::StrCat("apply ", change.payout_id, " ",
                               static_cast<int>(change.expected_state), "->",
                               static_cast<int>(change.new_state), " ",
                               change.who));
    row.payout.state = change.new_state;
    if (change.transaction_id)
      row.payout.transaction_id = *change.transaction_id;
    if (change.bank_beneficiary_name) {
      row.payout.bank_beneficiary_name = *change.bank_beneficiary_name;
    }
    if (change.upstream_status) {
      row.payout.upstream_status = *change.upstream_status;
    }
    if (change.failure) row.payout.failure = *change.failure;
    if (change.response) row.response = *change.response;
    row.payout.update_time = change.time;
    if (change.answer_kind == PayoutChange::AnswerKind::kStatus) {
      last_status_answer = change.raw_answer;
    } else if (change.answer_kind == PayoutChange::AnswerKind::kPayout) {
      last_payout_answer = change.raw_answer;
    }
    if (lose_next_apply_answer) {
      lose_next_apply_answer = false;
      return done(LedgerUnavailableError("connection lost during COMMIT"));
    }
    done(row);
  }

  void Forget(std::string payout_id, Callback<absl::Status> done) override {
    if (fail_writes) return done(LedgerUnavailableError("disk full"));
    log.push_back("forget " + payout_id);
    rows_.erase(payout_id);
    done(absl::OkStatus());
  }

  void GetByPayoutId(std::string payout_id,
                     Callback<absl::StatusOr<StoredPayout>> done) override {
    auto it = rows_.find(payout_id);
    if (it == rows_.end()) return done(NotFoundError("payout"));
    done(it->second);
  }
  void GetByRequestId(std::string client, std::string request_id,
                      Callback<absl::StatusOr<StoredPayout>> done) override {
    for (auto& [id, stored] : rows_) {
      if (stored.payout.client == client &&
          stored.payout.request_id == request_id) {
        return done(stored);
      }
    }
    done(NotFoundError("payout"));
  }
  // One page: every row of query.client (all clients' when unset) in one of
  // query.states (all when empty), newest first.
  void List(ListQuery query, Callback<absl::StatusOr<ListPage>> done) override {
    last_query = query;
    ListPage page;
    for (auto it = rows_.rbegin(); it != rows_.rend(); ++it) {
      const Payout& payout = it->second.payout;
      if (query.client.has_value() && payout.client != *query.client) continue;
      if (query.states.empty() ||
          std::find(query.states.begin(), query.states.end(), payout.state) !=
              query.states.end()) {
        page.payouts.push_back(payout);
      }
    }
    done(std::move(page));
  }
  void Events(
      std::string,
      Callback<absl::StatusOr<std::vector<PayoutEvent>>> done) override {
    done(std::vector<PayoutEvent>{});
  }
  absl::StatusOr<int> RecoverPending(absl::Time) override { return 0; }
  void Prune(absl::Time, Callback<absl::StatusOr<int>> done) override {
    done(0);
  }
  bool Healthy() const override { return !fail_writes; }

  // What another replica's recovery does to a payout whose owner stopped
  // heart-beating: PENDING becomes UNKNOWN (or an operator's later move).
  void MoveBehindTheGatewaysBack(const std::string& payout_id,
                                 PayoutState state) {
    StoredPayout& row = rows_.at(payout_id);
    row.payout.state = state;
    row.response = RecoveredAsUnknownError(payout_id);
  }

  size_t size() const { return rows_.size(); }
  const StoredPayout& only() const { return rows_.begin()->second; }

  std::string last_status_answer;
  std::string last_payout_answer;
  std::optional<ListQuery> last_query;

 private:
  std::map<std::string, StoredPayout> rows_;
};

// Holds every call until the test answers it.
class FakeUpstream final : public UpstreamClient {
 public:
  void Post(UpstreamRequest request, Callback done) override {
    calls.push_back({std::move(request), std::move(done)});
    ++posted;
  }
  size_t InFlight() const override { return calls.size(); }
  size_t Queued() const override { return 0; }

  void Answer(absl::StatusOr<HttpAnswer> answer) {
    ASSERT_FALSE(calls.empty());
    Call call = std::move(calls.front());
    calls.pop_front();
    call.done(std::move(answer));
  }

  struct Call {
    UpstreamRequest request;
    Callback done;
  };
  std::deque<Call> calls;  // not answered yet
  size_t posted = 0;       // every call ever posted
};

// Holds delayed tasks until the test runs them.
class FakeTimer final : public Timer {
 public:
  void RunAfter(absl::Duration delay, std::function<void()> task) override {
    delays.push_back(delay);
    tasks.push_back(std::move(task));
  }
  // Runs the tasks added so far (not the ones they add).
  void RunPending() {
    std::vector<std::function<void()>> due = std::move(tasks);
    tasks.clear();
    for (auto& task : due) task();
  }
  std::vector<std::function<void()>> tasks;
  std::vector<absl::Duration> delays;
};

// Captures what the service logs while it lives.
class LogCapture {
 public:
  LogCapture()
      : previous_(spdlog::default_logger()),
        sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(out_)) {
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("test", sink_));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

constexpr char kAccepted[] = R"({
  "initiateAuthGenericFundTransferAPIResp": {
    "metaData": {"status": "SUCCESS", "message": "ok", "version": "v1",
                 "time": "2025-02-25T06:42:43.469Z"},
    "resourceData": {"status": "ACPT", "transactionReferenceNo": "505914786331",
                     "transactionID": "TERF920898", "beneficiaryName": "ABC"}},
  "statuss": "SUCCESS", "message": "fundTransfer successfully processed",
  "value": ""})";

HttpAnswer Http(int status, std::string body) {
  HttpAnswer answer;
  answer.http_status = status;
  answer.body = std::move(body);
  return answer;
}

PayoutRequest ValidRequest(std::string request_id = "req-1") {
  PayoutRequest request;
  request.request_id = std::move(request_id);
  request.beneficiary = {"100000011836", "SBIN0000002", "Dean Jon",
                         "abc@gmail.com", "9959640000"};
  request.amount_paise = 1234;
  request.mode = TransferMode::kImps;
  return request;
}

class PayoutServiceTest : public ::testing::Test {
 protected:
  PayoutServiceTest() { Rebuild(PayoutServiceOptions{}); }

  void Rebuild(PayoutServiceOptions options,
               PayoutService::Clock clock = &absl::Now) {
    options.registration_id = "AOP-554";
    service_ =
        std::make_unique<PayoutService>(ledger_, upstream_, timer_, metrics_,
                                        std::move(options), std::move(clock));
  }

  // Rebuilds the service so that it keeps its count of calls in flight
  // (PayoutServiceOptions::calls_in_flight) in the returned counter.
  const std::atomic<size_t>& CountCallsInFlight() {
    PayoutServiceOptions options;
    options.calls_in_flight = &calls_in_flight_;
    Rebuild(options);
    return calls_in_flight_;
  }

  // Starts a call; its result lands in the returned slot.
  std::shared_ptr<std::optional<absl::StatusOr<Payout>>> Create(
      PayoutRequest request, Client caller = AnonymousClient()) {
    auto result = std::make_shared<std::optional<absl::StatusOr<Payout>>>();
    service_->Create(
        std::move(request), std::move(caller),
        [result](absl::StatusOr<Payout> r) { *result = std::move(r); });
    return result;
  }

  // Starts an approval; its answer lands in the result (empty while the
  // payout is at AOPay).
  std::shared_ptr<std::optional<absl::StatusOr<Payout>>> Approve(
      const std::string& payout_id, const std::string& note, Client approver) {
    auto result = std::make_shared<std::optional<absl::StatusOr<Payout>>>();
    service_->Approve(
        ApprovalRequest{payout_id, note}, std::move(approver),
        [result](absl::StatusOr<Payout> r) { *result = std::move(r); });
    return result;
  }

  // A payout AOPay accepted, settled by a refresh answered `settle` (to
  // `settled`), then refreshed again answered `later`: that refresh's
  // result.
  absl::StatusOr<Payout> SettledThenRefreshed(const std::string& settle,
                                              PayoutState settled,
                                              const std::string& later) {
    auto created = Create(ValidRequest());
    upstream_.Answer(Http(200, kAccepted));
    const std::string id = ledger_.only().payout.payout_id;
    service_->Refresh(id, AnonymousClient(), [](absl::StatusOr<Payout>) {});
    upstream_.Answer(Http(200, settle));
    EXPECT_EQ(ledger_.only().payout.state, settled);
    absl::StatusOr<Payout> refreshed = absl::InternalError("no answer");
    service_->Refresh(id, AnonymousClient(), [&](absl::StatusOr<Payout> r) {
      refreshed = std::move(r);
    });
    upstream_.Answer(Http(200, later));
    return refreshed;
  }

  template <typename Method, typename... Args>
  absl::StatusOr<Payout> Call(Method method, Args... args) {
    std::optional<absl::StatusOr<Payout>> result;
    (service_.get()->*method)(
        std::move(args)...,
        [&](absl::StatusOr<Payout> r) { result = std::move(r); });
    EXPECT_TRUE(result.has_value());
    return result.value_or(absl::InternalError("no answer"));
  }

  FakeLedger ledger_;
  FakeUpstream upstream_;
  FakeTimer timer_;
  Metrics metrics_;
  std::atomic<size_t> calls_in_flight_{0};
  std::unique_ptr<PayoutService> service_;
};

TEST_F(PayoutServiceTest, InvalidRequestTouchesNeitherLedgerNorAopay) {
  PayoutRequest request = ValidRequest();
  request.beneficiary.ifsc = "bad";
  auto result = Create(request);
  ASSERT_TRUE(result->has_value());
  EXPECT_EQ((*result)->status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ledger_.log.empty());
  EXPECT_TRUE(upstream_.calls.empty());
}

TEST_F(PayoutServiceTest, IntentIsRecordedBeforeTheCallAndOutcomeAfter) {
  auto result = Create(ValidRequest());
  ASSERT_EQ(ledger_.log.size(), 1u);
  EXPECT_THAT(ledger_.log[0], HasSubstr("insert po_"));
  ASSERT_EQ(upstream_.calls.size(), 1u);
  EXPECT_EQ(upstream_.calls[0].request.path, kPayoutPath);
  EXPECT_FALSE(upstream_.calls[0].request.idempotent);
  EXPECT_THAT(upstream_.calls[0].request.body,
              HasSubstr(R"("registrationID":"AOP-554")"));
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kPending);
  EXPECT_FALSE(result->has_value()) << "answered before AOPay did";

  upstream_.Answer(Http(200, kAccepted));

  ASSERT_TRUE(result->has_value());
  ASSERT_TRUE((*result)->ok()) << (*result)->status();
  EXPECT_EQ((**result)->state, PayoutState::kAccepted);
  EXPECT_EQ((**result)->transaction_id, "TERF920898");
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kAccepted);
  EXPECT_EQ(ledger_.last_payout_answer, kAccepted);
  EXPECT_EQ(metrics_.payouts.Value({"IMPS", "accepted"}), 1u);
}

Client Capped(int64_t max_payout_paise, std::optional<int64_t> daily = {}) {
  Client client;
  client.name = "payroll";
  client.scopes = kScopeWrite | kScopeRead;
  client.max_payout_paise = max_payout_paise;
  client.daily_paise = daily;
  return client;
}

TEST_F(PayoutServiceTest, OverTheMaximumNothingIsRecordedOrSent) {
  auto result = Create(ValidRequest(), Capped(1000));
  ASSERT_TRUE(result->has_value());
  const ErrorDetails details = GetErrorDetails((*result)->status());
  EXPECT_EQ((*result)->status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(details.reason, "CLIENT_LIMIT_EXCEEDED");
  EXPECT_EQ(details.metadata.at("limit"), "max_payout_paise");
  EXPECT_EQ(details.metadata.at("remainingPaise"), "1000");
  EXPECT_EQ(metrics_.client_payouts.Value({"payroll", "RESOURCE_EXHAUSTED"}),
            1u);
  EXPECT_TRUE(upstream_.calls.empty());
  EXPECT_EQ(ledger_.size(), 0u);
}

// A limit lowered after a payout was recorded must not contradict what its
// first caller was told: a retry gets the recorded payout.
TEST_F(PayoutServiceTest, ARetryOverALoweredMaximumGetsTheRecordedPayout) {
  auto first = Create(ValidRequest(), Capped(5000));
  upstream_.Answer(Http(200, kAccepted));
  ASSERT_TRUE(first->has_value() && (*first)->ok());

  auto retry = Create(ValidRequest(), Capped(1000));
  ASSERT_TRUE(retry->has_value());
  ASSERT_TRUE((*retry)->ok()) << (*retry)->status();
  EXPECT_EQ((*retry)->value().payout_id, (*first)->value().payout_id);
  EXPECT_EQ(upstream_.posted, 1u);
}

// A limit lowered (by SIGHUP) while a first call's insert is still queued at
// the ledger: the retry must not hear "over the limit, nothing sent" of a
// payout that its first call then records and sends.
TEST_F(PayoutServiceTest, ARetryOverALoweredMaximumWaitsForTheQueuedInsert) {
  ledger_.hold_inserts = true;
  auto first = Create(ValidRequest(), Capped(5000));
  auto retry = Create(ValidRequest(), Capped(1000));
  ledger_.RunHeldInserts();
  ASSERT_EQ(upstream_.posted, 1u);
  ASSERT_TRUE(retry->has_value());
  EXPECT_EQ((*retry)->status().code(), absl::StatusCode::kAborted)
      << (*retry)->status();
  EXPECT_EQ(GetErrorDetails((*retry)->status()).reason, "REQUEST_IN_PROGRESS");
  upstream_.Answer(Http(200, kAccepted));
  ASSERT_TRUE(first->has_value() && (*first)->ok());
}

// The limits are the ledger's to check: a full gateway refuses first, with
// the retryable OVERLOADED (a retry later hears the limit, or the replay).
TEST_F(PayoutServiceTest, AFullGatewayRefusesBeforeTheLimitIsChecked) {
  PayoutServiceOptions options;
  options.max_outstanding = 1;
  Rebuild(options);
  auto holder = Create(ValidRequest("a"));
  auto over = Create(ValidRequest("b"), Capped(1000));
  ASSERT_TRUE(over->has_value());
  EXPECT_EQ(GetErrorDetails((*over)->status()).reason, "OVERLOADED");
  upstream_.Answer(Http(200, kAccepted));
  auto again = Create(ValidRequest("b"), Capped(1000));
  ASSERT_TRUE(again->has_value());
  EXPECT_EQ(GetErrorDetails((*again)->status()).reason,
            "CLIENT_LIMIT_EXCEEDED");
  EXPECT_EQ(upstream_.posted, 1u);
}

// The ledger's group commit stops waiting once every counted call has a
// write queued (SqliteLedgerOptions::calls_in_flight). A call is counted
// while it may write soon: from its start to its intent's write, and from
// AOPay's answer to its own answer. While it waits on AOPay it writes
// nothing, however long AOPay takes, and a commit must not wait for it (one
// slow AOPay call would hold every other caller's commits). It leaves the
// count before its caller hears the answer: a caller waiting for it sends
// its next call at once, and a count one too high would make the commit
// wait for a write that never comes.
TEST_F(PayoutServiceTest, KeepsTheCountOfCallsInFlightForTheLedger) {
  const std::atomic<size_t>& calls = CountCallsInFlight();
  ledger_.hold_inserts = true;
  size_t when_answered = 99;
  service_->Create(ValidRequest("a"), AnonymousClient(),
                   [&](absl::StatusOr<Payout>) { when_answered = calls; });
  auto second = Create(ValidRequest("b"));
  EXPECT_EQ(calls.load(), 2u);  // both with an intent queued
  ledger_.RunHeldInserts();
  EXPECT_EQ(calls.load(), 0u);  // both at AOPay: nothing to write yet
  std::vector<size_t> when_recorded;
  ledger_.on_apply = [&] { when_recorded.push_back(calls); };
  upstream_.Answer(Http(200, kAccepted));
  EXPECT_EQ(when_answered, 0u);
  upstream_.Answer(Http(200, kAccepted));
  ASSERT_TRUE(second->has_value() && (*second)->ok());
  // Each counted again while its outcome was written.
  EXPECT_THAT(when_recorded, ::testing::ElementsAre(1u, 1u));
  EXPECT_EQ(calls.load(), 0u);
}

TEST_F(PayoutServiceTest, ARefreshAtAopayIsNotCountedUntilItsAnswer) {
  const std::atomic<size_t>& calls = CountCallsInFlight();
  auto created = Create(ValidRequest());
  upstream_.Answer(Http(200, kAccepted));
  ASSERT_TRUE(created->has_value() && (*created)->ok());
  std::vector<size_t> when_recorded;
  ledger_.on_apply = [&] { when_recorded.push_back(calls); };
  std::optional<absl::StatusOr<Payout>> refreshed;
  service_->Refresh(
      (*created)->value().payout_id, AnonymousClient(),
      [&](absl::StatusOr<Payout> r) { refreshed = std::move(r); });
  EXPECT_EQ(calls.load(), 0u);  // asking AOPay: nothing to write yet
  upstream_.Answer(Http(200, R"({"resourceData":{"status":"SUCCESS"}})"));
  ASSERT_TRUE(refreshed.has_value() && refreshed->ok()) << refreshed->status();
  EXPECT_EQ(refreshed->value().state, PayoutState::kSucceeded);
  EXPECT_THAT(when_recorded, ::testing::ElementsAre(1u));
  EXPECT_EQ(calls.load(), 0u);
}

// Every way out leaves the count, refusals and failures included: a count
// left too high would keep every later commit waiting.
TEST_F(PayoutServiceTest, ACallThatFailsOrIsRefusedLeavesTheCount) {
  const std::atomic<size_t>& calls = CountCallsInFlight();
  ledger_.fail_writes = true;
  auto failed = Create(ValidRequest("a"));
  ASSERT_TRUE(failed->has_value());
  EXPECT_EQ(GetErrorDetails((*failed)->status()).reason, "LEDGER_UNAVAILABLE");
  EXPECT_EQ(calls.load(), 0u);
  ledger_.fail_writes = false;
  auto over = Create(ValidRequest("c"), Capped(1000));
  ASSERT_TRUE(over->has_value());
  EXPECT_EQ(GetErrorDetails((*over)->status()).reason, "CLIENT_LIMIT_EXCEEDED");
  EXPECT_EQ(calls.load(), 0u);
}

TEST_F(PayoutServiceTest, TheDailyLimitIsTheLedgersAndNamesWhatRemains) {
  auto first = Create(ValidRequest("req-1"), Capped(5000, 2000));
  upstream_.Answer(Http(200, kAccepted));
  ASSERT_TRUE(first->has_value() && (*first)->ok());
  EXPECT_EQ((*first)->value().client, "payroll");

  auto second = Create(ValidRequest("req-2"), Capped(5000, 2000));
  ASSERT_TRUE(second->has_value());
  const ErrorDetails details = GetErrorDetails((*second)->status());
  EXPECT_EQ(details.reason, "CLIENT_LIMIT_EXCEEDED");
  EXPECT_EQ(details.metadata.at("limit"), "daily_paise");
  EXPECT_EQ(details.metadata.at("remainingPaise"), "766");
  EXPECT_EQ(upstream_.posted, 1u);
}

// Maker-checker: a maker whose payouts above 1,000 paise wait for approval,
// a checker, and another maker.
Client Maker(std::string name = "maker") {
  Client client;
  client.name = std::move(name);
  client.scopes = kScopeWrite | kScopeRead;
  client.approval_above_paise = 1000;
  client.daily_paise = 2000;
  return client;
}
Client Checker() {
  Client client;
  client.name = "checker";
  client.scopes = kScopeApprove;
  return client;
}

TEST_F(PayoutServiceTest, AboveTheApprovalThresholdAPayoutIsHeldNotSent) {
  auto held = Create(ValidRequest(), Maker());
  ASSERT_TRUE(held->has_value());
  ASSERT_TRUE((*held)->ok()) << (*held)->status();
  EXPECT_EQ((**held)->state, PayoutState::kAwaitingApproval);
  EXPECT_EQ(upstream_.posted, 0u);
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kAwaitingApproval);
  // A replay returns it as it stands, and sends nothing.
  auto replay = Create(ValidRequest(), Maker());
  ASSERT_TRUE(replay->has_value() && (*replay)->ok());
  EXPECT_EQ((**replay)->payout_id, (**held)->payout_id);
  EXPECT_EQ(upstream_.posted, 0u);
  // It counts against the daily limit (1,234 of 2,000).
  auto over = Create(ValidRequest("req-2"), Maker());
  ASSERT_TRUE(over->has_value());
  EXPECT_EQ(GetErrorDetails((*over)->status()).reason, "CLIENT_LIMIT_EXCEEDED");
  // At or below the threshold: sent at once.
  PayoutRequest small = ValidRequest("req-3");
  small.amount_paise = 700;
  auto sent = Create(small, Maker());
  EXPECT_EQ(upstream_.posted, 1u);
}

TEST_F(PayoutServiceTest, AnApprovalSendsOnceAndAnswersAsCreateWould) {
  auto held = Create(ValidRequest(), Maker());
  const std::string id = (**held)->payout_id;

  // Not by its creator.
  absl::StatusOr<Payout> own =
      Call(&PayoutService::Approve, ApprovalRequest{id, "looks fine"}, Maker());
  EXPECT_EQ(own.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(GetErrorDetails(own.status()).reason, "SELF_APPROVAL");
  // Not without a note.
  absl::StatusOr<Payout> silent =
      Call(&PayoutService::Approve, ApprovalRequest{id, "  "}, Checker());
  EXPECT_EQ(silent.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(upstream_.posted, 0u);

  auto approved = Approve(id, "invoice 42 checked", Checker());
  ASSERT_EQ(upstream_.posted, 1u);
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kPending);
  EXPECT_THAT(
      ledger_.log,
      Contains("apply " + id + " 7->1 approver checker: invoice 42 checked"));
  // A second approval while the first is at AOPay: nothing more is sent.
  absl::StatusOr<Payout> again =
      Call(&PayoutService::Approve, ApprovalRequest{id, "me too"}, Checker());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(GetErrorDetails(again.status()).reason, "NOT_AWAITING_APPROVAL");
  EXPECT_EQ(upstream_.posted, 1u);

  upstream_.Answer(Http(200, kAccepted));
  ASSERT_TRUE(approved->has_value());
  ASSERT_TRUE((*approved)->ok()) << (*approved)->status();
  EXPECT_EQ((**approved)->state, PayoutState::kAccepted);
  // The maker's retry now gets the payout as it stands.
  auto replay = Create(ValidRequest(), Maker());
  ASSERT_TRUE(replay->has_value() && (*replay)->ok());
  EXPECT_EQ((**replay)->state, PayoutState::kAccepted);
  EXPECT_EQ(upstream_.posted, 1u);
}

TEST_F(PayoutServiceTest, AnApprovedPayoutNotSentWaitsForApprovalAgain) {
  auto held = Create(ValidRequest(), Maker());
  const std::string id = (**held)->payout_id;
  auto approved = Approve(id, "ok", Checker());
  upstream_.Answer(absl::UnavailableError("connection refused"));
  ASSERT_TRUE(approved->has_value());
  EXPECT_EQ((*approved)->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(GetErrorDetails((*approved)->status()).metadata["payoutId"], id)
      << "an error about a recorded payout names it";
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kAwaitingApproval);
  EXPECT_THAT(ledger_.log, Not(Contains(HasSubstr("forget"))));
}

// Every error about a recorded payout carries its id (docs/errors.md).
TEST_F(PayoutServiceTest, ErrorsAboutARecordedPayoutNameIt) {
  auto held = Create(ValidRequest(), Maker());
  const std::string held_id = (**held)->payout_id;
  auto created = Create(ValidRequest("req-2"));
  upstream_.Answer(Http(200, kAccepted));
  const std::string id = (**created)->payout_id;
  auto id_of = [](const absl::Status& status) {
    return GetErrorDetails(status).metadata["payoutId"];
  };

  // The status endpoint gives no answer.
  absl::StatusOr<Payout> refreshed;
  service_->Refresh(id, AnonymousClient(), [&](absl::StatusOr<Payout> r) {
    refreshed = std::move(r);
  });
  upstream_.Answer(absl::UnavailableError("connection refused"));
  EXPECT_EQ(refreshed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(id_of(refreshed.status()), id);

  // The ledger cannot write the change.
  ledger_.fail_applies_with = LedgerUnavailableError("disk full");
  service_->Refresh(id, AnonymousClient(), [&](absl::StatusOr<Payout> r) {
    refreshed = std::move(r);
  });
  upstream_.Answer(Http(200, R"({"resourceData":{"status":"ACSC"}})"));
  EXPECT_EQ(refreshed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(id_of(refreshed.status()), id);
  for (auto method : {&PayoutService::Approve, &PayoutService::Reject}) {
    absl::StatusOr<Payout> decided =
        Call(method, ApprovalRequest{held_id, "checked"}, Checker());
    EXPECT_EQ(decided.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(id_of(decided.status()), held_id);
  }
  absl::StatusOr<Payout> cancelled =
      Call(&PayoutService::Cancel, ApprovalRequest{held_id, ""}, Maker());
  EXPECT_EQ(id_of(cancelled.status()), held_id);
  ledger_.fail_applies_with.reset();
  EXPECT_EQ(upstream_.posted, 3u) << "one payout and two status calls";
}

// An approved payout that was not sent goes back to approval; when that
// change's commit got no answer it is written again later. Approved again
// meanwhile, and at AOPay, the payout must not go back to approval, where
// another approval would send it a second time.
TEST_F(PayoutServiceTest, AChangeWrittenAgainDoesNotUndoALaterApproval) {
  Rebuild(PayoutServiceOptions{},
          [now = absl::Now()]() mutable { return now += absl::Seconds(1); });
  auto held = Create(ValidRequest(), Maker());
  const std::string id = (**held)->payout_id;
  auto first = Approve(id, "ok", Checker());
  ledger_.lose_next_apply_answer = true;
  upstream_.Answer(absl::UnavailableError("connection refused"));
  ASSERT_TRUE(first->has_value());
  EXPECT_EQ(GetErrorDetails((*first)->status()).reason, "REQUEST_IN_PROGRESS");
  ASSERT_EQ(ledger_.only().payout.state, PayoutState::kAwaitingApproval);
  ASSERT_EQ(timer_.tasks.size(), 1u) << "written again later";

  auto second = Approve(id, "ok now", Checker());
  ASSERT_EQ(upstream_.posted, 2u);
  ASSERT_EQ(ledger_.only().payout.state, PayoutState::kPending);
  {
    LogCapture logs;
    timer_.RunPending();  // the first approval's change, again
    EXPECT_EQ(ledger_.only().payout.state, PayoutState::kPending);
    // Superseded, not an AOPay answer lost: no alarm for the operator.
    EXPECT_THAT(logs.text(), Not(HasSubstr("[error]")));
    EXPECT_THAT(logs.text(), HasSubstr("not sent back to approval, it was "
                                       "approved again"));
  }

  upstream_.Answer(Http(200, kAccepted));
  ASSERT_TRUE(second->has_value());
  ASSERT_TRUE((*second)->ok()) << (*second)->status();
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kAccepted);
  absl::StatusOr<Payout> third =
      Call(&PayoutService::Approve, ApprovalRequest{id, "again"}, Checker());
  EXPECT_EQ(GetErrorDetails(third.status()).reason, "NOT_AWAITING_APPROVAL");
  EXPECT_EQ(upstream_.posted, 2u);
  EXPECT_EQ(service_->Unrecorded(), 0u);
}

// A cancel refused while an approval sends says the payout may come back:
// its creator must not take the refusal for "sent" and stop trying.
TEST_F(PayoutServiceTest, ACancelRefusedDuringAnApprovalSaysItMayComeBack) {
  auto held = Create(ValidRequest(), Maker());
  const std::string id = (**held)->payout_id;
  auto approved = Approve(id, "ok", Checker());
  ASSERT_FALSE(approved->has_value()) << "at AOPay";
  absl::StatusOr<Payout> cancel =
      Call(&PayoutService::Cancel, ApprovalRequest{id, "stop"}, Maker());
  EXPECT_EQ(GetErrorDetails(cancel.status()).reason, "NOT_CANCELLABLE");
  EXPECT_THAT(cancel.status().message(), HasSubstr("AWAITING_APPROVAL again"));
  upstream_.Answer(absl::UnavailableError("connection refused"));
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kAwaitingApproval);
  absl::StatusOr<Payout> again =
      Call(&PayoutService::Cancel, ApprovalRequest{id, "stop"}, Maker());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->state, PayoutState::kCancelled);
}

TEST_F(PayoutServiceTest, RejectAndCancelEndInCancelledAndSendNothing) {
  auto first = Create(ValidRequest("req-1"), Maker());
  const std::string rejected_id = (**first)->payout_id;
  absl::StatusOr<Payout> own_reject =
      Call(&PayoutService::Reject, ApprovalRequest{rejected_id, "no"}, Maker());
  EXPECT_EQ(GetErrorDetails(own_reject.status()).reason, "SELF_APPROVAL");
  absl::StatusOr<Payout> rejected =
      Call(&PayoutService::Reject,
           ApprovalRequest{rejected_id, "wrong beneficiary"}, Checker());
  ASSERT_TRUE(rejected.ok()) << rejected.status();
  EXPECT_EQ(rejected->state, PayoutState::kCancelled);
  // CANCELLED no longer counts: another payout fits the day.
  auto second = Create(ValidRequest("req-2"), Maker());
  ASSERT_TRUE(second->has_value() && (*second)->ok()) << (*second)->status();
  const std::string cancelled_id = (**second)->payout_id;

  // Only its creator cancels; another client sees nothing.
  absl::StatusOr<Payout> hidden = Call(
      &PayoutService::Cancel, ApprovalRequest{cancelled_id, ""}, Maker("m2"));
  EXPECT_EQ(hidden.status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<Payout> checker_cancel = Call(
      &PayoutService::Cancel, ApprovalRequest{cancelled_id, ""}, Checker());
  EXPECT_EQ(checker_cancel.status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(GetErrorDetails(checker_cancel.status()).reason, "NOT_CANCELLABLE");
  absl::StatusOr<Payout> cancelled =
      Call(&PayoutService::Cancel, ApprovalRequest{cancelled_id, ""}, Maker());
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state, PayoutState::kCancelled);
  absl::StatusOr<Payout> twice =
      Call(&PayoutService::Cancel, ApprovalRequest{cancelled_id, ""}, Maker());
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(GetErrorDetails(twice.status()).reason, "NOT_CANCELLABLE");
  absl::StatusOr<Payout> late = Call(
      &PayoutService::Approve, ApprovalRequest{cancelled_id, "ok"}, Checker());
  EXPECT_EQ(GetErrorDetails(late.status()).reason, "NOT_AWAITING_APPROVAL");
  EXPECT_EQ(upstream_.posted, 0u);
  // A replay of a cancelled payout's request id returns it, sends nothing.
  auto replay = Create(ValidRequest("req-2"), Maker());
  ASSERT_TRUE(replay->has_value() && (*replay)->ok());
  EXPECT_EQ((**replay)->state, PayoutState::kCancelled);
  EXPECT_EQ(upstream_.posted, 0u);
}

TEST_F(PayoutServiceTest, MetadataIsRecordedAndPartOfTheFingerprint) {
  PayoutRequest request = ValidRequest();
  request.metadata = {{"invoice", "INV-42"}};
  auto created = Create(request);
  ASSERT_EQ(upstream_.calls.size(), 1u);
  // Never sent to AOPay.
  EXPECT_THAT(upstream_.calls[0].request.body, Not(HasSubstr("INV-42")));
  EXPECT_THAT(upstream_.calls[0].request.body, Not(HasSubstr("invoice")));
  upstream_.Answer(Http(200, kAccepted));
  ASSERT_TRUE(created->has_value() && (*created)->ok());
  EXPECT_EQ((**created)->metadata, request.metadata);
  EXPECT_EQ(ledger_.only().payout.metadata, request.metadata);
  request.metadata = {{"invoice", "INV-43"}};
  auto reused = Create(request);
  ASSERT_TRUE(reused->has_value());
  EXPECT_EQ(GetErrorDetails((*reused)->status()).reason, "REQUEST_ID_REUSED");
}

TEST_F(PayoutServiceTest, AnotherClientsPayoutReadsAsMissing) {
  auto created = Create(ValidRequest(), Capped(5000));
  upstream_.Answer(Http(200, kAccepted));
  ASSERT_TRUE(created->has_value() && (*created)->ok());
  const std::string id = (*created)->value().payout_id;

  Client other = Capped(5000);
  other.name = "other";
  absl::StatusOr<Payout> hidden =
      Call(&PayoutService::GetByPayoutId, id, other);
  absl::StatusOr<Payout> missing =
      Call(&PayoutService::GetByPayoutId, std::string("po_missing"), other);
  EXPECT_EQ(hidden.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(GetErrorDetails(hidden.status()).reason, "NOT_FOUND");
  EXPECT_EQ(hidden.status().message(), "Payout " + id + " was not found.");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Call(&PayoutService::Refresh, id, other).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Call(&PayoutService::GetByRequestId, std::string("req-1"), other)
                .status()
                .code(),
            absl::StatusCode::kNotFound);

  Client auditor;
  auditor.name = "auditor";
  auditor.scopes = kScopeReadAll;
  EXPECT_TRUE(Call(&PayoutService::GetByPayoutId, id, auditor).ok());
}

TEST_F(PayoutServiceTest, LedgerFailureMeansNothingIsSent) {
  ledger_.fail_writes = true;
  auto result = Create(ValidRequest());
  ASSERT_TRUE(result->has_value());
  EXPECT_EQ((*result)->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(GetErrorDetails((*result)->status()).reason, "LEDGER_UNAVAILABLE");
  EXPECT_TRUE(upstream_.calls.empty());
}

// Disk full after AOPay answered: the outcome is kept and written again
// until recorded; meanwhile the caller hears only what the ledger holds.
TEST_F(PayoutServiceTest, AnOutcomeTheLedgerCannotRecordIsRetriedUntilItIs) {
  auto result = Create(ValidRequest());
  const std::string id = ledger_.only().payout.payout_id;
  ledger_.fail_writes = true;
  upstream_.Answer(Http(200, kAccepted));

  ASSERT_TRUE(result->has_value());
  EXPECT_EQ((*result)->status().code(), absl::StatusCode::kAborted)
      << "never more than the ledger holds";
  EXPECT_EQ(GetErrorDetails((*result)->status()).reason, "REQUEST_IN_PROGRESS");
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kPending);
  EXPECT_EQ(service_->Unrecorded(), 1u);

  // Still failing: tried again, later each time.
  ASSERT_EQ(timer_.tasks.size(), 1u);
  timer_.RunPending();
  ASSERT_EQ(timer_.tasks.size(), 1u);
  timer_.RunPending();
  ASSERT_EQ(timer_.delays.size(), 3u);
  EXPECT_LT(timer_.delays[0], timer_.delays[1]);
  EXPECT_LT(timer_.delays[1], timer_.delays[2]);
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kPending);

  ledger_.fail_writes = false;
  timer_.RunPending();
  EXPECT_TRUE(timer_.tasks.empty());
  EXPECT_EQ(service_->Unrecorded(), 0u);
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kAccepted);
  EXPECT_EQ(ledger_.only().payout.transaction_id, "TERF920898");

  // The caller's retry gets the outcome; nothing is sent again.
  auto retry = Create(ValidRequest());
  ASSERT_TRUE(retry->has_value());
  ASSERT_TRUE((*retry)->ok()) << (*retry)->status();
  EXPECT_EQ((**retry)->payout_id, id);
  EXPECT_EQ((**retry)->state, PayoutState::kAccepted);
  EXPECT_TRUE(upstream_.calls.empty());
}

// On a shared ledger another replica turns a PENDING payout UNKNOWN when
// its replica stops heart-beating for the lease; AOPay's answer, arriving
// after that, is still recorded.
TEST_F(PayoutServiceTest, AnAnswerAfterATakeoverIsRecordedFromUnknown) {
  auto result = Create(ValidRequest());
  const std::string id = ledger_.only().payout.payout_id;
  ledger_.MoveBehindTheGatewaysBack(id, PayoutState::kUnknown);
  upstream_.Answer(Http(200, kAccepted));

  ASSERT_TRUE(result->has_value());
  ASSERT_TRUE((*result)->ok()) << (*result)->status();
  EXPECT_EQ((**result)->state, PayoutState::kAccepted);
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kAccepted);
  EXPECT_EQ(ledger_.only().payout.transaction_id, "TERF920898");
  auto retry = Create(ValidRequest());
  ASSERT_TRUE(retry->has_value());
  ASSERT_TRUE((*retry)->ok()) << (*retry)->status();
  EXPECT_EQ((**retry)->state, PayoutState::kAccepted);
  EXPECT_EQ(upstream_.posted, 1u);
}

TEST_F(PayoutServiceTest, AnUnknownAnswerAfterATakeoverKeepsItsTransactionId) {
  auto result = Create(ValidRequest());
  const std::string id = ledger_.only().payout.payout_id;
  ledger_.MoveBehindTheGatewaysBack(id, PayoutState::kUnknown);
  // Contradicts itself (an error naming a transaction): UNKNOWN, but with
  // an id a refresh can ask about.
  upstream_.Answer(Http(200, R"({"status":"ERROR","subCode":"422",)"
                             R"("message":"bad","transactionID":"TERF7"})"));

  ASSERT_TRUE(result->has_value());
  EXPECT_EQ(GetErrorDetails((*result)->status()).reason, "OUTCOME_UNKNOWN");
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kUnknown);
  EXPECT_EQ(ledger_.only().payout.transaction_id, "TERF7");
}

TEST_F(PayoutServiceTest, AnAnswerKeptInMemoryIsRecordedAfterATakeover) {
  auto result = Create(ValidRequest());
  const std::string id = ledger_.only().payout.payout_id;
  ledger_.fail_writes = true;
  upstream_.Answer(Http(200, kAccepted));
  ASSERT_EQ(service_->Unrecorded(), 1u);

  // The database comes back after the lease: another replica has turned
  // the payout UNKNOWN meanwhile.
  ledger_.fail_writes = false;
  ledger_.MoveBehindTheGatewaysBack(id, PayoutState::kUnknown);
  timer_.RunPending();
  EXPECT_EQ(service_->Unrecorded(), 0u);
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kAccepted);
  EXPECT_EQ(ledger_.only().payout.transaction_id, "TERF920898");
}

TEST_F(PayoutServiceTest, AnAnswerAfterAnOperatorsResolveChangesNothing) {
  auto result = Create(ValidRequest());
  const std::string id = ledger_.only().payout.payout_id;
  ledger_.MoveBehindTheGatewaysBack(id, PayoutState::kFailed);
  upstream_.Answer(Http(200, kAccepted));

  ASSERT_TRUE(result->has_value());
  EXPECT_FALSE((*result)->ok());
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kFailed);
  EXPECT_EQ(ledger_.only().payout.transaction_id, "");
  // Recorded FAILED while AOPay took it: someone must look.
  EXPECT_EQ(metrics_.status_contradictions.Value({"failed", "accepted"}), 1u);
}

// An approved payout whose AOPay call certainly did not arrive goes back to
// AWAITING_APPROVAL; after a takeover made it UNKNOWN it stays UNKNOWN (a
// second approval must never send it again).
TEST_F(PayoutServiceTest, ANotSentApprovalAfterATakeoverStaysUnknown) {
  auto held = Create(ValidRequest(), Maker());
  ASSERT_TRUE(held->has_value() && (*held)->ok()) << (*held)->status();
  const std::string id = (**held)->payout_id;
  auto approved = Approve(id, "invoice checked", Checker());
  ASSERT_EQ(upstream_.calls.size(), 1u);
  ledger_.MoveBehindTheGatewaysBack(id, PayoutState::kUnknown);
  LogCapture logs;
  upstream_.Answer(absl::UnavailableError("connection refused"));

  ASSERT_TRUE(approved->has_value());
  EXPECT_FALSE((*approved)->ok());
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kUnknown);
  // Only this line says it was never sent (docs/scale-out.md).
  EXPECT_THAT(logs.text(), HasSubstr("[error]"));
  EXPECT_THAT(logs.text(), HasSubstr("certainly not sent"));
}

TEST_F(PayoutServiceTest,
       AnUnknownAnswerWithoutAnIdAfterATakeoverChangesNothing) {
  auto result = Create(ValidRequest());
  const std::string id = ledger_.only().payout.payout_id;
  ledger_.MoveBehindTheGatewaysBack(id, PayoutState::kUnknown);
  upstream_.Answer(Http(502, "bad gateway"));

  ASSERT_TRUE(result->has_value());
  EXPECT_FALSE((*result)->ok());
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kUnknown);
  EXPECT_EQ(ledger_.only().response.ToString(),
            RecoveredAsUnknownError(id).ToString());
}

TEST_F(PayoutServiceTest, UnrecordedOutcomesCountAgainstTheBound) {
  PayoutServiceOptions options;
  options.max_outstanding = 1;
  Rebuild(options);
  auto first = Create(ValidRequest("req-1"));
  ledger_.fail_writes = true;
  upstream_.Answer(Http(200, kAccepted));
  ASSERT_TRUE(first->has_value());
  ledger_.fail_writes = false;
  auto second = Create(ValidRequest("req-2"));
  ASSERT_TRUE(second->has_value());
  EXPECT_EQ(GetErrorDetails((*second)->status()).reason, "OVERLOADED");
  timer_.RunPending();
  auto third = Create(ValidRequest("req-3"));
  EXPECT_FALSE(third->has_value()) << "admitted, waiting for AOPay";
}

TEST_F(PayoutServiceTest, ANotSentPayoutWhoseForgetFailsIsForgottenLater) {
  auto result = Create(ValidRequest());
  ledger_.fail_writes = true;
  upstream_.Answer(absl::UnavailableError("connection refused"));
  ASSERT_TRUE(result->has_value());
  EXPECT_EQ(GetErrorDetails((*result)->status()).reason, "REQUEST_IN_PROGRESS")
      << "the key is still taken";
  EXPECT_EQ(ledger_.size(), 1u);
  timer_.RunPending();
  EXPECT_EQ(ledger_.size(), 1u);
  ledger_.fail_writes = false;
  timer_.RunPending();
  EXPECT_EQ(ledger_.size(), 0u);
  EXPECT_EQ(service_->Unrecorded(), 0u);
  auto again = Create(ValidRequest());
  EXPECT_EQ(upstream_.calls.size(), 1u) << "the freed key is sent again";
}

// AOPay may echo the registration id in its messages; they are stored and
// returned only with it replaced.
TEST_F(PayoutServiceTest, AopayTextIsStoredAndReturnedWithoutTheRegistration) {
  auto result = Create(ValidRequest());
  upstream_.Answer(Http(
      403, R"({"status":"ERROR","subCode":"403","message":)"
           R"("APIs not enabled for AOP-554. Please reach out to care"})"));
  ASSERT_TRUE(result->has_value());
  const absl::Status error = (*result)->status();
  EXPECT_EQ(GetErrorDetails(error).metadata.at("upstreamMessage"),
            "APIs not enabled for [registration]. Please reach out to care");
  for (const absl::Status& kept :
       {error, ledger_.only().payout.failure, ledger_.only().response}) {
    EXPECT_THAT(SerializeError(kept), ::testing::Not(HasSubstr("AOP-554")));
    EXPECT_THAT(SerializeError(kept), HasSubstr("[registration]"));
  }

  auto accepted = Create(ValidRequest("req-2"));
  std::string body = kAccepted;
  body.replace(body.find("\"ABC\""), 5, "\"ABC AOP-554\"");
  upstream_.Answer(Http(200, body));
  ASSERT_TRUE(accepted->has_value());
  ASSERT_TRUE((*accepted)->ok()) << (*accepted)->status();
  EXPECT_EQ((**accepted)->bank_beneficiary_name, "ABC [registration]");
}

TEST_F(PayoutServiceTest, RefreshesHaveTheirOwnBound) {
  PayoutServiceOptions options;
  options.max_refreshes = 2;
  Rebuild(options);
  auto created = Create(ValidRequest());
  upstream_.Answer(Http(200, kAccepted));
  const std::string id = ledger_.only().payout.payout_id;
  int answered = 0;
  for (int i = 0; i < 2; ++i) {
    service_->Refresh(id, AnonymousClient(),
                      [&](absl::StatusOr<Payout>) { ++answered; });
  }
  absl::StatusOr<Payout> third =
      Call(&PayoutService::Refresh, id, AnonymousClient());
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(GetErrorDetails(third.status()).reason, "OVERLOADED");
  EXPECT_EQ(upstream_.calls.size(), 2u);

  // Payouts are not bounded by refreshes.
  auto payout = Create(ValidRequest("req-2"));
  EXPECT_EQ(upstream_.calls.size(), 3u);

  upstream_.Answer(Http(200, R"({"resourceData":{"status":"PDNG"}})"));
  EXPECT_EQ(answered, 1);
  service_->Refresh(id, AnonymousClient(),
                    [&](absl::StatusOr<Payout>) { ++answered; });
  EXPECT_EQ(upstream_.calls.size(), 3u);
}

// The reconciler keeps its refreshes within a window below the service's
// bound: with a backlog larger than the bound it must not make the service
// refuse it (each refused payout was backed off, the backlog of ACCEPTED
// payouts grew without end, and memory with it).
TEST_F(PayoutServiceTest, TheReconcilerStaysWithinItsWindow) {
  PayoutServiceOptions options;
  options.max_refreshes = 4;
  Rebuild(options);
  constexpr int kPayouts = 20;
  for (int i = 0; i < kPayouts; ++i) {
    auto created = Create(ValidRequest(absl::StrCat("req-", i)));
    upstream_.Answer(Http(200, kAccepted));
  }
  Reconciler reconciler(*service_, absl::Seconds(1), /*max_in_flight=*/2);
  reconciler.Tick(absl::Now());
  size_t most_at_once = 0;
  int answered = 0;
  while (!upstream_.calls.empty() && answered < 10 * kPayouts) {
    most_at_once = std::max(most_at_once, upstream_.calls.size());
    upstream_.Answer(Http(200, R"({"resourceData":{"status":"SUCCESS"}})"));
    ++answered;
  }
  EXPECT_EQ(most_at_once, 2u);
  EXPECT_EQ(answered, kPayouts) << "each payout refreshed once";
  ListQuery accepted;
  accepted.states = {PayoutState::kAccepted};
  absl::StatusOr<ListPage> left;
  service_->List(
      accepted, AnonymousClient(),
      [&](absl::StatusOr<ListPage> page) { left = std::move(page); });
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->payouts.empty());
}

TEST_F(PayoutServiceTest, SuccessReportedForAFailedPayoutIsCountedAndLogged) {
  absl::StatusOr<Payout> refreshed = SettledThenRefreshed(
      R"({"resourceData":{"status":"RJCT"}})", PayoutState::kFailed,
      R"({"resourceData":{"status":"SUCCESS"}})");
  ASSERT_TRUE(refreshed.ok()) << refreshed.status();
  EXPECT_EQ(refreshed->state, PayoutState::kFailed) << "nothing changed";
  EXPECT_EQ(metrics_.status_contradictions.Value({"failed", "succeeded"}), 1u);
}

// An operator settles a payout while its refresh asks AOPay: the answer is
// read against where the payout is now, so that "the money moved" for a
// payout just resolved FAILED is seen, counted and kept, not dropped with
// the refresh's stale compare-and-set.
TEST_F(PayoutServiceTest, AStatusAnswerAfterAResolveIsReadAgainstTheResolve) {
  auto created = Create(ValidRequest());
  upstream_.Answer(Http(200, kAccepted));
  const std::string id = ledger_.only().payout.payout_id;
  std::optional<absl::StatusOr<Payout>> refreshed;
  service_->Refresh(id, AnonymousClient(), [&](absl::StatusOr<Payout> r) {
    refreshed = std::move(r);
  });
  ASSERT_EQ(upstream_.calls.size(), 1u);
  ledger_.MoveBehindTheGatewaysBack(id, PayoutState::kFailed);
  const std::string answer = R"({"resourceData":{"status":"SUCCESS"}})";
  upstream_.Answer(Http(200, answer));

  ASSERT_TRUE(refreshed.has_value());
  ASSERT_TRUE(refreshed->ok()) << refreshed->status();
  EXPECT_EQ((*refreshed)->state, PayoutState::kFailed) << "nothing changed";
  EXPECT_EQ(metrics_.status_contradictions.Value({"failed", "succeeded"}), 1u);
  EXPECT_EQ(ledger_.last_status_answer, answer) << "the answer is kept";
}

// An operator resolves an UNKNOWN payout under another transaction id while
// its refresh asks AOPay about the old one: the old transaction's answer is
// not the payout's any more, and must not fail it.
TEST_F(PayoutServiceTest, AStatusAnswerForAnotherTransactionIsNotApplied) {
  auto created = Create(ValidRequest());
  upstream_.Answer(
      Http(200, R"({"statuss":"SUCCESS","resourceData":{"status":"ON_HOLD",)"
                R"("transactionID":"T1"}})"));
  const std::string id = ledger_.only().payout.payout_id;
  ASSERT_EQ(ledger_.only().payout.state, PayoutState::kUnknown);
  ASSERT_EQ(ledger_.only().payout.transaction_id, "T1");
  std::optional<absl::StatusOr<Payout>> refreshed;
  service_->Refresh(id, AnonymousClient(), [&](absl::StatusOr<Payout> r) {
    refreshed = std::move(r);
  });
  absl::StatusOr<Payout> resolved =
      Call(&PayoutService::Resolve,
           ResolveRequest{id, PayoutState::kAccepted, "T2", "AOPay: it is T2"},
           AnonymousClient());
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  upstream_.Answer(Http(200, R"({"resourceData":{"status":"FAILED"}})"));

  ASSERT_TRUE(refreshed.has_value());
  ASSERT_TRUE(refreshed->ok()) << refreshed->status();
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kAccepted);
  EXPECT_EQ(ledger_.only().payout.transaction_id, "T2");
}

// A payout the caller was told arrived, which AOPay now reports failed.
TEST_F(PayoutServiceTest, FailureReportedForASucceededPayoutIsCounted) {
  absl::StatusOr<Payout> refreshed = SettledThenRefreshed(
      R"({"resourceData":{"status":"ACSC"}})", PayoutState::kSucceeded,
      R"({"resourceData":{"status":"FAILED"}})");
  ASSERT_TRUE(refreshed.ok()) << refreshed.status();
  const std::string id = refreshed->payout_id;
  EXPECT_EQ(refreshed->state, PayoutState::kSucceeded) << "nothing changed";
  EXPECT_EQ(metrics_.status_contradictions.Value({"succeeded", "failed"}), 1u);
  // An older word for a settled payout is only stale.
  service_->Refresh(id, AnonymousClient(), [](absl::StatusOr<Payout>) {});
  upstream_.Answer(Http(200, R"({"resourceData":{"status":"PENDING"}})"));
  EXPECT_EQ(metrics_.status_contradictions.Value({"succeeded", "accepted"}),
            0u);
}

TEST_F(PayoutServiceTest, CertainlyNotSentFreesTheKey) {
  auto result = Create(ValidRequest());
  upstream_.Answer(absl::UnavailableError("connection refused"));
  ASSERT_TRUE(result->has_value());
  EXPECT_EQ((*result)->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ledger_.size(), 0u);
  EXPECT_THAT(ledger_.log.back(), HasSubstr("forget po_"));

  auto again = Create(ValidRequest());
  EXPECT_EQ(upstream_.calls.size(), 1u) << "the freed key is sent again";
}

// An outcome the ledger refuses for good (not UNAVAILABLE: nothing to write
// again) is logged with AOPay's transaction id: the payout stays PENDING,
// and UNKNOWN after a restart, and only that id lets it be settled.
TEST_F(PayoutServiceTest, AnOutcomeTheLedgerRefusesIsLoggedWithItsIds) {
  auto result = Create(ValidRequest());
  const std::string id = ledger_.only().payout.payout_id;
  ledger_.fail_applies_with = absl::InternalError("CHECK constraint failed");
  LogCapture logs;
  upstream_.Answer(Http(200, kAccepted));
  ASSERT_TRUE(result->has_value());
  EXPECT_FALSE((*result)->ok());
  EXPECT_THAT(logs.text(), HasSubstr(id));
  EXPECT_THAT(logs.text(), HasSubstr("transaction_id=TERF920898"));
  EXPECT_THAT(logs.text(), HasSubstr("could not be recorded"));
  EXPECT_THAT(logs.text(), HasSubstr("[error]"));
}

// An operator must be able to see why AOPay is unreachable; the caller's
// error leaves the transport's words out.
TEST_F(PayoutServiceTest, TheTransportsOwnErrorIsLoggedNotReturned) {
  LogCapture logs;
  auto result = Create(ValidRequest());
  upstream_.Answer(absl::UnavailableError(
      "could not reach AOPay, nothing was sent: Could not resolve host: "
      "payout.aopay.example (curl error 6)"));
  ASSERT_TRUE(result->has_value());
  EXPECT_THAT(logs.text(), HasSubstr("Could not resolve host"));
  EXPECT_THAT(std::string((*result)->status().message()),
              ::testing::Not(HasSubstr("Could not resolve host")));
  EXPECT_THAT(logs.text(), ::testing::Not(HasSubstr("100000011836")));
}

HttpAnswer CutOff(int status, std::string body) {
  HttpAnswer answer = Http(status, std::move(body));
  answer.truncated = true;
  answer.cut_off_by =
      "transfer closed with 50 bytes remaining to read "
      "(curl error 18)";
  return answer;
}

// AOPay's whole answer came, then the connection failed (a Content-Length
// that promised more): UNKNOWN, but with AOPay's transaction id and the
// answer kept, so that a refresh can settle it; how it failed is the
// operator's (a log line), not the caller's.
TEST_F(PayoutServiceTest, AnAnswerCutOffIsUnknownAndKeepsItsTransactionId) {
  LogCapture logs;
  auto result = Create(ValidRequest());
  upstream_.Answer(CutOff(200, kAccepted));
  ASSERT_TRUE(result->has_value());
  EXPECT_EQ(GetErrorDetails((*result)->status()).reason, "OUTCOME_UNKNOWN");
  EXPECT_THAT(std::string((*result)->status().message()),
              ::testing::Not(HasSubstr("curl error")));
  const Payout& stored = ledger_.only().payout;
  EXPECT_EQ(stored.state, PayoutState::kUnknown);
  EXPECT_EQ(stored.transaction_id, "TERF920898");
  EXPECT_EQ(ledger_.last_payout_answer, kAccepted);
  EXPECT_THAT(logs.text(), HasSubstr("was cut off: transfer closed"));

  // The kept id is what a refresh asks about.
  std::optional<absl::StatusOr<Payout>> refreshed;
  service_->Refresh(
      stored.payout_id, AnonymousClient(),
      [&](absl::StatusOr<Payout> r) { refreshed = std::move(r); });
  ASSERT_EQ(upstream_.calls.size(), 1u);
  EXPECT_THAT(upstream_.calls.front().request.body, HasSubstr("TERF920898"));
  upstream_.Answer(Http(200, R"({"resourceData":{"transactionStatus":)"
                             R"("SUCCESS","transactionID":"TERF920898"}})"));
  ASSERT_TRUE(refreshed.has_value());
  ASSERT_TRUE(refreshed->ok()) << refreshed->status();
  EXPECT_EQ((*refreshed)->state, PayoutState::kSucceeded);
}

// A status answer cut off by the connection is no answer: nothing changes,
// the caller may try again, and it is not counted as an answer the gateway
// does not understand (that counter says AOPay's format changed).
TEST_F(PayoutServiceTest, ACutOffStatusAnswerIsNoAnswer) {
  auto created = Create(ValidRequest());
  upstream_.Answer(Http(200, kAccepted));
  const std::string id = ledger_.only().payout.payout_id;
  LogCapture logs;
  std::optional<absl::StatusOr<Payout>> refreshed;
  service_->Refresh(id, AnonymousClient(), [&](absl::StatusOr<Payout> r) {
    refreshed = std::move(r);
  });
  upstream_.Answer(CutOff(200, R"({"resourceData":{"transactionStatus":"F)"));
  ASSERT_TRUE(refreshed.has_value());
  EXPECT_EQ(refreshed->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(GetErrorDetails(refreshed->status()).reason,
            "UPSTREAM_UNAVAILABLE");
  EXPECT_EQ(metrics_.status_not_understood.Value({}), 0u);
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kAccepted);
  EXPECT_THAT(logs.text(), HasSubstr("was cut off: transfer closed"));
}

TEST_F(PayoutServiceTest, MaybeSentBecomesUnknownAndIsNeverResent) {
  auto result = Create(ValidRequest());
  upstream_.Answer(absl::DeadlineExceededError("timed out"));
  ASSERT_TRUE(result->has_value());
  EXPECT_EQ((*result)->status().code(), absl::StatusCode::kDeadlineExceeded);
  const ErrorDetails details = GetErrorDetails((*result)->status());
  EXPECT_EQ(details.reason, "OUTCOME_UNKNOWN");
  EXPECT_EQ(details.metadata.at("payoutId"), ledger_.only().payout.payout_id);
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kUnknown);

  auto replay = Create(ValidRequest());
  ASSERT_TRUE(replay->has_value());
  EXPECT_EQ((*replay)->status(), (*result)->status());
  EXPECT_TRUE(upstream_.calls.empty());
}

TEST_F(PayoutServiceTest, ReplaysFollowTheContract) {
  auto first = Create(ValidRequest());
  // Still PENDING: in progress, with a retry delay.
  auto pending = Create(ValidRequest());
  ASSERT_TRUE(pending->has_value());
  EXPECT_EQ((*pending)->status().code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(GetErrorDetails((*pending)->status()).retry_delay.has_value());

  upstream_.Answer(Http(200, kAccepted));
  auto replay = Create(ValidRequest());
  ASSERT_TRUE(replay->has_value() && (*replay)->ok());
  EXPECT_EQ((**replay)->payout_id, (**first)->payout_id);

  PayoutRequest other = ValidRequest();
  other.amount_paise += 1;
  auto reused = Create(other);
  ASSERT_TRUE(reused->has_value());
  EXPECT_EQ(GetErrorDetails((*reused)->status()).reason, "REQUEST_ID_REUSED");
  EXPECT_TRUE(upstream_.calls.empty());
}

TEST_F(PayoutServiceTest, FullGatewayRefusesBeforeRecording) {
  PayoutServiceOptions options;
  options.max_outstanding = 1;
  Rebuild(options);
  auto first = Create(ValidRequest("a"));
  auto second = Create(ValidRequest("b"));
  ASSERT_TRUE(second->has_value());
  EXPECT_EQ((*second)->status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(GetErrorDetails((*second)->status()).reason, "OVERLOADED");
  EXPECT_EQ(ledger_.size(), 1u);
  upstream_.Answer(Http(200, kAccepted));
  auto third = Create(ValidRequest("c"));
  EXPECT_EQ(upstream_.calls.size(), 1u) << "the slot was released";
}

TEST_F(PayoutServiceTest, DrainingRefusesNewPayouts) {
  service_->Drain();
  auto result = Create(ValidRequest());
  ASSERT_TRUE(result->has_value());
  EXPECT_EQ((*result)->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(GetErrorDetails((*result)->status()).reason, "SHUTTING_DOWN");
  EXPECT_EQ(ledger_.size(), 0u);
}

// A retry of a request id already taken is that payout's replay even when
// the gateway takes no new payouts: "nothing was sent" would be false of it.
TEST_F(PayoutServiceTest, ARetryWhileDrainingIsItsPayoutsReplay) {
  auto first = Create(ValidRequest("a"));
  upstream_.Answer(Http(200, kAccepted));
  ASSERT_TRUE(first->has_value() && (*first)->ok());
  service_->Drain();
  auto retry = Create(ValidRequest("a"));
  ASSERT_TRUE(retry->has_value());
  ASSERT_TRUE((*retry)->ok()) << (*retry)->status();
  EXPECT_EQ((*retry)->value().payout_id, (*first)->value().payout_id);
  EXPECT_EQ((*retry)->value().state, PayoutState::kAccepted);
  EXPECT_TRUE(upstream_.calls.empty()) << "nothing sent again";
}

TEST_F(PayoutServiceTest, ARetryWhileFullIsItsPayoutsReplay) {
  PayoutServiceOptions options;
  options.max_outstanding = 1;
  Rebuild(options);
  auto first = Create(ValidRequest("a"));
  ASSERT_FALSE(first->has_value()) << "in flight at AOPay";
  auto retry = Create(ValidRequest("a"));
  ASSERT_TRUE(retry->has_value());
  EXPECT_EQ(GetErrorDetails((*retry)->status()).reason, "REQUEST_IN_PROGRESS")
      << (*retry)->status();
  EXPECT_EQ(upstream_.calls.size(), 1u);
}

struct RefreshRow {
  PayoutState from;
  std::string answer;
  PayoutState to;
  bool understood;
};

class RefreshTest : public PayoutServiceTest,
                    public ::testing::WithParamInterface<RefreshRow> {};

TEST_P(RefreshTest, MovesOnlyWhereTheContractAllows) {
  const RefreshRow& row = GetParam();
  auto created = Create(ValidRequest());
  upstream_.Answer(Http(200, kAccepted));
  const std::string id = (**created)->payout_id;
  if (row.from != PayoutState::kAccepted) {
    PayoutChange change;
    change.payout_id = id;
    change.expected_state = PayoutState::kAccepted;
    change.new_state = row.from;
    ledger_.Apply(change, [](absl::StatusOr<StoredPayout>) {});
  }

  std::optional<absl::StatusOr<Payout>> refreshed;
  service_->Refresh(id, AnonymousClient(), [&](absl::StatusOr<Payout> r) {
    refreshed = std::move(r);
  });
  ASSERT_EQ(upstream_.calls.size(), 1u);
  EXPECT_EQ(upstream_.calls[0].request.path, kStatusPath);
  EXPECT_TRUE(upstream_.calls[0].request.idempotent);
  upstream_.Answer(Http(200, row.answer));

  ASSERT_TRUE(refreshed.has_value());
  ASSERT_TRUE(refreshed->ok()) << refreshed->status();
  EXPECT_EQ((*refreshed)->state, row.to);
  EXPECT_EQ(ledger_.last_status_answer, row.answer) << "raw answer kept";
  EXPECT_EQ(metrics_.status_not_understood.Value({}), row.understood ? 0u : 1u);
  if (row.to == PayoutState::kFailed && row.from != PayoutState::kFailed) {
    EXPECT_EQ(GetErrorDetails((*refreshed)->failure).reason,
              "UPSTREAM_REPORTED_FAILURE");
  }
}

INSTANTIATE_TEST_SUITE_P(
    Contract, RefreshTest,
    ::testing::Values(
        RefreshRow{PayoutState::kAccepted,
                   R"({"resourceData":{"transactionStatus":"SUCCESS"}})",
                   PayoutState::kSucceeded, true},
        RefreshRow{PayoutState::kAccepted,
                   R"({"resourceData":{"status":"rjct"}})",
                   PayoutState::kFailed, true},
        RefreshRow{PayoutState::kAccepted,
                   R"({"resourceData":{"status":"RETURNED"}})",
                   PayoutState::kReversed, true},
        RefreshRow{PayoutState::kAccepted,
                   R"({"resourceData":{"status":"PDNG"}})",
                   PayoutState::kAccepted, true},
        RefreshRow{PayoutState::kAccepted,
                   R"({"resourceData":{"status":"HOLD"}})",
                   PayoutState::kAccepted, false},
        RefreshRow{PayoutState::kAccepted, "<html>oops</html>",
                   PayoutState::kAccepted, false},
        RefreshRow{PayoutState::kSucceeded,
                   R"({"resourceData":{"status":"REVERSED"}})",
                   PayoutState::kReversed, true},
        RefreshRow{PayoutState::kSucceeded,
                   R"({"resourceData":{"status":"FAILED"}})",
                   PayoutState::kSucceeded, true},
        RefreshRow{PayoutState::kFailed,
                   R"({"resourceData":{"status":"SUCCESS"}})",
                   PayoutState::kFailed, true},
        RefreshRow{PayoutState::kUnknown,
                   R"({"resourceData":{"status":"SUCCESS"}})",
                   PayoutState::kSucceeded, true},
        // A top-level word speaks of the payout only beside its own id.
        RefreshRow{PayoutState::kUnknown,
                   R"({"statuss":"SUCCESS","message":"Transaction not found"})",
                   PayoutState::kUnknown, false},
        RefreshRow{PayoutState::kUnknown,
                   R"({"status":"FAILED","message":"invalid id"})",
                   PayoutState::kUnknown, false},
        RefreshRow{PayoutState::kUnknown,
                   R"({"status":"SUCCESS","transactionID":"TERF920898"})",
                   PayoutState::kSucceeded, true}));

TEST_F(PayoutServiceTest, RefreshNeedsATransactionId) {
  auto created = Create(ValidRequest());
  std::string body = kAccepted;
  upstream_.Answer(Http(502, body));  // UNKNOWN, but no transaction id either
  ASSERT_EQ(ledger_.only().payout.state, PayoutState::kUnknown);
  absl::StatusOr<Payout> refreshed =
      Call(&PayoutService::Refresh, ledger_.only().payout.payout_id,
           AnonymousClient());
  EXPECT_EQ(GetErrorDetails(refreshed.status()).reason, "NO_TRANSACTION_ID");
}

// A refresh that settles an UNKNOWN payout also settles what retries of its
// request id are told: the payout as it now stands, no longer "unknown".
TEST_F(PayoutServiceTest, ARefreshThatSettlesAnUnknownPayoutSettlesItsReplays) {
  auto created = Create(ValidRequest());
  upstream_.Answer(Http(200, R"({"status":"ERROR","subCode":"422",)"
                             R"("message":"bad","transactionID":"TERF7"})"));
  ASSERT_EQ(ledger_.only().payout.state, PayoutState::kUnknown);
  EXPECT_EQ(GetErrorDetails((*Create(ValidRequest()))->status()).reason,
            "OUTCOME_UNKNOWN");

  std::optional<absl::StatusOr<Payout>> refreshed;
  service_->Refresh(
      ledger_.only().payout.payout_id, AnonymousClient(),
      [&](absl::StatusOr<Payout> result) { refreshed = std::move(result); });
  upstream_.Answer(Http(200, R"({"resourceData":{"transactionStatus":)"
                             R"("FAILED","transactionID":"TERF7"}})"));
  ASSERT_TRUE(refreshed.has_value());
  ASSERT_TRUE(refreshed->ok()) << refreshed->status();
  EXPECT_EQ((*refreshed)->state, PayoutState::kFailed);

  auto replay = Create(ValidRequest());
  ASSERT_TRUE(replay->has_value());
  ASSERT_TRUE((*replay)->ok()) << (*replay)->status();
  EXPECT_EQ((**replay)->state, PayoutState::kFailed);
  EXPECT_EQ(upstream_.posted, 2u) << "one payout call and one status call";
}

// An ACCEPTED payout settles through refreshes, which need AOPay's
// transaction id; one given by an operator must look like AOPay's.
TEST_F(PayoutServiceTest, ResolveToAcceptedNeedsAValidTransactionId) {
  auto created = Create(ValidRequest());
  upstream_.Answer(absl::UnknownError("connection reset"));
  const std::string id = ledger_.only().payout.payout_id;
  ASSERT_TRUE(ledger_.only().payout.transaction_id.empty());

  ResolveRequest request;
  request.payout_id = id;
  request.state = PayoutState::kAccepted;
  request.note = "AOPay support confirmed by phone";
  absl::StatusOr<Payout> resolved =
      Call(&PayoutService::Resolve, request, AnonymousClient());
  EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(GetErrorDetails(resolved.status()).violations.size(), 1u);
  EXPECT_EQ(GetErrorDetails(resolved.status()).violations[0].field,
            "transaction_id");
  EXPECT_EQ(ledger_.only().payout.state, PayoutState::kUnknown);

  request.transaction_id = std::string("TERF\x01\n", 6);
  resolved = Call(&PayoutService::Resolve, request, AnonymousClient());
  EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument);
  request.transaction_id = std::string(129, 'T');
  resolved = Call(&PayoutService::Resolve, request, AnonymousClient());
  EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument);

  request.transaction_id = "TERF555";
  resolved = Call(&PayoutService::Resolve, request, AnonymousClient());
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->state, PayoutState::kAccepted);
  EXPECT_EQ(resolved->transaction_id, "TERF555");
}

TEST_F(PayoutServiceTest, ResolveChecksItsInputAndTheTransition) {
  auto created = Create(ValidRequest());
  upstream_.Answer(absl::UnknownError("connection reset"));
  const std::string id = ledger_.only().payout.payout_id;

  ResolveRequest bad;
  bad.payout_id = id;
  bad.state = PayoutState::kPending;
  absl::StatusOr<Payout> refused =
      Call(&PayoutService::Resolve, bad, AnonymousClient());
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GetErrorDetails(refused.status()).violations.size(), 2u);

  ResolveRequest good;
  good.payout_id = id;
  good.state = PayoutState::kFailed;
  good.note = "bank confirmed it bounced";
  absl::StatusOr<Payout> resolved =
      Call(&PayoutService::Resolve, good, AnonymousClient());
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->state, PayoutState::kFailed);
  EXPECT_EQ(GetErrorDetails(resolved->failure).reason, "RESOLVED_BY_OPERATOR");
  EXPECT_THAT(ledger_.log.back(), HasSubstr("operator: bank confirmed"));

  // A replay now gets the payout as it stands, not the old OUTCOME_UNKNOWN.
  auto replay = Create(ValidRequest());
  ASSERT_TRUE(replay->has_value() && (*replay)->ok());
  EXPECT_EQ((**replay)->state, PayoutState::kFailed);

  absl::StatusOr<Payout> again =
      Call(&PayoutService::Resolve, good, AnonymousClient());
  EXPECT_EQ(GetErrorDetails(again.status()).reason, "INVALID_TRANSITION");
}

TEST_F(PayoutServiceTest, ListBoundsThePageSize) {
  std::optional<absl::StatusOr<ListPage>> page;
  ListQuery query;
  query.page_size = 0;
  service_->List(query, AnonymousClient(),
                 [&](absl::StatusOr<ListPage> p) { page = std::move(p); });
  EXPECT_EQ(ledger_.last_query->page_size, 50);
  query.page_size = 9000;
  service_->List(query, AnonymousClient(),
                 [&](absl::StatusOr<ListPage> p) { page = std::move(p); });
  EXPECT_EQ(ledger_.last_query->page_size, 500);
  query.page_size = -1;
  service_->List(query, AnonymousClient(),
                 [&](absl::StatusOr<ListPage> p) { page = std::move(p); });
  EXPECT_EQ(page->status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace aopay
