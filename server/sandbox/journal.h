#ifndef AOPAY_SERVER_SANDBOX_JOURNAL_H_
#define AOPAY_SERVER_SANDBOX_JOURNAL_H_

// The sandbox's journal (docs/sandbox.md): every request received, appended
// to a file as one JSON line
//   {"seq":N,"path":"/api/...","body":"<raw body>","received_unix_ms":N}
// where seq counts from 1 and the body is a JSON string holding exactly its
// bytes (a reader gets it back byte for byte, valid UTF-8 or not).

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace aopay::sandbox {

// Thread-safe. Each line goes to the file with one write(2), no user-space
// buffer: it is in the file, readable by other processes, as soon as
// Append returns.
class Journal {
 public:
  // Opens `path` for appending, creating it if need be. FailedPrecondition
  // when it cannot be opened.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Journal>> Open(
      const std::string& path);

  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Appends the next line; lines appear in `seq` order. False when the file
  // could not be written.
  [[nodiscard]] bool Append(absl::string_view path, absl::string_view body,
                            absl::Time received);

 private:
  explicit Journal(int fd) : fd_(fd) {}

  absl::Mutex mu_;
  const int fd_;
  int64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace aopay::sandbox

#endif  // AOPAY_SERVER_SANDBOX_JOURNAL_H_
