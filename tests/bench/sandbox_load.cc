// sandbox-load: drives the AOPay sandbox alone over HTTP/1.1 to find its
// ceiling. --connections threads each keep one connection alive and POST
// payouts back to back (closed loop) until --requests are answered or
// --max_time has passed. Prints one line:
//   sandbox-load: N requests, OK 200s, E errors, S s, R/s
// Exit status 0 when every answer was a 200, 1 otherwise, 2 on bad flags.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/flag_help.h"
#include "httplib.h"

ABSL_FLAG(std::string, url, "http://127.0.0.1:8089", "the sandbox's base URL");
ABSL_FLAG(int, connections, 16, "connections (and threads) in use at once");
ABSL_FLAG(int64_t, requests, 20000, "payouts to send in all");
ABSL_FLAG(absl::Duration, max_time, absl::Seconds(60),
          "stop sending after this long");
ABSL_FLAG(std::string, registration_id, "AOP-SANDBOX", "registrationID sent");

namespace {

std::string PayoutBody(const std::string& registration, int64_t n) {
  // The last four digits stay in 1000..9999, clear of the scripted endings
  // (0403..0602).
  return absl::StrFormat(
      R"({"accountNumber":"5000%08d","amount":"1.00","transactionType":"IMPS",)"
      R"("beneficiaryIFSC":"SBIN0000002","beneficiaryName":"Bench Beneficiary",)"
      R"("emailID":"bench@example.com","mobileNo":"9876543210",)"
      R"("registrationID":"%s"})",
      1000 + n % 9000 + (n / 9000) * 10000, registration);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "drives the AOPay sandbox alone over HTTP to find its ceiling.");
  absl::FlagsUsageConfig usage;
  aopay::HelpListsFlagsOf(usage, "sandbox_load.cc");
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  const std::string url = absl::GetFlag(FLAGS_url);
  const int connections = absl::GetFlag(FLAGS_connections);
  const int64_t requests = absl::GetFlag(FLAGS_requests);
  const std::string registration = absl::GetFlag(FLAGS_registration_id);
  if (connections < 1 || requests < 1) {
    std::cerr << "sandbox-load: --connections and --requests must be positive"
              << std::endl;
    return 2;
  }
  const absl::Time start = absl::Now();
  const absl::Time stop_at = start + absl::GetFlag(FLAGS_max_time);
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> ok{0};
  std::atomic<int64_t> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < connections; ++t) {
    threads.emplace_back([&] {
      httplib::Client client(url);
      client.set_keep_alive(true);
      client.set_tcp_nodelay(true);
      client.set_read_timeout(30, 0);
      for (int64_t n = next.fetch_add(1); n < requests && absl::Now() < stop_at;
           n = next.fetch_add(1)) {
        httplib::Result result =
            client.Post("/api/V6/Payout/AOPPayout", PayoutBody(registration, n),
                        "application/json");
        if (result && result->status == 200) {
          ok.fetch_add(1);
        } else {
          errors.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const int64_t sent = ok.load() + errors.load();
  std::cout << absl::StrFormat(
                   "sandbox-load: %d requests, %d OK, %d errors, %.3f s, "
                   "%.0f/s",
                   sent, ok.load(), errors.load(), seconds,
                   seconds > 0 ? sent / seconds : 0)
            << std::endl;
  return errors.load() == 0 ? 0 : 1;
}
