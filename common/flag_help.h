#ifndef AOPAY_COMMON_FLAG_HELP_H_
#define AOPAY_COMMON_FLAG_HELP_H_

#include <string>

#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace aopay {

// Makes --help (and --helpshort) list the flags defined in the source file
// whose path ends with `source_file`: the program's own. absl's default
// looks for a file named after the program, and no program here has one
// (payout-server's flags are in server/app/main.cc, the other programs'
// names have a dash). --helpfull still lists every flag.
inline void HelpListsFlagsOf(absl::FlagsUsageConfig& usage,
                             absl::string_view source_file) {
  usage.contains_help_flags =
      [file = std::string(source_file)](absl::string_view path) {
        return absl::EndsWith(path, file);
      };
  usage.contains_helpshort_flags = usage.contains_help_flags;
}

}  // namespace aopay

#endif  // AOPAY_COMMON_FLAG_HELP_H_
