#include "client/payout_client.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/errors.h"
#include "common/ids.h"
#include "google/rpc/error_details.pb.h"

namespace aopay {
namespace {

constexpr int kMaxGrpcCode = 16;  // UNAUTHENTICATED

absl::StatusCode ToAbslCode(int code) {
  if (code < 0 || code > kMaxGrpcCode) return absl::StatusCode::kUnknown;
  return static_cast<absl::StatusCode>(code);
}

absl::Duration FromProtoDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// `details` may come from a peer we do not control: every Any is checked
// before it is unpacked, and unknown ones are skipped.
absl::Status DecodeError(
    absl::StatusCode code, absl::string_view message,
    const google::protobuf::RepeatedPtrField<google::protobuf::Any>& details) {
  ErrorDetails decoded;
  bool found_any = false;
  bool found_info = false;
  for (const google::protobuf::Any& any : details) {
    if (any.Is<google::rpc::ErrorInfo>()) {
      google::rpc::ErrorInfo info;
      // Only the first ErrorInfo counts; the gateway sends exactly one.
      if (found_info || !any.UnpackTo(&info)) continue;
      found_info = found_any = true;
      decoded.reason = info.reason();
      decoded.metadata.insert(info.metadata().begin(), info.metadata().end());
    } else if (any.Is<google::rpc::BadRequest>()) {
      google::rpc::BadRequest bad_request;
      if (!any.UnpackTo(&bad_request)) continue;
      found_any = true;
      for (const auto& v : bad_request.field_violations()) {
        decoded.violations.push_back({v.field(), v.description()});
      }
    } else if (any.Is<google::rpc::RetryInfo>()) {
      google::rpc::RetryInfo retry;
      if (!any.UnpackTo(&retry)) continue;
      found_any = true;
      decoded.retry_delay = FromProtoDuration(retry.retry_delay());
    }
  }
  if (!found_any) return absl::Status(code, message);
  return MakeError(code, message, std::move(decoded));
}

absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  if (in.is_open()) contents << in.rdbuf();
  // A directory opens but reads nothing; an empty PEM file is as useless.
  if (!in.is_open() || in.bad() || contents.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read the ", what, " file '", path, "' (missing or empty)"));
  }
  return contents.str();
}

}  // namespace

absl::StatusOr<std::string> ResolveBearerToken(const std::string& token,
                                               const std::string& token_file) {
  if (!token.empty() && !token_file.empty()) {
    return absl::InvalidArgumentError("give --token or --token_file, not both");
  }
  std::string resolved = token;
  if (!token_file.empty()) {
    absl::StatusOr<std::string> contents = ReadFile(token_file, "token");
    if (!contents.ok()) return contents.status();
    resolved = std::string(absl::StripAsciiWhitespace(*contents));
    if (resolved.empty()) {
      return absl::InvalidArgumentError("the --token_file is empty");
    }
  } else if (token.empty()) {
    if (const char* env = std::getenv("PAYOUT_TOKEN"); env != nullptr) {
      resolved = std::string(absl::StripAsciiWhitespace(env));
    }
  }
  for (const char c : resolved) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          "the bearer token has a character a header cannot carry (only "
          "visible ASCII is allowed)");
    }
  }
  return resolved;
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const absl::StatusCode code = ToAbslCode(status.error_code());
  google::rpc::Status details;
  if (status.error_details().empty() ||
      !details.ParseFromString(status.error_details())) {
    return absl::Status(code, status.error_message());
  }
  return DecodeError(code, status.error_message(), details.details());
}

absl::Status FromRpcStatusProto(const google::rpc::Status& status) {
  if (status.code() == 0) return absl::OkStatus();
  return DecodeError(ToAbslCode(status.code()), status.message(),
                     status.details());
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(
    const ChannelOptions& options) {
  if (options.target.empty()) {
    return absl::InvalidArgumentError("the gateway address is empty");
  }
  const bool tls = !options.tls_ca_file.empty() ||
                   !options.tls_cert_file.empty() ||
                   !options.tls_key_file.empty();
  if (!tls) {
    return grpc::CreateChannel(options.target,
                               grpc::InsecureChannelCredentials());
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "a TLS client certificate and its key must be given together");
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.tls_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadFile(options.tls_ca_file, "TLS CA");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!options.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert =
        ReadFile(options.tls_cert_file, "TLS certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFile(options.tls_key_file, "TLS key");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  return grpc::CreateChannel(options.target, grpc::SslCredentials(ssl));
}

PayoutClient::PayoutClient(std::shared_ptr<grpc::Channel> channel,
                           std::string bearer_token,
                           std::optional<RetryPolicy> retry, RetryClock clock)
    : stub_(v1::PayoutService::NewStub(channel)),
      admin_stub_(v1::PayoutAdminService::NewStub(channel)),
      bearer_token_(std::move(bearer_token)),
      retry_(std::move(retry)),
      clock_(std::move(clock)) {}

void PayoutClient::PrepareContext(grpc::ClientContext& context,
                                  absl::Duration timeout) const {
  if (timeout != absl::InfiniteDuration()) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
  if (!bearer_token_.empty()) {
    context.AddMetadata("authorization",
                        absl::StrCat("Bearer ", bearer_token_));
  }
}

template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> PayoutClient::Unary(
    Stub& stub,
    grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                 Response*),
    const Request& request, absl::Duration timeout, bool retried) const {
  return CallWithRetries<Response>(
      retried && retry_.has_value() ? &*retry_ : nullptr, clock_,
      [&](int /*attempt*/) -> absl::StatusOr<Response> {
        grpc::ClientContext context;
        PrepareContext(context, timeout);
        Response response;
        grpc::Status status = (stub.*method)(&context, request, &response);
        if (!status.ok()) return FromGrpcStatus(status);
        return response;
      });
}

absl::StatusOr<v1::Payout> PayoutClient::CreatePayout(
    const v1::CreatePayoutRequest& request, absl::Duration timeout) const {
  return Unary(*stub_, &v1::PayoutService::Stub::CreatePayout, request,
               timeout);
}

absl::StatusOr<v1::Payout> PayoutClient::GetPayout(
    const v1::GetPayoutRequest& request, absl::Duration timeout) const {
  return Unary(*stub_, &v1::PayoutService::Stub::GetPayout, request, timeout);
}

absl::StatusOr<v1::ListPayoutsResponse> PayoutClient::ListPayouts(
    const v1::ListPayoutsRequest& request, absl::Duration timeout) const {
  return Unary(*stub_, &v1::PayoutService::Stub::ListPayouts, request, timeout);
}

absl::StatusOr<v1::Payout> PayoutClient::RefreshPayout(
    const v1::RefreshPayoutRequest& request, absl::Duration timeout) const {
  return Unary(*stub_, &v1::PayoutService::Stub::RefreshPayout, request,
               timeout);
}

absl::StatusOr<v1::Payout> PayoutClient::CancelPayout(
    const v1::CancelPayoutRequest& request, absl::Duration timeout) const {
  return Unary(*stub_, &v1::PayoutService::Stub::CancelPayout, request,
               timeout);
}

absl::StatusOr<v1::Payout> PayoutClient::ResolvePayout(
    const v1::ResolvePayoutRequest& request, absl::Duration timeout) const {
  // An operator's decision is recorded once: never retried.
  return Unary(*admin_stub_, &v1::PayoutAdminService::Stub::ResolvePayout,
               request, timeout, /*retried=*/false);
}

absl::StatusOr<v1::Payout> PayoutClient::ApprovePayout(
    const v1::ApprovePayoutRequest& request, absl::Duration timeout) const {
  return Unary(*admin_stub_, &v1::PayoutAdminService::Stub::ApprovePayout,
               request, timeout);
}

absl::StatusOr<v1::Payout> PayoutClient::RejectPayout(
    const v1::RejectPayoutRequest& request, absl::Duration timeout) const {
  return Unary(*admin_stub_, &v1::PayoutAdminService::Stub::RejectPayout,
               request, timeout);
}

absl::Status PayoutClient::WatchPayouts(
    const v1::WatchPayoutsRequest& request, absl::Duration timeout,
    const std::function<bool(const v1::PayoutEvent&)>& on_event) const {
  const RetryPolicy* policy = retry_.has_value() ? &*retry_ : nullptr;
  v1::WatchPayoutsRequest next = request;
  int number = 1;  // the attempt in the current series of failures
  absl::Time series_start = clock_.now();
  for (;;) {
    grpc::ClientContext context;
    PrepareContext(context, timeout);
    std::unique_ptr<grpc::ClientReader<v1::PayoutEvent>> reader =
        stub_->WatchPayouts(&context, next);
    reader->WaitForInitialMetadata();
    const auto& headers = context.GetServerInitialMetadata();
    const auto header = headers.find(kWatchCursorHeader);
    bool opened = header != headers.end();
    if (opened && next.after_cursor().empty()) {
      // From now on: resume after where this stream started.
      next.set_after_cursor(
          std::string(header->second.data(), header->second.size()));
    }
    v1::PayoutEvent event;
    while (reader->Read(&event)) {
      opened = true;
      next.set_after_cursor(event.cursor());
      if (!on_event(event)) {
        context.TryCancel();
        (void)reader->Finish();
        return absl::OkStatus();
      }
    }
    absl::Status status = FromGrpcStatus(reader->Finish());
    if (policy == nullptr) return status;
    if (status.ok()) {
      status =
          absl::UnavailableError("the watch stream ended without an error");
    }
    if (opened) {  // a new series of failures starts with this one
      number = 1;
      series_start = clock_.now();
    }
    status = WithAttempts(std::move(status), number);
    if (number >= policy->max_attempts || !IsRetryable(status)) return status;
    const absl::Duration wait =
        policy->Backoff(number, RetryDelayOf(status), RetryRandom(clock_));
    if (clock_.now() + wait - series_start > policy->max_elapsed) {
      return status;
    }
    if (policy->on_retry) policy->on_retry(number, status, wait);
    clock_.sleep(wait);
    ++number;
  }
}

absl::Status PayoutClient::BatchStream(
    const std::vector<const v1::CreatePayoutRequest*>& requests,
    absl::Duration timeout,
    std::vector<v1::BatchCreatePayoutsResponse>& answers) const {
  grpc::ClientContext context;
  PrepareContext(context, timeout);
  auto stream = stub_->BatchCreatePayouts(&context);
  // A failed Write means the stream is over; Finish() below says why.
  std::thread writer([&stream, &requests] {
    for (const v1::CreatePayoutRequest* request : requests) {
      if (!stream->Write(*request)) return;
    }
    stream->WritesDone();
  });
  answers.reserve(answers.size() + requests.size());
  v1::BatchCreatePayoutsResponse answer;
  while (stream->Read(&answer)) answers.push_back(std::move(answer));
  writer.join();
  return FromGrpcStatus(stream->Finish());
}

absl::StatusOr<std::vector<v1::BatchCreatePayoutsResponse>>
PayoutClient::BatchCreatePayouts(
    const std::vector<v1::CreatePayoutRequest>& requests,
    absl::Duration timeout) const {
  std::vector<const v1::CreatePayoutRequest*> pending;
  pending.reserve(requests.size());
  for (const v1::CreatePayoutRequest& request : requests) {
    pending.push_back(&request);
  }
  std::vector<v1::BatchCreatePayoutsResponse> done;
  if (!retry_.has_value()) {
    absl::Status status = BatchStream(pending, timeout, done);
    if (!status.ok()) return status;
    return done;
  }
  absl::flat_hash_set<std::string> ids;
  for (const v1::CreatePayoutRequest& request : requests) {
    if (!ids.insert(request.request_id()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("request id '", request.request_id(),
                       "' appears twice in the batch"));
    }
  }
  const RetryPolicy& policy = *retry_;
  const absl::Time started = clock_.now();
  for (int round = 1;; ++round) {
    std::vector<v1::BatchCreatePayoutsResponse> answers;
    absl::Status stream = BatchStream(pending, timeout, answers);
    absl::flat_hash_map<std::string, const v1::CreatePayoutRequest*> waiting;
    for (const v1::CreatePayoutRequest* request : pending) {
      waiting.emplace(request->request_id(), request);
    }
    // Answered with a retryable error: sent again unless the policy is
    // spent, when the error answer is final.
    std::vector<const v1::CreatePayoutRequest*> again;
    std::vector<v1::BatchCreatePayoutsResponse> retryable_answers;
    absl::Status first_error;
    std::optional<absl::Duration> longest_delay;
    auto note_error = [&](const absl::Status& error) {
      if (first_error.ok()) first_error = error;
      const std::optional<absl::Duration> delay = RetryDelayOf(error);
      if (delay && (!longest_delay || *delay > *longest_delay)) {
        longest_delay = delay;
      }
    };
    for (v1::BatchCreatePayoutsResponse& answer : answers) {
      const auto found = waiting.find(answer.request_id());
      if (found == waiting.end()) continue;  // unknown, or answered twice
      const v1::CreatePayoutRequest* request = found->second;
      waiting.erase(found);
      if (answer.has_error() && round < policy.max_attempts) {
        const absl::Status error = FromRpcStatusProto(answer.error());
        if (IsRetryable(error)) {
          again.push_back(request);
          retryable_answers.push_back(std::move(answer));
          note_error(error);
          continue;
        }
      }
      done.push_back(std::move(answer));
    }
    if (!waiting.empty()) {
      if (stream.ok()) {
        stream = absl::UnknownError(
            "the stream ended without answering every request");
      }
      if (round >= policy.max_attempts || !IsRetryable(stream)) {
        return WithAttempts(stream, round);
      }
      // In the batch's order, as first sent.
      for (const v1::CreatePayoutRequest* request : pending) {
        if (waiting.contains(request->request_id())) again.push_back(request);
      }
      note_error(stream);
    }
    if (again.empty()) return done;
    const absl::Duration wait =
        policy.Backoff(round, longest_delay, RetryRandom(clock_));
    if (clock_.now() + wait - started > policy.max_elapsed) {
      if (!waiting.empty()) return WithAttempts(stream, round);
      for (v1::BatchCreatePayoutsResponse& answer : retryable_answers) {
        done.push_back(std::move(answer));
      }
      return done;
    }
    if (policy.on_retry) {
      policy.on_retry(round, WithAttempts(first_error, round), wait);
    }
    clock_.sleep(wait);
    pending = std::move(again);
  }
}

namespace {

// Owns everything an asynchronous CreatePayout needs until it completes.
struct AsyncCreateCall {
  grpc::ClientContext context;
  v1::CreatePayoutRequest request;
  v1::Payout payout;
  PayoutClient::CreateCallback done;
};

}  // namespace

void PayoutClient::CreatePayoutAsync(const v1::CreatePayoutRequest& request,
                                     absl::Duration timeout,
                                     CreateCallback done) const {
  auto call = std::make_unique<AsyncCreateCall>();
  PrepareContext(call->context, timeout);
  call->request = request;
  call->done = std::move(done);
  AsyncCreateCall* raw = call.release();
  auto on_done = [raw](grpc::Status status) {
    std::unique_ptr<AsyncCreateCall> owned(raw);
    CreateCallback callback = std::move(owned->done);
    absl::StatusOr<v1::Payout> result =
        status.ok() ? absl::StatusOr<v1::Payout>(std::move(owned->payout))
                    : absl::StatusOr<v1::Payout>(FromGrpcStatus(status));
    // Free the call before the callback runs: it may be what lets the owner of
    // this client go away.
    owned.reset();
    callback(std::move(result));
  };
  stub_->async()->CreatePayout(&raw->context, &raw->request, &raw->payout,
                               std::move(on_done));
}

}  // namespace aopay
