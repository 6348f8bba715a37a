#include "server/sandbox/delay_scheduler.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

TEST(DelaySchedulerTest, ReleasesEachWaiterAtItsDeadlineInOrder) {
  DelayScheduler scheduler;
  const absl::Time start = absl::Now();
  absl::Mutex mu;
  std::vector<int> order;
  std::vector<std::thread> waiters;
  // Queued latest first: the order of release must come from the deadlines.
  for (int i = 3; i >= 1; --i) {
    waiters.emplace_back([&, i] {
      const absl::Time deadline = start + absl::Milliseconds(60 * i);
      EXPECT_TRUE(scheduler.WaitUntil(deadline));
      EXPECT_GE(absl::Now(), deadline);
      absl::MutexLock lock(&mu);
      order.push_back(i);
    });
  }
  for (std::thread& waiter : waiters) waiter.join();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(DelaySchedulerTest, ManyWaitersOneTimer) {
  DelayScheduler scheduler;
  const absl::Time deadline = absl::Now() + absl::Milliseconds(200);
  std::atomic<int> released{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 500; ++i) {
    waiters.emplace_back([&] {
      if (scheduler.WaitUntil(deadline) && absl::Now() >= deadline) {
        released.fetch_add(1);
      }
    });
  }
  for (std::thread& waiter : waiters) waiter.join();
  EXPECT_EQ(released.load(), 500);
}

TEST(DelaySchedulerTest, StopReleasesWaitersAtOnceWithFalse) {
  auto scheduler = std::make_unique<DelayScheduler>();
  const absl::Time start = absl::Now();
  absl::Mutex mu;
  int waiting = 0;
  std::vector<std::thread> waiters;
  std::atomic<int> stopped{0};
  for (int i = 0; i < 20; ++i) {
    waiters.emplace_back([&] {
      {
        absl::MutexLock lock(&mu);
        ++waiting;
      }
      // A Stop() that comes before the wait starts gives false as well.
      if (!scheduler->WaitUntil(start + absl::Hours(1))) stopped.fetch_add(1);
    });
  }
  {
    absl::MutexLock lock(&mu);
    auto all_started = [&waiting] { return waiting == 20; };
    ASSERT_TRUE(
        mu.AwaitWithTimeout(absl::Condition(&all_started), absl::Seconds(30)));
  }
  scheduler->Stop();
  for (std::thread& waiter : waiters) waiter.join();
  EXPECT_EQ(stopped.load(), 20);
  EXPECT_LT(absl::Now() - start, absl::Minutes(1));
  EXPECT_FALSE(scheduler->WaitUntil(absl::Now() + absl::Hours(1)));
  EXPECT_FALSE(scheduler->WaitUntil(absl::Now() - absl::Seconds(1)));
  scheduler.reset();
}

TEST(DelaySchedulerTest, APassedDeadlineReturnsAtOnce) {
  DelayScheduler scheduler;
  EXPECT_TRUE(scheduler.WaitUntil(absl::Now() - absl::Seconds(1)));
  EXPECT_TRUE(scheduler.WaitUntil(absl::InfinitePast()));
}

}  // namespace
}  // namespace aopay
