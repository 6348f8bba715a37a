#ifndef AOPAY_SERVER_UPSTREAM_UPSTREAM_CLIENT_H_
#define AOPAY_SERVER_UPSTREAM_UPSTREAM_CLIENT_H_

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/aopay_codec.h"

namespace aopay {

struct UpstreamRequest {
  // e.g. kPayoutPath; appended to the client's base URL ("": the base URL
  // itself).
  std::string path;
  std::string body;  // JSON
  // False for payouts: the request is sent at most once, never retried by the
  // transport, not even on a kept-alive connection that died under it.
  bool idempotent = false;
  // Headers of this call only, "Name: value" each (no line breaks), sent
  // after the client's own.
  std::vector<std::string> headers;
};

// AOPay over HTTP(S). Two tiers of failure: an HTTP answer of any status is a
// value (HttpAnswer) for the codec to read, also one whose status line came
// before the transfer failed (truncated, with cut_off_by); not getting one is
// an error whose code says whether the request may have reached AOPay:
//   UNAVAILABLE        certainly not sent (could not resolve or connect)
//   RESOURCE_EXHAUSTED certainly not sent (the client's queue is full)
//   CANCELLED          certainly not sent (the client is shutting down and
//                      the request had not started)
//   DEADLINE_EXCEEDED  may have been sent (timed out after connecting)
//   UNKNOWN            may have been sent (connection lost, TLS or other error
//                      after connecting)
// Implementations are thread-safe.
class UpstreamClient {
 public:
  using Callback = std::function<void(absl::StatusOr<HttpAnswer>)>;

  virtual ~UpstreamClient() = default;

  // Starts the call and returns at once. `done` runs exactly once, on a thread
  // the client owns (never inside Post), and must not block.
  virtual void Post(UpstreamRequest request, Callback done) = 0;

  // Calls started and not finished / waiting for a slot, for the gauges.
  virtual size_t InFlight() const = 0;
  virtual size_t Queued() const = 0;
};

}  // namespace aopay

#endif  // AOPAY_SERVER_UPSTREAM_UPSTREAM_CLIENT_H_
