#ifndef AOPAY_SERVER_SANDBOX_DELAY_SCHEDULER_H_
#define AOPAY_SERVER_SANDBOX_DELAY_SCHEDULER_H_

// Releases delayed answers from one timer thread. cpp-httplib's handlers are
// synchronous (the worker thread that owns a connection must write the
// answer), so a delayed handler still blocks its connection's thread; what
// this changes is what it waits on. Each waiter blocks on a notification of
// its own, kept in a deadline-ordered queue, instead of thousands of timed
// waits on one shared notification, whose mutex every wait, time-out and
// wake-up contended for (at 5,000 delayed answers in flight that cost more
// than the answers themselves).

#include <functional>
#include <queue>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace aopay {

// Thread-safe. The destructor stops (see Stop()) and joins the timer thread.
class DelayScheduler {
 public:
  DelayScheduler();
  ~DelayScheduler();
  DelayScheduler(const DelayScheduler&) = delete;
  DelayScheduler& operator=(const DelayScheduler&) = delete;

  // Blocks until `deadline` has passed (true) or Stop() was called (false,
  // at once, whatever the deadline).
  [[nodiscard]] bool WaitUntil(absl::Time deadline);

  // Releases every waiter with false; later waits return false at once.
  // Idempotent.
  void Stop();

 private:
  struct Waiter;
  using Entry = std::pair<absl::Time, Waiter*>;

  void Run();

  absl::Mutex mu_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> queue_
      ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  absl::CondVar wake_;  // an earlier deadline, or Stop()
  std::thread timer_;
};

}  // namespace aopay

#endif  // AOPAY_SERVER_SANDBOX_DELAY_SCHEDULER_H_
