#ifndef AOPAY_SERVER_FLOW_PAYOUT_SERVICE_H_
#define AOPAY_SERVER_FLOW_PAYOUT_SERVICE_H_

// The payout flow, free of transport and wiring:
//   validate -> ledger intent (durable) -> AOPay call -> codec -> ledger
//   outcome -> result.
// It guarantees that a payout is sent to AOPay at most once per request id:
// the intent is durable before the call starts, a key that exists is never
// sent again, and only a call that certainly did not reach AOPay frees its
// key.

#include <atomic>
#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clients.h"
#include "common/errors.h"
#include "common/limits.h"
#include "common/payout.h"
#include "common/validation.h"
#include "server/flow/event_hub.h"
#include "server/flow/timer.h"
#include "server/ledger/ledger.h"
#include "server/observability/metrics.h"
#include "server/upstream/upstream_client.h"

namespace aopay {

struct PayoutServiceOptions {
  // Sent to AOPay with every call; never taken from callers.
  std::string registration_id;
  ValidationLimits limits;
  // Payout creations in progress at once (waiting for the ledger or AOPay);
  // beyond this, CreatePayout fails at once with RESOURCE_EXHAUSTED.
  size_t max_outstanding = kDefaultMaxInflight + kDefaultMaxQueue;
  // RetryInfo for REQUEST_IN_PROGRESS and OVERLOADED.
  absl::Duration retry_delay = kDefaultRetryDelay;
  // Status-endpoint calls (RefreshPayout, the reconciler) at once; beyond
  // this, Refresh fails at once with RESOURCE_EXHAUSTED. Keep it well below
  // the upstream client's max_inflight so that refreshes never take every
  // slot from payouts.
  size_t max_refreshes = 64;
  // An outcome the ledger could not record is written again after this,
  // doubling up to outcome_retry_max, until it is recorded.
  absl::Duration outcome_retry_initial = absl::Milliseconds(100);
  absl::Duration outcome_retry_max = absl::Seconds(5);
  // Kept equal to the creations, approvals and refreshes in progress that
  // may write soon, for the ledger's group commit
  // (SqliteLedgerOptions::calls_in_flight): each leaves it while AOPay has
  // it, and for good just before its answer. Must outlive the service.
  // nullptr: not kept.
  std::atomic<size_t>* calls_in_flight = nullptr;
};

// ApprovePayout, RejectPayout and CancelPayout.
struct ApprovalRequest {
  std::string payout_id;
  std::string note;  // required to approve or reject; optional to cancel
};

struct ResolveRequest {
  std::string payout_id;
  PayoutState state = PayoutState::kUnspecified;
  std::string transaction_id;  // optional
  std::string note;            // required
};

// Thread-safe. Every method returns at once and runs `done` exactly once,
// either inline (validation errors) or on a thread of the ledger's callback
// executor, the upstream client or the timer;
// `done` must not block. The ledger, upstream client and timer must outlive
// the service and every callback it has started.
//
// A caller hears an outcome only once the ledger holds it. When the ledger
// cannot record AOPay's answer (disk full), the caller gets ABORTED /
// REQUEST_IN_PROGRESS and the outcome is kept in memory and written again
// with backoff until it is recorded; a retry of the request id then gets it.
// Those outcomes count against max_outstanding, which bounds them.
class PayoutService {
 public:
  template <typename T>
  using Callback = std::function<void(T)>;
  using Clock = std::function<absl::Time()>;

  PayoutService(Ledger& ledger, UpstreamClient& upstream, Timer& timer,
                Metrics& metrics, PayoutServiceOptions options,
                Clock clock = &absl::Now);

  // Runs the watchers' wakes still queued, while the hub is alive.
  ~PayoutService();
  PayoutService(const PayoutService&) = delete;
  PayoutService& operator=(const PayoutService&) = delete;

  // Every call names its caller, already authenticated and allowed the
  // call's scope by the transport (docs/security.md). A caller that may not
  // read every client's payouts sees only its own: another client's payout
  // is NOT_FOUND, exactly as a missing one.

  // CreatePayout (docs/api.md, docs/errors.md, docs/idempotency.md). The
  // idempotency key is (registration, caller, request_id); the caller's
  // limits are checked before anything is recorded or sent, the daily one
  // atomically with the intent.
  void Create(PayoutRequest request, Client caller,
              Callback<absl::StatusOr<Payout>> done);

  void GetByPayoutId(std::string payout_id, Client caller,
                     Callback<absl::StatusOr<Payout>> done);
  // The caller's own request ids only.
  void GetByRequestId(std::string request_id, Client caller,
                      Callback<absl::StatusOr<Payout>> done);
  // page_size 0 means kDefaultPageSize; more than kMaxPageSize is cut to it;
  // negative is invalid.
  void List(ListQuery query, Client caller,
            Callback<absl::StatusOr<ListPage>> done);

  // Asks AOPay's status endpoint and records what it says (docs/aopay.md).
  void Refresh(std::string payout_id, Client caller,
               Callback<absl::StatusOr<Payout>> done);
  // The same for the background reconciler (the event says "reconciler").
  void Reconcile(std::string payout_id, Callback<absl::StatusOr<Payout>> done);

  // An operator's outcome for an UNKNOWN or ACCEPTED payout.
  void Resolve(ResolveRequest request, Client caller,
               Callback<absl::StatusOr<Payout>> done);

  // Approvals (docs/api.md, Approvals). Approve moves a payout from
  // AWAITING_APPROVAL to PENDING (compare-and-set: of racing approvals, and
  // of an approval racing a cancel or reject, exactly one wins) and sends it
  // as Create would, answering as Create would; Reject moves it to
  // CANCELLED. Both need a caller other than the creator and a note.
  void Approve(ApprovalRequest request, Client caller,
               Callback<absl::StatusOr<Payout>> done);
  void Reject(ApprovalRequest request, Client caller,
              Callback<absl::StatusOr<Payout>> done);
  // The creator's own cancel of a payout AWAITING_APPROVAL.
  void Cancel(ApprovalRequest request, Client caller,
              Callback<absl::StatusOr<Payout>> done);

  // WatchPayouts: the next events after `after` (the ledger's order), those
  // `caller` may see and whose new state is in `states` (empty: any);
  // batch.last is where to continue, also past events left out.
  // OUT_OF_RANGE / CURSOR_EXPIRED when retention deleted events after
  // `after`; UNIMPLEMENTED on a ledger that cannot order events;
  // UNAVAILABLE / SHUTTING_DOWN once draining.
  void WatchPage(int64_t after, Client caller, std::vector<PayoutState> states,
                 Callback<absl::StatusOr<EventBatch>> done);
  // Wakes watchers when new events are recorded.
  EventHub& event_hub() { return events_; }
  // What WatchPage shows `caller` of the events, asking for `states`: for
  // the hub to leave a waiting watcher asleep when nothing new is for it.
  EventHub::Filter WatchFilter(Client caller,
                               std::vector<PayoutState> states) const;

  // From now on Create, Refresh and watch pages fail with UNAVAILABLE
  // (SHUTTING_DOWN), and waiting watchers are woken to learn it.
  void Drain();
  bool draining() const { return draining_.load(); }
  // Blocks until no Create or Refresh is in progress, then until every
  // outcome kept in memory is recorded or `deadline` passes. Returns how many
  // outcomes are still unrecorded (each is logged with AOPay's ids, so that
  // an operator can resolve it after the restart turns it UNKNOWN).
  size_t WaitIdle(absl::Time deadline = absl::InfiniteFuture());
  // Outcomes AOPay gave that the ledger has not recorded yet.
  size_t Unrecorded() const;

 private:
  void RefreshAs(std::string payout_id, std::string who,
                 std::optional<Client> caller,
                 Callback<absl::StatusOr<Payout>> done);
  // What a call the gateway does not take gets (the gateway full or
  // shutting down): the recorded payout's replay when the request id is
  // already taken, so that a retry never hears "nothing was sent" of a
  // payout that was; else `refusal`, counted as `outcome`. A first call
  // whose insert is still queued is not seen; the refusal is then still
  // true of this call, and its retry with the same id finds the payout.
  void RefuseUnlessReplay(PayoutRequest request, std::string client,
                          absl::Status refusal, const char* outcome,
                          Callback<absl::StatusOr<Payout>> done);
  // The caller's limits the ledger checked an insert against, for the words
  // of its refusal.
  struct Limits {
    std::optional<int64_t> max_payout_paise;
    std::optional<int64_t> daily_paise;
  };
  void OnInserted(PayoutRequest request, Payout payout, absl::Time started,
                  Limits limits, absl::StatusOr<InsertResult> inserted,
                  Callback<absl::StatusOr<Payout>> done);
  // Who sends a recorded PENDING payout: its creation, or an approval (a
  // payout that is then certainly not sent waits for approval again instead
  // of being forgotten).
  enum class Sender { kCreate, kApproval };
  // Posts the payout to AOPay and records the outcome.
  void Send(const PayoutRequest& request, Payout payout, absl::Time started,
            Sender sender, Callback<absl::StatusOr<Payout>> done);
  void OnPayoutAnswer(Payout payout, absl::Time started, Sender sender,
                      absl::StatusOr<HttpAnswer> answer,
                      Callback<absl::StatusOr<Payout>> done);
  // Approve, Reject and Cancel: validation, the payout read, who may act.
  // `act` runs with the payout when the caller may act on it.
  enum class Approval { kApprove, kReject, kCancel };
  // Reject and Cancel: AWAITING_APPROVAL to CANCELLED.
  void Cancelled(Approval kind, ApprovalRequest request, Client caller,
                 Callback<absl::StatusOr<Payout>> done);
  void Decide(Approval kind, ApprovalRequest request, Client caller,
              Callback<absl::StatusOr<Payout>> done,
              std::function<void(StoredPayout, Client,
                                 Callback<absl::StatusOr<Payout>>)>
                  act);
  void OnStatusAnswer(StoredPayout stored, std::string who,
                      absl::StatusOr<HttpAnswer> answer,
                      Callback<absl::StatusOr<Payout>> done);
  // Records a status answer against `stored` (attempt 1 of
  // kStatusAnswerAttempts); when the payout moved meanwhile, reads it again
  // and records the answer against where it is now.
  // `asked`: the transaction id AOPay was asked about; an answer for a
  // payout given another id meanwhile is not applied.
  void ApplyStatusAnswer(StoredPayout stored, std::string who,
                         HttpAnswer answer, std::string asked, int attempt,
                         Callback<absl::StatusOr<Payout>> done);
  // What a retry of an existing key gets (docs/idempotency.md).
  absl::StatusOr<Payout> Replay(const StoredPayout& stored,
                                const std::string& fingerprint);
  // Ledger::Apply with its duration recorded.
  void Apply(PayoutChange change, const char* op,
             Ledger::Callback<absl::StatusOr<StoredPayout>> done);
  // Apply for an outcome of AOPay's payout answer, expected from PENDING.
  // When the payout is UNKNOWN instead (on a shared ledger another replica
  // turned it UNKNOWN while this one could not heartbeat), an outcome that
  // says more (a state UNKNOWN may move to, or a transaction id it lacks) is
  // applied from UNKNOWN, so AOPay's answer is never dropped. An answer that
  // cannot be applied (an operator settled the payout meanwhile) is logged
  // with what AOPay said, and counted as a contradiction when it says the
  // money moved for a payout recorded as not paid.
  // `done` gets the result and the change as given, for a caller that
  // applies it again (the ledger consumes what it applies).
  using OutcomeDone =
      std::function<void(absl::StatusOr<StoredPayout>, PayoutChange)>;
  void ApplyOutcome(PayoutChange change, OutcomeDone done);
  // After `change` was ABORTED: reads the payout and applies the change from
  // UNKNOWN when it says more, else logs it (UnappliedAnswer) and gives
  // `aborted`.
  void ApplyFromUnknown(PayoutChange change, absl::Status aborted,
                        OutcomeDone done);
  void UnappliedAnswer(const Payout& now, const PayoutChange& answer);
  // "outcome STATE (AOPay transaction_id=… reference=…)" for log lines.
  static std::string OutcomeText(const PayoutChange& change);
  // Logs, at error level with AOPay's ids, an outcome the ledger refused for
  // good (anything but UNAVAILABLE, which is written again, and ABORTED,
  // which ApplyOutcome deals with).
  static void LogUnrecordable(const PayoutChange& change,
                              const absl::Status& error);
  // Applies a payout's outcome. `first` runs with the first attempt's
  // result. When that failed with UNAVAILABLE, the change is kept and
  // applied again with backoff; `later` runs once a later attempt is
  // recorded or fails for good (logged by LogUnrecordable).
  void RecordOutcome(PayoutChange change,
                     Ledger::Callback<absl::StatusOr<StoredPayout>> first,
                     Ledger::Callback<absl::StatusOr<StoredPayout>> later);
  void RetryOutcome(PayoutChange change, absl::Duration delay,
                    Ledger::Callback<absl::StatusOr<StoredPayout>> later);
  // Deletes a payout that was certainly not sent, again with backoff until
  // it is gone (its key stays taken meanwhile).
  void ForgetUntilDone(std::string payout_id, absl::Duration delay);
  // AOPay's words with the registration id replaced (docs/operations.md,
  // Privacy).
  std::string Scrub(absl::string_view text) const;
  absl::Status Scrub(const absl::Status& status) const;
  void LogOutcome(const Payout& payout, absl::Time started,
                  const absl::Status& error);
  void CountOutcome(TransferMode mode, absl::string_view outcome);
  // Counts a Create (bounded by max_outstanding, outcomes still to record
  // included) or a Refresh (bounded by max_refreshes) in progress: on OK,
  // `done` is wrapped so that it ends the count after it has run; on error
  // (draining, overloaded) `done` is left as it was.
  enum class Work { kCreate, kRefresh };
  absl::Status Begin(Work work, Callback<absl::StatusOr<Payout>>& done);
  // Posts `call` to AOPay for a call counted by Begin, which leaves
  // options_.calls_in_flight until AOPay answers: waiting on AOPay it writes
  // nothing, however long that takes. Counted again before `on_answer` runs
  // (which writes what AOPay said). A template, so that the answer's
  // callback is wrapped without a second std::function (defined and used
  // only in payout_service.cc).
  template <typename OnAnswer>
  void PostUncounted(UpstreamRequest call, OnAnswer on_answer);

  Ledger& ledger_;
  UpstreamClient& upstream_;
  Timer& timer_;
  Metrics& metrics_;
  const PayoutServiceOptions options_;
  const Clock clock_;

  std::atomic<bool> draining_{false};
  mutable absl::Mutex mu_;
  size_t outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  size_t refreshing_ ABSL_GUARDED_BY(mu_) = 0;
  // Outcomes (and forgets) being written again, by payout id: what an
  // operator needs if they are never recorded.
  std::map<std::string, std::string> unrecorded_ ABSL_GUARDED_BY(mu_);
  // Watchers woken by new events do their work here, never on the
  // executor that runs payouts' completions.
  ThreadPool watch_thread_{1, "watch"};
  EventHub events_{[this](int64_t after, int limit,
                          Ledger::Callback<absl::StatusOr<EventBatch>> done) {
                     ledger_.EventsAfter(after, limit, std::move(done));
                   },
                   kRecentEvents, &watch_thread_};
};

}  // namespace aopay

#endif  // AOPAY_SERVER_FLOW_PAYOUT_SERVICE_H_
