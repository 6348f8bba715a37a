// payout-bench: a load generator for a running payout gateway. Sends
// --payouts CreatePayout calls through the gRPC callback API, either closed
// loop (--concurrency calls in flight) or open loop (--rate calls a second,
// latency measured from each call's intended send time so a slow gateway
// cannot hide its queueing), or all of them over one BatchCreatePayouts
// stream (--mode=batch). A share of the calls can re-send an earlier request
// id with identical parameters (--replay_fraction); --echo drives the bare
// echo server of tests/bench with the same load. Reports throughput, latency
// percentiles and the count of each gRPC code, and prints progress to stderr
// every second.
//
// Exit status: 0 when the run completed (errors are counted, not fatal),
// 1 when the server could not be reached, 2 on bad flags.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/hash/hash.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/bench/load.h"
#include "client/payout_client.h"
#include "common/flag_help.h"
#include "common/money.h"
#include "common/mutex_checks.h"
#include "rapidjson/prettywriter.h"
#include "rapidjson/stringbuffer.h"

ABSL_FLAG(std::string, target, "",
          "Server address host:port. Default: $PAYOUT_TARGET if set, else "
          "127.0.0.1:50051.");
ABSL_FLAG(int64_t, payouts, 1000, "Total payouts to send.");
ABSL_FLAG(std::string, mode, "unary",
          "unary: one CreatePayout call per payout; batch: every payout over "
          "one BatchCreatePayouts stream (payouts/s, latency per answer).");
ABSL_FLAG(std::optional<int32_t>, concurrency, std::nullopt,
          "Closed loop (unary): keep this many calls in flight (default 32).");
ABSL_FLAG(std::optional<double>, rate, std::nullopt,
          "Open loop (unary): start this many calls a second, whatever is in "
          "flight. Latency is then measured from each call's intended send "
          "time (no coordinated omission).");
ABSL_FLAG(double, replay_fraction, 0,
          "Share of calls (0..1) that re-send the request id of an earlier, "
          "already answered call with identical parameters (an idempotent "
          "replay).");
ABSL_FLAG(bool, echo, false,
          "Call the bare echo server's aopay.echo.v1.EchoService/Echo "
          "(tests/bench/echo-server) instead of CreatePayout (unary only).");
ABSL_FLAG(bool, progress, true,
          "Print sent, done, rate and errors to stderr every second.");
ABSL_FLAG(std::string, transfer_mode, "IMPS", "Transfer mode: IMPS or NEFT.");
ABSL_FLAG(int64_t, amount_paise, 100, "Amount of every payout, in paise.");
ABSL_FLAG(std::string, request_prefix, "",
          "Request ids are PREFIX-N. Default: a random run id, so runs never "
          "collide with each other.");
ABSL_FLAG(std::string, account, "",
          "Send every payout to this account. Default: 12-digit accounts "
          "derived from the request id that avoid the sandbox's scripted "
          "endings.");
ABSL_FLAG(std::string, ifsc, "SBIN0000002", "Beneficiary IFSC.");
ABSL_FLAG(std::string, token, "",
          "Bearer token. When neither --token nor --token_file is given, "
          "$PAYOUT_TOKEN if set.");
ABSL_FLAG(std::string, token_file, "", "File holding the bearer token.");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA bundle; turns TLS on.");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate for mTLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, json_out, "", "Also write the report as JSON here.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(60),
          "Deadline of each call (of the whole stream with --mode=batch).");
ABSL_FLAG(absl::Duration, connect_timeout, absl::Seconds(10),
          "How long to wait for the server to accept a connection.");

namespace aopay {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;  // cannot connect, cannot write the report
constexpr int kExitUsage = 2;
constexpr char kDefaultTarget[] = "127.0.0.1:50051";
constexpr int32_t kDefaultConcurrency = 32;
constexpr size_t kMaxRequestIdLength = 64;
constexpr int kGrpcCodes = 17;

struct Options {
  std::string target;
  bool batch = false;
  bool echo = false;
  bench::RequestShape shape;
  bench::LoadOptions load;
};

std::string RandomRunId() {
  absl::BitGen gen;
  return absl::StrCat(
      "bench-", absl::Hex(absl::Uniform<uint64_t>(gen), absl::kZeroPad16));
}

bool IsRequestIdChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' ||
         c == '-';
}

struct Report {
  int64_t payouts = 0;
  int64_t replays = 0;
  double wall_seconds = 0;
  double per_second = 0;
  // Closed loop: the rate while every caller had a call in flight
  // (bench::SteadyWindow); 0 when the run was too short to have one.
  int64_t steady_payouts = 0;
  double steady_per_second = 0;
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

Report Summarise(const bench::Samples& samples) {
  Report report;
  std::vector<int64_t> sorted = samples.latency_ns;
  std::sort(sorted.begin(), sorted.end());
  report.payouts = static_cast<int64_t>(sorted.size());
  report.replays = std::count(samples.replay.begin(), samples.replay.end(), 1);
  report.wall_seconds = absl::ToDoubleSeconds(samples.wall);
  report.per_second =
      report.wall_seconds > 0 ? report.payouts / report.wall_seconds : 0;
  if (samples.steady && samples.steady->length > absl::ZeroDuration()) {
    report.steady_payouts = samples.steady->answers;
    report.steady_per_second =
        samples.steady->answers / absl::ToDoubleSeconds(samples.steady->length);
  }
  report.p50 = PercentileMs(sorted, 0.50);
  report.p90 = PercentileMs(sorted, 0.90);
  report.p99 = PercentileMs(sorted, 0.99);
  report.p999 = PercentileMs(sorted, 0.999);
  report.max = sorted.empty() ? 0 : sorted.back() / 1e6;
  int64_t counts[kGrpcCodes] = {};
  for (const absl::StatusCode code : samples.codes) {
    const int index = static_cast<int>(code);
    ++counts[index >= 0 && index < kGrpcCodes ? index : 2];  // 2: UNKNOWN
  }
  for (int code = 0; code < kGrpcCodes; ++code) {
    if (counts[code] == 0) continue;
    report
        .codes[absl::StatusCodeToString(static_cast<absl::StatusCode>(code))] =
        counts[code];
  }
  return report;
}

std::string LoopText(const Options& options) {
  if (options.batch) return "one BatchCreatePayouts stream";
  std::string text =
      options.load.rate
          ? absl::StrFormat("open loop, %g/s", *options.load.rate)
          : absl::StrCat("closed loop, concurrency ", options.load.concurrency);
  if (options.echo) absl::StrAppend(&text, ", echo");
  return text;
}

std::string TransferModeName(const Options& options) {
  return std::string(absl::StripPrefix(
      v1::TransferMode_Name(options.shape.mode), "TRANSFER_MODE_"));
}

std::string HumanReport(const Options& options, const Report& r) {
  std::vector<std::string> codes;
  for (const auto& [name, count] : r.codes) {
    codes.push_back(absl::StrCat(name, " ", count));
  }
  const std::string steady =
      r.steady_payouts > 0
          ? absl::StrFormat(
                "steady        %.1f payouts/s (%d answers with %d "
                "in flight)\n",
                r.steady_per_second, r.steady_payouts, options.load.concurrency)
          : "";
  return absl::StrFormat(
      "payout-bench: %d payouts of \u20b9%s %s to %s (%s), run %s\n"
      "replays       %d\n"
      "wall time     %.3f s\n"
      "throughput    %.1f payouts/s\n"
      "%s"
      "latency (ms)  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n"
      "codes         %s\n",
      r.payouts, FormatRupees(options.shape.amount_paise),
      TransferModeName(options), options.target, LoopText(options),
      options.shape.request_prefix, r.replays, r.wall_seconds, r.per_second,
      steady, r.p50, r.p90, r.p99, r.p999, r.max, absl::StrJoin(codes, "  "));
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
  key("method");
  str(options.batch  ? "BatchCreatePayouts"
      : options.echo ? "Echo"
                     : "CreatePayout");
  key("mode");
  str(TransferModeName(options));
  key("amountPaise");
  w.Int64(options.shape.amount_paise);
  key("requestPrefix");
  str(options.shape.request_prefix);
  key("loop");
  str(options.batch ? "batch" : options.load.rate ? "open" : "closed");
  if (options.load.rate) {
    key("rate");
    w.Double(*options.load.rate);
  } else if (!options.batch) {
    key("concurrency");
    w.Int(options.load.concurrency);
  }
  key("replayFraction");
  w.Double(options.load.replay_fraction);
  key("replays");
  w.Int64(r.replays);
  key("payouts");
  w.Int64(r.payouts);
  key("wallTimeSeconds");
  w.Double(r.wall_seconds);
  key("payoutsPerSecond");
  w.Double(r.per_second);
  if (r.steady_payouts > 0) {
    key("steadyPayouts");
    w.Int64(r.steady_payouts);
    key("steadyPayoutsPerSecond");
    w.Double(r.steady_per_second);
  }
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
  bench::LoadOptions& load = options.load;
  load.calls = absl::GetFlag(FLAGS_payouts);
  if (load.calls <= 0) {
    return absl::InvalidArgumentError("--payouts must be positive");
  }
  const std::string mode = absl::AsciiStrToLower(absl::GetFlag(FLAGS_mode));
  if (mode == "batch") {
    options.batch = true;
  } else if (mode != "unary") {
    return absl::InvalidArgumentError(
        "--mode must be unary or batch (the transfer mode is "
        "--transfer_mode)");
  }
  options.echo = absl::GetFlag(FLAGS_echo);
  const std::optional<int32_t> concurrency = absl::GetFlag(FLAGS_concurrency);
  load.rate = absl::GetFlag(FLAGS_rate);
  if (options.batch && (concurrency || load.rate || options.echo)) {
    return absl::InvalidArgumentError(
        "--mode=batch sends one stream: --concurrency, --rate and --echo do "
        "not apply");
  }
  if (concurrency && load.rate) {
    return absl::InvalidArgumentError(
        "give --concurrency (closed loop) or --rate (open loop), not both");
  }
  if (load.rate && !(*load.rate > 0 && std::isfinite(*load.rate))) {
    return absl::InvalidArgumentError("--rate must be a positive number");
  }
  load.concurrency = concurrency.value_or(kDefaultConcurrency);
  if (!load.rate && load.concurrency <= 0) {
    return absl::InvalidArgumentError("--concurrency must be positive");
  }
  load.replay_fraction = absl::GetFlag(FLAGS_replay_fraction);
  if (!(load.replay_fraction >= 0 && load.replay_fraction <= 1)) {
    return absl::InvalidArgumentError(
        "--replay_fraction must be between 0 and 1");
  }
  const std::string transfer_mode =
      absl::AsciiStrToUpper(absl::GetFlag(FLAGS_transfer_mode));
  if (transfer_mode == "IMPS") {
    options.shape.mode = v1::TRANSFER_MODE_IMPS;
  } else if (transfer_mode == "NEFT") {
    options.shape.mode = v1::TRANSFER_MODE_NEFT;
  } else {
    return absl::InvalidArgumentError("--transfer_mode must be IMPS or NEFT");
  }
  options.shape.amount_paise = absl::GetFlag(FLAGS_amount_paise);
  if (options.shape.amount_paise <= 0) {
    return absl::InvalidArgumentError("--amount_paise must be positive");
  }
  std::string& prefix = options.shape.request_prefix;
  prefix = absl::GetFlag(FLAGS_request_prefix);
  if (prefix.empty()) prefix = RandomRunId();
  if (!std::all_of(prefix.begin(), prefix.end(), IsRequestIdChar)) {
    return absl::InvalidArgumentError(
        "--request_prefix may hold only A-Z a-z 0-9 _ -");
  }
  const size_t longest_id =
      prefix.size() + 1 + absl::StrCat(load.calls - 1).size();
  if (longest_id > kMaxRequestIdLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--request_prefix is too long: request ids would reach ", longest_id,
        " characters (at most ", kMaxRequestIdLength, ")"));
  }
  // The same prefix gives the same accounts: a rerun with it replays every
  // request with identical parameters.
  options.shape.seed = absl::HashOf(prefix);
  options.shape.account = absl::GetFlag(FLAGS_account);
  options.shape.ifsc = absl::GetFlag(FLAGS_ifsc);
  load.timeout = absl::GetFlag(FLAGS_timeout);
  if (load.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--timeout must be positive");
  }
  if (absl::GetFlag(FLAGS_progress)) {
    load.on_progress = [](const bench::Progress& progress) {
      std::cerr << bench::FormatProgress(progress) << std::endl;
    };
  }
  return options;
}

int Main(int argc, char** argv) {
  SkipLockOrderChecksInReleaseBuilds();
  absl::SetProgramUsageMessage(
      "load generator for the payout gateway.\n"
      "Usage: payout-bench [--target HOST:PORT] [--payouts N] "
      "[--concurrency C | --rate R | --mode=batch] [--replay_fraction F] "
      "[--echo] [--json_out FILE] ...\n"
      "Exit status: 0 when the run completed (errors are counted), 1 when the "
      "server could not be reached or the report not written, 2 on bad flag "
      "values (1 for flags absl cannot parse).");
  absl::FlagsUsageConfig usage;
  HelpListsFlagsOf(usage, "payout_bench.cc");
  absl::SetFlagsUsageConfig(usage);
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

  bench::Samples samples;
  if (options->batch) {
    samples = bench::RunBatch(*channel, *token, options->shape, options->load);
  } else {
    std::unique_ptr<bench::UnaryTarget> target =
        options->echo
            ? bench::MakeMethodTarget(*channel, *token, bench::kEchoMethod)
            : bench::MakeCreatePayoutTarget(*channel, *token);
    samples = bench::RunUnary(*target, options->shape, options->load);
  }
  const Report report = Summarise(samples);
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
