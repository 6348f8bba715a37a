// ThreadTimer: tasks run once, in the order they fall due, off the caller's
// thread; an earlier task added later does not wait behind a later one.

#include "server/flow/timer.h"

#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

TEST(ThreadTimerTest, RunsTasksInTheOrderTheyFallDue) {
  ThreadTimer timer;
  absl::Mutex mu;
  std::vector<int> order;
  absl::Notification last;
  timer.RunAfter(absl::Milliseconds(60), [&] {
    absl::MutexLock lock(&mu);
    order.push_back(3);
    last.Notify();
  });
  timer.RunAfter(absl::Milliseconds(20), [&] {
    absl::MutexLock lock(&mu);
    order.push_back(2);
  });
  timer.RunAfter(absl::ZeroDuration(), [&] {
    absl::MutexLock lock(&mu);
    order.push_back(1);
  });
  ASSERT_TRUE(last.WaitForNotificationWithTimeout(absl::Seconds(10)));
  absl::MutexLock lock(&mu);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(ThreadTimerTest, AnEarlierTaskDoesNotWaitBehindALaterOne) {
  ThreadTimer timer;
  absl::Notification never;
  timer.RunAfter(absl::Hours(1), [&] { never.Notify(); });
  absl::Notification soon;
  std::thread::id ran_on;
  timer.RunAfter(absl::ZeroDuration(), [&] {
    ran_on = std::this_thread::get_id();
    soon.Notify();
  });
  ASSERT_TRUE(soon.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_NE(ran_on, std::this_thread::get_id());
  EXPECT_FALSE(never.HasBeenNotified());
}

TEST(ThreadTimerTest, TasksAddedByATaskRun) {
  ThreadTimer timer;
  absl::Notification second;
  timer.RunAfter(absl::ZeroDuration(), [&] {
    timer.RunAfter(absl::ZeroDuration(), [&] { second.Notify(); });
  });
  EXPECT_TRUE(second.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

TEST(ThreadTimerTest, StopDropsTasksNotYetDue) {
  bool ran = false;
  {
    ThreadTimer timer;
    timer.RunAfter(absl::Hours(1), [&] { ran = true; });
    timer.Stop();
    timer.RunAfter(absl::ZeroDuration(), [&] { ran = true; });
  }
  EXPECT_FALSE(ran);
}

}  // namespace
}  // namespace aopay
