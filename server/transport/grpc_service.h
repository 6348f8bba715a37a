#ifndef AOPAY_SERVER_TRANSPORT_GRPC_SERVICE_H_
#define AOPAY_SERVER_TRANSPORT_GRPC_SERVICE_H_

// The gRPC services: thin adapters on the callback API. Each method first
// finds the caller and checks its scope (auth.h), before any other work; then
// converts proto -> domain, calls one PayoutService operation with the caller
// and converts the result back with ToGrpcStatus(). Nothing here blocks a gRPC
// thread: the operation finishes the reactor from a thread that runs ledger
// callbacks or from the upstream client's loop.

#include "aopay/payout/v1/payout.grpc.pb.h"
#include "server/flow/payout_service.h"
#include "server/observability/metrics.h"
#include "server/transport/auth.h"

namespace aopay {

class GrpcPayoutService final
    : public payout::v1::PayoutService::CallbackService {
 public:
  // All must outlive the service.
  GrpcPayoutService(PayoutService& service, const Authenticator& auth,
                    Metrics& metrics);

  grpc::ServerUnaryReactor* CreatePayout(
      grpc::CallbackServerContext* context,
      const payout::v1::CreatePayoutRequest* request,
      payout::v1::Payout* response) override;
  grpc::ServerUnaryReactor* GetPayout(
      grpc::CallbackServerContext* context,
      const payout::v1::GetPayoutRequest* request,
      payout::v1::Payout* response) override;
  grpc::ServerUnaryReactor* ListPayouts(
      grpc::CallbackServerContext* context,
      const payout::v1::ListPayoutsRequest* request,
      payout::v1::ListPayoutsResponse* response) override;
  grpc::ServerUnaryReactor* RefreshPayout(
      grpc::CallbackServerContext* context,
      const payout::v1::RefreshPayoutRequest* request,
      payout::v1::Payout* response) override;
  grpc::ServerBidiReactor<payout::v1::CreatePayoutRequest,
                          payout::v1::BatchCreatePayoutsResponse>*
  BatchCreatePayouts(grpc::CallbackServerContext* context) override;
  grpc::ServerWriteReactor<payout::v1::PayoutEvent>* WatchPayouts(
      grpc::CallbackServerContext* context,
      const payout::v1::WatchPayoutsRequest* request) override;
  grpc::ServerUnaryReactor* CancelPayout(
      grpc::CallbackServerContext* context,
      const payout::v1::CancelPayoutRequest* request,
      payout::v1::Payout* response) override;

 private:
  PayoutService& service_;
  const Authenticator& auth_;
  Metrics& metrics_;
};

class GrpcPayoutAdminService final
    : public payout::v1::PayoutAdminService::CallbackService {
 public:
  GrpcPayoutAdminService(PayoutService& service, const Authenticator& auth,
                         Metrics& metrics);

  grpc::ServerUnaryReactor* ResolvePayout(
      grpc::CallbackServerContext* context,
      const payout::v1::ResolvePayoutRequest* request,
      payout::v1::Payout* response) override;
  grpc::ServerUnaryReactor* ApprovePayout(
      grpc::CallbackServerContext* context,
      const payout::v1::ApprovePayoutRequest* request,
      payout::v1::Payout* response) override;
  grpc::ServerUnaryReactor* RejectPayout(
      grpc::CallbackServerContext* context,
      const payout::v1::RejectPayoutRequest* request,
      payout::v1::Payout* response) override;

 private:
  PayoutService& service_;
  const Authenticator& auth_;
  Metrics& metrics_;
};

}  // namespace aopay

#endif  // AOPAY_SERVER_TRANSPORT_GRPC_SERVICE_H_
