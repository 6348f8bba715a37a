#ifndef AOPAY_CLIENT_PAYOUT_CLIENT_H_
#define AOPAY_CLIENT_PAYOUT_CLIENT_H_

// A C++ client for the payout gateway (docs/api.md). Errors come back
// as absl::Status values built with MakeError(), so GetErrorDetails() yields
// the ErrorInfo reason and metadata, every BadRequest field violation and the
// RetryInfo delay the gateway sent.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "aopay/payout/v1/payout.grpc.pb.h"
#include "aopay/payout/v1/payout.pb.h"
#include "client/retry_policy.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/grpcpp.h"

namespace aopay {

namespace v1 = ::aopay::payout::v1;

// Decodes a gRPC error: its code and message, and from error_details() (the
// serialized google.rpc.Status sent as grpc-status-details-bin) the first
// ErrorInfo (reason, metadata), every BadRequest field violation and the
// RetryInfo delay. Missing or unreadable details leave just code and message.
// OK gives OK.
[[nodiscard]] absl::Status FromGrpcStatus(const grpc::Status& status);

// The same for a google.rpc.Status carried inside a message (Payout.failure,
// BatchCreatePayoutsResponse.error). Code 0 gives OK; a code outside the
// google.rpc.Code range becomes UNKNOWN.
[[nodiscard]] absl::Status FromRpcStatusProto(
    const google::rpc::Status& status);

// How to reach the gateway.
struct ChannelOptions {
  std::string target = "127.0.0.1:50051";  // host:port or any gRPC target URI
  // TLS is used when any of the three files is named; otherwise plaintext.
  std::string tls_ca_file;    // PEM roots; empty: the system's roots
  std::string tls_cert_file;  // PEM client certificate for mTLS
  std::string tls_key_file;   // its PEM private key; needs tls_cert_file
};

// A channel to options.target. Does not connect yet. Fails with
// INVALID_ARGUMENT when a named file cannot be read or only one of
// cert/key is named.
[[nodiscard]] absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(
    const ChannelOptions& options);

// The bearer token a program should send: `token`, or the contents of
// `token_file` (surrounding white space dropped), or, when both are empty,
// $PAYOUT_TOKEN; "" when there is none. INVALID_ARGUMENT when both are given,
// the file cannot be read or is empty, or the token holds a character a header
// cannot carry (only visible ASCII is allowed).
[[nodiscard]] absl::StatusOr<std::string> ResolveBearerToken(
    const std::string& token, const std::string& token_file);

// Calls PayoutService and PayoutAdminService over one channel.
//
// Thread-safe: every method may be called from many threads at once; the
// client holds no per-call state. The channel is shared and outlives nothing
// in particular (gRPC reference-counts it). Every call carries
// "authorization: Bearer <token>" when the token is non-empty, and a deadline
// of now + timeout (no deadline for absl::InfiniteDuration()).
//
// Retries are opt-in: given a RetryPolicy, CreatePayout, GetPayout,
// ListPayouts, RefreshPayout, CancelPayout, ApprovePayout and RejectPayout
// send the identical request again on the errors IsRetryable() names, and
// BatchCreatePayouts sends again the requests answered with such an error or
// left unanswered by a stream that broke with one (docs/client-retries.md).
// `timeout` then bounds each attempt; the error returned at the end carries
// the attempts made (RetryAttempts). WatchPayouts then follows broken
// streams and gateway restarts (below). ResolvePayout and CreatePayoutAsync
// are never retried.
class PayoutClient {
 public:
  // `retry` must pass ValidateRetryPolicy(); `clock` is for tests.
  explicit PayoutClient(std::shared_ptr<grpc::Channel> channel,
                        std::string bearer_token = "",
                        std::optional<RetryPolicy> retry = std::nullopt,
                        RetryClock clock = {});

  PayoutClient(const PayoutClient&) = delete;
  PayoutClient& operator=(const PayoutClient&) = delete;

  [[nodiscard]] absl::StatusOr<v1::Payout> CreatePayout(
      const v1::CreatePayoutRequest& request, absl::Duration timeout) const;
  [[nodiscard]] absl::StatusOr<v1::Payout> GetPayout(
      const v1::GetPayoutRequest& request, absl::Duration timeout) const;
  [[nodiscard]] absl::StatusOr<v1::ListPayoutsResponse> ListPayouts(
      const v1::ListPayoutsRequest& request, absl::Duration timeout) const;
  [[nodiscard]] absl::StatusOr<v1::Payout> RefreshPayout(
      const v1::RefreshPayoutRequest& request, absl::Duration timeout) const;
  [[nodiscard]] absl::StatusOr<v1::Payout> ResolvePayout(
      const v1::ResolvePayoutRequest& request, absl::Duration timeout) const;
  [[nodiscard]] absl::StatusOr<v1::Payout> CancelPayout(
      const v1::CancelPayoutRequest& request, absl::Duration timeout) const;
  [[nodiscard]] absl::StatusOr<v1::Payout> ApprovePayout(
      const v1::ApprovePayoutRequest& request, absl::Duration timeout) const;
  [[nodiscard]] absl::StatusOr<v1::Payout> RejectPayout(
      const v1::RejectPayoutRequest& request, absl::Duration timeout) const;

  // Sends every request over one BatchCreatePayouts stream and returns every
  // answer, in the order the gateway sent them (not necessarily the order of
  // `requests`). `timeout` bounds the whole stream. Requests are written from
  // a second thread while answers are read, so a gateway that answers before
  // it has read everything cannot deadlock the stream.
  //
  // When the stream fails (with retries: for good, after the requests it
  // left unanswered were sent again as far as the policy allows), the
  // answers read so far are dropped and the stream's error is returned.
  // Retrying the whole batch with the same request ids is safe: the gateway
  // replays recorded outcomes and sends nothing twice. With retries, request
  // ids must be unique within the batch (INVALID_ARGUMENT otherwise).
  [[nodiscard]] absl::StatusOr<std::vector<v1::BatchCreatePayoutsResponse>>
  BatchCreatePayouts(const std::vector<v1::CreatePayoutRequest>& requests,
                     absl::Duration timeout) const;

  // Follows WatchPayouts, calling `on_event` for each event until it returns
  // false (then the stream is cancelled and OK returned) or the stream ends
  // (its status). No deadline unless `timeout` is finite (with retries: for
  // each stream).
  //
  // With a RetryPolicy it keeps following, each event once and in order
  // (docs/client-retries.md#watching): a stream that ends with a retryable
  // error, or without one, is followed by a new one after the resume cursor
  // (the stream's payout-watch-cursor header until the first event, then
  // the last event's cursor), after the policy's backoff. The policy's
  // limits count failed reconnections in a row: a stream that opened starts
  // them again, its time from the moment it broke. WatchRetryPolicy() has
  // the limits the page gives for watches.
  [[nodiscard]] absl::Status WatchPayouts(
      const v1::WatchPayoutsRequest& request, absl::Duration timeout,
      const std::function<bool(const v1::PayoutEvent&)>& on_event) const;

  // CreatePayout without blocking: `done` runs exactly once, on a gRPC
  // thread, when the call ends. `done` must not block. The request is copied.
  using CreateCallback = std::function<void(absl::StatusOr<v1::Payout>)>;
  void CreatePayoutAsync(const v1::CreatePayoutRequest& request,
                         absl::Duration timeout, CreateCallback done) const;

 private:
  void PrepareContext(grpc::ClientContext& context,
                      absl::Duration timeout) const;
  // One unary call of `stub`, with the deadline and token of every call;
  // retried by the policy when `retried`.
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Unary(
      Stub& stub,
      grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                   Response*),
      const Request& request, absl::Duration timeout,
      bool retried = true) const;
  // One BatchCreatePayouts stream carrying `requests`: the answers read, and
  // the stream's end.
  absl::Status BatchStream(
      const std::vector<const v1::CreatePayoutRequest*>& requests,
      absl::Duration timeout,
      std::vector<v1::BatchCreatePayoutsResponse>& answers) const;

  std::unique_ptr<v1::PayoutService::Stub> stub_;
  std::unique_ptr<v1::PayoutAdminService::Stub> admin_stub_;
  const std::string bearer_token_;
  const std::optional<RetryPolicy> retry_;
  const RetryClock clock_;
};

}  // namespace aopay

#endif  // AOPAY_CLIENT_PAYOUT_CLIENT_H_
