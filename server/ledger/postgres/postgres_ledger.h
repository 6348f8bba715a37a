#ifndef AOPAY_SERVER_LEDGER_POSTGRES_POSTGRES_LEDGER_H_
#define AOPAY_SERVER_LEDGER_POSTGRES_POSTGRES_LEDGER_H_

// The payout ledger on PostgreSQL, shared by any number of gateway replicas
// (docs/scale-out.md).
//
// - Every call is its own transaction, run by one of a small pool of
//   connections, each with a thread; concurrent commits share the database's
//   WAL flushes (its group commit), so one round trip does not cap
//   throughput. Callbacks run on the executor, never on those threads.
// - At most once across replicas: the key (registration, client, request_id)
//   is a unique constraint and an insert is INSERT ... ON CONFLICT DO
//   NOTHING, so exactly one replica's insert wins; the others get the row
//   (PENDING while the winner's AOPay call is in flight). A daily limit is
//   summed under a transaction advisory lock of the client.
// - Owners and leases: each PENDING payout names the replica that inserted
//   it (its owner); each replica heartbeats its row of gateway_replicas every
//   third of the lease. Only PENDING payouts whose owner has not heart-beaten
//   for the lease become UNKNOWN, by whichever replica notices first, with
//   an event; a replica that closes cleanly ends its lease at once.
// - One at a time: the replica holding an advisory session lock runs the
//   duties that need only one runner (IsLeader()).
// - Faults: a call that cannot reach the database fails with UNAVAILABLE
//   (reason LEDGER_UNAVAILABLE) at once and Healthy() turns false until a
//   call or the heartbeat succeeds; connections reconnect with backoff. An
//   insert whose COMMIT got no answer is remembered and its row, never sent,
//   is deleted once the database answers again. When the database cannot be
//   reached at start-up the ledger starts anyway, unhealthy, and connects
//   and migrates in the background; a migration that fails then is passed
//   to on_fatal.

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/limits.h"
#include "server/executor/executor.h"
#include "server/ledger/ledger.h"

namespace aopay {

struct PostgresLedgerOptions {
  // A libpq connection URI (postgresql://user@host:port/db?sslmode=...). The
  // password may come from PGPASSWORD, a .pgpass file, or a password
  // parameter "@/path" naming a file that holds it.
  std::string uri;
  // The merchant's AOPay registration: part of every row's key.
  std::string registration_id;
  // How long a replica may stop heart-beating before its PENDING payouts
  // become UNKNOWN. At least kMinOwnerLease.
  absl::Duration owner_lease = kDefaultOwnerLease;
  // Connections (and threads) running calls.
  int connections = kDefaultPostgresConnections;
  absl::Duration statement_timeout = kPostgresStatementTimeout;
  // Runs every callback; must outlive the ledger. nullptr: the ledger runs
  // them on a thread of its own.
  Executor* executor = nullptr;
  // This replica's name in the owner column; "" makes one from the host
  // name, the process id and a random suffix (a restarted replica is a new
  // owner).
  std::string owner;
  // Called once, on a ledger thread, when a migration or the registration
  // check fails after start-up (the database was unreachable at first): the
  // ledger can never serve, and the process should stop.
  std::function<void(const absl::Status&)> on_fatal;
  // This replica sends webhooks (docs/webhooks.md): once one such replica
  // has used the database, every replica's events are queued in the
  // outbox; one replica with webhooks at a time (an advisory lock) sends
  // them.
  bool webhooks = false;
};

// A postgresql:// URI with its password (if any) replaced by "***"; a
// password parameter "@/path" (a file name) is kept.
std::string RedactLedgerUri(absl::string_view uri);

class PostgresLedger final : public Ledger {
 public:
  // Connects, migrates and claims the database. INVALID_ARGUMENT for
  // incomplete options or a URI libpq does not take; FAILED_PRECONDITION
  // for another registration's or application's database or a newer schema.
  // A database that cannot be reached is not an error: see above.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<PostgresLedger>> Open(
      PostgresLedgerOptions options);
  // INVALID_ARGUMENT, naming --owner_lease, for a lease below
  // kMinOwnerLease. Open checks it; the server checks it whatever the
  // ledger, so that a configuration fails before the move to PostgreSQL.
  [[nodiscard]] static absl::Status CheckOwnerLease(absl::Duration lease);

  ~PostgresLedger() override;
  PostgresLedger(const PostgresLedger&) = delete;
  PostgresLedger& operator=(const PostgresLedger&) = delete;

  void Insert(InsertRequest request,
              Callback<absl::StatusOr<InsertResult>> done) override;
  // A change whose earlier attempt committed unseen (the connection was lost
  // during COMMIT) is recognised by its event and answered with the row.
  void Apply(PayoutChange change,
             Callback<absl::StatusOr<StoredPayout>> done) override;
  void Forget(std::string payout_id, Callback<absl::Status> done) override;
  void GetByPayoutId(std::string payout_id,
                     Callback<absl::StatusOr<StoredPayout>> done) override;
  void GetByRequestId(std::string client, std::string request_id,
                      Callback<absl::StatusOr<StoredPayout>> done) override;
  void List(ListQuery query, Callback<absl::StatusOr<ListPage>> done) override;
  void Events(std::string payout_id,
              Callback<absl::StatusOr<std::vector<PayoutEvent>>> done) override;
  // UNIMPLEMENTED in this version: event ids are handed out before their
  // transactions commit, in another order than the commits, so a cursor
  // over them could skip an event (docs/scale-out.md).
  // No webhook outbox yet: UNIMPLEMENTED (the gateway refuses --webhook_url
  // with this ledger at start).
  void OutboxDue(
      absl::Time now, int limit,
      Callback<absl::StatusOr<std::vector<OutboxEvent>>> done) override;
  void OutboxSettle(int64_t cursor, std::optional<absl::Time> retry_at,
                    Callback<absl::Status> done) override;
  void OutboxWaiting(Callback<absl::StatusOr<OutboxBacklog>> done) override;
  void EventsAfter(int64_t after, int limit,
                   Callback<absl::StatusOr<EventBatch>> done) override;
  // The PENDING payouts of every replica whose lease has run out (not of
  // live replicas) become UNKNOWN, their stored response DEADLINE_EXCEEDED
  // (reason OUTCOME_UNKNOWN). 0 while the database cannot be reached: the
  // heartbeat does the same every third of the lease.
  [[nodiscard]] absl::StatusOr<int> RecoverPending(absl::Time now) override;
  // Runs only on the leader; elsewhere returns 0.
  void Prune(absl::Time cutoff, Callback<absl::StatusOr<int>> done) override;
  bool Healthy() const override;
  bool IsLeader() const override;

  // This replica's owner name.
  const std::string& owner() const;

  // Ends this replica's lease (its PENDING payouts, if any, become UNKNOWN
  // at the next sweep of any replica), answers every queued call, waits for
  // their callbacks and joins the threads. Idempotent.
  void Close() override;

 private:
  class Impl;
  explicit PostgresLedger(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

namespace postgres_internal {

class Connection;  // connection.h

// Deletes `owner`'s payout `payout_id` if it is as its insert left it: in
// `inserted_state` (PENDING, or AWAITING_APPROVAL) and never changed since
// (or, with `moved_back_at`, since RevertUnseenApproval moved it back then).
// For an insert whose COMMIT got no answer, whose caller was told nothing
// was recorded; an approved payout (being sent), or one any replica or
// person moved on, is kept. True when it deleted the row.
absl::StatusOr<bool> ForgetUnchangedInsert(
    Connection& db, const std::string& payout_id, PayoutState inserted_state,
    const std::string& owner,
    std::optional<absl::Time> moved_back_at = std::nullopt);

// Moves `owner`'s payout `payout_id` back from PENDING to AWAITING_APPROVAL
// (with its event, at `now`) if it is as an approval at `approved_at` left
// it: for an approval whose COMMIT got no answer, whose approver heard
// UNAVAILABLE and whose payout was never sent. An outcome or a sweep since
// keeps it. True when it moved it.
absl::StatusOr<bool> RevertUnseenApproval(Connection& db,
                                          const std::string& payout_id,
                                          absl::Time approved_at,
                                          const std::string& owner,
                                          absl::Time now);

}  // namespace postgres_internal
}  // namespace aopay

#endif  // AOPAY_SERVER_LEDGER_POSTGRES_POSTGRES_LEDGER_H_
