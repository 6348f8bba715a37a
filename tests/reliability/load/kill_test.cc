// The kill test: sustained load on a real payout-server and aopay-sandbox
// (a random latency per gateway life, scripted faults on a share of the
// accounts), the gateway SIGKILLed at random moments and restarted on the
// same SQLite ledger each time, callers retrying every request id until they
// get a final answer. Then the sandbox's journals are reconciled with the
// ledger, request id by request id: nothing sent twice, nothing sent and not
// recorded, nothing left PENDING, and every UNKNOWN payout explained.
//
// RELIABILITY_MODE=ci: 3 kills; long: 20. Knobs: RELIABILITY_KILLS,
// RELIABILITY_CALLERS, RELIABILITY_SEED. RELIABILITY_INJECT_DOUBLE_SEND=1
// sends one accepted payout to the sandbox again before the reconciliation,
// to show that the test then fails.

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <deque>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/errors.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"
#include "tests/reliability/load/load_support.h"

namespace aopay::testing::load {
namespace {

constexpr absl::Duration kCallTimeout = absl::Seconds(10);
// How long the callers may take, after the last restart, to get a final
// answer for every request id.
constexpr absl::Duration kDrainTimeout = absl::Seconds(120);
constexpr absl::string_view kNormalSuffix = "7301";

// The scripted answers of docs/sandbox.md mixed into the load, each on
// this share of the requests.
struct Fault {
  absl::string_view suffix;
  double share;
};
constexpr Fault kFaults[] = {
    {"0500", 0.04}, {"0502", 0.04}, {"0429", 0.04}, {"0422", 0.04}};

struct Config {
  int kills;
  int callers;
  absl::Duration min_life;  // a gateway lives this long ...
  absl::Duration max_life;  // ... to this long before its SIGKILL
  int max_latency_ms;       // sandbox latency, uniform in [0, this]
};

Config ForMode(Mode mode) {
  Config config;
  config.kills = static_cast<int>(
      EnvInt("RELIABILITY_KILLS", mode == Mode::kLong ? 20 : 3));
  config.callers = static_cast<int>(EnvInt("RELIABILITY_CALLERS", 24));
  config.min_life = absl::Milliseconds(800);
  config.max_life = mode == Mode::kLong ? absl::Seconds(8) : absl::Seconds(4);
  config.max_latency_ms = 300;
  return config;
}

absl::string_view PickSuffix(absl::BitGen& random) {
  double roll = absl::Uniform(random, 0.0, 1.0);
  for (const Fault& fault : kFaults) {
    if (roll < fault.share) return fault.suffix;
    roll -= fault.share;
  }
  return kNormalSuffix;
}

// One request id, owned by the caller thread that made it.
struct Tracked {
  v1::CreatePayoutRequest request;
  std::optional<Answer> final_answer;
  std::string last_error;
  int attempts = 0;
};

// The gateway under test, replaced by a new process on the same ledger after
// every kill. Thread-safe.
class RestartedGateway {
 public:
  RestartedGateway(std::string ledger, std::vector<std::string> flags)
      : ledger_(std::move(ledger)), flags_(std::move(flags)) {}

  // Starts a new gateway against `aopay_url`; false when it did not start.
  bool Start(const std::string& aopay_url) {
    auto gateway = std::make_shared<GatewayProcess>(aopay_url, ledger_, flags_);
    if (gateway->address().empty()) return false;
    absl::MutexLock lock(&mu_);
    current_ = std::move(gateway);
    ++generation_;
    return true;
  }

  // SIGKILLs the current gateway; callers wait until the next Start().
  void Kill() {
    std::shared_ptr<GatewayProcess> gateway;
    {
      absl::MutexLock lock(&mu_);
      gateway = std::move(current_);
    }
    if (gateway != nullptr) gateway->process().Signal(SIGKILL);
  }

  // SIGTERMs the current gateway and returns its wait status.
  int Stop() {
    std::shared_ptr<GatewayProcess> gateway;
    {
      absl::MutexLock lock(&mu_);
      gateway = std::move(current_);
    }
    return gateway == nullptr ? -1 : gateway->process().Signal(SIGTERM);
  }

  // The running gateway once its generation is at least `min_generation`;
  // nullptr when none comes within `timeout`.
  std::shared_ptr<GatewayProcess> Await(uint64_t min_generation,
                                        absl::Duration timeout,
                                        uint64_t* generation) {
    absl::MutexLock lock(&mu_);
    auto ready = [this, min_generation]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return current_ != nullptr && generation_ >= min_generation;
    };
    mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
    if (!ready()) return nullptr;
    *generation = generation_;
    return current_;
  }

  pid_t pid() {
    absl::MutexLock lock(&mu_);
    return current_ == nullptr ? -1 : current_->process().pid();
  }

 private:
  const std::string ledger_;
  const std::vector<std::string> flags_;
  absl::Mutex mu_;
  std::shared_ptr<GatewayProcess> current_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
};

// One caller: makes new request ids while `making_new` holds, and retries
// each one until it gets a final answer or `give_up` passes.
void RunCaller(int index, RestartedGateway& gateway,
               const std::atomic<bool>& making_new,
               const std::atomic<int64_t>& give_up_unix_ms,
               std::vector<Tracked>& mine, std::atomic<int64_t>& calls) {
  absl::BitGen random(std::seed_seq{RunSeed(), static_cast<uint64_t>(index)});
  std::deque<size_t> unanswered;
  uint64_t min_generation = 0;
  while (true) {
    size_t i;
    if (!unanswered.empty()) {
      i = unanswered.front();
      unanswered.pop_front();
    } else if (making_new.load()) {
      Tracked fresh;
      fresh.request = LoadRequest(PickSuffix(random), random);
      mine.push_back(std::move(fresh));
      i = mine.size() - 1;
    } else {
      return;
    }
    Tracked& tracked = mine[i];
    if (absl::ToUnixMillis(absl::Now()) > give_up_unix_ms.load()) {
      return;  // the rest are reported as without a final answer
    }
    uint64_t generation = 0;
    std::shared_ptr<GatewayProcess> current =
        gateway.Await(min_generation, absl::Seconds(1), &generation);
    if (current == nullptr) {
      unanswered.push_front(i);
      continue;
    }
    absl::StatusOr<v1::Payout> result =
        current->client().CreatePayout(tracked.request, kCallTimeout);
    ++tracked.attempts;
    ++calls;
    const Answer answer = Classify(result.status());
    if (answer != Answer::kRetry && answer != Answer::kOverloaded) {
      tracked.final_answer = answer;
      continue;
    }
    tracked.last_error = CodeAndReason(result.status());
    unanswered.push_back(i);
    if (result.status().code() == absl::StatusCode::kUnavailable &&
        GetErrorDetails(result.status()).reason.empty()) {
      // The gateway went away: wait for the next one.
      min_generation = generation + 1;
    } else {
      // Busy or in progress: back off as a real caller would.
      absl::SleepFor(absl::Milliseconds(absl::Uniform(random, 20, 100)));
    }
  }
}

TEST(KillTest, RandomKillsUnderLoadNeverSendTwiceNorLoseAPayout) {
  const Mode mode = CurrentMode();
  const Config config = ForMode(mode);
  absl::BitGen random(std::seed_seq{RunSeed()});
  const std::string ledger = MakeTempDir() + "/ledger.db";
  std::cout << "kill test (" << ModeName(mode) << "): " << config.kills
            << " kills, " << config.callers << " callers, ledger " << ledger
            << std::endl;

  // Small capacity, so that each kill finds payouts answered, in flight and
  // queued.
  RestartedGateway gateway(
      ledger, {"--max_inflight=16", "--max_queue=64", "--upstream_timeout=5s"});
  std::vector<std::unique_ptr<SandboxProcess>> sandboxes;
  auto start_life = [&](int life) {
    const int latency_ms = absl::Uniform(random, 0, config.max_latency_ms + 1);
    sandboxes.push_back(
        std::make_unique<SandboxProcess>(std::vector<std::string>{
            absl::StrCat("--latency=", latency_ms, "ms"), "--threads=96"}));
    if (sandboxes.back()->url().empty()) return false;
    const bool started = gateway.Start(sandboxes.back()->url());
    std::cout << "  life " << life << ": sandbox latency " << latency_ms
              << " ms, gateway pid " << gateway.pid() << std::endl;
    return started;
  };
  ASSERT_TRUE(start_life(0));

  std::atomic<bool> making_new{true};
  std::atomic<int64_t> calls{0};
  std::atomic<int64_t> give_up_unix_ms{std::numeric_limits<int64_t>::max()};
  std::vector<std::vector<Tracked>> tracked(config.callers);
  std::vector<std::thread> callers;
  for (int i = 0; i < config.callers; ++i) {
    callers.emplace_back(RunCaller, i, std::ref(gateway), std::cref(making_new),
                         std::cref(give_up_unix_ms), std::ref(tracked[i]),
                         std::ref(calls));
  }

  const absl::Time started = absl::Now();
  bool restarted = true;
  for (int kill = 1; kill <= config.kills && restarted; ++kill) {
    absl::SleepFor(absl::Milliseconds(
        absl::Uniform(random, absl::ToInt64Milliseconds(config.min_life),
                      absl::ToInt64Milliseconds(config.max_life))));
    gateway.Kill();
    std::vector<const SandboxProcess*> all;
    for (const auto& sandbox : sandboxes) all.push_back(sandbox.get());
    int reached = 0;
    for (const auto& [account, count] : PayoutSends(all)) reached += count;
    std::cout << "  kill " << kill << " at "
              << absl::FormatDuration(absl::Trunc(absl::Now() - started,
                                                  absl::Milliseconds(100)))
              << ": " << calls.load() << " calls so far, " << reached
              << " payout calls reached AOPay" << std::endl;
    restarted = start_life(kill);
  }
  // Keep the last gateway under load for a while, then let the callers
  // finish what they started.
  absl::SleepFor(config.min_life);
  give_up_unix_ms = absl::ToUnixMillis(absl::Now() + kDrainTimeout);
  making_new = false;
  for (std::thread& caller : callers) caller.join();
  ASSERT_TRUE(restarted) << "a restart failed";
  const int stop_status = gateway.Stop();
  EXPECT_TRUE(WIFEXITED(stop_status) && WEXITSTATUS(stop_status) == 0)
      << "the last gateway did not stop cleanly: " << stop_status;

  // Reconcile, request id by request id.
  std::vector<const SandboxProcess*> all;
  for (const auto& sandbox : sandboxes) all.push_back(sandbox.get());
  if (EnvInt("RELIABILITY_INJECT_DOUBLE_SEND", 0) == 1) {
    // A negative control: one accepted payout reaches AOPay again, and the
    // reconciliation below must report it.
    for (const std::vector<Tracked>& list : tracked) {
      auto accepted = std::find_if(list.begin(), list.end(), [](auto& t) {
        return t.final_answer == Answer::kAccepted;
      });
      if (accepted == list.end()) continue;
      const std::string& account =
          accepted->request.beneficiary().account_number();
      for (const auto& sandbox : sandboxes) {
        if (SendAgain(*sandbox, account).ok()) {
          std::cout << "  injected a double send of "
                    << accepted->request.request_id() << std::endl;
          break;
        }
      }
      break;
    }
  }
  std::map<std::string, int> sends = PayoutSends(all);
  absl::StatusOr<std::map<std::string, LedgerRow>> rows = ReadLedger(ledger);
  ASSERT_TRUE(rows.ok()) << rows.status();

  int request_ids = 0, double_sends = 0, missing = 0, pending = 0;
  int without_answer = 0, mismatches = 0, resent_429 = 0, foreign = 0;
  int sent_total = 0;
  std::map<Answer, int> answers;
  std::map<std::string, int> unknown_by_why;
  int unexplained = 0;
  std::map<std::string, const Tracked*> by_account;
  for (const std::vector<Tracked>& list : tracked) {
    for (const Tracked& t : list) {
      by_account[t.request.beneficiary().account_number()] = &t;
    }
  }
  for (const auto& [account, count] : sends) {
    sent_total += count;
    if (by_account.count(account) == 0) ++foreign;
  }
  for (const auto& [account, t] : by_account) {
    ++request_ids;
    const std::string suffix = SuffixOf(account);
    const int sent = sends.count(account) ? sends[account] : 0;
    auto row_it = rows->find(t->request.request_id());
    const LedgerRow* row = row_it == rows->end() ? nullptr : &row_it->second;
    if (!t->final_answer.has_value()) {
      ++without_answer;
      std::cout << "  no final answer: " << t->request.request_id() << " after "
                << t->attempts << " calls, last " << t->last_error << std::endl;
    } else {
      ++answers[*t->final_answer];
    }
    if (suffix == "0429") {
      // AOPay refused each of these without taking it: the caller may send
      // the request id again (docs/errors.md).
      if (sent > 1) ++resent_429;
    } else {
      if (sent > 1) {
        ++double_sends;
        std::cout << "  DOUBLE SEND: " << t->request.request_id() << " sent "
                  << sent << " times" << std::endl;
      }
      if (sent >= 1 && row == nullptr) {
        ++missing;
        std::cout << "  MISSING: " << t->request.request_id()
                  << " reached AOPay but has no ledger row" << std::endl;
      }
    }
    if (row != nullptr && row->account_number != account) ++mismatches;
    if (row != nullptr && row->state == kStatePending) ++pending;
    // What the caller was told matches the ledger.
    if (t->final_answer.has_value()) {
      bool agrees = false;
      switch (*t->final_answer) {
        case Answer::kAccepted:
          agrees =
              row != nullptr && sent == 1 &&
              (row->state == kStateAccepted || row->state == kStateSucceeded);
          break;
        case Answer::kFailed:
          agrees = row != nullptr && row->state == kStateFailed;
          break;
        case Answer::kUnknown:
          agrees = row != nullptr && row->state == kStateUnknown;
          break;
        case Answer::kNotSent:
          agrees = row == nullptr && suffix == "0429";
          break;
        default:
          break;
      }
      if (!agrees) {
        ++mismatches;
        std::cout << "  MISMATCH: " << t->request.request_id() << " told "
                  << AnswerName(*t->final_answer) << ", ledger state "
                  << (row ? row->state : 0) << ", sent " << sent << std::endl;
      }
    }
    if (row != nullptr && row->state == kStateUnknown) {
      std::string why;
      if (row->unknown_who == "recovery") {
        why = sent > 0 ? "killed while in flight (reached AOPay)"
                       : "killed while queued or before sending (never "
                         "reached AOPay)";
      } else if (row->unknown_who == "gateway" && suffix == "0500") {
        why = "scripted 0500 (HTTP 500)";
      } else if (row->unknown_who == "gateway" && suffix == "0502") {
        why = "scripted 0502 (connection closed without an answer)";
      } else {
        why = absl::StrCat("UNEXPLAINED (", row->unknown_who, ": ",
                           row->unknown_why, ")");
        ++unexplained;
        std::cout << "  UNEXPLAINED UNKNOWN: " << t->request.request_id()
                  << " account suffix " << suffix << ", sent " << sent
                  << ", event by " << row->unknown_who << ": "
                  << row->unknown_why << std::endl;
      }
      ++unknown_by_why[why];
    }
  }
  if (rows->size() > static_cast<size_t>(request_ids)) {
    mismatches += static_cast<int>(rows->size()) - request_ids;
  }

  std::cout << "kill test summary (" << ModeName(mode) << ", "
            << absl::FormatDuration(
                   absl::Trunc(absl::Now() - started, absl::Seconds(1)))
            << "): " << config.kills << " kills, " << request_ids
            << " request ids, " << calls.load() << " calls, " << sent_total
            << " payout calls reached AOPay, " << rows->size()
            << " ledger rows\n"
            << "  final answers: accepted " << answers[Answer::kAccepted]
            << ", failed " << answers[Answer::kFailed] << ", unknown "
            << answers[Answer::kUnknown] << ", not sent (429) "
            << answers[Answer::kNotSent] << "\n"
            << "  0429 request ids sent again after AOPay's 429 (allowed): "
            << resent_429 << "\n"
            << "  UNKNOWN payouts by explanation:\n";
  for (const auto& [why, count] : unknown_by_why) {
    std::cout << "    " << count << "  " << why << "\n";
  }
  std::cout << "  request ids without a final answer: " << without_answer
            << ", answer/ledger mismatches: " << mismatches
            << ", calls for accounts never requested: " << foreign << "\n"
            << "double sends: " << double_sends << ", missing: " << missing
            << ", pending: " << pending << std::endl;

  EXPECT_EQ(double_sends, 0);
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(pending, 0);
  EXPECT_EQ(unexplained, 0);
  EXPECT_EQ(without_answer, 0);
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(foreign, 0);
  EXPECT_GT(answers[Answer::kAccepted], 0);
}

}  // namespace
}  // namespace aopay::testing::load
