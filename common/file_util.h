#ifndef AOPAY_COMMON_FILE_UTIL_H_
#define AOPAY_COMMON_FILE_UTIL_H_

// Reading a whole small file (clients file, TLS files, secrets given as
// @/path): the one place that knows how.

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace aopay {

// The contents of the file at `path`, byte for byte. On failure the errno's
// status (NOT_FOUND for a missing file) with the message "cannot open WHAT
// 'PATH'" or "cannot read WHAT 'PATH'" (a directory is a read error).
[[nodiscard]] absl::StatusOr<std::string> ReadWholeFile(const std::string& path,
                                                        absl::string_view what);

}  // namespace aopay

#endif  // AOPAY_COMMON_FILE_UTIL_H_
