#ifndef AOPAY_SERVER_FLOW_EVENT_HUB_H_
#define AOPAY_SERVER_FLOW_EVENT_HUB_H_

// What WatchPayouts watchers share, so that their cost does not grow with
// their number:
//
// - Waking. A watcher that has read everything waits in the hub; the hub
//   asks the ledger for what is new after each change this process records
//   (Poke) and at least every second (the server's housekeeping pokes it),
//   one question at a time, and only while some watcher waits. An idle
//   watcher costs no ledger reads.
// - The newest events. Each question reads the events recorded since the
//   last one, once, and the hub keeps the newest `capacity` of them in
//   memory: a woken watcher takes its next page from there (Recent) instead
//   of reading the ledger itself, so a commit costs one ledger read however
//   many watchers follow it. A watcher further behind (replaying from an
//   old cursor) reads the ledger until it catches up.

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/executor/executor.h"
#include "server/ledger/ledger.h"

namespace aopay {

// Events the hub keeps in memory by default: four watch pages.
inline constexpr int kRecentEvents = 1024;

// Thread-safe.
class EventHub {
 public:
  // What a watcher takes of the events it reads.
  using Filter = std::function<bool(const WatchedEvent&)>;
  // Ledger::EventsAfter, or a stand-in for it in tests.
  using ReadEvents =
      std::function<void(int64_t after, int limit,
                         std::function<void(absl::StatusOr<EventBatch>)> done)>;

  // `capacity` > 0: the newest events kept in memory. Waiters woken by a
  // ledger answer are woken on `wake_on` (one task for all of them) when
  // given, so that their work never delays the tasks of the executor the
  // answer came on; else on that thread.
  explicit EventHub(ReadEvents read, int capacity = kRecentEvents,
                    Executor* wake_on = nullptr);
  EventHub(const EventHub&) = delete;
  EventHub& operator=(const EventHub&) = delete;

  // Called as wake(cursor): every event up to `cursor` is known to be one
  // the waiter's filter leaves out (at least the cursor it waited beyond).
  using Wake = std::function<void(int64_t cursor)>;

  // Runs `wake` once when the ledger's newest event is past `cursor` and may
  // be one `keep` (optional) takes: inside the call when it already is,
  // else on `wake_on` or a ledger callback thread. New events the hub holds
  // in memory that `keep` leaves out do not wake the waiter: it waits on,
  // beyond them. Returns an id for Cancel, 0 when `wake` already ran.
  // `keep` is shared, not copied: a watcher waits again after every page.
  uint64_t WaitBeyond(int64_t cursor, std::shared_ptr<const Filter> keep,
                      Wake wake);
  // True when the waiter was still waiting: its `wake` will never run.
  bool Cancel(uint64_t id);
  // Asks the ledger what is new (once more after the question in flight, if
  // one is); nothing while no watcher waits.
  void Poke();
  size_t Waiting() const;
  // Wakes every waiter now, and every later one at once: the server is
  // stopping, and each watcher is to read once more and learn that.
  void Close();

  // The page Ledger::EventsAfter(after, limit) would give, from memory, when
  // memory holds the events after `after` (up to its end), with only the
  // events `keep` takes (its `last` still moves past the others); nullopt
  // when memory does not hold them, or when `after` is memory's end and the
  // ledger holds more (the caller reads the ledger). Its payouts are as
  // they stood when the hub read them.
  std::optional<EventBatch> Recent(int64_t after, int limit,
                                   const Filter& keep) const;

 private:
  // One question to the ledger; OnAnswer gets the answer.
  void Ask();
  void OnAnswer(absl::StatusOr<EventBatch> batch, int limit);

  const ReadEvents read_;
  const int capacity_;
  Executor* const wake_on_;
  mutable absl::Mutex mu_;
  int64_t head_ ABSL_GUARDED_BY(mu_) = -1;  // unknown yet
  bool asking_ ABSL_GUARDED_BY(mu_) = false;
  bool ask_again_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  struct Waiter {
    int64_t cursor;  // every event up to here is left out by `keep`
    std::shared_ptr<const Filter> keep;  // null: every event
    Wake wake;
  };
  // Whether memory holds an event after `waiter.cursor` its filter takes,
  // or cannot tell (then it is woken to read); else moves its cursor on.
  bool Due(Waiter& waiter) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::map<uint64_t, Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  // Every event after recent_from_ up to recent_to_ (cursors), oldest first;
  // recent_to_ < 0 until the first answer.
  std::deque<WatchedEvent> recent_ ABSL_GUARDED_BY(mu_);
  int64_t recent_from_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t recent_to_ ABSL_GUARDED_BY(mu_) = -1;
};

}  // namespace aopay

#endif  // AOPAY_SERVER_FLOW_EVENT_HUB_H_
