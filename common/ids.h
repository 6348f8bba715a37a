#ifndef AOPAY_COMMON_IDS_H_
#define AOPAY_COMMON_IDS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace aopay {

// A new payout id: "po_" + a 26-character ULID (Crockford base32: 48-bit
// millisecond timestamp, 80 random bits). Ids sort by creation time; ids made
// in the same millisecond by one process still sort in creation order.
// Thread-safe.
std::string NewPayoutId(absl::Time now);

// True for strings of the NewPayoutId() form.
bool IsPayoutId(absl::string_view id);

// WatchPayouts cursors: opaque to callers (base64url of "c1:<position>"),
// so that their form can change.
std::string EventCursor(int64_t position);
// The initial-metadata header of every WatchPayouts stream: the cursor the
// stream starts after (the given after_cursor, or the newest event's when
// none was given), for a watcher that must resume before its first event.
inline constexpr char kWatchCursorHeader[] = "payout-watch-cursor";
// The position; nullopt for text that is not a cursor this gateway made.
std::optional<int64_t> ParseEventCursor(absl::string_view cursor);

}  // namespace aopay

#endif  // AOPAY_COMMON_IDS_H_
