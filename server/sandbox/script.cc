#include "server/sandbox/script.h"

#include <optional>
#include <random>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/sandbox/wire.h"

namespace aopay::sandbox {
namespace {

constexpr int64_t kLowestId = 100'000'000'000;
constexpr int64_t kIdSpan = 900'000'000'000;

Answer Reply(int http_status, std::string content_type, std::string body) {
  Answer answer;
  answer.http_status = http_status;
  answer.content_type = std::move(content_type);
  answer.body = std::move(body);
  return answer;
}

// A documented AOPay error, with HTTP status = subCode.
Answer DocumentedError(int sub_code) {
  return Reply(sub_code, kJsonContentType, DocumentedErrorBody(sub_code));
}

// ^[A-Z]{4}0[A-Z0-9]{6}$
bool IsValidIfsc(absl::string_view ifsc) {
  if (ifsc.size() != 11) return false;
  for (size_t i = 0; i < ifsc.size(); ++i) {
    const char c = ifsc[i];
    const bool upper = c >= 'A' && c <= 'Z';
    const bool digit = c >= '0' && c <= '9';
    if (i < 4 ? !upper : i == 4 ? c != '0' : !(upper || digit)) return false;
  }
  return true;
}

}  // namespace

IdSource::IdSource() {
  std::random_device device;
  std::uniform_int_distribution<int64_t> start(0, kIdSpan - 1);
  transaction_start_ = start(device);
  reference_start_ = start(device);
}

std::string IdSource::NextTransactionId() {
  return absl::StrCat(
      "TERF",
      kLowestId + (transaction_start_ + transactions_.fetch_add(1)) % kIdSpan);
}

std::string IdSource::NextReferenceNo() {
  return absl::StrCat(kLowestId +
                      (reference_start_ + references_.fetch_add(1)) % kIdSpan);
}

Script::Script(const SandboxOptions& options)
    : registrations_(options.registrations.begin(),
                     options.registrations.end()),
      latency_(options.latency),
      slow_(options.slow),
      settle_(options.settle) {}

Answer Script::DecidePayout(absl::string_view content_type,
                            absl::string_view body) const {
  std::optional<PayoutRequest> request = ParsePayoutRequest(content_type, body);
  if (!request) return DocumentedError(412);
  if (!registrations_.contains(request->registration_id)) {
    return DocumentedError(403);
  }
  if (!IsValidIfsc(request->beneficiary_ifsc)) return DocumentedError(422);

  const absl::string_view account = request->account_number;
  const absl::string_view suffix = account.size() < 4
                                       ? absl::string_view()
                                       : account.substr(account.size() - 4);
  if (suffix == "0403") return DocumentedError(403);
  if (suffix == "0409") return DocumentedError(409);
  if (suffix == "0412") return DocumentedError(412);
  if (suffix == "0422") return DocumentedError(422);
  if (suffix == "0429") return Reply(429, "", "");
  if (suffix == "0500") return Reply(500, kHtmlContentType, kInternalErrorPage);
  Answer answer;
  if (suffix == "0502") {
    answer.kind = Answer::Kind::kDrop;
    return answer;
  }
  answer.kind = Answer::Kind::kAccept;
  answer.beneficiary_name = absl::AsciiStrToUpper(request->beneficiary_name);
  answer.registration = std::move(request->registration_id);
  if (suffix == "0504") answer.delay = slow_;
  if (suffix == "0601") answer.fate = Fate::kFails;
  if (suffix == "0602") answer.fate = Fate::kReverses;
  return answer;
}

Answer Script::DecideStatus(absl::string_view content_type,
                            absl::string_view body) {
  const std::optional<StatusRequest> request =
      ParseStatusRequest(content_type, body);
  if (!request) return DocumentedError(412);
  if (!registrations_.contains(request->registration_id)) {
    return DocumentedError(403);
  }

  const absl::Time now = absl::Now();
  absl::MutexLock lock(&transactions_mu_);
  const auto found = transactions_.find(request->transaction_id);
  if (found == transactions_.end() ||
      found->second.registration != request->registration_id) {
    return Reply(404, kJsonContentType, TransactionNotFoundBody());
  }
  const Transaction& transaction = found->second;
  absl::string_view word;
  switch (transaction.fate) {
    case Fate::kFails:
      word = "FAILED";
      break;
    case Fate::kReverses:
      word = "REVERSED";
      break;
    case Fate::kSettles:
      word = now - transaction.accepted >= settle_ ? "SUCCESS" : "PENDING";
      break;
  }
  return Reply(
      200, kJsonContentType,
      StatusBody(request->transaction_id, transaction.reference_no, word));
}

Answer Script::DecideOther() const {
  return Reply(404, kJsonContentType, ResourceNotFoundBody());
}

std::string Script::Accept(const Answer& answer) {
  const absl::Time now = absl::Now();
  std::string transaction_id = ids_.NextTransactionId();
  std::string reference_no = ids_.NextReferenceNo();
  std::string body =
      AcceptedBody(now, reference_no, transaction_id, answer.beneficiary_name);
  Transaction transaction;
  transaction.reference_no = std::move(reference_no);
  transaction.registration = answer.registration;
  transaction.accepted = now;
  transaction.fate = answer.fate;
  absl::MutexLock lock(&transactions_mu_);
  transactions_.insert_or_assign(std::move(transaction_id),
                                 std::move(transaction));
  return body;
}

}  // namespace aopay::sandbox
