#include "common/clients.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/file_util.h"

namespace aopay {
namespace {

constexpr size_t kDigestBytes = 32;  // SHA-256
constexpr size_t kMaxNameLength = 64;
// Fields longer than this are not quoted in messages: a secret pasted into
// the wrong column (a digest or a token) is longer than any scope or limit.
constexpr size_t kMaxQuotedLength = 40;

constexpr absl::string_view kScopeList =
    "payouts:write, payouts:read, payouts:read_all, admin, approve";
constexpr absl::string_view kLimitList =
    "max_payout_paise, daily_paise, approval_above_paise";

// SHA-256 of `text` as 32 raw bytes. EVP_Digest with SHA-256 fails only
// when the library cannot allocate; that is not a state to carry on from.
std::string Sha256(absl::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(),
                 nullptr) != 1 ||
      length != kDigestBytes) {
    std::fprintf(stderr, "clients: SHA-256 failed\n");
    std::abort();
  }
  return std::string(reinterpret_cast<const char*>(digest), length);
}

bool IsNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
         c == '_' || c == '-';
}

bool IsValidName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  for (char c : name) {
    if (!IsNameChar(c)) return false;
  }
  return true;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// 64 hex digits (either case) as 32 raw bytes; nullopt otherwise.
std::optional<std::string> DecodeDigest(absl::string_view hex) {
  if (hex.size() != 2 * kDigestBytes) return std::nullopt;
  std::string bytes(kDigestBytes, '\0');
  for (size_t i = 0; i < kDigestBytes; ++i) {
    const int high = HexValue(hex[2 * i]);
    const int low = HexValue(hex[2 * i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    bytes[i] = static_cast<char>((high << 4) | low);
  }
  return bytes;
}

// `text` in quotes when it is short printable ASCII; otherwise only its
// length, so that a secret in the wrong field never reaches a message.
std::string Quote(absl::string_view text) {
  bool printable = text.size() <= kMaxQuotedLength;
  for (char c : text) {
    if (!absl::ascii_isgraph(static_cast<unsigned char>(c))) printable = false;
  }
  if (printable) return absl::StrCat("'", text, "'");
  return absl::StrCat("of ", text.size(), " characters (not shown)");
}

// Every scope with its name in the file: the one table both directions use.
constexpr std::pair<Scope, absl::string_view> kScopeNames[] = {
    {kScopeWrite, "payouts:write"},      {kScopeRead, "payouts:read"},
    {kScopeReadAll, "payouts:read_all"}, {kScopeAdmin, "admin"},
    {kScopeApprove, "approve"},
};

std::optional<uint32_t> ScopeBit(absl::string_view name) {
  for (const auto& [scope, scope_name] : kScopeNames) {
    if (name == scope_name) return scope;
  }
  return std::nullopt;
}

// A positive int64 written as decimal digits only (no sign, no spaces):
// sets *out and returns "", or returns what is wrong with it.
std::string ParsePositiveInt64(absl::string_view text, int64_t* out) {
  if (text.empty()) return "must be a positive integer";
  int64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return "must be a positive integer";
    const int digit = c - '0';
    if (value > (std::numeric_limits<int64_t>::max() - digit) / 10) {
      return absl::StrCat("is too large (at most ",
                          std::numeric_limits<int64_t>::max(), ")");
    }
    value = value * 10 + digit;
  }
  if (value == 0) return "must be a positive integer";
  *out = value;
  return "";
}

absl::Status LineError(int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", what));
}

}  // namespace

absl::string_view ScopeName(Scope scope) {
  for (const auto& [known, name] : kScopeNames) {
    if (known == scope) return name;
  }
  return "unknown";
}

Client AnonymousClient() {
  Client client;
  client.scopes = kAllScopes;
  return client;
}

std::string TokenDigest(absl::string_view token) {
  return absl::BytesToHexString(Sha256(token));
}

absl::StatusOr<std::shared_ptr<const ClientRegistry>> ClientRegistry::Parse(
    absl::string_view text) {
  auto registry = std::make_shared<ClientRegistry>();
  std::map<std::string, int, std::less<>> name_lines;
  std::map<std::string, int, std::less<>> digest_lines;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (const size_t hash = line.find('#'); hash != absl::string_view::npos) {
      line = line.substr(0, hash);
    }
    // Trailing whitespace includes the '\r' of CRLF line endings.
    line = absl::StripTrailingAsciiWhitespace(line);
    const std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.empty()) continue;
    if (fields.size() < 3) {
      return LineError(line_number,
                       "too few fields (want NAME DIGEST SCOPES "
                       "[LIMIT=VALUE ...])");
    }

    Client client;
    Entry entry;
    const absl::string_view name = fields[0];
    if (!IsValidName(name)) {
      return LineError(line_number,
                       absl::StrCat("bad client name ", Quote(name),
                                    " (want 1 to 64 of A-Z a-z 0-9 . _ -)"));
    }
    if (auto it = name_lines.find(name); it != name_lines.end()) {
      return LineError(line_number,
                       absl::StrCat("duplicate client name ", Quote(name),
                                    " (first on line ", it->second, ")"));
    }
    client.name = std::string(name);

    const absl::string_view digest_text = fields[1];
    if (digest_text != "-") {
      entry.digest = DecodeDigest(digest_text);
      if (!entry.digest) {
        return LineError(line_number,
                         "the digest must be 64 hex digits (the SHA-256 of "
                         "the token) or '-' (mTLS)");
      }
      if (auto it = digest_lines.find(*entry.digest);
          it != digest_lines.end()) {
        return LineError(
            line_number,
            absl::StrCat("duplicate digest: the same token as line ",
                         it->second, " (every client needs its own token)"));
      }
    }

    if (fields[2].find_first_not_of(',') == absl::string_view::npos) {
      return LineError(line_number,
                       absl::StrCat("no scope (scopes are ", kScopeList, ")"));
    }
    for (absl::string_view scope : absl::StrSplit(fields[2], ',')) {
      if (scope.empty()) {
        return LineError(line_number, "empty scope between commas");
      }
      const std::optional<uint32_t> bit = ScopeBit(scope);
      if (!bit) {
        return LineError(line_number,
                         absl::StrCat("unknown scope ", Quote(scope),
                                      " (scopes are ", kScopeList, ")"));
      }
      client.scopes |= *bit;
    }

    for (size_t i = 3; i < fields.size(); ++i) {
      const absl::string_view field = fields[i];
      const size_t eq = field.find('=');
      if (eq == absl::string_view::npos) {
        return LineError(
            line_number,
            absl::StrCat("field ", Quote(field),
                         " is not LIMIT=VALUE (limits are ", kLimitList, ")"));
      }
      const absl::string_view limit = field.substr(0, eq);
      std::optional<int64_t>* slot = nullptr;
      if (limit == "max_payout_paise") {
        slot = &client.max_payout_paise;
      } else if (limit == "daily_paise") {
        slot = &client.daily_paise;
      } else if (limit == "approval_above_paise") {
        slot = &client.approval_above_paise;
      } else {
        return LineError(line_number,
                         absl::StrCat("unknown limit ", Quote(limit),
                                      " (limits are ", kLimitList, ")"));
      }
      if (slot->has_value()) {
        return LineError(line_number, absl::StrCat(limit, " given twice"));
      }
      int64_t value = 0;
      const std::string problem =
          ParsePositiveInt64(field.substr(eq + 1), &value);
      if (!problem.empty()) {
        return LineError(line_number, absl::StrCat(limit, " ", problem));
      }
      *slot = value;
    }

    name_lines.emplace(client.name, line_number);
    if (entry.digest) digest_lines.emplace(*entry.digest, line_number);
    registry->clients_.push_back(std::move(client));
    registry->entries_.push_back(std::move(entry));
  }
  return std::shared_ptr<const ClientRegistry>(std::move(registry));
}

absl::StatusOr<std::shared_ptr<const ClientRegistry>> ClientRegistry::Load(
    const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path, "clients file");
  if (!text.ok()) return text.status();
  absl::StatusOr<std::shared_ptr<const ClientRegistry>> registry = Parse(*text);
  if (!registry.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "clients file '", path, "': ", registry.status().message()));
  }
  return registry;
}

const Client* ClientRegistry::FindByToken(absl::string_view token) const {
  if (token.empty()) return nullptr;
  const std::string digest = Sha256(token);
  // Every entry is compared, with no early exit, so that the time taken
  // does not say which line (if any) holds the token.
  size_t match = clients_.size();
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (!entries_[i].digest) continue;  // mTLS lines: no token
    const bool equal = CRYPTO_memcmp(digest.data(), entries_[i].digest->data(),
                                     kDigestBytes) == 0;
    match = equal ? i : match;
  }
  return match < clients_.size() ? &clients_[match] : nullptr;
}

const Client* ClientRegistry::FindByCertificateName(
    absl::string_view common_name) const {
  if (common_name.empty()) return nullptr;
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (!entries_[i].digest && clients_[i].name == common_name) {
      return &clients_[i];
    }
  }
  return nullptr;
}

}  // namespace aopay
