#include "echo_service.h"

#include <utility>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace aopay {
namespace bench {

namespace pv1 = ::aopay::payout::v1;

void FillEcho(const pv1::CreatePayoutRequest& request, int64_t n,
              pv1::Payout* response) {
  const absl::Time now = absl::Now();
  // Fields of the lengths the gateway fills: a "po_" + ULID id, AOPay's
  // "TERF..." transaction id and 12-digit reference, its status word and the
  // bank's name for the beneficiary, and two timestamps.
  response->set_payout_id(absl::StrFormat("po_01J%023d", n));
  response->set_request_id(request.request_id());
  response->set_state(pv1::PAYOUT_STATE_ACCEPTED);
  *response->mutable_beneficiary() = request.beneficiary();
  response->set_amount_paise(request.amount_paise());
  response->set_mode(request.mode());
  response->set_transaction_id(absl::StrFormat("TERF%011d", n));
  response->set_transaction_reference_no(absl::StrFormat("%012d", n));
  response->set_upstream_status("ACPT");
  response->set_bank_beneficiary_name(request.beneficiary().name());
  const int64_t seconds = absl::ToUnixSeconds(now);
  const int32_t nanos = static_cast<int32_t>(
      absl::ToInt64Nanoseconds(now - absl::FromUnixSeconds(seconds)));
  response->mutable_create_time()->set_seconds(seconds);
  response->mutable_create_time()->set_nanos(nanos);
  *response->mutable_update_time() = response->create_time();
}

grpc::ServerUnaryReactor* EchoService::Echo(
    grpc::CallbackServerContext* context,
    const pv1::CreatePayoutRequest* request, pv1::Payout* response) {
  const int64_t n = calls_.fetch_add(1) + 1;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto answer = [request, response, reactor, n] {
    FillEcho(*request, n, response);
    reactor->Finish(grpc::Status::OK);
  };
  if (answerer_ == nullptr) {
    answer();
  } else {
    answerer_->Run(std::move(answer));
  }
  return reactor;
}

// One call's state: asked for, answered (Finish sent), done. Its address is
// its tag on the queue.
class AsyncEchoServer::Call {
 public:
  // Asks the server for the next Echo call.
  static void Ask(AsyncEchoServer& server) {
    auto* call = new Call(server);
    server.service_.RequestEcho(&call->context_, &call->request_,
                                &call->responder_, server.cq_.get(),
                                server.cq_.get(), call);
  }

  // The queue returned this call's tag.
  void Proceed(bool ok) {
    if (answering_ || !ok) {
      delete this;  // answered, or the server is shutting down
      return;
    }
    Ask(server_);
    answering_ = true;
    const int64_t n = server_.calls_.fetch_add(1) + 1;
    auto answer = [this, n] {
      FillEcho(request_, n, &response_);
      responder_.Finish(response_, grpc::Status::OK, this);
    };
    if (server_.answerer_ == nullptr) {
      answer();
    } else {
      server_.answerer_->Run(std::move(answer));
    }
  }

 private:
  explicit Call(AsyncEchoServer& server) : server_(server) {}

  AsyncEchoServer& server_;
  grpc::ServerContext context_;
  pv1::CreatePayoutRequest request_;
  pv1::Payout response_;
  grpc::ServerAsyncResponseWriter<pv1::Payout> responder_{&context_};
  bool answering_ = false;
};

void AsyncEchoServer::Start(std::unique_ptr<grpc::ServerCompletionQueue> cq) {
  cq_ = std::move(cq);
  // Enough calls asked for ahead that a burst of calls never waits for the
  // queue's thread to ask for more.
  for (int i = 0; i < 64; ++i) Call::Ask(*this);
  thread_ = std::thread([this] {
    void* tag = nullptr;
    bool ok = false;
    while (cq_->Next(&tag, &ok)) static_cast<Call*>(tag)->Proceed(ok);
  });
}

void AsyncEchoServer::Stop() {
  if (cq_ == nullptr) return;
  cq_->Shutdown();
  if (thread_.joinable()) thread_.join();
  cq_.reset();
}

AsyncEchoServer::~AsyncEchoServer() { Stop(); }

}  // namespace bench
}  // namespace aopay
