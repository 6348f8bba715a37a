#ifndef AOPAY_TESTS_FUZZ_FUZZ_UTIL_H_
#define AOPAY_TESTS_FUZZ_FUZZ_UTIL_H_

// Helpers shared by the fuzz targets: a property check that stops the run,
// and oracles written independently of the code under test.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/strings/string_view.h"

namespace aopay::fuzz {

// A violated property: says which, then traps so that libFuzzer keeps the
// input as a crash-* file.
[[noreturn]] inline void Violated(const char* property, const char* file,
                                  int line) {
  std::fprintf(stderr, "%s:%d: property violated: %s\n", file, line, property);
  __builtin_trap();
}

#define FUZZ_CHECK(condition)                                  \
  do {                                                         \
    if (!(condition)) {                                        \
      ::aopay::fuzz::Violated(#condition, __FILE__, __LINE__); \
    }                                                          \
  } while (false)

// RFC 3629 UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF.
inline bool IsUtf8(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto byte = [&](size_t k) {
      return static_cast<uint8_t>(text[i + k]);
    };
    const uint8_t lead = byte(0);
    size_t length = 0;
    uint32_t min = 0;
    uint32_t code = 0;
    if (lead < 0x80) {
      ++i;
      continue;
    } else if ((lead & 0xE0) == 0xC0) {
      length = 2, min = 0x80, code = lead & 0x1F;
    } else if ((lead & 0xF0) == 0xE0) {
      length = 3, min = 0x800, code = lead & 0x0F;
    } else if ((lead & 0xF8) == 0xF0) {
      length = 4, min = 0x10000, code = lead & 0x07;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      if ((byte(k) & 0xC0) != 0x80) return false;
      code = (code << 6) | (byte(k) & 0x3F);
    }
    if (code < min || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) {
      return false;
    }
    i += length;
  }
  return true;
}

// Valid UTF-8 without C0 control characters or DEL.
inline bool IsPrintableUtf8(absl::string_view text) {
  for (const char c : text) {
    if ((c >= 0 && c < 0x20) || c == 0x7F) return false;
  }
  return IsUtf8(text);
}

// Splits off the first line of `input` (without its '\n'); false when there
// is no '\n'.
inline bool TakeLine(absl::string_view& input, absl::string_view& line) {
  const size_t newline = input.find('\n');
  if (newline == absl::string_view::npos) return false;
  line = input.substr(0, newline);
  input.remove_prefix(newline + 1);
  return true;
}

// "200" -> 200; -1 unless `text` is exactly three decimal digits.
inline int ThreeDigitStatus(absl::string_view text) {
  if (text.size() != 3) return -1;
  int status = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return -1;
    status = status * 10 + (c - '0');
  }
  return status;
}

}  // namespace aopay::fuzz

#endif  // AOPAY_TESTS_FUZZ_FUZZ_UTIL_H_
