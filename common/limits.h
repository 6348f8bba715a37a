#ifndef AOPAY_COMMON_LIMITS_H_
#define AOPAY_COMMON_LIMITS_H_

// The gateway's limits and defaults, each in one place: the flags, the
// options structs and the messages that name a bound are built from these
// (docs/configuration.md describes them). The retry delay the gateway gives
// callers lives with the errors (common/errors.h: kDefaultRetryDelay).

#include <cstdint>

#include "absl/time/time.h"

namespace aopay {

// AOPay calls in flight at once (--max_inflight); also the size of the
// upstream client's connection cache.
inline constexpr int64_t kDefaultMaxInflight = 512;
// Payouts waiting for an in-flight slot before new ones get
// RESOURCE_EXHAUSTED (--max_queue).
inline constexpr int64_t kDefaultMaxQueue = 4096;

// The largest payout accepted in any mode, in paise (--max_amount_paise):
// Rs 10,00,000.
inline constexpr int64_t kDefaultMaxAmountPaise = 100'000'000;
// IMPS: the RBI per-transaction limit, Rs 5,00,000.
inline constexpr int64_t kImpsMaxAmountPaise = 50'000'000;

// The longest a single AOPay call may take (--upstream_timeout).
inline constexpr absl::Duration kDefaultUpstreamTimeout = absl::Seconds(30);
// How long request ids of final payouts are kept (--idempotency_retention):
// the default is also the least allowed.
inline constexpr absl::Duration kMinIdempotencyRetention = absl::Hours(24 * 30);
// How long SIGTERM waits for AOPay calls in flight (--shutdown_grace).
inline constexpr absl::Duration kDefaultShutdownGrace = absl::Seconds(35);

// ListPayouts' page size: 0 asks for the default; larger ones are cut.
inline constexpr int kDefaultPageSize = 50;
inline constexpr int kMaxPageSize = 500;

// A payout's metadata (the caller's own references): at most this many
// keys, each of 1 to kMaxMetadataKeyChars characters, values of at most
// kMaxMetadataValueChars.
inline constexpr int kMaxMetadataKeys = 16;
inline constexpr int kMaxMetadataKeyChars = 40;
inline constexpr int kMaxMetadataValueChars = 256;

// SQLite ledger (--ledger=sqlite:PATH).
// The longest a group commit waits for more writes while they arrive in a
// steady stream (--ledger_commit_delay). Chosen from the benchmark of
// docs/benchmarks.md: at 2,000 payouts/s, 20 ms takes the gateway's CPU per
// payout from ~245 to ~135 µs for ~30 ms more latency. Below ~1,000
// payouts/s a commit never waits (CommitPacer::kMinWritesPerSecond), and
// callers that each wait for their answer are committed as soon as all of
// them have a write queued (CommitPacer::EveryCallerQueued).
inline constexpr absl::Duration kDefaultCommitDelay = absl::Milliseconds(20);
// Beyond this a commit's wait would be a noticeable part of a payout's time.
inline constexpr absl::Duration kMaxCommitDelay = absl::Milliseconds(50);

// Webhooks (--webhook_secret): a shorter key is too easy to guess.
inline constexpr size_t kMinWebhookSecretBytes = 16;
// POSTs to the webhook receiver at once, and the longest one may take.
inline constexpr size_t kWebhookMaxInflight = 16;
inline constexpr absl::Duration kWebhookTimeout = absl::Seconds(10);
// --webhook_timeout bounds: a receiver must have time to answer, and a POST
// that hangs must not hold one of the kWebhookMaxInflight places for long.
inline constexpr absl::Duration kMinWebhookTimeout = absl::Milliseconds(100);
inline constexpr absl::Duration kMaxWebhookTimeout = absl::Seconds(60);

// PostgreSQL ledger (--ledger=postgresql://...).
// How long a replica may stop heart-beating before its PENDING payouts
// become UNKNOWN (--owner_lease).
inline constexpr absl::Duration kDefaultOwnerLease = absl::Seconds(30);
// The shortest lease allowed: a replica heartbeats every third of it.
inline constexpr absl::Duration kMinOwnerLease = absl::Seconds(3);
// Connections, each with a thread, that run the ledger's reads and writes.
inline constexpr int kDefaultPostgresConnections = 8;
// The longest one statement may run before the database cancels it.
inline constexpr absl::Duration kPostgresStatementTimeout = absl::Seconds(10);

}  // namespace aopay

#endif  // AOPAY_COMMON_LIMITS_H_
