#include "server/flow/webhook_sender.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/ids.h"
#include "common/thread_name.h"
#include "common/webhook_signature.h"
#include "spdlog/spdlog.h"

namespace aopay {

WebhookSender::WebhookSender(Ledger& ledger, UpstreamClient& client,
                             Metrics& metrics, BodyFn body,
                             WebhookSenderOptions options)
    : ledger_(ledger),
      client_(client),
      metrics_(metrics),
      body_(std::move(body)),
      options_(std::move(options)) {}

WebhookSender::~WebhookSender() { Stop(); }

void WebhookSender::Start() {
  thread_ = std::thread([this] {
    NameThisThread("webhook-sender");
    do {
      Tick(absl::Now());
    } while (!stop_.WaitForNotificationWithTimeout(options_.tick));
  });
}

void WebhookSender::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(this, &WebhookSender::Idle));
}

absl::Duration WebhookSender::RetryDelay(int attempts) {
  absl::Duration delay = kFirstRetry;
  for (int i = 0; i < attempts && delay < kMaxRetry; ++i) delay *= 2;
  return std::min(delay, kMaxRetry);
}

void WebhookSender::Tick(absl::Time now) {
  bool read_backlog = false;
  bool read_due = false;
  {
    absl::MutexLock lock(&mu_);
    if (now >= next_backlog_read_) {
      next_backlog_read_ = now + absl::Seconds(1);
      read_backlog = true;
      ++outstanding_;
    }
    if (reading_) {
      read_again_ = true;  // once the answer in flight is handled
    } else if (posting_.size() < options_.max_in_flight) {
      reading_ = read_due = true;
      settled_during_read_.clear();
      ++outstanding_;
    }
  }
  if (read_backlog) {
    ledger_.OutboxWaiting([this](absl::StatusOr<OutboxBacklog> backlog) {
      OnBacklog(std::move(backlog));
    });
  }
  if (!read_due) return;
  // Room for the free slots and for the events of payouts already being
  // posted, which the answer holds too and which are skipped.
  ledger_.OutboxDue(now, static_cast<int>(options_.max_in_flight * 2),
                    [this](absl::StatusOr<std::vector<OutboxEvent>> due) {
                      OnDue(std::move(due));
                    });
}

void WebhookSender::OnDue(absl::StatusOr<std::vector<OutboxEvent>> due) {
  if (!due.ok()) {
    spdlog::warn("webhooks: cannot read the outbox: {}",
                 std::string(due.status().message()));
  }
  std::vector<const OutboxEvent*> to_post;
  bool again = false;
  {
    absl::MutexLock lock(&mu_);
    if (due.ok()) {
      for (const OutboxEvent& event : *due) {
        if (posting_.size() >= options_.max_in_flight) break;
        if (settled_during_read_.count(event.watched.cursor) > 0) continue;
        if (!posting_.insert(event.watched.payout.payout_id).second) continue;
        ++outstanding_;
        to_post.push_back(&event);
      }
    }
    reading_ = false;
    again = std::exchange(read_again_, false) && !stop_.HasBeenNotified();
  }
  for (const OutboxEvent* event : to_post) Post(*event);
  if (again) Tick(absl::Now());
  absl::MutexLock lock(&mu_);
  --outstanding_;
}

void WebhookSender::Post(const OutboxEvent& event) {
  UpstreamRequest request;
  request.body = body_(event.watched);
  request.headers = {
      absl::StrCat(kWebhookEventIdHeader, ": ",
                   EventCursor(event.watched.cursor)),
      absl::StrCat(kWebhookSignatureHeader, ": ",
                   SignWebhook(options_.secret, absl::Now(), request.body))};
  // A webhook may arrive twice anyway: the transport may re-send it.
  request.idempotent = true;
  client_.Post(std::move(request),
               [this, event](absl::StatusOr<HttpAnswer> answer) {
                 OnAnswer(event, answer);
               });
}

void WebhookSender::OnAnswer(const OutboxEvent& event,
                             const absl::StatusOr<HttpAnswer>& answer) {
  const std::string& payout_id = event.watched.payout.payout_id;
  const bool delivered =
      answer.ok() && answer->http_status >= 200 && answer->http_status < 300;
  const absl::Time now = absl::Now();
  std::optional<absl::Time> retry_at;
  const char* result = "delivered";
  if (!delivered) {
    const std::string why = answer.ok()
                                ? absl::StrCat("HTTP ", answer->http_status)
                                : std::string(answer.status().message());
    if (now - event.enqueued >= kGiveUpAfter) {
      result = "expired";
      spdlog::error(
          "webhooks: gave up on event {} of payout {} after {} attempts over "
          "{}: {}",
          EventCursor(event.watched.cursor), payout_id, event.attempts + 1,
          absl::FormatDuration(kGiveUpAfter), why);
    } else {
      result = "retried";
      retry_at = now + RetryDelay(event.attempts);
      spdlog::warn(
          "webhooks: event {} of payout {} not delivered (attempt {}): {}; "
          "next attempt in {}",
          EventCursor(event.watched.cursor), payout_id, event.attempts + 1, why,
          absl::FormatDuration(*retry_at - now));
    }
  }
  metrics_.webhook_deliveries.Increment({result});
  ledger_.OutboxSettle(
      event.watched.cursor, retry_at,
      [this, payout_id, cursor = event.watched.cursor](absl::Status settled) {
        Settled(payout_id, cursor, settled);
      });
}

void WebhookSender::Settled(const std::string& payout_id, int64_t cursor,
                            absl::Status settled) {
  if (!settled.ok()) {
    // Still in the outbox as it was: it is posted again (at least once).
    spdlog::warn("webhooks: cannot record a delivery of payout {}: {}",
                 payout_id, std::string(settled.message()));
  }
  bool more = false;
  {
    absl::MutexLock lock(&mu_);
    posting_.erase(payout_id);
    if (reading_) settled_during_read_.insert(cursor);
    more = !stop_.HasBeenNotified();
  }
  // A slot is free, and this payout's next event may be due: look now
  // rather than at the next tick, so a backlog drains at full speed.
  if (more) Tick(absl::Now());
  absl::MutexLock lock(&mu_);
  --outstanding_;
}

void WebhookSender::OnBacklog(absl::StatusOr<OutboxBacklog> backlog) {
  absl::MutexLock lock(&mu_);
  --outstanding_;
  if (!backlog.ok()) return;
  backlog_ = *std::move(backlog);
  const absl::Time now = absl::Now();
  if (backlog_.oldest.has_value() && now - *backlog_.oldest > kBacklogWarnAge &&
      now >= next_backlog_warning_) {
    next_backlog_warning_ = now + kBacklogWarnEvery;
    spdlog::warn(
        "webhooks: {} events wait for delivery, the oldest for {}; is the "
        "receiver down?",
        backlog_.events,
        absl::FormatDuration(
            absl::Trunc(now - *backlog_.oldest, absl::Seconds(1))));
  }
}

int64_t WebhookSender::outbox_events() const {
  absl::MutexLock lock(&mu_);
  return backlog_.events;
}

double WebhookSender::outbox_oldest_age_seconds(absl::Time now) const {
  absl::MutexLock lock(&mu_);
  if (!backlog_.oldest.has_value()) return 0;
  return std::max(0.0, absl::ToDoubleSeconds(now - *backlog_.oldest));
}

}  // namespace aopay
