#ifndef AOPAY_SERVER_FLOW_TIMER_H_
#define AOPAY_SERVER_FLOW_TIMER_H_

// Delayed tasks: retries with backoff run here, off the threads of the
// ledger, the upstream client and gRPC.

#include <functional>
#include <map>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace aopay {

class Timer {
 public:
  virtual ~Timer() = default;
  // Runs `task` once, about `delay` from now, on a thread the timer owns
  // (never inside the call). Tasks must not block.
  virtual void RunAfter(absl::Duration delay, std::function<void()> task) = 0;
};

// One thread; tasks run in the order they fall due. Thread-safe. Tasks that
// are not yet due when the timer stops never run, and RunAfter after Stop
// drops its task.
class ThreadTimer final : public Timer {
 public:
  ThreadTimer();
  ~ThreadTimer() override;
  ThreadTimer(const ThreadTimer&) = delete;
  ThreadTimer& operator=(const ThreadTimer&) = delete;

  void RunAfter(absl::Duration delay, std::function<void()> task) override;
  // Ends the thread after the task it is running, if any. Idempotent; must
  // not be called from a task.
  void Stop();

 private:
  void Loop();
  bool Ready() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::multimap<absl::Time, std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // When the loop's current wait ends by itself.
  absl::Time waiting_until_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  std::thread thread_;
};

}  // namespace aopay

#endif  // AOPAY_SERVER_FLOW_TIMER_H_
