#ifndef AOPAY_SERVER_FLOW_WEBHOOK_SENDER_H_
#define AOPAY_SERVER_FLOW_WEBHOOK_SENDER_H_

// Delivers the ledger's webhook outbox (docs/webhooks.md): every event is
// POSTed to --webhook_url, signed (common/webhook_signature.h), at least
// once, in order per payout, retried with backoff until kGiveUpAfter.
//
// Each tick asks the ledger for the events due (each payout's oldest
// undelivered one) and posts those whose payout has no POST in flight, at
// most max_in_flight at once, on an HTTP client of its own: a receiver that
// is down or slow holds up only webhooks, never payouts. An event leaves
// the outbox only once a 2xx answer is recorded, so a crash at any moment
// sends it again after the restart (receivers deduplicate by
// Payout-Event-Id). Metrics: webhook_deliveries_total{result}, and the
// outbox's size and oldest age.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/ledger/ledger.h"
#include "server/observability/metrics.h"
#include "server/upstream/upstream_client.h"

namespace aopay {

struct WebhookSenderOptions {
  std::string secret;  // the HMAC key; never logged
  size_t max_in_flight = 16;
  // How often the outbox is looked at while nothing is being delivered.
  absl::Duration tick = absl::Milliseconds(200);
};

class WebhookSender {
 public:
  // Retries wait kFirstRetry, doubling up to kMaxRetry, for kGiveUpAfter
  // from the change; then the event is dropped with an error log line and
  // counted as expired.
  static constexpr absl::Duration kFirstRetry = absl::Seconds(1);
  static constexpr absl::Duration kMaxRetry = absl::Hours(1);
  static constexpr absl::Duration kGiveUpAfter = absl::Hours(24);
  // An outbox whose oldest event is older than this is logged (once per
  // kBacklogWarnEvery) as a receiver falling behind.
  static constexpr absl::Duration kBacklogWarnAge = absl::Minutes(5);
  static constexpr absl::Duration kBacklogWarnEvery = absl::Minutes(10);

  // The body of an event's POST.
  using BodyFn = std::function<std::string(const WatchedEvent&)>;

  // The ledger, client and metrics must outlive the sender (Stop()).
  WebhookSender(Ledger& ledger, UpstreamClient& client, Metrics& metrics,
                BodyFn body, WebhookSenderOptions options);
  ~WebhookSender();
  WebhookSender(const WebhookSender&) = delete;
  WebhookSender& operator=(const WebhookSender&) = delete;

  // Starts the thread that ticks.
  void Start();
  // Stops ticking. Posts in flight finish as the client ends them (shut the
  // client down first to end them now); returns once every one is recorded.
  void Stop();

  // One look at the outbox (the thread calls it; tests may too).
  void Tick(absl::Time now);

  // How long the attempt after `attempts` failed ones waits.
  static absl::Duration RetryDelay(int attempts);

  // The outbox as last read: for the gauges.
  int64_t outbox_events() const;
  double outbox_oldest_age_seconds(absl::Time now) const;

 private:
  void OnDue(absl::StatusOr<std::vector<OutboxEvent>> due);
  void Post(const OutboxEvent& event);
  void OnAnswer(const OutboxEvent& event,
                const absl::StatusOr<HttpAnswer>& answer);
  void Settled(const std::string& payout_id, int64_t cursor,
               absl::Status settled);
  void OnBacklog(absl::StatusOr<OutboxBacklog> backlog);
  bool Idle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return outstanding_ == 0;
  }

  Ledger& ledger_;
  UpstreamClient& client_;
  Metrics& metrics_;
  const BodyFn body_;
  const WebhookSenderOptions options_;

  mutable absl::Mutex mu_;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;  // an OutboxDue is out
  bool read_again_ ABSL_GUARDED_BY(mu_) = false;
  // Ledger calls and POSTs whose callbacks have not finished.
  size_t outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<std::string> posting_ ABSL_GUARDED_BY(mu_);  // payout ids
  // Events settled while an OutboxDue was out: its answer may still hold
  // them as they were, and they must not be posted again from it.
  std::set<int64_t> settled_during_read_ ABSL_GUARDED_BY(mu_);
  OutboxBacklog backlog_ ABSL_GUARDED_BY(mu_);
  absl::Time next_backlog_read_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time next_backlog_warning_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();

  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace aopay

#endif  // AOPAY_SERVER_FLOW_WEBHOOK_SENDER_H_
