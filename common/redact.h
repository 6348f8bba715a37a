#ifndef AOPAY_COMMON_REDACT_H_
#define AOPAY_COMMON_REDACT_H_

#include <string>

#include "absl/strings/string_view.h"

namespace aopay {

// Masks for logs (docs/operations.md, Privacy). Each keeps at most the last
// four characters and never returns its whole input:
//   MaskAccount("100000011836") == "XXXXXXXX1836"
//   MaskMobile("9959640000")    == "XXXXXX0000"
//   MaskEmail("abc@gmail.com")  == "a***@gmail.com"
// Inputs of four characters or fewer are masked completely ("XXXX").
std::string MaskAccount(absl::string_view account_number);
std::string MaskMobile(absl::string_view mobile);
// Keeps the first character of the local part and the whole domain; an input
// without '@' is masked completely ("***").
std::string MaskEmail(absl::string_view email);
// Registration ids are never logged, not even in part: always "[redacted]".
std::string MaskRegistration(absl::string_view registration_id);

// `text` with every occurrence of `registration_id` replaced by
// "[registration]": for text AOPay sends back (messages, raw answers), which
// is stored and returned (docs/operations.md, Privacy). An empty id changes
// nothing.
std::string ScrubRegistration(absl::string_view text,
                              absl::string_view registration_id);

}  // namespace aopay

#endif  // AOPAY_COMMON_REDACT_H_
