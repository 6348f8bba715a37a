#ifndef AOPAY_SERVER_OBSERVABILITY_METRICS_H_
#define AOPAY_SERVER_OBSERVABILITY_METRICS_H_

// Prometheus metrics in the text exposition format (version 0.0.4). Debian 12
// has no C++ Prometheus client, so this is a small one: counters and
// histograms with labels, gauges read at scrape time. Thread-safe.

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace aopay {

// Label values in the order of the family's label names.
using LabelValues = std::vector<std::string>;

class CounterFamily {
 public:
  CounterFamily(std::string name, std::string help,
                std::vector<std::string> label_names);
  void Increment(const LabelValues& labels, uint64_t by = 1);
  uint64_t Value(const LabelValues& labels) const;
  void Render(std::string* out) const;

 private:
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  mutable absl::Mutex mu_;
  std::map<LabelValues, uint64_t> values_ ABSL_GUARDED_BY(mu_);
};

class HistogramFamily {
 public:
  // `bounds` in seconds, ascending; +Inf is implied.
  HistogramFamily(std::string name, std::string help,
                  std::vector<std::string> label_names,
                  std::vector<double> bounds);
  void Observe(const LabelValues& labels, absl::Duration value);
  void Render(std::string* out) const;

 private:
  struct Series {
    std::vector<uint64_t> buckets;  // cumulative at render time, not here
    uint64_t count = 0;
    double sum = 0;
  };
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;
  mutable absl::Mutex mu_;
  std::map<LabelValues, Series> series_ ABSL_GUARDED_BY(mu_);
};

// The gateway's metrics (docs/operations.md).
class Metrics {
 public:
  Metrics();

  // outcome: accepted, succeeded, failed, unknown, not_sent, invalid,
  // replayed, rejected_reused, in_progress, overloaded, ledger_unavailable.
  CounterFamily payouts{"payout_outcomes_total",
                        "CreatePayout outcomes by transfer mode and outcome.",
                        {"mode", "outcome"}};
  // status: the HTTP status, or "none" when no answer came.
  CounterFamily upstream_calls{"aopay_requests_total",
                               "AOPay calls by endpoint and HTTP status.",
                               {"endpoint", "status"}};
  HistogramFamily upstream_duration{"aopay_request_duration_seconds",
                                    "AOPay call duration by endpoint.",
                                    {"endpoint"},
                                    DefaultLatencyBounds()};
  CounterFamily rpcs{"grpc_server_handled_total",
                     "RPCs completed by method and gRPC code.",
                     {"method", "code"}};
  HistogramFamily rpc_duration{"grpc_server_handling_seconds",
                               "RPC duration by method.",
                               {"method"},
                               DefaultLatencyBounds()};
  HistogramFamily ledger_write_duration{
      "ledger_write_duration_seconds",
      "Time from a ledger write's submission to its durable commit.",
      {"op"},
      DefaultLatencyBounds()};
  CounterFamily status_contradictions{
      "aopay_status_contradictions_total",
      "AOPay answers that contradict a payout's final state (a status "
      "answer SUCCESS for a FAILED payout, or a payout answer that came "
      "after an operator settled it otherwise); each needs a person.",
      {"from", "to"}};
  // client: the clients file's name ("" without --clients), a bounded set;
  // code: the gRPC code the caller got.
  CounterFamily client_payouts{"client_payouts_total",
                               "CreatePayout outcomes by client and gRPC code.",
                               {"client", "code"}};
  // reason: missing, malformed, unknown_token, unknown_certificate, scope.
  CounterFamily auth_failures{
      "auth_failures_total",
      "Calls refused before any work: UNAUTHENTICATED or PERMISSION_DENIED.",
      {"reason"}};
  // result: delivered, retried (a failed attempt; tried again later),
  // expired (given up after 24 h).
  CounterFamily webhook_deliveries{"webhook_deliveries_total",
                                   "Webhook POST attempts by result.",
                                   {"result"}};
  CounterFamily status_not_understood{
      "aopay_status_answers_not_understood_total",
      "Status-endpoint answers the gateway could not map to a state.",
      {}};

  // Gauges read when rendered.
  void SetGauge(std::string name, std::string help,
                std::function<double()> read);
  // A gauge of value 1 whose labels say something (Prometheus' "info"
  // convention), e.g. payout_build_info{version="0.1.0",commit="..."}.
  // Label values are escaped.
  void SetInfo(std::string name, std::string help,
               const std::vector<std::pair<std::string, std::string>>& labels);

  std::string Render() const;

  static std::vector<double> DefaultLatencyBounds();

 private:
  struct Gauge {
    std::string name;
    std::string help;
    std::function<double()> read;
    std::string labels;  // "{...}" or ""
  };
  mutable absl::Mutex mu_;
  std::vector<Gauge> gauges_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aopay

#endif  // AOPAY_SERVER_OBSERVABILITY_METRICS_H_
