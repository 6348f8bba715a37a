// ThreadPool: every task runs once, off the caller's thread, on as many
// threads as it has; Stop() runs what was given before it (also tasks that
// tasks give meanwhile) and drops what comes after.

#include "server/executor/executor.h"

#include <atomic>
#include <memory>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

TEST(ThreadPoolTest, RunsEachTaskOnceOffTheCallersThread) {
  constexpr int kTasks = 1000;
  std::atomic<int> ran{0};
  std::atomic<int> inline_runs{0};
  const std::thread::id caller = std::this_thread::get_id();
  {
    ThreadPool pool(3);
    for (int i = 0; i < kTasks; ++i) {
      pool.Run([&] {
        if (std::this_thread::get_id() == caller) ++inline_runs;
        ++ran;
      });
    }
    pool.Stop();
    EXPECT_EQ(ran.load(), kTasks);
  }
  EXPECT_EQ(inline_runs.load(), 0);
}

TEST(ThreadPoolTest, TakesMoveOnlyTasks) {
  ThreadPool pool(1);
  absl::Notification done;
  auto value = std::make_unique<int>(7);
  int seen = 0;
  pool.Run([value = std::move(value), &seen, &done] {
    seen = *value;
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_EQ(seen, 7);
}

TEST(ThreadPoolTest, TwoThreadsRunTwoTasksAtOnce) {
  ThreadPool pool(2);
  absl::Notification first_running, second_ran;
  pool.Run([&] {
    first_running.Notify();
    // Holds its thread until the other task has run on the other one.
    second_ran.WaitForNotification();
  });
  first_running.WaitForNotification();
  pool.Run([&] { second_ran.Notify(); });
  second_ran.WaitForNotification();
}

TEST(ThreadPoolTest, StopRunsTasksGivenByTasksAndDropsLaterOnes) {
  ThreadPool pool(2);
  std::atomic<int> ran{0};
  for (int i = 0; i < 10; ++i) {
    pool.Run([&] {
      ++ran;
      pool.Run([&] { ++ran; });
    });
  }
  pool.Stop();
  EXPECT_EQ(ran.load(), 20);
  pool.Run([&] { ++ran; });
  pool.Stop();  // again: nothing happens
  EXPECT_EQ(ran.load(), 20);
}

}  // namespace
}  // namespace aopay
