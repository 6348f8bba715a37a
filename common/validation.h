#ifndef AOPAY_COMMON_VALIDATION_H_
#define AOPAY_COMMON_VALIDATION_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "common/limits.h"
#include "common/payout.h"

namespace aopay {

struct ValidationLimits {
  // Any mode (--max_amount_paise).
  int64_t max_amount_paise = kDefaultMaxAmountPaise;
  // IMPS: the RBI per-transaction limit, Rs 5,00,000.
  int64_t imps_max_amount_paise = kImpsMaxAmountPaise;
};

// Checks every validation rule (docs/api.md) and returns the request in
// canonical form: IFSC trimmed and upper-cased, name and e-mail trimmed, mobile
// with a leading +91 or 0 stripped, account number trimmed. On any violation
// returns INVALID_ARGUMENT, reason INVALID_REQUEST, with one FieldViolation per
// broken rule (field = proto path such as "beneficiary.ifsc"), in field order.
// Descriptions never echo the offending value. A field breaking two rules
// (e.g. a name both too long and with a forbidden character, or an IMPS
// amount above both limits) gets one violation per rule; an empty field gets
// only "is required".
//
// Rules beyond the documented table, each a choice for safety:
//  - request_id is not trimmed: it is the caller's idempotency key, byte for
//    byte.
//  - beneficiary.name and beneficiary.email must be ASCII: AOPay and the bank
//    rails (NEFT/IMPS) take ASCII only, so names with non-ASCII letters are
//    refused here rather than mangled upstream. "Letters" means A-Z and a-z.
//  - beneficiary.email: exactly one '@', a non-empty local part, a domain
//    with at least one dot and no empty labels, no whitespace or control
//    characters.
//  - beneficiary.mobile: after trimming, one leading "+91" or else one "0" is
//    stripped; then exactly 10 digits, the first 6 to 9.
//  - mode: anything but NEFT or IMPS (including UNSPECIFIED) is a violation
//    on "mode".
[[nodiscard]] absl::StatusOr<PayoutRequest> NormalizeAndValidate(
    const PayoutRequest& request, const ValidationLimits& limits);

// A hash (lower-case hex SHA-256) of the canonical request parameters, all but
// request_id, each length-prefixed so that no two requests encode alike. Two
// requests with the same request_id are "the same request" exactly when their
// fingerprints are equal. Takes a normalised request.
std::string RequestFingerprint(const PayoutRequest& normalized);

}  // namespace aopay

#endif  // AOPAY_COMMON_VALIDATION_H_
