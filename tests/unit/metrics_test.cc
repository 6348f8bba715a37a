// The Prometheus text the gateway serves at /metrics: counters, histograms
// and gauges, label escaping, and that values move.

#include "server/observability/metrics.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(CounterFamilyTest, CountsPerLabelSet) {
  CounterFamily counter("things_total", "Things.", {"kind"});
  EXPECT_EQ(counter.Value({"a"}), 0u);
  counter.Increment({"a"});
  counter.Increment({"a"}, 2);
  counter.Increment({"b"});
  EXPECT_EQ(counter.Value({"a"}), 3u);
  EXPECT_EQ(counter.Value({"b"}), 1u);
  std::string out;
  counter.Render(&out);
  EXPECT_EQ(out,
            "# HELP things_total Things.\n"
            "# TYPE things_total counter\n"
            "things_total{kind=\"a\"} 3\n"
            "things_total{kind=\"b\"} 1\n");
}

TEST(CounterFamilyTest, AnUnlabelledCounterRendersZeroBeforeItMoves) {
  CounterFamily counter("events_total", "Events.", {});
  std::string out;
  counter.Render(&out);
  EXPECT_THAT(out, HasSubstr("\nevents_total 0\n"));
  counter.Increment({});
  out.clear();
  counter.Render(&out);
  EXPECT_THAT(out, HasSubstr("\nevents_total 1\n"));
}

TEST(CounterFamilyTest, LabelValuesAreEscaped) {
  CounterFamily counter("odd_total", "Odd.", {"v"});
  counter.Increment({"a\"b\\c\nd"});
  std::string out;
  counter.Render(&out);
  EXPECT_THAT(out, HasSubstr("odd_total{v=\"a\\\"b\\\\c\\nd\"} 1\n"));
}

TEST(CounterFamilyTest, ConcurrentIncrementsAreAllCounted) {
  CounterFamily counter("c_total", "C.", {"k"});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) counter.Increment({"x"});
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(counter.Value({"x"}), 40000u);
}

TEST(HistogramFamilyTest, BucketsAreCumulativeWithSumAndCount) {
  HistogramFamily histogram("d_seconds", "D.", {"op"}, {0.1, 1});
  histogram.Observe({"w"}, absl::Milliseconds(50));
  histogram.Observe({"w"}, absl::Milliseconds(500));
  histogram.Observe({"w"}, absl::Seconds(3));
  histogram.Observe({"w"}, absl::Milliseconds(100));  // on a bound: counted in
  std::string out;
  histogram.Render(&out);
  EXPECT_THAT(out, HasSubstr("# TYPE d_seconds histogram\n"));
  EXPECT_THAT(out, HasSubstr("d_seconds_bucket{op=\"w\",le=\"0.1\"} 2\n"));
  EXPECT_THAT(out, HasSubstr("d_seconds_bucket{op=\"w\",le=\"1\"} 3\n"));
  EXPECT_THAT(out, HasSubstr("d_seconds_bucket{op=\"w\",le=\"+Inf\"} 4\n"));
  EXPECT_THAT(out, HasSubstr("d_seconds_sum{op=\"w\"} 3.65\n"));
  EXPECT_THAT(out, HasSubstr("d_seconds_count{op=\"w\"} 4\n"));
}

TEST(MetricsTest, RendersEveryFamilyAndReadsGaugesAtScrapeTime) {
  Metrics metrics;
  double level = 1;
  metrics.SetGauge("level", "A level.", [&level] { return level; });
  metrics.payouts.Increment({"IMPS", "accepted"});
  metrics.status_contradictions.Increment({"failed", "succeeded"});
  std::string out = metrics.Render();
  for (const char* family :
       {"payout_outcomes_total", "aopay_requests_total",
        "aopay_request_duration_seconds", "grpc_server_handled_total",
        "grpc_server_handling_seconds", "ledger_write_duration_seconds",
        "aopay_status_answers_not_understood_total",
        "aopay_status_contradictions_total"}) {
    EXPECT_THAT(out, HasSubstr(std::string("# TYPE ") + family)) << family;
  }
  EXPECT_THAT(out, HasSubstr("payout_outcomes_total{mode=\"IMPS\",outcome="
                             "\"accepted\"} 1\n"));
  EXPECT_THAT(out,
              HasSubstr("aopay_status_contradictions_total{from=\"failed\","
                        "to=\"succeeded\"} 1\n"));
  EXPECT_THAT(out, HasSubstr("# TYPE level gauge\nlevel 1\n"));
  level = 7;
  EXPECT_THAT(metrics.Render(), HasSubstr("\nlevel 7\n"));
}

TEST(MetricsTest, EveryLineIsACommentOrASample) {
  Metrics metrics;
  metrics.rpcs.Increment({"/aopay.payout.v1.PayoutService/CreatePayout", "OK"});
  metrics.rpc_duration.Observe({"CreatePayout"}, absl::Milliseconds(3));
  for (absl::string_view line :
       absl::StrSplit(metrics.Render(), '\n', absl::SkipEmpty())) {
    if (line.substr(0, 2) == "# ") {
      EXPECT_TRUE(line.substr(0, 7) == "# HELP " ||
                  line.substr(0, 7) == "# TYPE ")
          << line;
      continue;
    }
    // NAME[{labels}] VALUE
    const size_t space = line.rfind(' ');
    ASSERT_NE(space, absl::string_view::npos) << line;
    EXPECT_THAT(std::string(line.substr(space + 1)), Not(HasSubstr(" ")));
  }
}

}  // namespace
}  // namespace aopay
