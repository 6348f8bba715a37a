#ifndef AOPAY_COMMON_VALIDATION_H_
#define AOPAY_COMMON_VALIDATION_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "common/payout.h"

namespace aopay {

struct ValidationLimits {
  // Any mode (--max_amount_paise).
  int64_t max_amount_paise = 100'000'000;
  // IMPS: the RBI per-transaction limit, Rs 5,00,000.
  int64_t imps_max_amount_paise = 50'000'000;
};

// Checks every rule of contract section 5 and returns the request in canonical
// form: IFSC trimmed and upper-cased, name and e-mail trimmed, mobile with a
// leading +91 or 0 stripped, account number trimmed. On any violation returns
// INVALID_ARGUMENT, reason INVALID_REQUEST, with one FieldViolation per broken
// rule (field = proto path such as "beneficiary.ifsc"), in field order.
// Descriptions never echo the offending value.
absl::StatusOr<PayoutRequest> NormalizeAndValidate(
    const PayoutRequest& request, const ValidationLimits& limits);

// A hash (lower-case hex SHA-256) of the canonical request parameters, all but
// request_id. Two requests with the same request_id are "the same request"
// exactly when their fingerprints are equal. Takes a normalised request.
std::string RequestFingerprint(const PayoutRequest& normalized);

}  // namespace aopay

#endif  // AOPAY_COMMON_VALIDATION_H_
