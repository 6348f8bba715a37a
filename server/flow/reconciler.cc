#include "server/flow/reconciler.h"

#include <algorithm>
#include <iterator>
#include <utility>
#include <vector>

#include "spdlog/spdlog.h"

namespace aopay {

Reconciler::Reconciler(PayoutService& service, absl::Duration interval,
                       size_t max_in_flight)
    : service_(service),
      interval_(interval),
      max_in_flight_(std::max<size_t>(max_in_flight, 1)) {}

void Reconciler::Tick(absl::Time now) {
  ListQuery query;
  {
    absl::MutexLock lock(&mu_);
    if (busy_ || (page_token_.empty() && now < next_pass_)) return;
    busy_ = true;
    query.page_token = page_token_;
  }
  query.states = {PayoutState::kAccepted};
  query.page_size = kPageSize;
  service_.List(std::move(query), AnonymousClient(),
                [this, now](absl::StatusOr<ListPage> page) {
                  OnPage(now, std::move(page));
                });
}

void Reconciler::OnPage(absl::Time now, absl::StatusOr<ListPage> page) {
  {
    absl::MutexLock lock(&mu_);
    if (!page.ok()) {
      spdlog::warn("reconciler could not list payouts: {}",
                   page.status().ToString());
      page_token_.clear();
      next_pass_ = now + interval_;
      busy_ = false;
      return;
    }
    for (const Payout& payout : page->payouts) {
      seen_.insert(payout.payout_id);
      auto it = backoff_.find(payout.payout_id);
      if (it == backoff_.end() || it->second.next <= now) {
        due_.push_back(payout.payout_id);
      }
    }
    page_token_ = page->next_page_token;
    if (page_token_.empty()) {
      next_pass_ = now + interval_;
      for (auto it = backoff_.begin(); it != backoff_.end();) {
        it = seen_.count(it->first) > 0 ? std::next(it) : backoff_.erase(it);
      }
      seen_.clear();
    }
    if (due_.empty()) busy_ = false;
  }
  StartMore(now);
}

void Reconciler::StartMore(absl::Time now) {
  std::vector<std::string> starting;
  {
    absl::MutexLock lock(&mu_);
    while (in_flight_ < max_in_flight_ && !due_.empty()) {
      starting.push_back(std::move(due_.front()));
      due_.pop_front();
      ++in_flight_;
    }
  }
  for (const std::string& payout_id : starting) {
    service_.Reconcile(payout_id,
                       [this, payout_id, now](absl::StatusOr<Payout> payout) {
                         OnRefreshed(payout_id, now, payout);
                       });
  }
}

void Reconciler::OnRefreshed(const std::string& payout_id, absl::Time now,
                             const absl::StatusOr<Payout>& payout) {
  {
    absl::MutexLock lock(&mu_);
    if (payout.ok() && payout->state != PayoutState::kAccepted) {
      backoff_.erase(payout_id);
    } else if (payout.status().code() != absl::StatusCode::kResourceExhausted) {
      auto [it, inserted] =
          backoff_.try_emplace(payout_id, Backoff{now, interval_});
      if (!inserted) {
        it->second.delay = std::min(it->second.delay * 2, kMaxDelay);
      }
      it->second.next = now + it->second.delay;
    }
    --in_flight_;
    if (in_flight_ == 0 && due_.empty()) {
      busy_ = false;
      return;
    }
  }
  StartMore(now);
}

}  // namespace aopay
