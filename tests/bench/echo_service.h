#ifndef AOPAY_TESTS_BENCH_ECHO_SERVICE_H_
#define AOPAY_TESTS_BENCH_ECHO_SERVICE_H_

// The echo service of echo.proto, the bare gRPC server the gateway is
// compared with, in the shapes that tell where a gRPC call's CPU goes
// (docs/benchmarks.md, "Where row a's gap is"):
//   - EchoService: the callback API, as the gateway serves; each call is
//     answered inline on the gRPC thread that received it, or, given an
//     Executor, from one of its threads (as the gateway answers from its
//     `callbacks` threads once a payout's outcome is durable).
//   - AsyncEchoServer: the async API, one thread of its own driving one
//     completion queue, answering inline or from an Executor.
// Thread-safe.

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "aopay/payout/v1/payout.pb.h"
#include "echo.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/executor/executor.h"

namespace aopay {
namespace bench {

// Fills `response` as the gateway would answer call number `n` for
// `request`: ids, state, AOPay's references and timestamps of the
// gateway's lengths.
void FillEcho(const ::aopay::payout::v1::CreatePayoutRequest& request,
              int64_t n, ::aopay::payout::v1::Payout* response);

class EchoService final
    : public ::aopay::echo::v1::EchoService::CallbackService {
 public:
  // answerer: where calls are answered; null answers inline.
  explicit EchoService(Executor* answerer = nullptr) : answerer_(answerer) {}

  grpc::ServerUnaryReactor* Echo(
      grpc::CallbackServerContext* context,
      const ::aopay::payout::v1::CreatePayoutRequest* request,
      ::aopay::payout::v1::Payout* response) override;

  // Calls answered so far.
  int64_t calls() const { return calls_.load(); }

 private:
  Executor* const answerer_;
  std::atomic<int64_t> calls_{0};
};

// The same method on the async API. Register service() with the builder,
// take `cq` from the same builder (AddCompletionQueue), build and start the
// server, then Start(); Shutdown the server before destroying this.
class AsyncEchoServer {
 public:
  // answerer: where calls are answered; null answers on the queue's thread.
  explicit AsyncEchoServer(Executor* answerer = nullptr)
      : answerer_(answerer) {}
  ~AsyncEchoServer();
  AsyncEchoServer(const AsyncEchoServer&) = delete;
  AsyncEchoServer& operator=(const AsyncEchoServer&) = delete;

  grpc::Service* service() { return &service_; }
  // Starts the thread that drives `cq` (owned by the caller's builder).
  void Start(std::unique_ptr<grpc::ServerCompletionQueue> cq);
  // After the server's Shutdown: drains the queue and joins the thread.
  void Stop();

  int64_t calls() const { return calls_.load(); }

 private:
  class Call;

  ::aopay::echo::v1::EchoService::AsyncService service_;
  Executor* const answerer_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::thread thread_;
  std::atomic<int64_t> calls_{0};
};

}  // namespace bench
}  // namespace aopay

#endif  // AOPAY_TESTS_BENCH_ECHO_SERVICE_H_
