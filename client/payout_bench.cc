// payout-bench: a load generator for a running payout gateway. Sends
// --payouts CreatePayout calls through the gRPC callback API, either closed
// loop (--concurrency calls in flight) or open loop (--rate calls a second,
// latency measured from each call's intended send time so a slow gateway
// cannot hide its queueing), and reports throughput, latency percentiles and
// the count of each gRPC code.
//
// Exit status: 0 when the run completed (errors are counted, not fatal),
// 1 when the gateway could not be reached, 2 on bad flags.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/payout_client.h"
#include "common/money.h"
#include "rapidjson/prettywriter.h"
#include "rapidjson/stringbuffer.h"

ABSL_FLAG(std::string, target, "",
          "Gateway address host:port. Default: $PAYOUT_TARGET if set, else "
          "127.0.0.1:50051.");
ABSL_FLAG(int64_t, payouts, 1000, "Total CreatePayout calls to make.");
ABSL_FLAG(std::optional<int32_t>, concurrency, std::nullopt,
          "Closed loop: keep this many calls in flight (default 32).");
ABSL_FLAG(std::optional<double>, rate, std::nullopt,
          "Open loop: start this many calls a second, whatever is in flight. "
          "Latency is then measured from each call's intended send time.");
ABSL_FLAG(std::string, mode, "IMPS", "Transfer mode: IMPS or NEFT.");
ABSL_FLAG(int64_t, amount_paise, 100, "Amount of every payout, in paise.");
ABSL_FLAG(std::string, request_prefix, "",
          "Request ids are PREFIX-N. Default: a random run id, so runs never "
          "collide with each other.");
ABSL_FLAG(std::string, account, "",
          "Send every payout to this account. Default: random 12-digit "
          "accounts that avoid the sandbox's scripted endings.");
ABSL_FLAG(std::string, ifsc, "SBIN0000002", "Beneficiary IFSC.");
ABSL_FLAG(std::string, token, "",
          "Bearer token. When neither --token nor --token_file is given, "
          "$PAYOUT_TOKEN if set.");
ABSL_FLAG(std::string, token_file, "", "File holding the bearer token.");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA bundle; turns TLS on.");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate for mTLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, json_out, "", "Also write the report as JSON here.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(60), "Deadline of each call.");
ABSL_FLAG(absl::Duration, connect_timeout, absl::Seconds(10),
          "How long to wait for the gateway to accept a connection.");

namespace aopay {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;  // cannot connect, cannot write the report
constexpr int kExitUsage = 2;
constexpr char kDefaultTarget[] = "127.0.0.1:50051";
constexpr int32_t kDefaultConcurrency = 32;
constexpr size_t kMaxRequestIdLength = 64;
constexpr int kGrpcCodes = 17;

// Account endings that make the sandbox answer with a scripted error or
// delay (contract section 8); random accounts never end in them.
constexpr int kScriptedEndings[] = {403, 409, 412, 422, 429,
                                    500, 502, 504, 601, 602};

struct Options {
  std::string target;
  int64_t payouts = 0;
  int32_t concurrency = 0;     // closed loop when > 0
  std::optional<double> rate;  // open loop when set
  v1::TransferMode mode = v1::TRANSFER_MODE_UNSPECIFIED;
  int64_t amount_paise = 0;
  std::string request_prefix;
  std::string account;  // empty: random
  std::string ifsc;
  absl::Duration timeout;
};

std::string RandomAccount() {
  thread_local absl::BitGen gen;
  int ending;
  do {
    ending = absl::Uniform(gen, 0, 10000);
  } while (std::find(std::begin(kScriptedEndings), std::end(kScriptedEndings),
                     ending) != std::end(kScriptedEndings));
  const int64_t head = absl::Uniform<int64_t>(gen, 10000000, 100000000);
  return absl::StrFormat("%08d%04d", head, ending);
}

std::string RandomRunId() {
  absl::BitGen gen;
  return absl::StrCat(
      "bench-", absl::Hex(absl::Uniform<uint64_t>(gen), absl::kZeroPad16));
}

bool IsRequestIdChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' ||
         c == '-';
}

// Runs the load and keeps one sample per call. Thread-safe in the way it is
// used: Run() from one thread; completions arrive on gRPC threads and each
// writes only its own slot.
class Bench {
 public:
  Bench(const PayoutClient& client, const Options& options)
      : client_(client),
        options_(options),
        latency_ns_(options.payouts, 0),
        codes_(options.payouts, 0) {}

  // Blocks until every call has completed. Returns the wall time.
  absl::Duration Run() {
    start_ = absl::Now();
    if (options_.rate) {
      const absl::Duration interval = absl::Seconds(1) / *options_.rate;
      for (int64_t i = 0; i < options_.payouts; ++i) {
        const absl::Time intended = start_ + interval * i;
        // Pacing, not synchronisation: the schedule is the point of an open
        // loop.
        const absl::Duration wait = intended - absl::Now();
        if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
        Issue(i, intended);
      }
    } else {
      const int64_t first =
          std::min<int64_t>(options_.concurrency, options_.payouts);
      next_.store(first);
      for (int64_t i = 0; i < first; ++i) Issue(i, absl::Now());
    }
    all_done_.WaitForNotification();
    return end_ - start_;
  }

  const std::vector<int64_t>& latency_ns() const { return latency_ns_; }
  const std::vector<uint8_t>& codes() const { return codes_; }

 private:
  void Issue(int64_t index, absl::Time intended) {
    v1::CreatePayoutRequest request;
    request.set_request_id(absl::StrCat(options_.request_prefix, "-", index));
    v1::Beneficiary& b = *request.mutable_beneficiary();
    b.set_account_number(options_.account.empty() ? RandomAccount()
                                                  : options_.account);
    b.set_ifsc(options_.ifsc);
    b.set_name("Bench Beneficiary");
    b.set_email("bench@example.com");
    b.set_mobile("9876543210");
    request.set_amount_paise(options_.amount_paise);
    request.set_mode(options_.mode);
    client_.CreatePayoutAsync(
        request, options_.timeout,
        [this, index, intended](absl::StatusOr<v1::Payout> result) {
          OnDone(index, intended, result.status());
        });
  }

  void OnDone(int64_t index, absl::Time intended, const absl::Status& status) {
    const absl::Time now = absl::Now();
    latency_ns_[index] = absl::ToInt64Nanoseconds(now - intended);
    codes_[index] = static_cast<uint8_t>(status.code());
    if (!options_.rate) {
      const int64_t next = next_.fetch_add(1);
      if (next < options_.payouts) Issue(next, absl::Now());
    }
    if (completed_.fetch_add(1) + 1 == options_.payouts) {
      end_ = now;
      all_done_.Notify();  // last use of `this` on this thread
    }
  }

  const PayoutClient& client_;
  const Options options_;
  absl::Time start_;
  absl::Time end_;  // written by the last completion, before Notify()
  std::vector<int64_t> latency_ns_;
  std::vector<uint8_t> codes_;
  std::atomic<int64_t> next_{0};
  std::atomic<int64_t> completed_{0};
  absl::Notification all_done_;
};

struct Report {
  int64_t payouts = 0;
  double wall_seconds = 0;
  double per_second = 0;
  // p50, p90, p99, p99.9 and max, in milliseconds.
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
  std::map<std::string, int64_t> codes;
};

// Nearest-rank percentile of sorted samples.
double PercentileMs(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  auto rank = static_cast<size_t>(std::ceil(q * sorted.size()));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1] / 1e6;
}

Report Summarise(const Bench& bench, absl::Duration wall) {
  Report report;
  std::vector<int64_t> sorted = bench.latency_ns();
  std::sort(sorted.begin(), sorted.end());
  report.payouts = static_cast<int64_t>(sorted.size());
  report.wall_seconds = absl::ToDoubleSeconds(wall);
  report.per_second =
      report.wall_seconds > 0 ? report.payouts / report.wall_seconds : 0;
  report.p50 = PercentileMs(sorted, 0.50);
  report.p90 = PercentileMs(sorted, 0.90);
  report.p99 = PercentileMs(sorted, 0.99);
  report.p999 = PercentileMs(sorted, 0.999);
  report.max = sorted.empty() ? 0 : sorted.back() / 1e6;
  int64_t counts[kGrpcCodes] = {};
  for (const uint8_t code : bench.codes()) ++counts[code];
  for (int code = 0; code < kGrpcCodes; ++code) {
    if (counts[code] == 0) continue;
    report
        .codes[absl::StatusCodeToString(static_cast<absl::StatusCode>(code))] =
        counts[code];
  }
  return report;
}

std::string LoopText(const Options& options) {
  if (options.rate) return absl::StrFormat("open loop, %g/s", *options.rate);
  return absl::StrCat("closed loop, concurrency ", options.concurrency);
}

std::string HumanReport(const Options& options, const Report& r) {
  std::vector<std::string> codes;
  for (const auto& [name, count] : r.codes) {
    codes.push_back(absl::StrCat(name, " ", count));
  }
  return absl::StrFormat(
      "payout-bench: %d payouts of \u20b9%s %s to %s (%s), run %s\n"
      "wall time     %.3f s\n"
      "throughput    %.1f payouts/s\n"
      "latency (ms)  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n"
      "codes         %s\n",
      r.payouts, FormatRupees(options.amount_paise),
      absl::StripPrefix(v1::TransferMode_Name(options.mode), "TRANSFER_MODE_"),
      options.target, LoopText(options), options.request_prefix, r.wall_seconds,
      r.per_second, r.p50, r.p90, r.p99, r.p999, r.max,
      absl::StrJoin(codes, "  "));
}

std::string JsonReport(const Options& options, const Report& r) {
  rapidjson::StringBuffer buffer;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buffer);
  auto key = [&w](const char* k) { w.Key(k); };
  auto str = [&w](absl::string_view s) {
    w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  };
  w.StartObject();
  key("target");
  str(options.target);
  key("mode");
  str(absl::StripPrefix(v1::TransferMode_Name(options.mode), "TRANSFER_MODE_"));
  key("amountPaise");
  w.Int64(options.amount_paise);
  key("requestPrefix");
  str(options.request_prefix);
  key("loop");
  str(options.rate ? "open" : "closed");
  if (options.rate) {
    key("rate");
    w.Double(*options.rate);
  } else {
    key("concurrency");
    w.Int(options.concurrency);
  }
  key("payouts");
  w.Int64(r.payouts);
  key("wallTimeSeconds");
  w.Double(r.wall_seconds);
  key("payoutsPerSecond");
  w.Double(r.per_second);
  key("latencyMs");
  w.StartObject();
  key("p50");
  w.Double(r.p50);
  key("p90");
  w.Double(r.p90);
  key("p99");
  w.Double(r.p99);
  key("p999");
  w.Double(r.p999);
  key("max");
  w.Double(r.max);
  w.EndObject();
  key("codes");
  w.StartObject();
  for (const auto& [name, count] : r.codes) {
    str(name);
    w.Int64(count);
  }
  w.EndObject();
  w.EndObject();
  return absl::StrCat(absl::string_view(buffer.GetString(), buffer.GetSize()),
                      "\n");
}

absl::StatusOr<Options> ReadOptions() {
  Options options;
  options.target = absl::GetFlag(FLAGS_target);
  if (options.target.empty()) {
    const char* env = std::getenv("PAYOUT_TARGET");
    options.target = env != nullptr && *env != '\0' ? env : kDefaultTarget;
  }
  options.payouts = absl::GetFlag(FLAGS_payouts);
  if (options.payouts <= 0) {
    return absl::InvalidArgumentError("--payouts must be positive");
  }
  const std::optional<int32_t> concurrency = absl::GetFlag(FLAGS_concurrency);
  options.rate = absl::GetFlag(FLAGS_rate);
  if (concurrency && options.rate) {
    return absl::InvalidArgumentError(
        "give --concurrency (closed loop) or --rate (open loop), not both");
  }
  if (options.rate && !(*options.rate > 0 && std::isfinite(*options.rate))) {
    return absl::InvalidArgumentError("--rate must be a positive number");
  }
  options.concurrency = concurrency.value_or(kDefaultConcurrency);
  if (!options.rate && options.concurrency <= 0) {
    return absl::InvalidArgumentError("--concurrency must be positive");
  }
  const std::string mode = absl::AsciiStrToUpper(absl::GetFlag(FLAGS_mode));
  if (mode == "IMPS") {
    options.mode = v1::TRANSFER_MODE_IMPS;
  } else if (mode == "NEFT") {
    options.mode = v1::TRANSFER_MODE_NEFT;
  } else {
    return absl::InvalidArgumentError("--mode must be IMPS or NEFT");
  }
  options.amount_paise = absl::GetFlag(FLAGS_amount_paise);
  if (options.amount_paise <= 0) {
    return absl::InvalidArgumentError("--amount_paise must be positive");
  }
  options.request_prefix = absl::GetFlag(FLAGS_request_prefix);
  if (options.request_prefix.empty()) options.request_prefix = RandomRunId();
  if (!std::all_of(options.request_prefix.begin(), options.request_prefix.end(),
                   IsRequestIdChar)) {
    return absl::InvalidArgumentError(
        "--request_prefix may hold only A-Z a-z 0-9 _ -");
  }
  const size_t longest_id = options.request_prefix.size() + 1 +
                            absl::StrCat(options.payouts - 1).size();
  if (longest_id > kMaxRequestIdLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--request_prefix is too long: request ids would reach ", longest_id,
        " characters (at most ", kMaxRequestIdLength, ")"));
  }
  options.account = absl::GetFlag(FLAGS_account);
  options.ifsc = absl::GetFlag(FLAGS_ifsc);
  options.timeout = absl::GetFlag(FLAGS_timeout);
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--timeout must be positive");
  }
  return options;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "load generator for the payout gateway.\n"
      "Usage: payout-bench [--target HOST:PORT] [--payouts N] "
      "[--concurrency C | --rate R] [--json_out FILE] ...\n"
      "Exit status: 0 when the run completed (errors are counted), 1 when the "
      "gateway could not be reached or the report not written, 2 on bad flag "
      "values (1 for flags absl cannot parse).");
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::cerr << "payout-bench: unexpected argument '" << positional[1]
              << "'\n";
    return kExitUsage;
  }
  absl::StatusOr<Options> options = ReadOptions();
  if (!options.ok()) {
    std::cerr << "payout-bench: " << options.status().message() << "\n";
    return kExitUsage;
  }
  absl::StatusOr<std::string> token = ResolveBearerToken(
      absl::GetFlag(FLAGS_token), absl::GetFlag(FLAGS_token_file));
  if (!token.ok()) {
    std::cerr << "payout-bench: " << token.status().message() << "\n";
    return kExitUsage;
  }
  ChannelOptions channel_options;
  channel_options.target = options->target;
  channel_options.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  channel_options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  channel_options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      MakeChannel(channel_options);
  if (!channel.ok()) {
    std::cerr << "payout-bench: " << channel.status().message() << "\n";
    return kExitUsage;
  }
  const absl::Duration connect_timeout = absl::GetFlag(FLAGS_connect_timeout);
  if (!(*channel)->WaitForConnected(
          absl::ToChronoTime(absl::Now() + connect_timeout))) {
    std::cerr << "payout-bench: cannot connect to " << options->target
              << " within " << absl::FormatDuration(connect_timeout) << "\n";
    return kExitFailure;
  }

  PayoutClient client(*channel, *token);
  Bench bench(client, *options);
  const absl::Duration wall = bench.Run();
  const Report report = Summarise(bench, wall);
  std::cout << HumanReport(*options, report) << std::flush;

  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  if (!json_out.empty()) {
    std::ofstream out(json_out, std::ios::trunc);
    out << JsonReport(*options, report);
    out.close();
    if (!out) {
      std::cerr << "payout-bench: cannot write '" << json_out << "'\n";
      return kExitFailure;
    }
  }
  return kExitOk;
}

}  // namespace
}  // namespace aopay

int main(int argc, char** argv) { return aopay::Main(argc, argv); }
