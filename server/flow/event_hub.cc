// Wakes watchers when the ledger has events past their cursor, and keeps the
// newest events for them (see event_hub.h).

#include "server/flow/event_hub.h"

#include <algorithm>
#include <limits>
#include <vector>

namespace aopay {
namespace {

// A question that finds the ledger this many times the memory's capacity
// ahead (the hub was idle while many changes were recorded) does not read
// them all: memory starts afresh at the newest event, and watchers further
// behind read the ledger.
constexpr int64_t kCatchUpPages = 4;

}  // namespace

EventHub::EventHub(ReadEvents read, int capacity, Executor* wake_on)
    : read_(std::move(read)),
      capacity_(std::max(capacity, 1)),
      wake_on_(wake_on) {}

uint64_t EventHub::WaitBeyond(int64_t cursor,
                              std::shared_ptr<const Filter> keep, Wake wake) {
  bool ask = false;
  uint64_t id = 0;
  {
    absl::MutexLock lock(&mu_);
    Waiter waiter{cursor, std::move(keep), std::move(wake)};
    if (closed_ || Due(waiter)) {
      cursor = waiter.cursor;
      wake = std::move(waiter.wake);
    } else {
      id = next_id_++;
      waiters_.emplace(id, std::move(waiter));
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
    wake(cursor);
    return 0;
  }
  if (ask) Ask();
  return id;
}

bool EventHub::Due(Waiter& waiter) {
  if (head_ < 0 || waiter.cursor >= head_) return false;  // nothing new
  // Memory must hold everything the waiter has not seen, up to the head.
  if (!waiter.keep || recent_to_ < head_ || waiter.cursor < recent_from_ ||
      waiter.cursor > recent_to_) {
    return true;
  }
  auto it = std::upper_bound(
      recent_.begin(), recent_.end(), waiter.cursor,
      [](int64_t cursor, const WatchedEvent& e) { return cursor < e.cursor; });
  for (; it != recent_.end(); ++it) {
    if ((*waiter.keep)(*it)) return true;
  }
  waiter.cursor = recent_to_;  // nothing for it: wait on, beyond them
  return false;
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
  std::vector<Waiter> due;
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    for (auto& [id, waiter] : waiters_) due.push_back(std::move(waiter));
    waiters_.clear();
  }
  for (Waiter& waiter : due) waiter.wake(waiter.cursor);
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

std::optional<EventBatch> EventHub::Recent(int64_t after, int limit,
                                           const Filter& keep) const {
  absl::MutexLock lock(&mu_);
  if (recent_to_ < 0 || after < recent_from_ || after > recent_to_) {
    return std::nullopt;
  }
  // At memory's end while the ledger holds more (the hub is still reading
  // it): the ledger. An empty page here would send the watcher to wait, and
  // the wait would wake it at once to read again, without end.
  if (after == recent_to_ && recent_to_ < head_) return std::nullopt;
  EventBatch batch;
  batch.head = std::max(head_, recent_to_);
  batch.last = after;
  auto it = std::upper_bound(
      recent_.begin(), recent_.end(), after,
      [](int64_t cursor, const WatchedEvent& e) { return cursor < e.cursor; });
  for (int read = 0; it != recent_.end() && read < limit; ++it, ++read) {
    if (keep(*it)) batch.events.push_back(*it);
    batch.last = it->cursor;
  }
  // Memory holds everything up to recent_to_: a watcher that took it all
  // goes on from there.
  if (it == recent_.end()) batch.last = recent_to_;
  return batch;
}

void EventHub::Ask() {
  int64_t after;
  int limit;
  {
    absl::MutexLock lock(&mu_);
    // The first question learns where the ledger ends; each later one reads
    // what was recorded since the one before.
    after = recent_to_ < 0 ? std::numeric_limits<int64_t>::max() : recent_to_;
    limit = recent_to_ < 0 ? 0 : capacity_;
  }
  read_(after, limit, [this, limit](absl::StatusOr<EventBatch> batch) {
    OnAnswer(std::move(batch), limit);
  });
}

void EventHub::OnAnswer(absl::StatusOr<EventBatch> batch, int limit) {
  std::vector<Waiter> due;
  bool again = false;
  {
    absl::MutexLock lock(&mu_);
    if (batch.ok()) {
      const bool full = static_cast<int>(batch->events.size()) >= limit;
      // A short page holds every event up to the head, which the ledger
      // read before it.
      const int64_t covered =
          full ? batch->last : std::max(batch->last, batch->head);
      if (limit == 0 || batch->expired ||
          (full && batch->head - covered > kCatchUpPages * capacity_)) {
        // The first answer; or retention deleted events not read yet; or
        // too far behind: memory starts afresh at the newest event.
        recent_.clear();
        recent_from_ = recent_to_ = batch->head;
      } else {
        for (WatchedEvent& watched : batch->events) {
          recent_.push_back(std::move(watched));
        }
        recent_to_ = covered;
        while (static_cast<int>(recent_.size()) > capacity_) {
          recent_from_ = recent_.front().cursor;
          recent_.pop_front();
        }
        if (full) ask_again_ = true;  // more to read
      }
      head_ = std::max({head_, batch->head, recent_to_});
    }
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (Due(it->second)) {
        due.push_back(std::move(it->second));
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
    again = ask_again_;
    ask_again_ = false;
    asking_ = again;
  }
  if (wake_on_ != nullptr && !due.empty()) {
    wake_on_->Run([due = std::move(due)]() mutable {
      for (Waiter& waiter : due) waiter.wake(waiter.cursor);
    });
  } else {
    for (Waiter& waiter : due) waiter.wake(waiter.cursor);
  }
  if (again) Ask();
}

}  // namespace aopay
