#include "server/executor/executor.h"

#include <algorithm>
#include <string>
#include <utility>

#include "common/thread_name.h"

namespace aopay {

ThreadPool::ThreadPool(size_t threads, absl::string_view name) {
  threads_.reserve(std::max<size_t>(threads, 1));
  for (size_t i = 0; i < std::max<size_t>(threads, 1); ++i) {
    threads_.emplace_back([this, name = std::string(name)] {
      NameThisThread(name);
      Loop();
    });
  }
}

ThreadPool::~ThreadPool() { Stop(); }

void ThreadPool::Stop() {
  absl::MutexLock stop_lock(&stop_mu_);
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  // A task given while the last thread was leaving still runs, here.
  for (;;) {
    Task task;
    {
      absl::MutexLock lock(&mu_);
      if (tasks_.empty()) {
        stopped_ = true;
        return;
      }
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    std::move(task)();
  }
}

void ThreadPool::Run(Task task) {
  absl::MutexLock lock(&mu_);
  if (stopped_) return;
  tasks_.push_back(std::move(task));
}

void ThreadPool::Loop() {
  for (;;) {
    Task task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &ThreadPool::HasWork));
      if (tasks_.empty()) return;  // stopping, and every task has run
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    std::move(task)();
  }
}

void CallbackCount::Add() {
  absl::MutexLock lock(&mu_);
  ++running_;
}

void CallbackCount::Done() {
  absl::MutexLock lock(&mu_);
  --running_;
}

void CallbackCount::WaitForZero() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int64_t* running) { return *running == 0; }, &running_));
}

}  // namespace aopay
