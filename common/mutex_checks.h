#ifndef AOPAY_COMMON_MUTEX_CHECKS_H_
#define AOPAY_COMMON_MUTEX_CHECKS_H_

#include "absl/synchronization/mutex.h"

namespace aopay {

// Debian builds Abseil without NDEBUG, so its Mutex checks lock order on
// every Lock() and Unlock() and forgets each mutex it destroys: a graph of
// every mutex, behind one global lock that all threads take. gRPC's own
// locks are absl::Mutex too, so a gRPC call pays for it several times. The
// lock order is checked where it is cheap to do so, in the Debug and
// sanitizer builds that run the whole test suite; a release build of the
// gateway, the sandbox and the benchmark programs calls this first and does
// not pay for it.
inline void SkipLockOrderChecksInReleaseBuilds() {
#ifdef NDEBUG
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
}

}  // namespace aopay

#endif  // AOPAY_COMMON_MUTEX_CHECKS_H_
