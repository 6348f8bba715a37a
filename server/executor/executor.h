#ifndef AOPAY_SERVER_EXECUTOR_EXECUTOR_H_
#define AOPAY_SERVER_EXECUTOR_EXECUTOR_H_

// Where completion work runs: the ledger hands its callbacks to an Executor
// so that its writer thread only writes (a group commit never waits for the
// JSON, proto or gRPC work its callers do when told their write is durable).

#include <cstddef>
#include <cstdint>
#include <deque>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace aopay {

class Executor {
 public:
  using Task = absl::AnyInvocable<void() &&>;

  virtual ~Executor() = default;
  // Runs `task` once, soon, on a thread the executor owns (never inside the
  // call). Tasks must not block.
  virtual void Run(Task task) = 0;
};

// A fixed pool of threads taking tasks from one FIFO queue. Thread-safe.
// Tasks start in the order they were given; with more than one thread they
// may run at the same time. Stop() (and the destructor) runs every task
// given before it returns, also those that tasks give meanwhile, and joins
// the threads; Run after Stop has returned drops its task.
class ThreadPool final : public Executor {
 public:
  // `name` names the threads (NameThisThread).
  explicit ThreadPool(size_t threads, absl::string_view name = "pool");
  ~ThreadPool() override;
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Run(Task task) override;
  // Idempotent, thread-safe; must not be called from a task.
  void Stop();

 private:
  void Loop();
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !tasks_.empty();
  }

  absl::Mutex stop_mu_;  // serializes Stop()
  absl::Mutex mu_;
  std::deque<Task> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// Counts tasks handed to an executor and not yet returned, so that an owner
// can wait for them before it goes away. Shared with each task (hold it in a
// shared_ptr): a task that has just returned may still be leaving Done()
// when the owner sees the count at zero.
class CallbackCount {
 public:
  void Add();
  void Done();
  void WaitForZero();

 private:
  absl::Mutex mu_;
  int64_t running_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace aopay

#endif  // AOPAY_SERVER_EXECUTOR_EXECUTOR_H_
