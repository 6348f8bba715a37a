// The soak: one gateway under steady mixed load — new payouts, replays of
// old request ids, scripted faults, BatchCreatePayouts streams, reads, and
// the reconciler polling AOPay's status endpoint — while its resident memory
// and open file descriptors are sampled every 10 s. Fails when either keeps
// growing over the second half of the run (the first half is warm-up: pools,
// caches and allocator arenas fill up), when a replay's answer differs from
// the first one, or when a request id reaches AOPay twice.
//
// RELIABILITY_MODE=ci: 2 minutes; long: 30 minutes. Knobs:
// RELIABILITY_SOAK_SECONDS, RELIABILITY_SOAK_RATE (operations per second),
// RELIABILITY_SEED.
//
// Tolerances (least-squares slope over the second half):
//   RSS: 2048 KiB/min in ci mode (one minute of samples is noisy; a leak of
//        300 bytes per operation at the default rate crosses it), 256 KiB/min
//        in long mode (15 minutes of samples).
//   fds: 30 per minute in ci mode (connections to AOPay and callers come and
//        go: the count swings by +-10 between samples, and 7 samples give a
//        slope of +-6/min from that alone; a leak of one descriptor per
//        payout would be ~3000/min), 1 per minute in long mode.

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <iostream>
#include <iterator>
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

constexpr absl::Duration kCallTimeout = absl::Seconds(15);
constexpr absl::Duration kSampleEvery = absl::Seconds(10);
constexpr int kWorkers = 6;
constexpr int kBatchSize = 10;
constexpr size_t kRemembered = 20000;
constexpr absl::string_view kFaultSuffixes[] = {"0500", "0502", "0429", "0422"};

struct Config {
  absl::Duration duration;
  double rate;  // operations per second, all workers together
  double rss_tolerance_kib_per_min;
  double fd_tolerance_per_min;
};

Config ForMode(Mode mode) {
  Config config;
  const bool long_mode = mode == Mode::kLong;
  config.duration = absl::Seconds(
      EnvInt("RELIABILITY_SOAK_SECONDS", long_mode ? 30 * 60 : 120));
  config.rate = static_cast<double>(EnvInt("RELIABILITY_SOAK_RATE", 100));
  config.rss_tolerance_kib_per_min = long_mode ? 256 : 2048;
  config.fd_tolerance_per_min = long_mode ? 1 : 30;
  return config;
}

struct Done {
  v1::CreatePayoutRequest request;
  Answer answer;
};

// What the workers share. Thread-safe.
class Book {
 public:
  void Remember(v1::CreatePayoutRequest request, Answer answer) {
    absl::MutexLock lock(&mu_);
    if (done_.size() < kRemembered) {
      done_.push_back(Done{std::move(request), answer});
    } else {
      done_[next_++ % kRemembered] = Done{std::move(request), answer};
    }
  }
  bool Pick(absl::BitGen& random, Done* out) {
    absl::MutexLock lock(&mu_);
    if (done_.empty()) return false;
    *out = done_[absl::Uniform<size_t>(random, 0, done_.size())];
    return true;
  }
  void Count(const std::string& what) {
    absl::MutexLock lock(&mu_);
    ++counts_[what];
  }
  std::map<std::string, int64_t> counts() {
    absl::MutexLock lock(&mu_);
    return counts_;
  }
  int64_t total() {
    absl::MutexLock lock(&mu_);
    int64_t sum = 0;
    for (const auto& [what, count] : counts_) {
      if (what.rfind("op ", 0) == 0) sum += count;
    }
    return sum;
  }

 private:
  absl::Mutex mu_;
  std::vector<Done> done_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int64_t> counts_ ABSL_GUARDED_BY(mu_);
};

bool IsFinal(Answer answer) {
  return answer != Answer::kRetry && answer != Answer::kOverloaded;
}

void Create(PayoutClient& client, Book& book, v1::CreatePayoutRequest request) {
  absl::StatusOr<v1::Payout> result =
      client.CreatePayout(request, kCallTimeout);
  const Answer answer = Classify(result.status());
  book.Count(absl::StrCat("answer ", AnswerName(answer)));
  if (!IsFinal(answer)) {
    book.Count(absl::StrCat("UNEXPECTED ", CodeAndReason(result.status())));
    return;
  }
  book.Remember(std::move(request), answer);
}

void Work(int index, PayoutClient& client, Book& book, absl::Time end,
          absl::Duration interval) {
  absl::BitGen random(std::seed_seq{RunSeed(), static_cast<uint64_t>(index)});
  absl::Time next = absl::Now() + interval * index / kWorkers;
  while (true) {
    next = std::max(next + interval, absl::Now());
    if (next >= end) return;
    absl::SleepFor(next - absl::Now());  // pacing the offered load
    const double roll = absl::Uniform(random, 0.0, 1.0);
    if (roll < 0.50) {
      book.Count("op create");
      Create(client, book, LoadRequest("7301", random));
    } else if (roll < 0.62) {
      book.Count("op scripted fault");
      const absl::string_view suffix = kFaultSuffixes[absl::Uniform<size_t>(
          random, 0, std::size(kFaultSuffixes))];
      Create(client, book, LoadRequest(suffix, random));
    } else if (roll < 0.77) {
      book.Count("op replay");
      Done old;
      if (!book.Pick(random, &old)) continue;
      absl::StatusOr<v1::Payout> again =
          client.CreatePayout(old.request, kCallTimeout);
      if (Classify(again.status()) != old.answer) {
        book.Count(absl::StrCat("REPLAY MISMATCH ", AnswerName(old.answer),
                                " then ", CodeAndReason(again.status())));
      }
    } else if (roll < 0.85) {
      book.Count("op batch");
      std::vector<v1::CreatePayoutRequest> batch;
      for (int i = 0; i < kBatchSize; ++i) {
        batch.push_back(
            LoadRequest(i == 0 ? kFaultSuffixes[absl::Uniform<size_t>(
                                     random, 0, std::size(kFaultSuffixes))]
                               : "7301",
                        random));
      }
      absl::StatusOr<std::vector<v1::BatchCreatePayoutsResponse>> answers =
          client.BatchCreatePayouts(batch, kCallTimeout);
      if (!answers.ok() || answers->size() != batch.size()) {
        book.Count(absl::StrCat("UNEXPECTED batch ",
                                answers.ok()
                                    ? absl::StrCat(answers->size(), " answers")
                                    : CodeAndReason(answers.status())));
        continue;
      }
      std::map<std::string, Answer> by_id;
      for (const v1::BatchCreatePayoutsResponse& answer : *answers) {
        by_id[answer.request_id()] =
            Classify(answer.has_error() ? FromRpcStatusProto(answer.error())
                                        : absl::OkStatus());
      }
      for (v1::CreatePayoutRequest& request : batch) {
        auto it = by_id.find(request.request_id());
        if (it == by_id.end() || !IsFinal(it->second)) {
          book.Count("UNEXPECTED batch answer");
          continue;
        }
        book.Remember(std::move(request), it->second);
      }
    } else {
      book.Count("op read");
      Done old;
      if (absl::Bernoulli(random, 0.5) && book.Pick(random, &old)) {
        v1::GetPayoutRequest get;
        get.set_request_id(old.request.request_id());
        absl::StatusOr<v1::Payout> payout = client.GetPayout(get, kCallTimeout);
        const bool recorded = old.answer != Answer::kNotSent;
        if (payout.ok() != recorded) {
          book.Count(
              absl::StrCat("UNEXPECTED get ", CodeAndReason(payout.status())));
        }
      } else {
        v1::ListPayoutsRequest list;
        list.set_page_size(100);
        absl::StatusOr<v1::ListPayoutsResponse> page =
            client.ListPayouts(list, kCallTimeout);
        if (!page.ok()) {
          book.Count(
              absl::StrCat("UNEXPECTED list ", CodeAndReason(page.status())));
        }
      }
    }
  }
}

TEST(SoakTest, MemoryAndFileDescriptorsStayFlatUnderMixedLoad) {
  const Mode mode = CurrentMode();
  const Config config = ForMode(mode);
  RunSeed();
  SandboxProcess sandbox({"--latency=20ms", "--settle=1s"});
  ASSERT_FALSE(sandbox.url().empty());
  const std::string ledger = MakeTempDir() + "/ledger.db";
  GatewayProcess gateway(sandbox.url(), ledger,
                         {"--max_inflight=32", "--reconcile_interval=2s"});
  ASSERT_FALSE(gateway.address().empty());
  const pid_t pid = gateway.process().pid();
  std::cout << absl::StrFormat(
                   "soak (%s): %d s of mixed load at %.0f operations/s, "
                   "gateway pid %d, ledger %s",
                   ModeName(mode), absl::ToInt64Seconds(config.duration),
                   config.rate, pid, ledger)
            << std::endl;

  Book book;
  const absl::Time start = absl::Now();
  const absl::Time end = start + config.duration;
  const absl::Duration interval = absl::Seconds(kWorkers / config.rate);
  std::vector<std::thread> workers;
  for (int i = 0; i < kWorkers; ++i) {
    workers.emplace_back(Work, i, std::ref(gateway.client()), std::ref(book),
                         end, interval);
  }

  struct Sample {
    double minutes;
    ProcessUsage usage;
    int64_t operations;
  };
  std::vector<Sample> samples;
  std::cout << "   t(s)  rss(KiB)  fds  operations" << std::endl;
  for (absl::Time at = start;; at += kSampleEvery) {
    if (at > end) at = end;
    absl::SleepFor(at - absl::Now());  // the sampling schedule
    absl::StatusOr<ProcessUsage> usage = ReadUsage(pid);
    ASSERT_TRUE(usage.ok()) << usage.status() << "\n" << gateway.Stderr();
    samples.push_back(
        Sample{absl::ToDoubleMinutes(at - start), *usage, book.total()});
    std::cout << absl::StrFormat("  %5.0f  %8d  %3d  %10d",
                                 samples.back().minutes * 60, usage->rss_kib,
                                 usage->fds, samples.back().operations)
              << std::endl;
    if (at >= end) break;
  }
  for (std::thread& worker : workers) worker.join();

  const double half = absl::ToDoubleMinutes(config.duration) / 2;
  std::vector<std::pair<double, double>> rss, fds;
  for (const Sample& sample : samples) {
    if (sample.minutes + 1e-9 < half) continue;
    rss.emplace_back(sample.minutes, static_cast<double>(sample.usage.rss_kib));
    fds.emplace_back(sample.minutes, sample.usage.fds);
  }
  const double rss_slope = Slope(rss);
  const double fd_slope = Slope(fds);
  std::cout << absl::StrFormat(
                   "slopes over the second half (%zu samples): rss %+.0f "
                   "KiB/min (tolerance %.0f), fds %+.2f /min (tolerance %.0f)",
                   rss.size(), rss_slope, config.rss_tolerance_kib_per_min,
                   fd_slope, config.fd_tolerance_per_min)
            << std::endl;

  int64_t unexpected = 0;
  for (const auto& [what, count] : book.counts()) {
    std::cout << "  " << what << ": " << count << std::endl;
    if (what.rfind("UNEXPECTED", 0) == 0 || what.rfind("REPLAY", 0) == 0) {
      unexpected += count;
    }
  }
  int double_sends = 0, resent_429 = 0;
  for (const auto& [account, count] : PayoutSends({&sandbox})) {
    if (count <= 1) continue;
    if (SuffixOf(account) == "0429") {
      ++resent_429;  // refused by AOPay each time: may be sent again
    } else {
      ++double_sends;
    }
  }
  std::cout << "double sends: " << double_sends
            << ", 0429 request ids sent again after a 429 (allowed): "
            << resent_429 << ", unexpected answers: " << unexpected
            << std::endl;

  EXPECT_GE(rss.size(), 3u) << "too few samples for a slope";
  EXPECT_LE(rss_slope, config.rss_tolerance_kib_per_min)
      << "the gateway's memory keeps growing";
  EXPECT_LE(fd_slope, config.fd_tolerance_per_min)
      << "the gateway's file descriptors keep growing";
  EXPECT_EQ(double_sends, 0);
  EXPECT_EQ(unexpected, 0);
  const int stop = gateway.process().Signal(SIGTERM);
  EXPECT_TRUE(WIFEXITED(stop) && WEXITSTATUS(stop) == 0) << stop;
}

}  // namespace
}  // namespace aopay::testing::load
