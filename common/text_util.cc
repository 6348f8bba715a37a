#include "common/text_util.h"

#include <cstdint>

namespace aopay {
namespace text_internal {
namespace {

bool IsContinuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// Length of the valid UTF-8 sequence at text[pos], or 0 when it is invalid.
size_t ValidSequenceLength(absl::string_view text, size_t pos) {
  const auto c = static_cast<unsigned char>(text[pos]);
  if (c < 0x80) return 1;
  size_t length;
  uint32_t code_point;
  if (c >= 0xC2 && c <= 0xDF) {
    length = 2;
    code_point = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    length = 3;
    code_point = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    length = 4;
    code_point = c & 0x07;
  } else {
    return 0;  // a stray continuation byte, an overlong lead, or past 0xF4
  }
  if (text.size() - pos < length) return 0;
  for (size_t i = 1; i < length; ++i) {
    const auto next = static_cast<unsigned char>(text[pos + i]);
    if (!IsContinuation(next)) return 0;
    code_point = (code_point << 6) | (next & 0x3F);
  }
  if (length == 3 &&
      (code_point < 0x800 || (code_point >= 0xD800 && code_point <= 0xDFFF))) {
    return 0;
  }
  if (length == 4 && (code_point < 0x10000 || code_point > 0x10FFFF)) {
    return 0;
  }
  return length;
}

}  // namespace

absl::string_view CutUtf8(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t end = max_bytes;
  while (end > 0 && IsContinuation(static_cast<unsigned char>(text[end]))) {
    --end;
  }
  return text.substr(0, end);
}

std::string SanitizeUtf8(absl::string_view text, size_t max_bytes) {
  std::string clean;
  clean.reserve(text.size() < max_bytes ? text.size() : max_bytes);
  size_t pos = 0;
  while (pos < text.size() && clean.size() < max_bytes) {
    const size_t length = ValidSequenceLength(text, pos);
    if (length == 0) {
      clean.push_back('?');
      ++pos;
      continue;
    }
    const auto c = static_cast<unsigned char>(text[pos]);
    if (length == 1 && (c < 0x20 || c == 0x7F)) {
      clean.push_back(' ');
    } else {
      clean.append(text.data() + pos, length);
    }
    pos += length;
  }
  return std::string(CutUtf8(clean, max_bytes));
}

bool IsValidUtf8(absl::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t length = ValidSequenceLength(text, pos);
    if (length == 0) return false;
    pos += length;
  }
  return true;
}

size_t CountUtf8Chars(absl::string_view text) {
  size_t count = 0;
  for (const char c : text) {
    if (!IsContinuation(static_cast<unsigned char>(c))) ++count;
  }
  return count;
}

}  // namespace text_internal
}  // namespace aopay
