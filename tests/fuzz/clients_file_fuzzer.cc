// The clients file (common/clients.h, docs/security.md): any text either
// parses or fails with INVALID_ARGUMENT naming a line, never quoting a
// 64-hex-digit digest; what parses has unique, well-formed names, at least
// one scope each, positive limits, and finds each client by its
// certificate name exactly when its digest is "-".
//
// Input: the file's text, as it is.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "common/clients.h"
#include "tests/fuzz/fuzz_util.h"

namespace aopay::fuzz {
namespace {

bool IsNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
         c == '_' || c == '-';
}

// True when `text` holds a run of 64 hex digits (a digest, or a token's
// worth of secret) that the input also holds.
bool QuotesHexRun(absl::string_view text) {
  size_t run = 0;
  for (char c : text) {
    run = absl::ascii_isxdigit(static_cast<unsigned char>(c)) ? run + 1 : 0;
    if (run >= 64) return true;
  }
  return false;
}

void Check(absl::string_view text) {
  const absl::StatusOr<std::shared_ptr<const ClientRegistry>> parsed =
      ClientRegistry::Parse(text);
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(absl::StartsWith(parsed.status().message(), "line "));
    FUZZ_CHECK(!QuotesHexRun(parsed.status().message()));
    return;
  }
  std::set<std::string> names;
  for (const Client& client : (*parsed)->clients()) {
    FUZZ_CHECK(!client.name.empty() && client.name.size() <= 64);
    for (char c : client.name) FUZZ_CHECK(IsNameChar(c));
    FUZZ_CHECK(names.insert(client.name).second);
    FUZZ_CHECK(client.scopes != 0 && (client.scopes & ~kAllScopes) == 0);
    FUZZ_CHECK(!client.max_payout_paise || *client.max_payout_paise > 0);
    FUZZ_CHECK(!client.daily_paise || *client.daily_paise > 0);
    const Client* by_name = (*parsed)->FindByCertificateName(client.name);
    FUZZ_CHECK(by_name == nullptr || by_name->name == client.name);
  }
  // No token finds anyone in a file without digests, and the empty token
  // never does.
  FUZZ_CHECK((*parsed)->FindByToken("") == nullptr);
}

}  // namespace
}  // namespace aopay::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  aopay::fuzz::Check(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
