#include "echo_service.h"

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace aopay {
namespace bench {

namespace pv1 = ::aopay::payout::v1;

grpc::ServerUnaryReactor* EchoService::Echo(
    grpc::CallbackServerContext* context,
    const pv1::CreatePayoutRequest* request, pv1::Payout* response) {
  const int64_t n = calls_.fetch_add(1) + 1;
  const absl::Time now = absl::Now();
  // Fields of the lengths the gateway fills: a "po_" + ULID id, AOPay's
  // "TERF..." transaction id and 12-digit reference, its status word and the
  // bank's name for the beneficiary, and two timestamps.
  response->set_payout_id(absl::StrFormat("po_01J%023d", n));
  response->set_request_id(request->request_id());
  response->set_state(pv1::PAYOUT_STATE_ACCEPTED);
  *response->mutable_beneficiary() = request->beneficiary();
  response->set_amount_paise(request->amount_paise());
  response->set_mode(request->mode());
  response->set_transaction_id(absl::StrFormat("TERF%011d", n));
  response->set_transaction_reference_no(absl::StrFormat("%012d", n));
  response->set_upstream_status("ACPT");
  response->set_bank_beneficiary_name(request->beneficiary().name());
  const int64_t seconds = absl::ToUnixSeconds(now);
  const int32_t nanos = static_cast<int32_t>(
      absl::ToInt64Nanoseconds(now - absl::FromUnixSeconds(seconds)));
  response->mutable_create_time()->set_seconds(seconds);
  response->mutable_create_time()->set_nanos(nanos);
  *response->mutable_update_time() = response->create_time();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace bench
}  // namespace aopay
