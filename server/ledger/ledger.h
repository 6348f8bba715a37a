#ifndef AOPAY_SERVER_LEDGER_LEDGER_H_
#define AOPAY_SERVER_LEDGER_LEDGER_H_

// Where payouts are recorded. The service depends on this interface only;
// sqlite/sqlite_ledger.h keeps them in one file for one process,
// postgres/postgres_ledger.h in PostgreSQL for several replicas.

#include <cstdint>
#include <functional>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/payout.h"

namespace aopay {

// A payout row with what the service needs to answer a retry.
struct StoredPayout {
  Payout payout;
  std::string fingerprint;  // RequestFingerprint() of the request
  // What CreatePayout returned to the first caller: OK (it returned the
  // Payout) or the exact error. Retries get this again while it is set.
  absl::Status response;
};

// One change of a payout, applied in one transaction with its event when the
// state changes.
struct PayoutChange {
  std::string payout_id;
  // Compare-and-set: the change applies only if the row is in this state;
  // otherwise the call fails with ABORTED and changes nothing.
  PayoutState expected_state = PayoutState::kPending;
  PayoutState new_state = PayoutState::kPending;  // may equal expected_state
  // When set, the row's update time must also be this one (to the
  // microsecond), as its sender last saw it: a payout that left the expected
  // state and came back to it (an approved payout sent back to approval and
  // approved again, on any replica) is another attempt, and this change,
  // meant for the earlier one, fails with ABORTED.
  std::optional<absl::Time> expected_update_time;
  // Fields to overwrite when set.
  std::optional<std::string> transaction_id;
  std::optional<std::string> transaction_reference_no;
  std::optional<std::string> upstream_status;
  std::optional<std::string> bank_beneficiary_name;
  std::optional<absl::Status> failure;   // OK clears it
  std::optional<absl::Status> response;  // replaces StoredPayout::response
  // AOPay's raw answer that caused the change, kept for audit ("" = none).
  // The ledger replaces any occurrence of the registration id before storing.
  std::string raw_answer;
  enum class AnswerKind { kNone, kPayout, kStatus };
  AnswerKind answer_kind = AnswerKind::kNone;
  // The event: why (one sentence) and who ("gateway", "refresh", "recovery",
  // "reconciler" or "operator: <note>").
  std::string why;
  std::string who;
  absl::Time time;
};

// One row of the append-only event table.
struct PayoutEvent {
  std::string payout_id;
  PayoutState from = PayoutState::kUnspecified;  // kUnspecified: created
  PayoutState to = PayoutState::kUnspecified;
  std::string why;
  std::string who;
  absl::Time time;
};

// One event as a watcher sees it (WatchPayouts): its place in the ledger's
// commit order, the change, and the payout as it stood after the change
// (its state and update time the event's; its other fields as they stand
// now).
struct WatchedEvent {
  int64_t cursor = 0;
  PayoutEvent event;
  Payout payout;
};

struct EventBatch {
  std::vector<WatchedEvent> events;  // oldest first
  // The newest event's cursor (0 when there is none): where a watcher with
  // no cursor starts.
  int64_t head = 0;
  // The cursor to ask after next: the last event's, or the asked one.
  int64_t last = 0;
  // Events after the asked cursor were deleted by retention: the watcher
  // cannot resume from it.
  bool expired = false;
};

// An event the webhook outbox has yet to deliver.
struct OutboxEvent {
  WatchedEvent watched;
  int attempts = 0;     // deliveries tried so far
  absl::Time enqueued;  // when its change was recorded
};

// What the webhook outbox holds.
struct OutboxBacklog {
  int64_t events = 0;
  std::optional<absl::Time> oldest;  // the oldest's enqueue time
};

struct ListQuery {
  std::vector<PayoutState> states;   // empty: all
  int page_size = kDefaultPageSize;  // already bounded by the caller
  std::string page_token;            // opaque; "" for the first page
  // Set: only this client's payouts ("" is the anonymous client); unset:
  // every client's. Applied from the query on every page, never from the
  // token, so a token cannot show a caller another client's payouts.
  std::optional<std::string> client;
};

struct ListPage {
  std::vector<Payout> payouts;  // newest first (payout_id descending)
  std::string next_page_token;  // "" on the last page
};

// A client's daily budget, checked atomically with the insert.
struct DailyLimit {
  int64_t limit_paise = 0;
  absl::Time day_start;  // the payout's calendar day in Asia/Kolkata:
  absl::Time day_end;    // [day_start, day_end)
};

// Payouts in these states do not count against a daily limit: the money
// certainly did not move. A later state that means the same (a payout
// rejected or cancelled before it was sent) is added here, and in a
// migration of each ledger that recreates the triggers keeping the daily
// running totals.
inline constexpr PayoutState kStatesOutsideDailyLimit[] = {
    PayoutState::kFailed,
    PayoutState::kCancelled,
};
static_assert(std::size(kStatesOutsideDailyLimit) == 2 &&
                  kStatesOutsideDailyLimit[0] == PayoutState::kFailed &&
                  kStatesOutsideDailyLimit[1] == PayoutState::kCancelled,
              "the daily_spent triggers (SQLite schema 8, PostgreSQL schema "
              "6) name these states as 4 and 8: changing them needs a "
              "migration of each ledger that recreates the triggers and "
              "empties daily_spent");

struct InsertRequest {
  Payout payout;  // state PENDING; payout.client set
  std::string fingerprint;
  // The client's limit on one payout. Checked here, after the key, rather
  // than by the caller: a retry whose first call's insert is still on its
  // way to the ledger must find that payout, not hear "over the limit" of a
  // payout that is then recorded and sent (the limit may have been lowered
  // in between).
  std::optional<int64_t> max_payout_paise;
  std::optional<DailyLimit> daily_limit;
};

struct InsertResult {
  bool inserted = false;  // true: the payout is now durably PENDING
  // When the key was taken: the row that holds it (over_max_payout and
  // over_daily_limit false).
  StoredPayout existing;
  // The maximum for one payout refused it; nothing was written.
  bool over_max_payout = false;
  // The daily limit refused the payout; nothing was written.
  bool over_daily_limit = false;
  // When over_daily_limit: the sum of the client's payouts of that day that
  // counted against the limit (without this one).
  int64_t spent_paise = 0;
};

// Thread-safe. Every asynchronous method returns at once and runs `done`
// exactly once, never inside the call, on a thread of the executor the
// ledger was given (never the thread that writes: a commit does not wait for
// its callers' work); `done` must not block. No order between callbacks is
// promised beyond what an implementation documents. Writes are durable
// (fsynced, unless the ledger was opened without durability for benchmarks)
// before `done` runs. A ledger that cannot write fails writes with
// UNAVAILABLE (reason LEDGER_UNAVAILABLE).
class Ledger {
 public:
  template <typename T>
  using Callback = std::function<void(T)>;

  virtual ~Ledger() = default;

  // Records request.payout (state PENDING, with its creation event), in one
  // write transaction that also makes the checks below, so that concurrent
  // inserts cannot together overshoot a limit:
  // - the key (registration, payout.client, request_id) is taken: returns
  //   that row (inserted false). A replay wins over the limits. An insert of
  //   the key that reached the ledger before this one and is unfinished is
  //   waited for (SQLite: every insert queued before it; PostgreSQL: one
  //   whose statement reached the database), so that a refusal below never
  //   hides a payout that is being recorded.
  // - request.max_payout_paise is set and payout.amount_paise is above it:
  //   writes nothing and returns over_max_payout.
  // - request.daily_limit is set and the client's payouts created in
  //   [day_start, day_end), in a state other than kStatesOutsideDailyLimit,
  //   plus this one would exceed limit_paise: writes nothing and returns
  //   over_daily_limit with spent_paise.
  // INVALID_ARGUMENT for a payout without payout_id or request_id, a
  // negative maximum, or a daily limit that is negative or has an empty day.
  virtual void Insert(InsertRequest request,
                      Callback<absl::StatusOr<InsertResult>> done) = 0;

  // Applies `change`, with an event when the state changes (none when
  // new_state is expected_state); returns the row as it is afterwards.
  // NOT_FOUND for an unknown payout_id, ABORTED when the state is not
  // change.expected_state.
  virtual void Apply(PayoutChange change,
                     Callback<absl::StatusOr<StoredPayout>> done) = 0;

  // Deletes a PENDING payout that was certainly not sent, so that its
  // request_id can be used again. FAILED_PRECONDITION if not PENDING.
  virtual void Forget(std::string payout_id, Callback<absl::Status> done) = 0;

  // Reads. NOT_FOUND when there is no such payout.
  virtual void GetByPayoutId(std::string payout_id,
                             Callback<absl::StatusOr<StoredPayout>> done) = 0;
  // By key: the client's ("" the anonymous client's) request_id. Another
  // client's payout with the same request_id is NOT_FOUND.
  virtual void GetByRequestId(std::string client, std::string request_id,
                              Callback<absl::StatusOr<StoredPayout>> done) = 0;
  // INVALID_ARGUMENT for a page token this ledger did not make.
  virtual void List(ListQuery query,
                    Callback<absl::StatusOr<ListPage>> done) = 0;
  virtual void Events(
      std::string payout_id,
      Callback<absl::StatusOr<std::vector<PayoutEvent>>> done) = 0;

  // Events with a cursor above `after`, oldest first, at most `limit`, in
  // the order their changes committed: a watcher that resumes from the last
  // cursor it saw misses none and sees none twice. UNIMPLEMENTED where the
  // ledger cannot keep that order.
  virtual void EventsAfter(int64_t after, int limit,
                           Callback<absl::StatusOr<EventBatch>> done) = 0;

  // The webhook outbox (docs/webhooks.md): events recorded while webhooks
  // were on, in the transaction of their change, until delivered or given
  // up. UNIMPLEMENTED where the ledger has none.
  //
  // Up to `limit` events due at `now`: of each payout only its oldest
  // undelivered event (a payout's events go out in order), oldest first.
  virtual void OutboxDue(
      absl::Time now, int limit,
      Callback<absl::StatusOr<std::vector<OutboxEvent>>> done) = 0;
  // The event `cursor` was delivered or given up (retry_at: nullopt), and
  // leaves the outbox; or it failed and is tried again at *retry_at.
  virtual void OutboxSettle(int64_t cursor, std::optional<absl::Time> retry_at,
                            Callback<absl::Status> done) = 0;
  virtual void OutboxWaiting(Callback<absl::StatusOr<OutboxBacklog>> done) = 0;

  // Start-up, before serving: every PENDING payout becomes UNKNOWN with an
  // event ("recovery"). Returns how many. Blocking.
  [[nodiscard]] virtual absl::StatusOr<int> RecoverPending(absl::Time now) = 0;

  // Deletes payouts in a final state (SUCCEEDED, FAILED, REVERSED) created
  // before `cutoff`, with their events. Never deletes PENDING, ACCEPTED or
  // UNKNOWN payouts. Returns how many.
  virtual void Prune(absl::Time cutoff, Callback<absl::StatusOr<int>> done) = 0;

  // False once a write has failed and no later write has succeeded.
  virtual bool Healthy() const = 0;

  // Whether this process should run the duties that need only one runner
  // among replicas sharing the ledger (the reconciler, retention pruning).
  // A ledger only one process opens always leads.
  virtual bool IsLeader() const { return true; }

  // Stops accepting calls, answers every queued one, waits until their
  // callbacks have returned, and releases what the ledger holds. Idempotent;
  // must not be called from a ledger callback.
  virtual void Close() = 0;
};

}  // namespace aopay

#endif  // AOPAY_SERVER_LEDGER_LEDGER_H_
