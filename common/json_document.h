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

class SmallJsonDocument {
 public:
  // Bytes of parsed values served without the heap; a larger text takes
  // chunks of RapidJSON's default size from it.
  static constexpr size_t kInlineBytes = 4096;

  SmallJsonDocument()
      : allocator_(buffer_, sizeof(buffer_)), doc_(&allocator_) {}
  SmallJsonDocument(const SmallJsonDocument&) = delete;
  SmallJsonDocument& operator=(const SmallJsonDocument&) = delete;

  rapidjson::Document& get() { return doc_; }

 private:
  alignas(std::max_align_t) char buffer_[kInlineBytes];
  rapidjson::MemoryPoolAllocator<> allocator_;
  rapidjson::Document doc_;  // after allocator_: destroyed before it
};

}  // namespace aopay

#endif  // AOPAY_COMMON_JSON_DOCUMENT_H_
