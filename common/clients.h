#ifndef AOPAY_COMMON_CLIENTS_H_
#define AOPAY_COMMON_CLIENTS_H_

// Who may call the gateway: the clients file (--clients), its scopes and
// limits, and finding the client a bearer token or certificate names.
// docs/security.md describes the file for operators. One client a line (the
// digests shortened here; a real one is 64 hex digits):
//
// clang-format off
//   # name        sha256-of-token   scopes                       limits
//   payroll-svc   9f86d0...0f00a08  payouts:write,payouts:read   max_payout_paise=5000000 daily_paise=200000000
//   ops-console   60303a...11c752   payouts:read,admin
//   batch-host    -                 payouts:write                # mTLS: named by its certificate's CN
// clang-format on

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace aopay {

// Scopes, as bits of Client::scopes.
enum Scope : uint32_t {
  kScopeWrite = 1u << 0,    // payouts:write  CreatePayout, Batch, Refresh
  kScopeRead = 1u << 1,     // payouts:read   its own payouts
  kScopeReadAll = 1u << 2,  // payouts:read_all  every client's payouts
  kScopeAdmin = 1u << 3,    // admin          ResolvePayout; implies read_all
  kScopeApprove = 1u << 4,  // approve        Approve/Reject; implies read_all
};
inline constexpr uint32_t kAllScopes =
    kScopeWrite | kScopeRead | kScopeReadAll | kScopeAdmin | kScopeApprove;

struct Client {
  std::string name;  // [A-Za-z0-9._-]{1,64}; "" is the anonymous client
  uint32_t scopes = 0;
  std::optional<int64_t> max_payout_paise;  // one payout
  std::optional<int64_t> daily_paise;       // per calendar day in India
  // A payout above this waits in AWAITING_APPROVAL for another client with
  // the scope approve (maker-checker).
  std::optional<int64_t> approval_above_paise;

  bool Has(Scope scope) const { return (scopes & scope) != 0; }
  // payouts:read_all, admin or approve: may read every client's payouts.
  bool ReadsAll() const {
    return (scopes & (kScopeReadAll | kScopeAdmin | kScopeApprove)) != 0;
  }
  // payouts:read or any scope that implies reading every client's.
  bool ReadsOwn() const { return Has(kScopeRead) || ReadsAll(); }
};

// "payouts:write", "payouts:read", ...: the scope's name in the clients file.
absl::string_view ScopeName(Scope scope);

// Without --clients every caller is this client: no name, every scope, no
// limits.
Client AnonymousClient();

// Lower-case hex SHA-256 of `token` (what the clients file holds).
std::string TokenDigest(absl::string_view token);

// A parsed clients file. Immutable; shared by the calls that use it while a
// reload replaces it.
class ClientRegistry {
 public:
  // Parses the file's text. INVALID_ARGUMENT naming the line ("line 3: ...")
  // for: too few fields, a bad name, a duplicate name, a digest that is not
  // 64 hex digits or "-", a duplicate digest, an unknown scope, no scope, a
  // limit that is unknown, repeated, not a positive integer, or overflowing.
  // Never quotes a digest in a message.
  static absl::StatusOr<std::shared_ptr<const ClientRegistry>> Parse(
      absl::string_view text);
  // Reads and parses a file; the message names the path on read errors.
  static absl::StatusOr<std::shared_ptr<const ClientRegistry>> Load(
      const std::string& path);

  // The client whose digest matches SHA-256(token), compared in constant
  // time against every line (the time taken does not depend on which line,
  // if any, matches). nullptr when none.
  const Client* FindByToken(absl::string_view token) const;
  // The client whose line has digest "-" and this name (an mTLS
  // certificate's subject CN). nullptr when none.
  const Client* FindByCertificateName(absl::string_view common_name) const;

  const std::vector<Client>& clients() const { return clients_; }

 private:
  struct Entry {
    std::optional<std::string> digest;  // 32 raw bytes; none for "-"
  };
  std::vector<Client> clients_;
  std::vector<Entry> entries_;  // parallel to clients_
};

}  // namespace aopay

#endif  // AOPAY_COMMON_CLIENTS_H_
