// EventHub: waking watchers with one ledger question for all of them, and
// serving their next pages from the newest events it keeps in memory.

#include "server/flow/event_hub.h"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

constexpr int64_t kNoCursor = std::numeric_limits<int64_t>::max();

// A ledger's events (ids only) whose answers wait until Answer() runs them,
// so that each test decides what is recorded between a question and its
// answer.
class FakeEvents {
 public:
  EventHub::ReadEvents Reader() {
    return [this](int64_t after, int limit,
                  std::function<void(absl::StatusOr<EventBatch>)> done) {
      asked_.emplace_back(after, limit);
      pending_.push_back([this, after, limit, done = std::move(done)] {
        done(Read(after, limit));
      });
    };
  }
  void Record(int count) {
    for (int i = 0; i < count; ++i) ids_.push_back(++last_id_);
  }
  void Prune(int64_t through) { pruned_through_ = through; }
  // Runs the answers asked for so far (and those they lead to).
  void Answer() {
    while (!pending_.empty()) {
      std::function<void()> next = std::move(pending_.front());
      pending_.pop_front();
      next();
    }
  }
  // Runs the first answer asked for only.
  void AnswerOne() {
    std::function<void()> next = std::move(pending_.front());
    pending_.pop_front();
    next();
  }
  const std::vector<std::pair<int64_t, int>>& asked() const { return asked_; }

 private:
  EventBatch Read(int64_t after, int limit) const {
    EventBatch batch;
    batch.head = last_id_;
    batch.last = after;
    if (after < pruned_through_) {
      batch.expired = true;
      return batch;
    }
    for (int64_t id : ids_) {
      if (id <= after) continue;
      if (static_cast<int>(batch.events.size()) >= limit) break;
      WatchedEvent watched;
      watched.cursor = id;
      watched.payout.payout_id = "po_" + std::to_string(id);
      batch.events.push_back(std::move(watched));
      batch.last = id;
    }
    return batch;
  }

  std::vector<int64_t> ids_;
  int64_t last_id_ = 0;
  int64_t pruned_through_ = 0;
  std::vector<std::pair<int64_t, int>> asked_;
  std::deque<std::function<void()>> pending_;
};

bool All(const WatchedEvent&) { return true; }

std::vector<int64_t> Cursors(const EventBatch& batch) {
  std::vector<int64_t> cursors;
  for (const WatchedEvent& watched : batch.events) {
    cursors.push_back(watched.cursor);
  }
  return cursors;
}

TEST(EventHubTest, OneQuestionWakesEveryWaiter) {
  FakeEvents ledger;
  ledger.Record(3);
  EventHub hub(ledger.Reader(), 8);
  int woken = 0;
  for (int i = 0; i < 1000; ++i)
    hub.WaitBeyond(3, nullptr, [&](int64_t) { ++woken; });
  ledger.Answer();  // the first question: where the ledger ends
  EXPECT_EQ(woken, 0);
  EXPECT_EQ(hub.Waiting(), 1000u);
  ledger.Record(2);
  hub.Poke();
  ledger.Answer();
  EXPECT_EQ(woken, 1000);
  // The head; once more because waiters came while it was asked; then what
  // was recorded since: three reads for 1,000 watchers.
  EXPECT_THAT(ledger.asked(),
              ElementsAre(Pair(kNoCursor, 0), Pair(3, 8), Pair(3, 8)));
}

TEST(EventHubTest, WokenWatchersReadTheNewestEventsFromMemory) {
  FakeEvents ledger;
  ledger.Record(10);
  EventHub hub(ledger.Reader(), 8);
  EXPECT_FALSE(hub.Recent(10, 256, All).has_value());  // nothing known yet
  bool woken = false;
  hub.WaitBeyond(10, nullptr, [&](int64_t) { woken = true; });
  ledger.Answer();
  ledger.Record(3);
  hub.Poke();
  ledger.Answer();
  ASSERT_TRUE(woken);
  std::optional<EventBatch> page = hub.Recent(10, 256, All);
  ASSERT_TRUE(page.has_value());
  EXPECT_THAT(Cursors(*page), ElementsAre(11, 12, 13));
  EXPECT_EQ(page->last, 13);
  EXPECT_EQ(page->head, 13);
  EXPECT_EQ(page->events[0].payout.payout_id, "po_11");
  // A page limit is kept; the rest follows from the page's last cursor.
  page = hub.Recent(10, 2, All);
  ASSERT_TRUE(page.has_value());
  EXPECT_THAT(Cursors(*page), ElementsAre(11, 12));
  EXPECT_EQ(page->last, 12);
  page = hub.Recent(13, 256, All);
  ASSERT_TRUE(page.has_value());
  EXPECT_TRUE(page->events.empty());
  EXPECT_EQ(page->last, 13);
  // Before what memory holds (a replaying watcher), or past it: the ledger.
  EXPECT_FALSE(hub.Recent(9, 256, All).has_value());
  EXPECT_FALSE(hub.Recent(14, 256, All).has_value());
  EXPECT_EQ(ledger.asked().size(), 2u);  // Recent() read nothing
}

TEST(EventHubTest, APageFromMemoryHoldsOnlyWhatTheWatcherTakes) {
  FakeEvents ledger;
  EventHub hub(ledger.Reader(), 8);
  hub.WaitBeyond(0, nullptr, [](int64_t) {});
  ledger.Answer();
  ledger.Record(5);
  hub.Poke();
  ledger.Answer();
  std::optional<EventBatch> page = hub.Recent(
      0, 256,
      [](const WatchedEvent& watched) { return watched.cursor % 2 == 0; });
  ASSERT_TRUE(page.has_value());
  EXPECT_THAT(Cursors(*page), ElementsAre(2, 4));
  EXPECT_EQ(page->last, 5);  // past the events left out
  // The limit counts every event read, as the ledger's page does.
  page = hub.Recent(
      0, 3, [](const WatchedEvent& watched) { return watched.cursor == 5; });
  ASSERT_TRUE(page.has_value());
  EXPECT_TRUE(page->events.empty());
  EXPECT_EQ(page->last, 3);
}

TEST(EventHubTest, AFilteredWaiterSleepsThroughEventsItDoesNotTake) {
  FakeEvents ledger;
  EventHub hub(ledger.Reader(), 8);
  hub.WaitBeyond(0, nullptr, [](int64_t) {});
  ledger.Answer();  // memory at 0
  std::vector<int64_t> woken_at;
  const auto only_po_4 =
      std::make_shared<const EventHub::Filter>([](const WatchedEvent& watched) {
        return watched.payout.payout_id == "po_4";
      });
  hub.WaitBeyond(0, only_po_4,
                 [&](int64_t cursor) { woken_at.push_back(cursor); });
  ledger.Record(3);
  hub.Poke();
  ledger.Answer();
  EXPECT_TRUE(woken_at.empty());  // 1..3 are not for it
  EXPECT_EQ(hub.Waiting(), 1u);
  ledger.Record(2);
  hub.Poke();
  ledger.Answer();
  // Woken for 4, told that everything up to 3 was not for it.
  EXPECT_THAT(woken_at, ElementsAre(3));
  // A waiter whose events memory does not hold is woken to read them.
  bool woken = false;
  hub.WaitBeyond(-5, only_po_4, [&](int64_t) { woken = true; });
  EXPECT_TRUE(woken);
}

// Tasks wait until the test runs them.
class QueuedExecutor final : public Executor {
 public:
  void Run(Task task) override { tasks_.push_back(std::move(task)); }
  void RunAll() {
    while (!tasks_.empty()) {
      Task task = std::move(tasks_.front());
      tasks_.pop_front();
      std::move(task)();
    }
  }
  size_t queued() const { return tasks_.size(); }

 private:
  std::deque<Task> tasks_;
};

TEST(EventHubTest, WaitersWakeOnTheirOwnExecutorInOneTask) {
  FakeEvents ledger;
  QueuedExecutor wakes;
  EventHub hub(ledger.Reader(), 8, &wakes);
  int woken = 0;
  for (int i = 0; i < 3; ++i)
    hub.WaitBeyond(0, nullptr, [&](int64_t) { ++woken; });
  ledger.Record(1);
  ledger.Answer();
  EXPECT_EQ(woken, 0);  // not on the thread the answer came on
  EXPECT_EQ(wakes.queued(), 1u);
  wakes.RunAll();
  EXPECT_EQ(woken, 3);
}

TEST(EventHubTest, MemoryKeepsOnlyTheNewestAndReadsUntilCaughtUp) {
  FakeEvents ledger;
  EventHub hub(ledger.Reader(), 4);
  hub.WaitBeyond(0, nullptr, [](int64_t) {});
  ledger.Answer();  // head 0
  ledger.Record(10);
  hub.WaitBeyond(0, nullptr, [](int64_t) {});
  ledger.Answer();
  // Full pages of 4 until the ledger's end: 4, 4, then 2.
  EXPECT_THAT(ledger.asked(), ElementsAre(Pair(kNoCursor, 0), Pair(0, 4),
                                          Pair(4, 4), Pair(8, 4)));
  // Only the newest 4 stay: 7..10.
  EXPECT_FALSE(hub.Recent(5, 256, All).has_value());
  std::optional<EventBatch> page = hub.Recent(6, 256, All);
  ASSERT_TRUE(page.has_value());
  EXPECT_THAT(Cursors(*page), ElementsAre(7, 8, 9, 10));
}

TEST(EventHubTest, AWatcherAtTheEndOfMemoryBeforeTheHeadReadsTheLedger) {
  FakeEvents ledger;
  EventHub hub(ledger.Reader(), 4);
  hub.WaitBeyond(0, nullptr, [](int64_t) {});
  ledger.Answer();  // head 0
  ledger.Record(10);
  hub.Poke();
  ledger.AnswerOne();  // 1..4 of 10: memory ends at 4, the next page asked
  ASSERT_THAT(ledger.asked(),
              ElementsAre(Pair(kNoCursor, 0), Pair(0, 4), Pair(4, 4)));
  // Up to memory's end it serves; at its end, with more in the ledger, the
  // watcher reads the ledger. Served an empty page there, a watcher waited,
  // was woken at once to read (memory does not reach the head) and was
  // served the same empty page: each turn one call deeper, until the hub's
  // next answer came, or without end if that question failed.
  std::optional<EventBatch> page = hub.Recent(2, 256, All);
  ASSERT_TRUE(page.has_value());
  EXPECT_THAT(Cursors(*page), ElementsAre(3, 4));
  EXPECT_FALSE(hub.Recent(4, 256, All).has_value());
  int turns = 0;
  bool reads_the_ledger = false;
  std::function<void(int64_t)> watch = [&](int64_t cursor) {
    if (++turns > 100) return;
    std::optional<EventBatch> next = hub.Recent(cursor, 256, All);
    if (!next.has_value()) {
      reads_the_ledger = true;
      return;
    }
    if (next->events.empty() && next->last == cursor) {
      hub.WaitBeyond(cursor, nullptr, watch);
    } else {
      watch(next->last);
    }
  };
  watch(4);
  EXPECT_TRUE(reads_the_ledger);
  EXPECT_EQ(turns, 1);
}

TEST(EventHubTest, FarBehindStartsAfreshAtTheNewest) {
  FakeEvents ledger;
  EventHub hub(ledger.Reader(), 2);
  hub.WaitBeyond(0, nullptr, [](int64_t) {});
  ledger.Answer();
  ledger.Record(100);  // far more than 4 pages of 2 while nobody asked
  bool woken = false;
  hub.WaitBeyond(0, nullptr, [&](int64_t) { woken = true; });
  ledger.Answer();
  EXPECT_TRUE(woken);
  // One page read, then memory starts at 100; nothing between is kept.
  EXPECT_THAT(ledger.asked(), ElementsAre(Pair(kNoCursor, 0), Pair(0, 2)));
  EXPECT_FALSE(hub.Recent(50, 256, All).has_value());
  std::optional<EventBatch> page = hub.Recent(100, 256, All);
  ASSERT_TRUE(page.has_value());
  EXPECT_TRUE(page->events.empty());
}

TEST(EventHubTest, EventsDeletedBeforeTheyWereReadStartMemoryAfresh) {
  FakeEvents ledger;
  ledger.Record(5);
  EventHub hub(ledger.Reader(), 8);
  hub.WaitBeyond(5, nullptr, [](int64_t) {});
  ledger.Answer();  // memory at 5
  ledger.Record(5);
  ledger.Prune(7);  // retention took 6 and 7 before the hub read them
  hub.Poke();
  ledger.Answer();
  EXPECT_FALSE(hub.Recent(5, 256, All).has_value());
  std::optional<EventBatch> page = hub.Recent(10, 256, All);
  ASSERT_TRUE(page.has_value());
  EXPECT_TRUE(page->events.empty());
}

TEST(EventHubTest, CloseWakesEveryWaiterAndEveryLaterOne) {
  FakeEvents ledger;
  EventHub hub(ledger.Reader(), 8);
  int woken = 0;
  hub.WaitBeyond(0, nullptr, [&](int64_t) { ++woken; });
  hub.WaitBeyond(0, nullptr, [&](int64_t) { ++woken; });
  hub.Close();
  EXPECT_EQ(woken, 2);
  EXPECT_EQ(hub.WaitBeyond(0, nullptr, [&](int64_t) { ++woken; }), 0u);
  EXPECT_EQ(woken, 3);
  EXPECT_EQ(hub.Waiting(), 0u);
}

TEST(EventHubTest, ACancelledWaiterIsNeverWoken) {
  FakeEvents ledger;
  EventHub hub(ledger.Reader(), 8);
  bool woken = false;
  const uint64_t id =
      hub.WaitBeyond(0, nullptr, [&](int64_t) { woken = true; });
  ASSERT_NE(id, 0u);
  EXPECT_TRUE(hub.Cancel(id));
  ledger.Record(1);
  ledger.Answer();
  EXPECT_FALSE(woken);
  EXPECT_FALSE(hub.Cancel(id));
}

}  // namespace
}  // namespace aopay
