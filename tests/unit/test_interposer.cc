#include "tests/unit/test_interposer.h"

#include <dlfcn.h>
#include <netdb.h>
#include <openssl/x509_vfy.h>
#include <sys/socket.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace aopay {
namespace test_interposer {
namespace {

enum class Lookup { kNotHeld, kHeld, kReleased };

struct State {
  absl::Mutex mu;
  std::string hold_host ABSL_GUARDED_BY(mu);
  int holds_left ABSL_GUARDED_BY(mu) = 0;
  std::vector<Lookup> held ABSL_GUARDED_BY(mu);  // by index
  int blocked ABSL_GUARDED_BY(mu) = 0;
  std::string from_file ABSL_GUARDED_BY(mu);
  std::string to_file ABSL_GUARDED_BY(mu);
  std::string from_dir ABSL_GUARDED_BY(mu);
  std::string to_dir ABSL_GUARDED_BY(mu);
};

State& GetState() {
  static State* const state = new State;
  return *state;
}

template <typename Function>
Function Next(const char* name) {
  return reinterpret_cast<Function>(dlsym(RTLD_NEXT, name));
}

// Blocks if this lookup is to be held; then says how it ends.
Lookup HoldIfAsked(absl::string_view host) {
  State& state = GetState();
  absl::MutexLock lock(&state.mu);
  if (state.holds_left == 0 || !absl::EqualsIgnoreCase(host, state.hold_host))
    return Lookup::kNotHeld;
  --state.holds_left;
  const size_t index = state.held.size();
  state.held.push_back(Lookup::kHeld);
  ++state.blocked;
  auto released = [&state, index]() ABSL_SHARED_LOCKS_REQUIRED(state.mu) {
    return state.held[index] != Lookup::kHeld;
  };
  if (!state.mu.AwaitWithTimeout(absl::Condition(&released), kSafetyTimeout))
    state.held[index] = Lookup::kReleased;
  --state.blocked;
  return state.held[index];
}

std::string Redirected(const char* path, bool is_dir) {
  State& state = GetState();
  absl::MutexLock lock(&state.mu);
  const std::string& from = is_dir ? state.from_dir : state.from_file;
  if (path != nullptr && !from.empty() && from == path) {
    return is_dir ? state.to_dir : state.to_file;
  }
  return path == nullptr ? std::string() : std::string(path);
}

}  // namespace

void HoldLookupsOf(absl::string_view host, int count) {
  ReleaseHeldLookups();  // a blocked lookup keeps its index into `held`
  State& state = GetState();
  absl::MutexLock lock(&state.mu);
  state.hold_host = std::string(host);
  state.holds_left = count;
  state.held.clear();
}

bool AwaitHeldLookups(int count, absl::Duration timeout) {
  State& state = GetState();
  absl::MutexLock lock(&state.mu);
  auto held = [&state, count]() ABSL_SHARED_LOCKS_REQUIRED(state.mu) {
    return state.held.size() >= static_cast<size_t>(count);
  };
  return state.mu.AwaitWithTimeout(absl::Condition(&held), timeout);
}

bool LookupHeld(int index) {
  State& state = GetState();
  absl::MutexLock lock(&state.mu);
  return index >= 0 && static_cast<size_t>(index) < state.held.size() &&
         state.held[index] == Lookup::kHeld;
}

void ReleaseHeldLookups() {
  State& state = GetState();
  absl::MutexLock lock(&state.mu);
  state.holds_left = 0;
  for (Lookup& lookup : state.held) {
    if (lookup == Lookup::kHeld) lookup = Lookup::kReleased;
  }
  auto none_blocked = [&state]() ABSL_SHARED_LOCKS_REQUIRED(state.mu) {
    return state.blocked == 0;
  };
  state.mu.Await(absl::Condition(&none_blocked));
}

void RedirectTrustStore(std::string from_file, std::string to_file,
                        std::string from_dir, std::string to_dir) {
  State& state = GetState();
  absl::MutexLock lock(&state.mu);
  state.from_file = std::move(from_file);
  state.to_file = std::move(to_file);
  state.from_dir = std::move(from_dir);
  state.to_dir = std::move(to_dir);
}

void ClearTrustStoreRedirects() { RedirectTrustStore("", "", "", ""); }

}  // namespace test_interposer
}  // namespace aopay

using aopay::test_interposer::kFakeDomain;
using aopay::test_interposer::kUnresolvablePrefix;

extern "C" int getaddrinfo(const char* node, const char* service,
                           const addrinfo* hints, addrinfo** result) {
  using Function =
      int (*)(const char*, const char*, const addrinfo*, addrinfo**);
  static const Function real =
      aopay::test_interposer::Next<Function>("getaddrinfo");
  if (node == nullptr || !absl::EndsWithIgnoreCase(node, kFakeDomain)) {
    return real(node, service, hints, result);
  }
  if (aopay::test_interposer::HoldIfAsked(node) ==
      aopay::test_interposer::Lookup::kReleased) {
    return EAI_AGAIN;
  }
  if (absl::StartsWithIgnoreCase(node, kUnresolvablePrefix)) return EAI_NONAME;
  addrinfo loopback{};
  if (hints != nullptr) loopback = *hints;
  if (loopback.ai_family == AF_INET6) return EAI_NONAME;
  loopback.ai_family = AF_INET;
  loopback.ai_flags |= AI_NUMERICHOST;
  return real("127.0.0.1", service, &loopback, result);
}

extern "C" int X509_STORE_load_file(X509_STORE* store, const char* file) {
  using Function = int (*)(X509_STORE*, const char*);
  static const Function real =
      aopay::test_interposer::Next<Function>("X509_STORE_load_file");
  const std::string path = aopay::test_interposer::Redirected(file, false);
  return real(store, file == nullptr ? nullptr : path.c_str());
}

extern "C" int X509_STORE_load_path(X509_STORE* store, const char* dir) {
  using Function = int (*)(X509_STORE*, const char*);
  static const Function real =
      aopay::test_interposer::Next<Function>("X509_STORE_load_path");
  const std::string path = aopay::test_interposer::Redirected(dir, true);
  return real(store, dir == nullptr ? nullptr : path.c_str());
}
