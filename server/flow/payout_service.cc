#include "server/flow/payout_service.h"

#include <algorithm>
#include <cctype>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/aopay_codec.h"
#include "common/errors.h"
#include "common/ids.h"
#include "common/redact.h"
#include "spdlog/spdlog.h"

namespace aopay {
namespace {

constexpr size_t kMaxNoteBytes = 2000;
// An operator's or approver's note, kept for audit: trimmed in place.
void CheckNote(std::string& note, bool required,
               std::vector<FieldViolation>& violations) {
  note = std::string(absl::StripAsciiWhitespace(note));
  if (note.empty() && required) {
    violations.push_back({"note", "is required and kept for audit"});
  } else if (note.size() > kMaxNoteBytes) {
    violations.push_back(
        {"note", absl::StrCat("must be at most ", kMaxNoteBytes, " bytes")});
  }
}

// Events a watcher reads from the ledger at once.
constexpr int kWatchPage = 256;

// How often one status answer is recorded against a payout that keeps
// moving between its read and its write (each move is a person's or another
// answer's, so a few tries settle it).
constexpr int kStatusAnswerAttempts = 3;

// Why an approval, a rejection or a cancel changed nothing when another of
// them changed the payout between its read and its write.
constexpr absl::string_view kCameFirst =
    "another approval, rejection or cancel came first";

// For fmt, which formats std::string_view without a copy.
std::string_view View(absl::string_view text) {
  return std::string_view(text.data(), text.size());
}

std::string LowerName(PayoutState state) {
  return absl::AsciiStrToLower(PayoutStateName(state));
}

absl::Status WithPayoutId(absl::Status status, const std::string& payout_id) {
  return WithErrorMetadata(std::move(status), meta::kPayoutId, payout_id);
}

std::optional<std::string> NonEmpty(const std::string& value) {
  if (value.empty()) return std::nullopt;
  return value;
}

// India Standard Time: UTC+05:30 all year (no daylight saving since 1945),
// so a fixed offset needs no time-zone database on the host.
constexpr int kIndiaUtcOffsetSeconds = 5 * 3600 + 30 * 60;

// The calendar day in India that `when` falls on, as [start, end).
void IndianDay(absl::Time when, absl::Time& start, absl::Time& end) {
  const absl::TimeZone india = absl::FixedTimeZone(kIndiaUtcOffsetSeconds);
  const absl::CivilDay day = absl::ToCivilDay(when, india);
  start = absl::FromCivil(day, india);
  end = absl::FromCivil(day + 1, india);
}

// Whether `caller` may see `payout`: its own, or every one with read_all.
bool Visible(const Client& caller, const Payout& payout) {
  return caller.ReadsAll() || payout.client == caller.name;
}

// Whether a watcher of `caller` that asked for `states` (empty: any) is
// shown the event: a payout it may see, moving into one of them.
bool Shown(const Client& caller, const std::vector<PayoutState>& states,
           const WatchedEvent& watched) {
  return Visible(caller, watched.payout) &&
         (states.empty() || std::find(states.begin(), states.end(),
                                      watched.event.to) != states.end());
}

// The events of `batch` Shown() to the watcher; the batch's `last` still
// moves past the others.
EventBatch ShownTo(const Client& caller, const std::vector<PayoutState>& states,
                   EventBatch batch) {
  std::vector<WatchedEvent> shown;
  for (WatchedEvent& watched : batch.events) {
    if (Shown(caller, states, watched)) shown.push_back(std::move(watched));
  }
  batch.events = std::move(shown);
  return batch;
}

// What a caller gets for a payout it may not see: the same NOT_FOUND as for
// one that does not exist.
absl::Status Hidden(const std::string& payout_id) {
  return NotFoundError(absl::StrCat("Payout ", payout_id));
}

// A ledger callback that hands the row's payout (or the error) to `done`;
// a payout `caller` may not see is NOT_FOUND.
Ledger::Callback<absl::StatusOr<StoredPayout>> PayoutOf(
    Client caller, PayoutService::Callback<absl::StatusOr<Payout>> done) {
  return [caller = std::move(caller),
          done = std::move(done)](absl::StatusOr<StoredPayout> stored) {
    if (!stored.ok()) {
      done(stored.status());
    } else if (!Visible(caller, stored->payout)) {
      done(Hidden(stored->payout.payout_id));
    } else {
      done(std::move(stored->payout));
    }
  };
}

// PayoutOf for a change to recorded payout `payout_id`: its errors carry
// the payout's id (docs/errors.md), but for NOT_FOUND.
Ledger::Callback<absl::StatusOr<StoredPayout>> RecordedPayoutOf(
    std::string payout_id,
    PayoutService::Callback<absl::StatusOr<Payout>> done) {
  return [payout_id = std::move(payout_id),
          done = std::move(done)](absl::StatusOr<StoredPayout> stored) {
    if (!stored.ok() && stored.status().code() != absl::StatusCode::kNotFound) {
      done(WithPayoutId(stored.status(), payout_id));
      return;
    }
    PayoutOf(AnonymousClient(), done)(std::move(stored));
  };
}

}  // namespace

PayoutService::PayoutService(Ledger& ledger, UpstreamClient& upstream,
                             Timer& timer, Metrics& metrics,
                             PayoutServiceOptions options, Clock clock)
    : ledger_(ledger),
      upstream_(upstream),
      timer_(timer),
      metrics_(metrics),
      options_(std::move(options)),
      clock_(std::move(clock)) {}

PayoutService::~PayoutService() { watch_thread_.Stop(); }

absl::Status PayoutService::Begin(Work work,
                                  Callback<absl::StatusOr<Payout>>& done) {
  {
    // Under mu_ with the count, so that WaitIdle() cannot return between the
    // check and the increment.
    absl::MutexLock lock(&mu_);
    if (draining_.load()) return ShuttingDownError();
    if (work == Work::kCreate &&
        outstanding_ + unrecorded_.size() >= options_.max_outstanding) {
      return OverloadedError(options_.retry_delay);
    }
    if (work == Work::kRefresh && refreshing_ >= options_.max_refreshes) {
      return OverloadedError(options_.retry_delay);
    }
    ++outstanding_;
    if (work == Work::kRefresh) ++refreshing_;
    if (options_.calls_in_flight != nullptr) ++*options_.calls_in_flight;
  }
  done = [this, work, inner = std::move(done)](absl::StatusOr<Payout> result) {
    // Before the answer: the caller's next call may arrive before inner()
    // returns, and this one writes nothing more.
    if (options_.calls_in_flight != nullptr) --*options_.calls_in_flight;
    inner(std::move(result));
    absl::MutexLock lock(&mu_);
    --outstanding_;
    if (work == Work::kRefresh) --refreshing_;
  };
  return absl::OkStatus();
}

template <typename OnAnswer>
void PayoutService::PostUncounted(UpstreamRequest call, OnAnswer on_answer) {
  std::atomic<size_t>* const calls = options_.calls_in_flight;
  if (calls != nullptr) --*calls;
  upstream_.Post(std::move(call),
                 [calls, on_answer = std::move(on_answer)](
                     absl::StatusOr<HttpAnswer> answer) mutable {
                   if (calls != nullptr) ++*calls;
                   on_answer(std::move(answer));
                 });
}

void PayoutService::Drain() {
  {
    absl::MutexLock lock(&mu_);
    draining_.store(true);
  }
  // Watchers waiting for events wake, read, and end as SHUTTING_DOWN.
  events_.Close();
}

size_t PayoutService::WaitIdle(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](size_t* outstanding) { return *outstanding == 0; }, &outstanding_));
  mu_.AwaitWithDeadline(
      absl::Condition(
          +[](std::map<std::string, std::string>* unrecorded) {
            return unrecorded->empty();
          },
          &unrecorded_),
      deadline);
  for (const auto& [payout_id, what] : unrecorded_) {
    spdlog::error(
        "payout {}: {} was not recorded before shutdown; after the restart "
        "it is UNKNOWN and an operator can resolve it",
        payout_id, what);
  }
  return unrecorded_.size();
}

size_t PayoutService::Unrecorded() const {
  absl::MutexLock lock(&mu_);
  return unrecorded_.size();
}

std::string PayoutService::Scrub(absl::string_view text) const {
  return ScrubRegistration(text, options_.registration_id);
}

absl::Status PayoutService::Scrub(const absl::Status& status) const {
  return EditErrorText(status, [this](absl::string_view text) {
    return ScrubRegistration(text, options_.registration_id);
  });
}

void PayoutService::CountOutcome(TransferMode mode, absl::string_view outcome) {
  metrics_.payouts.Increment(
      {std::string(TransferModeName(mode)), std::string(outcome)});
}

// One line per payout, so kept cheap: no copies of what it prints, and the
// error's details are read only for an error.
void PayoutService::LogOutcome(const Payout& payout, absl::Time started,
                               const absl::Status& error) {
  std::string_view reason = "-";
  std::string_view sub_code = "-";
  ErrorDetails details;
  if (!error.ok()) {
    details = GetErrorDetails(error);
    if (!details.reason.empty()) reason = details.reason;
    auto found = details.metadata.find(std::string(meta::kUpstreamSubCode));
    if (found != details.metadata.end()) sub_code = found->second;
  }
  const bool recorded = !payout.payout_id.empty();
  const std::string code = absl::StatusCodeToString(error.code());
  metrics_.client_payouts.Increment({payout.client, code});
  spdlog::info(
      "payout outcome payout_id={} request_id={} client={} state={} "
      "duration_ms={} account={} mode={} code={} reason={} "
      "upstream_sub_code={}",
      recorded ? std::string_view(payout.payout_id) : "-",
      std::string_view(payout.request_id),
      payout.client.empty() ? std::string_view("-")
                            : std::string_view(payout.client),
      recorded ? View(PayoutStateName(payout.state)) : "NOT_RECORDED",
      absl::ToInt64Milliseconds(clock_() - started),
      MaskAccount(payout.beneficiary.account_number),
      View(TransferModeName(payout.mode)), code, reason, sub_code);
}

void PayoutService::Apply(PayoutChange change, const char* op,
                          Ledger::Callback<absl::StatusOr<StoredPayout>> done) {
  const absl::Time submitted = clock_();
  ledger_.Apply(
      std::move(change), [this, op, submitted, done = std::move(done)](
                             absl::StatusOr<StoredPayout> applied) {
        metrics_.ledger_write_duration.Observe({op}, clock_() - submitted);
        if (applied.ok()) events_.Poke();
        done(std::move(applied));
      });
}

void PayoutService::Create(PayoutRequest request, Client caller,
                           Callback<absl::StatusOr<Payout>> done) {
  const absl::Time started = clock_();
  absl::StatusOr<PayoutRequest> normalized =
      NormalizeAndValidate(request, options_.limits);
  if (!normalized.ok()) {
    CountOutcome(request.mode, "invalid");
    done(normalized.status());
    return;
  }
  // The client's limits are checked by the ledger, in the order of its
  // writes and after the request id (Ledger::Insert).
  if (absl::Status admitted = Begin(Work::kCreate, done); !admitted.ok()) {
    const char* outcome = draining_.load() ? "not_sent" : "overloaded";
    RefuseUnlessReplay(*std::move(normalized), std::move(caller.name),
                       std::move(admitted), outcome, std::move(done));
    return;
  }

  Payout payout;
  payout.payout_id = NewPayoutId(started);
  payout.request_id = normalized->request_id;
  // Above the client's approval threshold: recorded, held, not sent.
  const bool held = caller.approval_above_paise.has_value() &&
                    normalized->amount_paise > *caller.approval_above_paise;
  payout.state = held ? PayoutState::kAwaitingApproval : PayoutState::kPending;
  payout.beneficiary = normalized->beneficiary;
  payout.metadata = normalized->metadata;
  payout.amount_paise = normalized->amount_paise;
  payout.mode = normalized->mode;
  payout.create_time = started;
  payout.update_time = started;
  payout.client = std::move(caller.name);

  // The ledger keeps a copy; the callback keeps this one. The fingerprint is
  // needed again only for a replay, which recomputes it.
  InsertRequest insert;
  insert.payout = payout;
  insert.fingerprint = RequestFingerprint(*normalized);
  insert.max_payout_paise = caller.max_payout_paise;
  if (caller.daily_paise.has_value()) {
    insert.daily_limit = DailyLimit{*caller.daily_paise, {}, {}};
    IndianDay(started, insert.daily_limit->day_start,
              insert.daily_limit->day_end);
  }
  const absl::Time submitted = clock_();
  ledger_.Insert(
      std::move(insert),
      [this, request = *std::move(normalized), payout = std::move(payout),
       started, submitted,
       limits = Limits{caller.max_payout_paise, caller.daily_paise},
       done = std::move(done)](absl::StatusOr<InsertResult> inserted) mutable {
        metrics_.ledger_write_duration.Observe({"insert"},
                                               clock_() - submitted);
        if (inserted.ok() && inserted->inserted) events_.Poke();
        OnInserted(std::move(request), std::move(payout), started, limits,
                   std::move(inserted), std::move(done));
      });
}

void PayoutService::RefuseUnlessReplay(PayoutRequest request,
                                       std::string client, absl::Status refusal,
                                       const char* outcome,
                                       Callback<absl::StatusOr<Payout>> done) {
  std::string request_id = request.request_id;
  ledger_.GetByRequestId(
      std::move(client), std::move(request_id),
      [this, request = std::move(request), refusal = std::move(refusal),
       outcome,
       done = std::move(done)](absl::StatusOr<StoredPayout> stored) mutable {
        if (stored.ok()) {
          done(Replay(*stored, RequestFingerprint(request)));
          return;
        }
        if (stored.status().code() != absl::StatusCode::kNotFound) {
          done(stored.status());
          return;
        }
        CountOutcome(request.mode, outcome);
        done(std::move(refusal));
      });
}

void PayoutService::OnInserted(PayoutRequest request, Payout payout,
                               absl::Time started, Limits limits,
                               absl::StatusOr<InsertResult> inserted,
                               Callback<absl::StatusOr<Payout>> done) {
  if (!inserted.ok()) {
    CountOutcome(payout.mode, "ledger_unavailable");
    spdlog::error("payout not recorded, nothing sent: request_id={} error={}",
                  payout.request_id, inserted.status().ToString());
    done(inserted.status());
    return;
  }
  if (inserted->over_max_payout || inserted->over_daily_limit) {
    CountOutcome(payout.mode, "client_limit");
    absl::Status error =
        inserted->over_max_payout
            ? ClientLimitExceededError("max_payout_paise",
                                       limits.max_payout_paise.value_or(0))
            : ClientLimitExceededError(
                  "daily_paise",
                  limits.daily_paise.value_or(0) - inserted->spent_paise);
    payout.payout_id.clear();  // not recorded
    LogOutcome(payout, started, error);
    done(std::move(error));
    return;
  }
  if (!inserted->inserted) {
    absl::StatusOr<Payout> replay =
        Replay(inserted->existing, RequestFingerprint(request));
    const ErrorDetails details = GetErrorDetails(replay.status());
    CountOutcome(payout.mode,
                 details.reason == reason::kRequestIdReused     ? "reused"
                 : details.reason == reason::kRequestInProgress ? "in_progress"
                                                                : "replayed");
    done(std::move(replay));
    return;
  }

  if (payout.state == PayoutState::kAwaitingApproval) {
    CountOutcome(payout.mode, "awaiting_approval");
    LogOutcome(payout, started, absl::OkStatus());
    done(std::move(payout));
    return;
  }
  Send(request, std::move(payout), started, Sender::kCreate, std::move(done));
}

void PayoutService::Send(const PayoutRequest& request, Payout payout,
                         absl::Time started, Sender sender,
                         Callback<absl::StatusOr<Payout>> done) {
  UpstreamRequest call;
  call.path = std::string(kPayoutPath);
  call.body = BuildPayoutBody(request, options_.registration_id);
  call.idempotent = false;
  const absl::Time call_started = clock_();
  PostUncounted(
      std::move(call),
      [this, payout = std::move(payout), started, call_started, sender,
       done = std::move(done)](absl::StatusOr<HttpAnswer> answer) mutable {
        metrics_.upstream_duration.Observe({"payout"}, clock_() - call_started);
        OnPayoutAnswer(std::move(payout), started, sender, std::move(answer),
                       std::move(done));
      });
}

void PayoutService::OnPayoutAnswer(Payout payout, absl::Time started,
                                   Sender sender,
                                   absl::StatusOr<HttpAnswer> answer,
                                   Callback<absl::StatusOr<Payout>> done) {
  metrics_.upstream_calls.Increment(
      {"payout", answer.ok() ? absl::StrCat(answer->http_status) : "none"});
  if (!answer.ok()) {
    // The transport's own words (TLS, DNS, connect), for the operator; the
    // caller's error leaves them out. They hold no personal data.
    spdlog::warn("AOPay call for payout {} got no answer: {}", payout.payout_id,
                 Scrub(answer.status().message()));
  } else if (!answer->cut_off_by.empty()) {
    spdlog::warn("AOPay's answer for payout {} was cut off: {}",
                 payout.payout_id, Scrub(answer->cut_off_by));
  }
  PayoutVerdict verdict = answer.ok()
                              ? InterpretPayoutAnswer(*answer)
                              : InterpretTransportFailure(answer.status());
  verdict.error = Scrub(verdict.error);

  if (verdict.kind == PayoutVerdict::Kind::kNotSent &&
      sender == Sender::kApproval) {
    // An approved payout that certainly did not leave waits for approval
    // again (rather than vanishing with the approval), so that it can be
    // approved again once AOPay can be reached.
    PayoutChange back;
    back.payout_id = payout.payout_id;
    back.expected_state = PayoutState::kPending;
    // This approval's PENDING, not a later one's: written again after a
    // commit that got no answer, this change must not send a payout that
    // was approved again meanwhile back to approval while AOPay has it.
    back.expected_update_time = payout.update_time;
    back.new_state = PayoutState::kAwaitingApproval;
    back.why = "not sent: AOPay could not be reached; awaiting approval again";
    back.who = "gateway";
    back.time = clock_();
    RecordOutcome(
        std::move(back),
        [this, payout, started, error = std::move(verdict.error),
         done = std::move(done)](absl::StatusOr<StoredPayout> applied) {
          CountOutcome(payout.mode, "not_sent");
          LogOutcome(payout, started, error);
          done(applied.ok() ? WithPayoutId(error, payout.payout_id)
                            : RequestInProgressError(payout.payout_id,
                                                     options_.retry_delay));
        },
        [](absl::StatusOr<StoredPayout>) {});
    return;
  }
  if (verdict.kind == PayoutVerdict::Kind::kNotSent) {
    ledger_.Forget(
        payout.payout_id,
        [this, payout, started, error = std::move(verdict.error),
         done = std::move(done)](absl::Status forgotten) mutable {
          CountOutcome(payout.mode, "not_sent");
          Payout unrecorded = payout;
          unrecorded.payout_id.clear();
          LogOutcome(unrecorded, started, error);
          if (forgotten.ok()) {
            done(std::move(error));
            return;
          }
          // Never sent, but the key is still taken: the caller hears only
          // what the ledger holds (in progress) until the delete succeeds.
          spdlog::error(
              "payout {} was not sent but its intent could not be removed "
              "yet: {}; retrying",
              payout.payout_id, forgotten.ToString());
          ForgetUntilDone(payout.payout_id, options_.outcome_retry_initial);
          done(RequestInProgressError(payout.payout_id, options_.retry_delay));
        });
    return;
  }

  PayoutChange change;
  change.payout_id = payout.payout_id;
  change.expected_state = PayoutState::kPending;
  change.expected_update_time = payout.update_time;  // this attempt's
  change.transaction_id = NonEmpty(verdict.transaction_id);
  change.transaction_reference_no =
      NonEmpty(Scrub(verdict.transaction_reference_no));
  change.upstream_status = NonEmpty(Scrub(verdict.upstream_status));
  change.bank_beneficiary_name = NonEmpty(Scrub(verdict.bank_beneficiary_name));
  if (answer.ok()) {
    change.raw_answer = std::move(answer->body);  // the ledger scrubs it
    change.answer_kind = PayoutChange::AnswerKind::kPayout;
  }
  change.who = "gateway";
  change.time = clock_();

  absl::Status error;
  switch (verdict.kind) {
    case PayoutVerdict::Kind::kAccepted:
      change.new_state = verdict.state;
      change.response = absl::OkStatus();
      change.why = "AOPay accepted the payout";
      break;
    case PayoutVerdict::Kind::kRejected:
      error = WithPayoutId(std::move(verdict.error), payout.payout_id);
      change.new_state = PayoutState::kFailed;
      change.failure = error;
      change.response = error;
      change.why = "AOPay refused the payout";
      break;
    default:
      error = WithPayoutId(std::move(verdict.error), payout.payout_id);
      change.new_state = PayoutState::kUnknown;
      change.response = error;
      change.why =
          "no usable answer from AOPay; the payout may have been sent and "
          "will not be re-sent";
      break;
  }

  const TransferMode mode = payout.mode;
  RecordOutcome(
      std::move(change),
      [this, payout = std::move(payout), started, error = std::move(error),
       done = std::move(done)](absl::StatusOr<StoredPayout> applied) {
        if (!applied.ok()) {
          // The ledger still holds the payout PENDING: the caller hears
          // "in progress", and a retry of its request id gets the outcome
          // once it is recorded.
          CountOutcome(payout.mode, "unrecorded");
          LogOutcome(payout, started, applied.status());
          done(RequestInProgressError(payout.payout_id, options_.retry_delay));
          return;
        }
        const Payout& now = applied->payout;
        CountOutcome(now.mode, LowerName(now.state));
        LogOutcome(now, started, error);
        if (error.ok()) {
          done(now);
        } else {
          done(error);
        }
      },
      [this, mode](absl::StatusOr<StoredPayout> applied) {
        if (applied.ok()) {
          CountOutcome(mode, LowerName(applied->payout.state));
          spdlog::info("payout {} outcome {} recorded after retries",
                       applied->payout.payout_id,
                       std::string(PayoutStateName(applied->payout.state)));
        }
      });
}

void PayoutService::ApplyOutcome(PayoutChange change, OutcomeDone done) {
  // The ledger consumes what it applies: this copy is the one handed back.
  PayoutChange kept = change;
  Apply(std::move(change), "outcome",
        [this, kept = std::move(kept),
         done = std::move(done)](absl::StatusOr<StoredPayout> applied) mutable {
          if (applied.ok() ||
              applied.status().code() != absl::StatusCode::kAborted ||
              kept.expected_state != PayoutState::kPending) {
            done(std::move(applied), std::move(kept));
            return;
          }
          ApplyFromUnknown(std::move(kept), applied.status(), std::move(done));
        });
}

void PayoutService::ApplyFromUnknown(PayoutChange change, absl::Status aborted,
                                     OutcomeDone done) {
  const std::string payout_id = change.payout_id;
  ledger_.GetByPayoutId(
      payout_id,
      [this, change = std::move(change), aborted = std::move(aborted),
       done = std::move(done)](absl::StatusOr<StoredPayout> stored) mutable {
        if (!stored.ok()) {
          // A read that failed is that failure (UNAVAILABLE keeps the
          // outcome in memory and tries again).
          done(stored.status(), std::move(change));
          return;
        }
        const Payout& now = stored->payout;
        const bool says_more =
            now.state == PayoutState::kUnknown &&
            (StatusMayMove(PayoutState::kUnknown, change.new_state) ||
             (change.new_state == PayoutState::kUnknown &&
              change.transaction_id.has_value() && now.transaction_id.empty()));
        if (!says_more) {
          if (change.new_state == PayoutState::kAwaitingApproval &&
              now.state == PayoutState::kPending) {
            // Back to approval after a call that did not leave, superseded
            // by a later approval (being sent): no AOPay answer is lost.
            spdlog::info(
                "payout {}: not sent back to approval, it was approved again",
                change.payout_id);
          } else if (change.new_state == PayoutState::kAwaitingApproval) {
            // Certainly not sent, but turned UNKNOWN (a takeover) meanwhile:
            // only this line says so (docs/scale-out.md).
            spdlog::error(
                "payout {} was certainly not sent (AOPay could not be "
                "reached) but is {} since; resolve it FAILED",
                change.payout_id, std::string(PayoutStateName(now.state)));
          } else {
            UnappliedAnswer(now, change);
          }
          done(std::move(aborted), std::move(change));
          return;
        }
        spdlog::warn(
            "payout {}: AOPay's answer came after the payout had been "
            "turned UNKNOWN (its replica's lease had ended); recording it "
            "from UNKNOWN",
            change.payout_id);
        PayoutChange late = change;
        late.expected_state = PayoutState::kUnknown;
        late.expected_update_time.reset();  // the sweep moved it
        late.why = absl::StrCat(late.why,
                                "; AOPay's answer, recorded after the payout "
                                "had been turned UNKNOWN");
        Apply(std::move(late), "outcome",
              [this, change = std::move(change), done = std::move(done)](
                  absl::StatusOr<StoredPayout> applied) mutable {
                if (applied.ok() ||
                    applied.status().code() != absl::StatusCode::kAborted) {
                  done(std::move(applied), std::move(change));
                  return;
                }
                // Settled by an operator between the read and this write:
                // read again, and log what AOPay said.
                ApplyFromUnknown(std::move(change), applied.status(),
                                 std::move(done));
              });
      });
}

void PayoutService::UnappliedAnswer(const Payout& now,
                                    const PayoutChange& answer) {
  const bool moved = answer.new_state == PayoutState::kAccepted ||
                     answer.new_state == PayoutState::kSucceeded;
  const bool not_paid =
      now.state == PayoutState::kFailed || now.state == PayoutState::kCancelled;
  if (moved && not_paid) {
    // The caller may have paid again on the word FAILED: someone must look.
    metrics_.status_contradictions.Increment(
        {LowerName(now.state), LowerName(answer.new_state)});
  }
  spdlog::error(
      "payout {}: AOPay's answer came after the payout was settled as {}; "
      "its outcome {} was not applied (transaction_id={} reference={} "
      "status={}){}",
      now.payout_id, std::string(PayoutStateName(now.state)),
      std::string(PayoutStateName(answer.new_state)),
      answer.transaction_id.value_or("-"),
      answer.transaction_reference_no.value_or("-"),
      answer.upstream_status.value_or("-"),
      moved && not_paid ? "; the money may have moved, check with AOPay" : "");
}

std::string PayoutService::OutcomeText(const PayoutChange& change) {
  return absl::StrCat(
      "outcome ", PayoutStateName(change.new_state),
      " (AOPay transaction_id=", change.transaction_id.value_or("-"),
      " reference=", change.transaction_reference_no.value_or("-"), ")");
}

void PayoutService::LogUnrecordable(const PayoutChange& change,
                                    const absl::Status& error) {
  spdlog::error(
      "payout {}: {} could not be recorded: {}; not written again: the "
      "payout stays PENDING until a restart turns it UNKNOWN, then settle it "
      "with ResolvePayout once AOPay confirms this outcome",
      change.payout_id, OutcomeText(change), error.ToString());
}

void PayoutService::RecordOutcome(
    PayoutChange change, Ledger::Callback<absl::StatusOr<StoredPayout>> first,
    Ledger::Callback<absl::StatusOr<StoredPayout>> later) {
  ApplyOutcome(
      std::move(change),
      [this, first = std::move(first), later = std::move(later)](
          absl::StatusOr<StoredPayout> applied, PayoutChange again) mutable {
        if (applied.ok() ||
            applied.status().code() != absl::StatusCode::kUnavailable) {
          // ABORTED: the payout had moved on; ApplyOutcome has dealt with
          // it. Any other refusal is for good, and AOPay's ids are then
          // only in this line.
          if (!applied.ok() &&
              applied.status().code() != absl::StatusCode::kAborted) {
            LogUnrecordable(again, applied.status());
          }
          first(std::move(applied));
          return;
        }
        const std::string payout_id = again.payout_id;
        const std::string what = OutcomeText(again);
        spdlog::error(
            "payout {}: {} could not be recorded: {}; kept in memory and "
            "written again until recorded",
            payout_id, what, applied.status().ToString());
        {
          absl::MutexLock lock(&mu_);
          unrecorded_[payout_id] = what;
        }
        first(applied.status());
        RetryOutcome(std::move(again), options_.outcome_retry_initial,
                     std::move(later));
      });
}

void PayoutService::RetryOutcome(
    PayoutChange change, absl::Duration delay,
    Ledger::Callback<absl::StatusOr<StoredPayout>> later) {
  timer_.RunAfter(delay, [this, change = std::move(change), delay,
                          later = std::move(later)]() mutable {
    ApplyOutcome(std::move(change), [this, delay, later = std::move(later)](
                                        absl::StatusOr<StoredPayout> applied,
                                        PayoutChange again) mutable {
      if (!applied.ok() &&
          applied.status().code() == absl::StatusCode::kUnavailable) {
        RetryOutcome(std::move(again),
                     std::min(delay * 2, options_.outcome_retry_max),
                     std::move(later));
        return;
      }
      if (!applied.ok() &&
          applied.status().code() != absl::StatusCode::kAborted) {
        LogUnrecordable(again, applied.status());
      }
      {
        absl::MutexLock lock(&mu_);
        unrecorded_.erase(again.payout_id);
      }
      later(std::move(applied));
    });
  });
}

void PayoutService::ForgetUntilDone(std::string payout_id,
                                    absl::Duration delay) {
  {
    absl::MutexLock lock(&mu_);
    unrecorded_[payout_id] = "a payout that was not sent";
  }
  timer_.RunAfter(delay, [this, payout_id = std::move(payout_id), delay] {
    ledger_.Forget(payout_id, [this, payout_id, delay](absl::Status forgotten) {
      if (forgotten.code() == absl::StatusCode::kUnavailable) {
        ForgetUntilDone(payout_id,
                        std::min(delay * 2, options_.outcome_retry_max));
        return;
      }
      if (!forgotten.ok()) {
        spdlog::error("payout {}: its intent could not be removed: {}",
                      payout_id, forgotten.ToString());
      }
      absl::MutexLock lock(&mu_);
      unrecorded_.erase(payout_id);
    });
  });
}

absl::StatusOr<Payout> PayoutService::Replay(const StoredPayout& stored,
                                             const std::string& fingerprint) {
  const Payout& payout = stored.payout;
  if (stored.fingerprint != fingerprint) {
    return RequestIdReusedError(payout.payout_id);
  }
  if (payout.state == PayoutState::kPending) {
    return RequestInProgressError(payout.payout_id, options_.retry_delay);
  }
  if (!stored.response.ok()) return stored.response;
  return payout;
}

void PayoutService::GetByPayoutId(std::string payout_id, Client caller,
                                  Callback<absl::StatusOr<Payout>> done) {
  if (payout_id.empty()) {
    done(InvalidRequestError({{"payout_id", "is required"}}));
    return;
  }
  ledger_.GetByPayoutId(std::move(payout_id),
                        PayoutOf(std::move(caller), std::move(done)));
}

void PayoutService::GetByRequestId(std::string request_id, Client caller,
                                   Callback<absl::StatusOr<Payout>> done) {
  if (request_id.empty()) {
    done(InvalidRequestError({{"request_id", "is required"}}));
    return;
  }
  std::string client = caller.name;
  ledger_.GetByRequestId(std::move(client), std::move(request_id),
                         PayoutOf(std::move(caller), std::move(done)));
}

void PayoutService::List(ListQuery query, Client caller,
                         Callback<absl::StatusOr<ListPage>> done) {
  std::vector<FieldViolation> violations;
  if (query.page_size < 0) {
    violations.push_back({"page_size", "must not be negative"});
  }
  for (PayoutState state : query.states) {
    if (state == PayoutState::kUnspecified) {
      violations.push_back({"states", "must name known payout states"});
      break;
    }
  }
  if (!violations.empty()) {
    done(InvalidRequestError(std::move(violations)));
    return;
  }
  if (query.page_size == 0) query.page_size = kDefaultPageSize;
  query.page_size = std::min(query.page_size, kMaxPageSize);
  if (!caller.ReadsAll()) query.client = std::move(caller.name);
  ledger_.List(std::move(query), std::move(done));
}

void PayoutService::Refresh(std::string payout_id, Client caller,
                            Callback<absl::StatusOr<Payout>> done) {
  std::string who = caller.name.empty()
                        ? std::string("refresh")
                        : absl::StrCat("refresh by ", caller.name);
  RefreshAs(std::move(payout_id), std::move(who), std::move(caller),
            std::move(done));
}

void PayoutService::Reconcile(std::string payout_id,
                              Callback<absl::StatusOr<Payout>> done) {
  RefreshAs(std::move(payout_id), "reconciler", std::nullopt, std::move(done));
}

void PayoutService::RefreshAs(std::string payout_id, std::string who,
                              std::optional<Client> caller,
                              Callback<absl::StatusOr<Payout>> done) {
  if (payout_id.empty()) {
    done(InvalidRequestError({{"payout_id", "is required"}}));
    return;
  }
  if (absl::Status admitted = Begin(Work::kRefresh, done); !admitted.ok()) {
    done(std::move(admitted));
    return;
  }
  ledger_.GetByPayoutId(
      std::move(payout_id),
      [this, who = std::move(who), caller = std::move(caller),
       done = std::move(done)](absl::StatusOr<StoredPayout> stored) mutable {
        if (!stored.ok()) {
          done(stored.status());
          return;
        }
        if (caller.has_value() && !Visible(*caller, stored->payout)) {
          done(Hidden(stored->payout.payout_id));
          return;
        }
        if (stored->payout.transaction_id.empty()) {
          done(NoTransactionIdError(stored->payout.payout_id));
          return;
        }
        UpstreamRequest call;
        call.path = std::string(kStatusPath);
        call.body = BuildStatusBody(stored->payout.transaction_id,
                                    options_.registration_id);
        call.idempotent = true;
        const absl::Time call_started = clock_();
        PostUncounted(std::move(call),
                      [this, stored = *std::move(stored), who = std::move(who),
                       call_started, done = std::move(done)](
                          absl::StatusOr<HttpAnswer> answer) mutable {
                        metrics_.upstream_duration.Observe(
                            {"status"}, clock_() - call_started);
                        OnStatusAnswer(std::move(stored), std::move(who),
                                       std::move(answer), std::move(done));
                      });
      });
}

void PayoutService::OnStatusAnswer(StoredPayout stored, std::string who,
                                   absl::StatusOr<HttpAnswer> answer,
                                   Callback<absl::StatusOr<Payout>> done) {
  metrics_.upstream_calls.Increment(
      {"status", answer.ok() ? absl::StrCat(answer->http_status) : "none"});
  if (!answer.ok()) {
    done(WithPayoutId(StatusEndpointUnavailableError(),
                      stored.payout.payout_id));
    return;
  }
  if (!answer->cut_off_by.empty()) {
    // Not a whole answer: nothing to read, and not one AOPay's format made
    // unreadable (the not-understood counter is for those).
    spdlog::warn("AOPay's status answer for payout {} was cut off: {}",
                 stored.payout.payout_id, Scrub(answer->cut_off_by));
    done(WithPayoutId(StatusEndpointUnavailableError(),
                      stored.payout.payout_id));
    return;
  }
  std::string asked = stored.payout.transaction_id;
  ApplyStatusAnswer(std::move(stored), std::move(who), *std::move(answer),
                    std::move(asked), /*attempt=*/1, std::move(done));
}

void PayoutService::ApplyStatusAnswer(StoredPayout stored, std::string who,
                                      HttpAnswer answer, std::string asked,
                                      int attempt,
                                      Callback<absl::StatusOr<Payout>> done) {
  const Payout& payout = stored.payout;
  if (payout.transaction_id != asked) {
    // An operator gave the payout another transaction id while AOPay was
    // asked about this one: the answer is not this payout's any more.
    spdlog::warn(
        "status answer for transaction {} not applied: payout {} was given "
        "transaction {} meanwhile",
        asked, payout.payout_id, payout.transaction_id);
    done(std::move(stored.payout));
    return;
  }
  const StatusVerdict verdict = InterpretStatusAnswer(answer, asked);

  PayoutChange change;
  change.payout_id = payout.payout_id;
  change.expected_state = payout.state;
  // The row as it was read: a change made meanwhile (a resolve, another
  // answer) sends this answer back to be read against it.
  change.expected_update_time = payout.update_time;
  change.new_state = payout.state;
  change.raw_answer = answer.body;  // the ledger scrubs it
  change.answer_kind = PayoutChange::AnswerKind::kStatus;
  change.who = who;
  change.time = clock_();

  if (!verdict.state.has_value()) {
    if (attempt == 1) {
      metrics_.status_not_understood.Increment({});
      spdlog::warn(
          "status answer not understood, nothing changed: payout_id={} "
          "http_status={} bytes={}",
          payout.payout_id, answer.http_status, answer.body.size());
    }
    change.why = "AOPay's status answer was not understood; nothing changed";
  } else if (*verdict.state == payout.state) {
    change.upstream_status = verdict.word;
    change.why = absl::StrCat("AOPay reports ", verdict.word, "; no change");
  } else if (StatusMayMove(payout.state, *verdict.state)) {
    change.new_state = *verdict.state;
    change.upstream_status = verdict.word;
    if (*verdict.state == PayoutState::kFailed) {
      change.failure = ReportedFailureError(payout.payout_id);
    }
    // A payout whose first answer was lost now has a known outcome: retries
    // of its request id get the payout as it stands.
    if (payout.state == PayoutState::kUnknown) {
      change.response = absl::OkStatus();
    }
    change.why = absl::StrCat("AOPay's status endpoint reports ", verdict.word);
  } else {
    // A final state that AOPay now contradicts: the caller was told the
    // payout failed (and may have paid again) while AOPay says the money
    // moved, or was told it arrived while AOPay says it failed. Someone
    // must look at once. (An older word for a settled payout, such as
    // PENDING for a SUCCEEDED one, is only stale.)
    const bool told_failed = payout.state == PayoutState::kFailed;
    const bool told_arrived = payout.state == PayoutState::kSucceeded &&
                              *verdict.state == PayoutState::kFailed;
    if (told_failed || told_arrived) {
      metrics_.status_contradictions.Increment(
          {LowerName(payout.state), LowerName(*verdict.state)});
      spdlog::error(
          "AOPay's status endpoint contradicts a {} payout: payout_id={} "
          "reports {}; nothing changed, check with AOPay",
          std::string(PayoutStateName(payout.state)), payout.payout_id,
          verdict.word);
    } else {
      spdlog::warn(
          "status answer ignored: payout_id={} cannot move from {} to {}",
          payout.payout_id, std::string(PayoutStateName(payout.state)),
          std::string(PayoutStateName(*verdict.state)));
    }
    change.upstream_status = verdict.word;
    change.why = absl::StrCat("AOPay reports ", verdict.word, " but a ",
                              PayoutStateName(payout.state),
                              " payout cannot move there; nothing changed");
  }

  const std::string payout_id = payout.payout_id;
  Apply(std::move(change), "refresh",
        [this, payout_id, who = std::move(who), answer = std::move(answer),
         asked = std::move(asked), attempt,
         done = std::move(done)](absl::StatusOr<StoredPayout> applied) mutable {
          if (applied.ok() ||
              applied.status().code() != absl::StatusCode::kAborted ||
              attempt >= kStatusAnswerAttempts) {
            RecordedPayoutOf(payout_id, std::move(done))(std::move(applied));
            return;
          }
          // The payout moved while AOPay was asked (an operator resolved
          // it, say): the answer is read again against where it is now, so
          // that a contradiction is seen and the answer kept.
          ledger_.GetByPayoutId(
              payout_id, [this, payout_id, who = std::move(who),
                          answer = std::move(answer), asked = std::move(asked),
                          attempt, done = std::move(done)](
                             absl::StatusOr<StoredPayout> now) mutable {
                if (!now.ok()) {
                  RecordedPayoutOf(payout_id, std::move(done))(now.status());
                  return;
                }
                ApplyStatusAnswer(*std::move(now), std::move(who),
                                  std::move(answer), std::move(asked),
                                  attempt + 1, std::move(done));
              });
        });
}

void PayoutService::Resolve(ResolveRequest request, Client caller,
                            Callback<absl::StatusOr<Payout>> done) {
  std::vector<FieldViolation> violations;
  if (request.payout_id.empty()) {
    violations.push_back({"payout_id", "is required"});
  }
  if (!OperatorMayMove(PayoutState::kUnknown, request.state)) {
    violations.push_back(
        {"state", "must be ACCEPTED, SUCCEEDED, FAILED or REVERSED"});
  }
  if (!request.transaction_id.empty() &&
      !IsTrackableTransactionId(request.transaction_id)) {
    violations.push_back(
        {"transaction_id",
         "must be printable text of at most 128 bytes, as AOPay gives it"});
  }
  CheckNote(request.note, /*required=*/true, violations);
  if (!violations.empty()) {
    done(InvalidRequestError(std::move(violations)));
    return;
  }
  std::string payout_id = request.payout_id;
  ledger_.GetByPayoutId(
      std::move(payout_id),
      [this, request = std::move(request), caller = std::move(caller),
       done = std::move(done)](absl::StatusOr<StoredPayout> stored) mutable {
        if (!stored.ok()) {
          done(stored.status());
          return;
        }
        const Payout& payout = stored->payout;
        if (!OperatorMayMove(payout.state, request.state)) {
          done(InvalidTransitionError(payout.payout_id,
                                      PayoutStateName(payout.state),
                                      PayoutStateName(request.state)));
          return;
        }
        if (request.state == PayoutState::kAccepted &&
            request.transaction_id.empty() && payout.transaction_id.empty()) {
          // An ACCEPTED payout is settled by refreshing it, which needs
          // AOPay's transaction id.
          done(InvalidRequestError(
              {{"transaction_id",
                "is required to resolve to ACCEPTED a payout that has none"}}));
          return;
        }
        PayoutChange change;
        change.payout_id = payout.payout_id;
        change.expected_state = payout.state;
        change.new_state = request.state;
        change.transaction_id = NonEmpty(request.transaction_id);
        change.failure = request.state == PayoutState::kFailed
                             ? ResolvedAsFailedError(payout.payout_id)
                             : absl::OkStatus();
        change.response = absl::OkStatus();
        change.why = absl::StrCat("resolved by an operator to ",
                                  PayoutStateName(request.state));
        change.who = WhoWithNote("operator", caller.name, request.note);
        change.time = clock_();
        spdlog::info("payout resolved by operator: payout_id={} from={} to={}",
                     payout.payout_id,
                     std::string(PayoutStateName(payout.state)),
                     std::string(PayoutStateName(request.state)));
        const std::string payout_id = payout.payout_id;
        Apply(std::move(change), "resolve",
              RecordedPayoutOf(payout_id, std::move(done)));
      });
}

void PayoutService::Decide(
    Approval kind, ApprovalRequest request, Client caller,
    Callback<absl::StatusOr<Payout>> done,
    std::function<void(StoredPayout, Client, Callback<absl::StatusOr<Payout>>)>
        act) {
  std::vector<FieldViolation> violations;
  if (request.payout_id.empty()) {
    violations.push_back({"payout_id", "is required"});
  }
  CheckNote(request.note, /*required=*/kind != Approval::kCancel, violations);
  if (!violations.empty()) {
    done(InvalidRequestError(std::move(violations)));
    return;
  }
  std::string payout_id = request.payout_id;
  ledger_.GetByPayoutId(
      std::move(payout_id),
      [this, kind, caller = std::move(caller), done = std::move(done),
       act = std::move(act)](absl::StatusOr<StoredPayout> stored) mutable {
        if (!stored.ok()) {
          done(stored.status());
          return;
        }
        const Payout& payout = stored->payout;
        if (!Visible(caller, payout)) {
          done(Hidden(payout.payout_id));
          return;
        }
        const bool creator = payout.client == caller.name;
        if (kind == Approval::kCancel) {
          if (!creator) {
            done(NotCancellableByCallerError(payout.payout_id));
            return;
          }
          if (payout.state != PayoutState::kAwaitingApproval) {
            done(NotCancellableError(
                payout.payout_id, PayoutStateName(payout.state),
                /*being_sent=*/payout.state == PayoutState::kPending));
            return;
          }
        } else {
          if (creator) {
            done(SelfApprovalError(payout.payout_id));
            return;
          }
          if (payout.state != PayoutState::kAwaitingApproval) {
            done(NotAwaitingApprovalError(payout.payout_id,
                                          PayoutStateName(payout.state)));
            return;
          }
        }
        act(*std::move(stored), std::move(caller), std::move(done));
      });
}

void PayoutService::Approve(ApprovalRequest request, Client caller,
                            Callback<absl::StatusOr<Payout>> done) {
  const absl::Time started = clock_();
  if (absl::Status admitted = Begin(Work::kCreate, done); !admitted.ok()) {
    done(std::move(admitted));
    return;
  }
  std::string note = request.note;
  Decide(Approval::kApprove, std::move(request), std::move(caller),
         std::move(done),
         [this, started, note = std::string(absl::StripAsciiWhitespace(note))](
             StoredPayout stored, Client caller,
             Callback<absl::StatusOr<Payout>> done) {
           PayoutChange change;
           change.payout_id = stored.payout.payout_id;
           change.expected_state = PayoutState::kAwaitingApproval;
           change.new_state = PayoutState::kPending;
           change.why = "approved; recorded before calling AOPay";
           change.who = WhoWithNote("approver", caller.name, note);
           change.time = clock_();
           const std::string payout_id = change.payout_id;
           Apply(std::move(change), "approve",
                 [this, started, payout_id, done = std::move(done)](
                     absl::StatusOr<StoredPayout> applied) mutable {
                   if (!applied.ok()) {
                     // Another approval, a rejection or a cancel came first.
                     done(applied.status().code() == absl::StatusCode::kAborted
                              ? NotAwaitingApprovalError(payout_id, kCameFirst)
                              : WithPayoutId(applied.status(), payout_id));
                     return;
                   }
                   Payout payout = applied->payout;
                   PayoutRequest request;
                   request.request_id = payout.request_id;
                   request.beneficiary = payout.beneficiary;
                   request.amount_paise = payout.amount_paise;
                   request.mode = payout.mode;
                   spdlog::info(
                       "payout approved, sending: payout_id={} client={}",
                       payout.payout_id, payout.client);
                   Send(request, std::move(payout), started, Sender::kApproval,
                        std::move(done));
                 });
         });
}

void PayoutService::Reject(ApprovalRequest request, Client caller,
                           Callback<absl::StatusOr<Payout>> done) {
  Cancelled(Approval::kReject, std::move(request), std::move(caller),
            std::move(done));
}

void PayoutService::Cancel(ApprovalRequest request, Client caller,
                           Callback<absl::StatusOr<Payout>> done) {
  Cancelled(Approval::kCancel, std::move(request), std::move(caller),
            std::move(done));
}

void PayoutService::Cancelled(Approval kind, ApprovalRequest request,
                              Client caller,
                              Callback<absl::StatusOr<Payout>> done) {
  const std::string note(absl::StripAsciiWhitespace(request.note));
  Decide(kind, std::move(request), std::move(caller), std::move(done),
         [this, kind, note](StoredPayout stored, Client caller,
                            Callback<absl::StatusOr<Payout>> done) {
           const std::string payout_id = stored.payout.payout_id;
           PayoutChange change;
           change.payout_id = payout_id;
           change.expected_state = PayoutState::kAwaitingApproval;
           change.new_state = PayoutState::kCancelled;
           change.response = absl::OkStatus();
           if (kind == Approval::kReject) {
             change.why = "rejected; never sent";
             change.who = WhoWithNote("approver", caller.name, note);
           } else {
             change.why = "cancelled by its creator; never sent";
             change.who = WhoWithNote("client", caller.name, note);
           }
           change.time = clock_();
           Apply(
               std::move(change),
               kind == Approval::kReject ? "reject" : "cancel",
               [this, kind, payout_id, done = std::move(done)](
                   absl::StatusOr<StoredPayout> applied) mutable {
                 if (!applied.ok() &&
                     applied.status().code() == absl::StatusCode::kAborted) {
                   // An approval (or another cancel) came first.
                   done(kind == Approval::kCancel
                            ? NotCancellableError(payout_id, kCameFirst,
                                                  /*being_sent=*/true)
                            : NotAwaitingApprovalError(payout_id, kCameFirst));
                   return;
                 }
                 if (!applied.ok()) {
                   done(WithPayoutId(applied.status(), payout_id));
                   return;
                 }
                 CountOutcome(applied->payout.mode, "cancelled");
                 done(applied->payout);
               });
         });
}

EventHub::Filter PayoutService::WatchFilter(
    Client caller, std::vector<PayoutState> states) const {
  return [caller = std::move(caller),
          states = std::move(states)](const WatchedEvent& watched) {
    return Shown(caller, states, watched);
  };
}

void PayoutService::WatchPage(int64_t after, Client caller,
                              std::vector<PayoutState> states,
                              Callback<absl::StatusOr<EventBatch>> done) {
  if (draining_.load()) {
    done(WatchShuttingDownError());
    return;
  }
  // A watcher that keeps up takes its page from the hub's memory: no ledger
  // read of its own.
  std::optional<EventBatch> recent =
      events_.Recent(after, kWatchPage, [&](const WatchedEvent& watched) {
        return Shown(caller, states, watched);
      });
  if (recent.has_value()) {
    done(*std::move(recent));
    return;
  }
  ledger_.EventsAfter(
      after, kWatchPage,
      [caller = std::move(caller), states = std::move(states),
       done = std::move(done)](absl::StatusOr<EventBatch> batch) {
        if (!batch.ok()) {
          done(batch.status());
          return;
        }
        if (batch->expired) {
          done(CursorExpiredError());
          return;
        }
        done(ShownTo(caller, states, *std::move(batch)));
      });
}

}  // namespace aopay
