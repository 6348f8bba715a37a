#ifndef AOPAY_TESTS_BENCH_ECHO_SERVICE_H_
#define AOPAY_TESTS_BENCH_ECHO_SERVICE_H_

// The echo service of echo.proto with the callback API: each call is
// answered inline, on the gRPC thread that received it. Thread-safe.

#include <atomic>
#include <cstdint>

#include "aopay/payout/v1/payout.pb.h"
#include "echo.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace aopay {
namespace bench {

class EchoService final
    : public ::aopay::echo::v1::EchoService::CallbackService {
 public:
  grpc::ServerUnaryReactor* Echo(
      grpc::CallbackServerContext* context,
      const ::aopay::payout::v1::CreatePayoutRequest* request,
      ::aopay::payout::v1::Payout* response) override;

  // Calls answered so far.
  int64_t calls() const { return calls_.load(); }

 private:
  std::atomic<int64_t> calls_{0};
};

}  // namespace bench
}  // namespace aopay

#endif  // AOPAY_TESTS_BENCH_ECHO_SERVICE_H_
