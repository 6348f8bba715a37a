#include "server/app/config_parse.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace aopay {

bool IsLoopbackHost(absl::string_view host) {
  if (absl::EqualsIgnoreCase(host, "localhost")) return true;
  const std::string text(host);
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6{};
  return inet_pton(AF_INET6, text.c_str(), &v6) == 1 &&
         IN6_IS_ADDR_LOOPBACK(&v6);
}

absl::StatusOr<HostPort> ParseHostPort(absl::string_view flag,
                                       absl::string_view text) {
  const size_t colon = text.rfind(':');
  HostPort out;
  if (colon == absl::string_view::npos ||
      !absl::SimpleAtoi(text.substr(colon + 1), &out.port) || out.port < 0 ||
      out.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " must be HOST:PORT, got \"", text, "\""));
  }
  out.host = std::string(text.substr(0, colon));
  if (absl::StartsWith(out.host, "[") && absl::EndsWith(out.host, "]")) {
    out.host = out.host.substr(1, out.host.size() - 2);
  }
  if (out.host.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " needs a host, got \"", text, "\""));
  }
  if (absl::StrContains(out.host, '[') || absl::StrContains(out.host, ']')) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, " must be HOST:PORT or [IPV6]:PORT, got \"", text, "\""));
  }
  return out;
}

std::string JoinHostPort(const std::string& host, int port) {
  return absl::StrContains(host, ':') ? absl::StrCat("[", host, "]:", port)
                                      : absl::StrCat(host, ":", port);
}

absl::StatusOr<LedgerSpec> ParseLedgerSpec(absl::string_view spec) {
  if (absl::StartsWith(spec, "postgresql://") ||
      absl::StartsWith(spec, "postgres://")) {
    LedgerSpec out;
    out.kind = LedgerSpec::Kind::kPostgres;
    out.uri = std::string(spec);
    return out;
  }
  if (!absl::ConsumePrefix(&spec, "sqlite:") || spec.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--ledger must be sqlite:PATH or a postgresql:// URI, got \"", spec,
        "\""));
  }
  LedgerSpec out;
  std::vector<absl::string_view> parts = absl::StrSplit(spec, '?');
  out.path = std::string(parts[0]);
  if (out.path.empty()) {
    return absl::InvalidArgumentError(
        "--ledger must be sqlite:PATH with a path before the '?'");
  }
  if (parts.size() > 2 || (parts.size() == 2 && parts[1] != "synchronous=off" &&
                           parts[1] != "synchronous=full")) {
    return absl::InvalidArgumentError(
        "--ledger accepts only ?synchronous=off or ?synchronous=full after "
        "the path");
  }
  out.durable = parts.size() == 1 || parts[1] == "synchronous=full";
  return out;
}

}  // namespace aopay
