#ifndef AOPAY_COMMON_TEXT_UTIL_H_
#define AOPAY_COMMON_TEXT_UTIL_H_

// Private helpers of payout_common for text that crosses a trust boundary.
// Not part of the library's interface: only common/*.cc include this.

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace aopay {
namespace text_internal {

// The longest prefix of `text` of at most `max_bytes` bytes that does not end
// inside a UTF-8 sequence (it never splits a multi-byte character).
absl::string_view CutUtf8(absl::string_view text, size_t max_bytes);

// `text` made safe for a proto string field and a log line: invalid UTF-8
// bytes become '?', control characters (C0 and DEL) become ' ', then cut to
// `max_bytes` with CutUtf8.
std::string SanitizeUtf8(absl::string_view text, size_t max_bytes);

// True when `text` is valid UTF-8 (no overlongs, surrogates or code points
// past U+10FFFF).
bool IsValidUtf8(absl::string_view text);

// The number of code points in valid UTF-8 `text` (bytes that start a
// character).
size_t CountUtf8Chars(absl::string_view text);

}  // namespace text_internal
}  // namespace aopay

#endif  // AOPAY_COMMON_TEXT_UTIL_H_
