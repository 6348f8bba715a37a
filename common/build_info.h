#ifndef AOPAY_COMMON_BUILD_INFO_H_
#define AOPAY_COMMON_BUILD_INFO_H_

// What was built: the version (CMakeLists.txt's project VERSION, the one
// place it is written) and the git commit of the source tree. The
// definitions are generated at build time by common/build_info.cmake.

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace aopay {

const char* PayoutVersion();
const char* PayoutCommit();  // "unknown" when built outside a git checkout

// "PROGRAM VERSION (commit COMMIT)": what --version prints.
inline std::string VersionLine(absl::string_view program) {
  return absl::StrCat(program, " ", PayoutVersion(), " (commit ",
                      PayoutCommit(), ")\n");
}

}  // namespace aopay

#endif  // AOPAY_COMMON_BUILD_INFO_H_
