#include "server/flow/timer.h"

#include <utility>

#include "common/thread_name.h"

namespace aopay {

ThreadTimer::ThreadTimer()
    : thread_([this] {
        NameThisThread("retry-timer");
        Loop();
      }) {}

ThreadTimer::~ThreadTimer() { Stop(); }

void ThreadTimer::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    tasks_.clear();
  }
  if (thread_.joinable()) thread_.join();
}

void ThreadTimer::RunAfter(absl::Duration delay, std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  tasks_.emplace(absl::Now() + delay, std::move(task));
}

// Wakes the loop: stopping, a task due, or a task earlier than the one it
// is waiting for.
bool ThreadTimer::Ready() const {
  if (stopping_) return true;
  if (tasks_.empty()) return false;
  const absl::Time first = tasks_.begin()->first;
  return first < waiting_until_ || first <= absl::Now();
}

void ThreadTimer::Loop() {
  for (;;) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      waiting_until_ =
          tasks_.empty() ? absl::InfiniteFuture() : tasks_.begin()->first;
      mu_.AwaitWithDeadline(absl::Condition(this, &ThreadTimer::Ready),
                            waiting_until_);
      if (stopping_) return;
      if (tasks_.empty() || tasks_.begin()->first > absl::Now()) continue;
      task = std::move(tasks_.begin()->second);
      tasks_.erase(tasks_.begin());
    }
    task();
  }
}

}  // namespace aopay
