#ifndef AOPAY_COMMON_JSON_DOCUMENT_H_
#define AOPAY_COMMON_JSON_DOCUMENT_H_

// A RapidJSON document for the small JSON texts of one payout: AOPay's
// answers, error details, a row's metadata.
//
// A default rapidjson::Document allocates a 64 KiB memory-pool chunk from the
// heap for every parse, and frees it after; the texts parsed on a payout's
// path are a few hundred bytes. This one starts from a buffer inside itself
// (put it on the stack) and goes to the heap only for a larger text.

#include <cstddef>

#include "rapidjson/allocators.h"
#include "rapidjson/document.h"

namespace aopay {

namespace json_internal {
// The buffer and its allocator, in a base class so that they are built
// before the document that uses them and destroyed after it.
struct InlinePool {
  static constexpr size_t kInlineBytes = 4096;
  InlinePool() : allocator(buffer, sizeof(buffer)) {}
  alignas(std::max_align_t) char buffer[kInlineBytes];
  rapidjson::MemoryPoolAllocator<> allocator;
};
}  // namespace json_internal

// A rapidjson::Document whose first kInlineBytes of parsed values live inside
// it; a larger text takes chunks of RapidJSON's default size from the heap.
class SmallJsonDocument : private json_internal::InlinePool,
                          public rapidjson::Document {
 public:
  SmallJsonDocument() : rapidjson::Document(&allocator) {}
  SmallJsonDocument(const SmallJsonDocument&) = delete;
  SmallJsonDocument& operator=(const SmallJsonDocument&) = delete;
};

}  // namespace aopay

#endif  // AOPAY_COMMON_JSON_DOCUMENT_H_
