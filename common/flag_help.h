#ifndef AOPAY_COMMON_FLAG_HELP_H_
#define AOPAY_COMMON_FLAG_HELP_H_

#include <string>

#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace aopay {

// A flag's source file as help shows it: its place in the project
// ("server/app/main.cc"), not the path of the tree the program was built in.
// Paths outside the project (absl's own flags) only lose leading slashes, as
// absl's default does.
inline std::string ProjectRelativePath(absl::string_view path) {
  constexpr absl::string_view kThisFile = __FILE__;
  constexpr absl::string_view kInProject = "common/flag_help.h";
  if (absl::EndsWith(kThisFile, kInProject)) {
    absl::ConsumePrefix(
        &path, kThisFile.substr(0, kThisFile.size() - kInProject.size()));
  }
  while (absl::ConsumePrefix(&path, "/")) {
  }
  return std::string(path);
}

// Makes --help (and --helpshort) list the flags defined in the source file
// whose path ends with `source_file`: the program's own. absl's default
// looks for a file named after the program, and no program here has one
// (payout-server's flags are in server/app/main.cc, the other programs'
// names have a dash). --helpfull still lists every flag. Files are named by
// ProjectRelativePath.
inline void HelpListsFlagsOf(absl::FlagsUsageConfig& usage,
                             absl::string_view source_file) {
  usage.normalize_filename = ProjectRelativePath;
  usage.contains_help_flags =
      [file = std::string(source_file)](absl::string_view path) {
        return absl::EndsWith(path, file);
      };
  usage.contains_helpshort_flags = usage.contains_help_flags;
}

}  // namespace aopay

#endif  // AOPAY_COMMON_FLAG_HELP_H_
