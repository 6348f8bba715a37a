#include "server/sandbox/delay_scheduler.h"

#include "absl/synchronization/notification.h"

namespace aopay {

struct DelayScheduler::Waiter {
  bool released_by_stop = false;  // written before `done` is notified
  absl::Notification done;
};

DelayScheduler::DelayScheduler() : timer_([this] { Run(); }) {}

DelayScheduler::~DelayScheduler() {
  Stop();
  timer_.join();
}

bool DelayScheduler::WaitUntil(absl::Time deadline) {
  Waiter waiter;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return false;
    if (deadline <= absl::Now()) return true;
    const bool earliest = queue_.empty() || deadline < queue_.top().first;
    queue_.emplace(deadline, &waiter);
    if (earliest) wake_.Signal();
  }
  waiter.done.WaitForNotification();
  return !waiter.released_by_stop;
}

void DelayScheduler::Stop() {
  absl::MutexLock lock(&mu_);
  stopped_ = true;
  wake_.Signal();
}

void DelayScheduler::Run() {
  absl::MutexLock lock(&mu_);
  while (true) {
    const absl::Time now = absl::Now();
    while (!queue_.empty() && (stopped_ || queue_.top().first <= now)) {
      Waiter* waiter = queue_.top().second;
      queue_.pop();
      waiter->released_by_stop = stopped_;
      waiter->done.Notify();  // the waiter may be gone once this returns
    }
    if (stopped_) return;
    if (queue_.empty()) {
      wake_.Wait(&mu_);
    } else {
      wake_.WaitWithDeadline(&mu_, queue_.top().first);
    }
  }
}

}  // namespace aopay
