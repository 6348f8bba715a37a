#ifndef AOPAY_TESTS_UNIT_TEST_INTERPOSER_H_
#define AOPAY_TESTS_UNIT_TEST_INTERPOSER_H_

// Test doubles for two system calls libcurl makes, for tests that need a
// name lookup that hangs or a system trust store they control. The library
// defines getaddrinfo, X509_STORE_load_file and X509_STORE_load_path; a
// test executable that links it (before libc and libcrypto) gets these
// instead of the real ones, everything else passing through unchanged.
// Under AddressSanitizer, ASan's own getaddrinfo comes first and calls this
// one as "the real" function.
//
// Thread-safe.

#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace aopay {
namespace test_interposer {

// Names under this domain never reach DNS: they resolve to 127.0.0.1, except
// those starting with kUnresolvablePrefix, which fail with EAI_NONAME.
inline constexpr absl::string_view kFakeDomain = ".aopay.test";
inline constexpr absl::string_view kUnresolvablePrefix = "nxdomain.";

// The next `count` lookups of `host` (under kFakeDomain) block until
// ReleaseHeldLookups runs, or at most kSafetyTimeout, and then fail with
// EAI_AGAIN. Held lookups are numbered from 0 in the order they started;
// the numbering restarts with each call.
inline constexpr absl::Duration kSafetyTimeout = absl::Seconds(60);
void HoldLookupsOf(absl::string_view host, int count);
// Waits until `count` lookups have been held; false after `timeout`.
[[nodiscard]] bool AwaitHeldLookups(int count, absl::Duration timeout);
// Whether held lookup `index` is blocked right now.
[[nodiscard]] bool LookupHeld(int index);
// Lets every held lookup fail with EAI_AGAIN, holds no further ones, and
// waits until none is blocked any more.
void ReleaseHeldLookups();

// Releases held lookups when it goes out of scope, so that a test failing
// half-way never leaves a lookup hanging behind it.
class ReleaseOnExit {
 public:
  ReleaseOnExit() = default;
  ~ReleaseOnExit() { ReleaseHeldLookups(); }
  ReleaseOnExit(const ReleaseOnExit&) = delete;
  ReleaseOnExit& operator=(const ReleaseOnExit&) = delete;
};

// From now on, X509_STORE_load_file(`from_file`) loads `to_file` and
// X509_STORE_load_path(`from_dir`) loads `to_dir` instead: a stand-in for the
// system trust store. ClearTrustStoreRedirects undoes it.
void RedirectTrustStore(std::string from_file, std::string to_file,
                        std::string from_dir, std::string to_dir);
void ClearTrustStoreRedirects();

}  // namespace test_interposer
}  // namespace aopay

#endif  // AOPAY_TESTS_UNIT_TEST_INTERPOSER_H_
