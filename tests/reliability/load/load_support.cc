#include "tests/reliability/load/load_support.h"

#include <dirent.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/errors.h"
#include "httplib.h"

namespace aopay::testing::load {
namespace {

constexpr absl::string_view kPayoutPath = "/api/V6/Payout/AOPPayout";

using Database = std::unique_ptr<sqlite3, decltype(&sqlite3_close)>;
using Statement = std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)>;

std::string Column(sqlite3_stmt* statement, int column) {
  const unsigned char* text = sqlite3_column_text(statement, column);
  return text == nullptr ? "" : reinterpret_cast<const char*>(text);
}

}  // namespace

Mode CurrentMode() {
  const char* mode = std::getenv("RELIABILITY_MODE");
  return mode != nullptr && absl::string_view(mode) == "long" ? Mode::kLong
                                                              : Mode::kCi;
}

const char* ModeName(Mode mode) { return mode == Mode::kLong ? "long" : "ci"; }

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* text = std::getenv(name);
  int64_t value = 0;
  if (text == nullptr || !absl::SimpleAtoi(text, &value)) return fallback;
  return value;
}

uint64_t RunSeed() {
  static const uint64_t seed = [] {
    const int64_t given = EnvInt("RELIABILITY_SEED", -1);
    const uint64_t chosen =
        given >= 0
            ? static_cast<uint64_t>(given)
            : static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()) ^
                                    (static_cast<int64_t>(getpid()) << 20)) %
                  1000000000000ULL;
    std::cout << "seed: " << chosen << " (RELIABILITY_SEED=" << chosen
              << " repeats the random choices)" << std::endl;
    return chosen;
  }();
  return seed;
}

absl::StatusOr<ProcessUsage> ReadUsage(pid_t pid) {
  ProcessUsage usage;
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "VmRSS:")) {
      std::string digits;
      for (char c : line) {
        if (c >= '0' && c <= '9') digits.push_back(c);
      }
      if (!absl::SimpleAtoi(digits, &usage.rss_kib)) usage.rss_kib = -1;
    }
  }
  const std::string fd_dir = absl::StrCat("/proc/", pid, "/fd");
  DIR* dir = opendir(fd_dir.c_str());
  if (dir != nullptr) {
    usage.fds = 0;
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') ++usage.fds;
    }
    closedir(dir);
  }
  if (usage.rss_kib < 0 || usage.fds < 0) {
    return absl::NotFoundError(absl::StrCat("no /proc entry for pid ", pid));
  }
  return usage;
}

double Slope(const std::vector<std::pair<double, double>>& points) {
  if (points.size() < 2) return 0;
  double mean_x = 0, mean_y = 0;
  for (const auto& [x, y] : points) {
    mean_x += x;
    mean_y += y;
  }
  mean_x /= points.size();
  mean_y /= points.size();
  double covariance = 0, variance = 0;
  for (const auto& [x, y] : points) {
    covariance += (x - mean_x) * (y - mean_y);
    variance += (x - mean_x) * (x - mean_x);
  }
  return variance == 0 ? 0 : covariance / variance;
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t rank = static_cast<size_t>(
      std::ceil(p / 100.0 * static_cast<double>(values.size())));
  return values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)];
}

std::string LoadAccount(absl::string_view suffix) {
  static std::atomic<int64_t> counter{0};
  // 4 digits of process id, 8 of counter, then the scripted suffix.
  return absl::StrFormat("%04d%08d%s", getpid() % 10000,
                         counter.fetch_add(1) % 100000000, suffix);
}

v1::CreatePayoutRequest LoadRequest(absl::string_view suffix,
                                    absl::BitGen& random) {
  v1::CreatePayoutRequest request = ValidRequest(
      LoadAccount(suffix), absl::Uniform<int64_t>(random, 100, 5000000));
  request.set_mode(absl::Bernoulli(random, 0.5) ? v1::TRANSFER_MODE_IMPS
                                                : v1::TRANSFER_MODE_NEFT);
  return request;
}

std::string SuffixOf(absl::string_view account) {
  return std::string(account.size() < 4 ? account
                                        : account.substr(account.size() - 4));
}

Answer Classify(const absl::Status& status) {
  const std::string reason = GetErrorDetails(status).reason;
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return Answer::kAccepted;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kInternal:
      return absl::StartsWith(reason, "UPSTREAM_") ? Answer::kFailed
                                                   : Answer::kRetry;
    case absl::StatusCode::kDeadlineExceeded:
      return reason == reason::kOutcomeUnknown ? Answer::kUnknown
                                               : Answer::kRetry;
    case absl::StatusCode::kUnavailable:
      return reason == reason::kUpstreamUnavailable ? Answer::kNotSent
                                                    : Answer::kRetry;
    case absl::StatusCode::kResourceExhausted:
      return reason == reason::kOverloaded ? Answer::kOverloaded
                                           : Answer::kRetry;
    default:
      return Answer::kRetry;
  }
}

const char* AnswerName(Answer answer) {
  switch (answer) {
    case Answer::kAccepted:
      return "accepted";
    case Answer::kFailed:
      return "failed";
    case Answer::kUnknown:
      return "unknown";
    case Answer::kNotSent:
      return "not sent (429)";
    case Answer::kOverloaded:
      return "overloaded";
    case Answer::kRetry:
      return "retry";
  }
  return "?";
}

std::string CodeAndReason(const absl::Status& status) {
  const std::string reason = GetErrorDetails(status).reason;
  std::string code = absl::StatusCodeToString(status.code());
  return reason.empty() ? code : absl::StrCat(code, "/", reason);
}

absl::StatusOr<std::map<std::string, LedgerRow>> ReadLedger(
    const std::string& path) {
  sqlite3* raw = nullptr;
  const int opened = sqlite3_open_v2(
      path.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  Database db(raw, &sqlite3_close);
  if (opened != SQLITE_OK) {
    return absl::UnavailableError(
        absl::StrCat("open ", path, ": ", sqlite3_errstr(opened)));
  }
  constexpr const char* kQuery =
      "SELECT p.payout_id, p.request_id, p.account_number, p.state, "
      "  (SELECT e.who FROM payout_events e WHERE e.payout_id = p.payout_id "
      "     AND e.to_state = 6 ORDER BY e.id LIMIT 1), "
      "  (SELECT e.why FROM payout_events e WHERE e.payout_id = p.payout_id "
      "     AND e.to_state = 6 ORDER BY e.id LIMIT 1) "
      "FROM payouts p";
  sqlite3_stmt* raw_statement = nullptr;
  if (sqlite3_prepare_v2(db.get(), kQuery, -1, &raw_statement, nullptr) !=
      SQLITE_OK) {
    return absl::InternalError(
        absl::StrCat("prepare: ", sqlite3_errmsg(db.get())));
  }
  Statement statement(raw_statement, &sqlite3_finalize);
  std::map<std::string, LedgerRow> rows;
  int step;
  while ((step = sqlite3_step(statement.get())) == SQLITE_ROW) {
    LedgerRow row;
    row.payout_id = Column(statement.get(), 0);
    row.request_id = Column(statement.get(), 1);
    row.account_number = Column(statement.get(), 2);
    row.state = sqlite3_column_int(statement.get(), 3);
    row.unknown_who = Column(statement.get(), 4);
    row.unknown_why = Column(statement.get(), 5);
    std::string key = row.request_id;
    rows.emplace(std::move(key), std::move(row));
  }
  if (step != SQLITE_DONE) {
    return absl::InternalError(
        absl::StrCat("read: ", sqlite3_errmsg(db.get())));
  }
  return rows;
}

std::map<std::string, int> PayoutSends(
    const std::vector<const SandboxProcess*>& sandboxes) {
  std::map<std::string, int> sends;
  for (const SandboxProcess* sandbox : sandboxes) {
    for (const JournalEntry& entry : sandbox->Journal()) {
      if (entry.path == kPayoutPath) ++sends[entry.account_number];
    }
  }
  return sends;
}

absl::Status SendAgain(const SandboxProcess& sandbox,
                       const std::string& account) {
  for (const JournalEntry& entry : sandbox.Journal()) {
    if (entry.path != kPayoutPath || entry.account_number != account) continue;
    httplib::Client client(sandbox.url());
    httplib::Result result =
        client.Post(std::string(kPayoutPath), entry.body, "application/json");
    if (!result) return absl::UnavailableError("the sandbox did not answer");
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("no payout call for ", account));
}

}  // namespace aopay::testing::load
