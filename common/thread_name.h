#ifndef AOPAY_COMMON_THREAD_NAME_H_
#define AOPAY_COMMON_THREAD_NAME_H_

#include <pthread.h>

#include <string>

#include "absl/strings/string_view.h"

namespace aopay {

// Names the calling thread, as `top -H`, `ps -L`, perf and gdb show it, so
// that each thread of docs/architecture.md's table can be told apart. Linux
// keeps 15 bytes; a longer name is cut. Call it first thing in a thread's
// body.
inline void NameThisThread(absl::string_view name) {
  constexpr size_t kMaxNameBytes = 15;
  const std::string kept(name.substr(0, kMaxNameBytes));
  (void)pthread_setname_np(pthread_self(), kept.c_str());
}

}  // namespace aopay

#endif  // AOPAY_COMMON_THREAD_NAME_H_
