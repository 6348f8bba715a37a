// The overload test: a gateway with a small capacity (--max_inflight=8 AOPay
// calls against a sandbox answering in 250 ms: about 32 payouts/s, plus
// --max_queue=8 waiting) is offered three times that, open loop, for a
// while. It must shed the excess at once with RESOURCE_EXHAUSTED/OVERLOADED,
// keep its memory bounded, send nothing twice, and serve the next payouts as
// soon as the load drops.
//
// RELIABILITY_MODE=ci: 15 s of overload; long: 60 s. Knobs:
// RELIABILITY_OVERLOAD_SECONDS, RELIABILITY_SEED.
//
// Thresholds, all generous on purpose (a shared 2-core machine):
//   - at least 25% of the offered payouts are shed (about 2/3 should be);
//   - every answer is OK or RESOURCE_EXHAUSTED/OVERLOADED;
//   - p99 latency of the shed answers at most 500 ms (shedding needs no
//     AOPay call; it is a few ms when the machine is idle);
//   - payouts served per second between 50% and 150% of the capacity;
//   - RSS during and after at most 64 MiB above RSS before;
//   - the first 10 payouts after the load drops all succeed.

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"
#include "tests/reliability/load/load_support.h"

namespace aopay::testing::load {
namespace {

constexpr int kMaxInflight = 8;
constexpr int kMaxQueue = 8;
constexpr int kLatencyMs = 250;
constexpr double kCapacityPerSecond = kMaxInflight * 1000.0 / kLatencyMs;
constexpr double kOfferedPerSecond = 3 * kCapacityPerSecond;
constexpr absl::Duration kCallTimeout = absl::Seconds(10);
constexpr int kRecoveryPayouts = 10;
constexpr int64_t kRssHeadroomKib = 64 * 1024;
constexpr double kMaxShedP99Ms = 500;

struct Outcome {
  std::string code;
  double latency_ms;
};

// Answers of the asynchronous calls. Thread-safe.
class Answers {
 public:
  void Started() {
    absl::MutexLock lock(&mu_);
    ++outstanding_;
  }
  void Add(Outcome outcome) {
    absl::MutexLock lock(&mu_);
    outcomes_.push_back(std::move(outcome));
    --outstanding_;
  }
  bool AwaitAll(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto done = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return outstanding_ == 0;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  }
  std::vector<Outcome> outcomes() {
    absl::MutexLock lock(&mu_);
    return outcomes_;
  }

 private:
  absl::Mutex mu_;
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Outcome> outcomes_ ABSL_GUARDED_BY(mu_);
};

int64_t Rss(pid_t pid) {
  absl::StatusOr<ProcessUsage> usage = ReadUsage(pid);
  return usage.ok() ? usage->rss_kib : -1;
}

TEST(OverloadTest, ShedsTheExcessQuicklyAndRecoversAtOnce) {
  const Mode mode = CurrentMode();
  const absl::Duration duration = absl::Seconds(
      EnvInt("RELIABILITY_OVERLOAD_SECONDS", mode == Mode::kLong ? 60 : 15));
  absl::BitGen random(std::seed_seq{RunSeed()});
  SandboxProcess sandbox(
      {absl::StrCat("--latency=", kLatencyMs, "ms"), "--threads=64"});
  ASSERT_FALSE(sandbox.url().empty());
  GatewayProcess gateway(sandbox.url(), MakeTempDir() + "/ledger.db",
                         {absl::StrCat("--max_inflight=", kMaxInflight),
                          absl::StrCat("--max_queue=", kMaxQueue)});
  ASSERT_FALSE(gateway.address().empty());
  const pid_t pid = gateway.process().pid();
  PayoutClient& client = gateway.client();

  // Warm up below capacity: connections, caches, the ledger file.
  for (int i = 0; i < kMaxInflight; ++i) {
    ASSERT_TRUE(
        client.CreatePayout(LoadRequest("7301", random), kCallTimeout).ok());
  }
  const int64_t rss_before = Rss(pid);

  Answers answers;
  const absl::Time start = absl::Now();
  std::thread offer([&] {
    absl::BitGen offer_random(std::seed_seq{RunSeed(), uint64_t{1}});
    const absl::Duration interval = absl::Seconds(1 / kOfferedPerSecond);
    for (absl::Time next = start; next < start + duration; next += interval) {
      absl::SleepFor(next - absl::Now());  // pacing the open-loop load
      const absl::Time sent = absl::Now();
      answers.Started();
      client.CreatePayoutAsync(
          LoadRequest("7301", offer_random), kCallTimeout,
          [&answers, sent](absl::StatusOr<v1::Payout> result) {
            answers.Add(
                Outcome{CodeAndReason(result.status()),
                        absl::ToDoubleMilliseconds(absl::Now() - sent)});
          });
    }
  });
  int64_t rss_during = rss_before;
  for (absl::Time at = start + absl::Seconds(1); at <= start + duration;
       at += absl::Seconds(1)) {
    absl::SleepFor(at - absl::Now());  // the sampling schedule
    rss_during = std::max(rss_during, Rss(pid));
  }
  offer.join();
  ASSERT_TRUE(answers.AwaitAll(kCallTimeout + absl::Seconds(5)));
  const absl::Duration loaded = absl::Now() - start;

  // The load has dropped: the next payouts must succeed at once.
  int recovered = 0;
  double first_ms = -1;
  for (int i = 0; i < kRecoveryPayouts; ++i) {
    const absl::Time sent = absl::Now();
    absl::StatusOr<v1::Payout> result =
        client.CreatePayout(LoadRequest("7301", random), kCallTimeout);
    if (i == 0) first_ms = absl::ToDoubleMilliseconds(absl::Now() - sent);
    if (result.ok()) {
      ++recovered;
    } else {
      std::cout << "  after the load: " << CodeAndReason(result.status())
                << std::endl;
    }
  }
  const int64_t rss_after = Rss(pid);

  std::map<std::string, std::vector<double>> by_code;
  size_t offered = 0;
  for (const Outcome& outcome : answers.outcomes()) {
    by_code[outcome.code].push_back(outcome.latency_ms);
    ++offered;
  }
  const std::string kShed = "RESOURCE_EXHAUSTED/OVERLOADED";
  const size_t ok = by_code["OK"].size();
  const size_t shed = by_code[kShed].size();
  const double served_per_second = ok / absl::ToDoubleSeconds(duration);
  std::cout << absl::StrFormat(
      "overload (%s): capacity ~ %d in flight / %d ms = %.0f payouts/s "
      "(+%d queued); offered %.0f/s open loop for %d s (%zu payouts; all "
      "answered %.1f s after the start)\n",
      ModeName(mode), kMaxInflight, kLatencyMs, kCapacityPerSecond, kMaxQueue,
      kOfferedPerSecond, absl::ToInt64Seconds(duration), offered,
      absl::ToDoubleSeconds(loaded));
  std::cout << absl::StrFormat("  %-32s %7s %9s %9s %9s\n", "answer", "count",
                               "p50 ms", "p99 ms", "max ms");
  size_t other = 0;
  for (const auto& [code, latencies] : by_code) {
    if (latencies.empty()) continue;
    if (code != "OK" && code != kShed) other += latencies.size();
    std::cout << absl::StrFormat("  %-32s %7zu %9.1f %9.1f %9.1f\n", code,
                                 latencies.size(), Percentile(latencies, 50),
                                 Percentile(latencies, 99),
                                 Percentile(latencies, 100));
  }
  const double shed_p99 = Percentile(by_code[kShed], 99);
  std::cout << absl::StrFormat(
      "  served %.1f payouts/s (capacity %.0f); shed %.0f%% of the offered\n"
      "  RSS KiB: before %d, during (max) %d, after %d\n"
      "  after the load: %d/%d payouts OK, the first in %.1f ms\n",
      served_per_second, kCapacityPerSecond,
      offered == 0 ? 0.0 : 100.0 * shed / offered, rss_before, rss_during,
      rss_after, recovered, kRecoveryPayouts, first_ms);

  int double_sends = 0;
  for (const auto& [account, count] : PayoutSends({&sandbox})) {
    double_sends += count > 1;
  }
  std::cout << "double sends: " << double_sends << std::endl;

  EXPECT_GE(shed, offered / 4) << "the excess was not shed";
  EXPECT_EQ(other, 0u) << "answers other than OK and OVERLOADED";
  EXPECT_LE(shed_p99, kMaxShedP99Ms) << "shedding is slow";
  EXPECT_GE(served_per_second, 0.5 * kCapacityPerSecond);
  EXPECT_LE(served_per_second, 1.5 * kCapacityPerSecond);
  EXPECT_LE(rss_during, rss_before + kRssHeadroomKib);
  EXPECT_LE(rss_after, rss_before + kRssHeadroomKib);
  EXPECT_EQ(recovered, kRecoveryPayouts) << "did not recover at once";
  EXPECT_EQ(double_sends, 0);
  const int stop = gateway.process().Signal(SIGTERM);
  EXPECT_TRUE(WIFEXITED(stop) && WEXITSTATUS(stop) == 0) << stop;
}

}  // namespace
}  // namespace aopay::testing::load
