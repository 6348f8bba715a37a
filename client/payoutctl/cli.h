#ifndef AOPAY_CLIENT_PAYOUTCTL_CLI_H_
#define AOPAY_CLIENT_PAYOUTCTL_CLI_H_

// payoutctl's command line: the table of sub-commands and the flags each
// takes, the --help text, and the first pass over argv. Everything here reads
// the flag registry (absl/flags/reflection.h), so it works only in a binary
// that defines payoutctl's flags.

#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace aopay {
namespace payoutctl {

// A sub-command, with the flags it takes besides the global ones.
struct Command {
  std::string name;
  std::string summary;
  std::vector<std::string> flags;
  // The positional arguments the command takes after its name, e.g. "NAME
  // [SCOPES]"; "" when it takes none (then any is a usage error).
  std::string arguments;
  // False for a command that calls no gateway: of the global flags only
  // --json applies to it.
  bool calls_gateway = true;
};

// Every sub-command, in usage order. The table lives as long as the process.
const std::vector<Command>& Commands();

// The sub-command called `name`, or nullptr if there is none.
const Command* FindCommand(absl::string_view name);

// Whether flag `name` may be given with `command`: a global flag, one of the
// command's own, or one that absl itself handles (--flagfile and the like).
bool FlagApplies(absl::string_view name, const Command& command);

// A bash completion script for payoutctl, made from the command table:
// commands, each command's flags, and the values of --state and --mode.
// `source <(payoutctl completion bash)`.
std::string BashCompletion();

// The full --help text: commands, every flag with its default and help, exit
// codes and examples.
std::string Usage();

// What a first pass over argv found. It exists because absl flags cannot
// repeat a flag (--state A --state B), cannot tell "given" from "default",
// and exit with status 1 on a bad flag where payoutctl promises 2.
struct ScannedArgs {
  std::vector<std::string> argv;  // for absl::ParseCommandLine
  std::set<std::string> given;    // flags named on the command line
  std::vector<std::string> positional;
  bool help = false;
  bool version = false;  // --version: print the version and exit
};

// Splits argv into flags and positional arguments, checking each flag's value
// (and setting it) as it goes. Repeated --state values are joined into one
// comma list for absl. An unknown flag, a missing or bad value is an
// InvalidArgument error whose message is fit for the user.
[[nodiscard]] absl::StatusOr<ScannedArgs> ScanArgs(int argc, char** argv);

}  // namespace payoutctl
}  // namespace aopay

#endif  // AOPAY_CLIENT_PAYOUTCTL_CLI_H_
