#ifndef AOPAY_SERVER_FLOW_EVENT_HUB_H_
#define AOPAY_SERVER_FLOW_EVENT_HUB_H_

// Wakes WatchPayouts watchers when the ledger holds events past their
// cursor, so that an idle watcher costs nothing: one question to the ledger
// ("what is the newest event?") serves every watcher. The hub asks after
// each change this process records (Poke) and at least every second (the
// server's housekeeping pokes it), one question at a time, and only while
// some watcher waits.

#include <cstdint>
#include <functional>
#include <map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/ledger/ledger.h"

namespace aopay {

// Thread-safe.
class EventHub {
 public:
  explicit EventHub(Ledger& ledger) : ledger_(ledger) {}
  EventHub(const EventHub&) = delete;
  EventHub& operator=(const EventHub&) = delete;

  // Runs `wake` once when the ledger's newest event is past `cursor`: inside
  // the call when it already is, else on a ledger callback thread. Returns
  // an id for Cancel, 0 when `wake` already ran.
  uint64_t WaitBeyond(int64_t cursor, std::function<void()> wake);
  // True when the waiter was still waiting: its `wake` will never run.
  bool Cancel(uint64_t id);
  // Asks the ledger for its newest event (once more after the question in
  // flight, if one is); nothing while no watcher waits.
  void Poke();
  size_t Waiting() const;
  // Wakes every waiter now, and every later one at once: the server is
  // stopping, and each watcher is to read once more and learn that.
  void Close();

 private:
  // One question to the ledger; OnHead gets the answer.
  void Ask();
  void OnHead(int64_t head);

  Ledger& ledger_;
  mutable absl::Mutex mu_;
  int64_t head_ ABSL_GUARDED_BY(mu_) = -1;  // unknown yet
  bool asking_ ABSL_GUARDED_BY(mu_) = false;
  bool ask_again_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, std::pair<int64_t, std::function<void()>>> waiters_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace aopay

#endif  // AOPAY_SERVER_FLOW_EVENT_HUB_H_
