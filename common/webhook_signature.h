#ifndef AOPAY_COMMON_WEBHOOK_SIGNATURE_H_
#define AOPAY_COMMON_WEBHOOK_SIGNATURE_H_

// The signature on every webhook POST (docs/webhooks.md):
//
//   Payout-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "t.body")>
//
// The time is signed with the body, so a receiver that also checks it is
// recent refuses a captured request replayed later. A receiver may see
// several v1= values (while a secret is being rotated); one that matches is
// enough.

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace aopay {

// The header names.
inline constexpr char kWebhookEventIdHeader[] = "Payout-Event-Id";
inline constexpr char kWebhookSignatureHeader[] = "Payout-Signature";

// How far a signature's time may be from the receiver's clock by default.
inline constexpr absl::Duration kWebhookTolerance = absl::Minutes(5);

// The Payout-Signature value for `body` sent at `time` (whole seconds).
std::string SignWebhook(absl::string_view secret, absl::Time time,
                        absl::string_view body);

// OK when `header` (a Payout-Signature value) holds a v1 signature of
// `body` under `secret` whose time is within `tolerance` of `now`.
// INVALID_ARGUMENT for a header that does not parse, UNAUTHENTICATED for no
// matching signature, DEADLINE_EXCEEDED for a time outside the tolerance;
// each with a one-line message. Comparisons take constant time.
[[nodiscard]] absl::Status VerifyWebhook(
    absl::string_view secret, absl::string_view header, absl::string_view body,
    absl::Time now, absl::Duration tolerance = kWebhookTolerance);

}  // namespace aopay

#endif  // AOPAY_COMMON_WEBHOOK_SIGNATURE_H_
