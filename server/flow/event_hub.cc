// Wakes watchers when the ledger has events past their cursor (see
// event_hub.h).

#include "server/flow/event_hub.h"

#include <limits>
#include <vector>

namespace aopay {

uint64_t EventHub::WaitBeyond(int64_t cursor, std::function<void()> wake) {
  bool ask = false;
  uint64_t id = 0;
  {
    absl::MutexLock lock(&mu_);
    if (!closed_ && (head_ < 0 || head_ <= cursor)) {
      id = next_id_++;
      waiters_.emplace(id, std::make_pair(cursor, std::move(wake)));
      // Ask once more after this waiter came (writes made while nobody
      // waited were not asked about), or after the question in flight.
      if (asking_) {
        ask_again_ = true;
      } else {
        asking_ = ask = true;
      }
    }
  }
  if (id == 0) {
    wake();
    return 0;
  }
  if (ask) Ask();
  return id;
}

bool EventHub::Cancel(uint64_t id) {
  absl::MutexLock lock(&mu_);
  return waiters_.erase(id) > 0;
}

size_t EventHub::Waiting() const {
  absl::MutexLock lock(&mu_);
  return waiters_.size();
}

void EventHub::Close() {
  std::vector<std::function<void()>> due;
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    for (auto& [id, waiter] : waiters_) due.push_back(std::move(waiter.second));
    waiters_.clear();
  }
  for (std::function<void()>& wake : due) wake();
}

void EventHub::Poke() {
  {
    absl::MutexLock lock(&mu_);
    // Nobody waits: nothing to ask (a payout's writes then cost no read). A
    // watcher only waits once it has read up to the newest event itself, so
    // a head learnt later is never too old for it.
    if (waiters_.empty()) return;
    if (asking_) {
      ask_again_ = true;
      return;
    }
    asking_ = true;
  }
  Ask();
}

void EventHub::Ask() {
  ledger_.EventsAfter(std::numeric_limits<int64_t>::max(), 0,
                      [this](absl::StatusOr<EventBatch> batch) {
                        OnHead(batch.ok() ? batch->head : -1);
                      });
}

void EventHub::OnHead(int64_t head) {
  std::vector<std::function<void()>> due;
  bool again = false;
  {
    absl::MutexLock lock(&mu_);
    if (head > head_) head_ = head;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (head_ >= 0 && it->second.first < head_) {
        due.push_back(std::move(it->second.second));
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
    again = ask_again_;
    ask_again_ = false;
    asking_ = again;
  }
  for (std::function<void()>& wake : due) wake();
  if (again) Ask();
}

}  // namespace aopay
