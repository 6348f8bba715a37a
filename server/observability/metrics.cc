#include "server/observability/metrics.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace aopay {
namespace {

std::string EscapeLabel(const std::string& value) {
  return absl::StrReplaceAll(value,
                             {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}});
}

// `{a="x",b="y"}` with an optional extra label (for `le`); "" when empty.
std::string LabelText(const std::vector<std::string>& names,
                      const LabelValues& values,
                      const std::string& extra = "") {
  std::string out;
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    absl::StrAppend(&out, out.empty() ? "" : ",", names[i], "=\"",
                    EscapeLabel(values[i]), "\"");
  }
  if (!extra.empty()) absl::StrAppend(&out, out.empty() ? "" : ",", extra);
  return out.empty() ? "" : absl::StrCat("{", out, "}");
}

void Header(std::string* out, const std::string& name, const std::string& help,
            const char* type) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type,
                  "\n");
}

}  // namespace

CounterFamily::CounterFamily(std::string name, std::string help,
                             std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)) {}

void CounterFamily::Increment(const LabelValues& labels, uint64_t by) {
  absl::MutexLock lock(&mu_);
  values_[labels] += by;
}

uint64_t CounterFamily::Value(const LabelValues& labels) const {
  absl::MutexLock lock(&mu_);
  auto it = values_.find(labels);
  return it == values_.end() ? 0 : it->second;
}

void CounterFamily::Render(std::string* out) const {
  Header(out, name_, help_, "counter");
  absl::MutexLock lock(&mu_);
  if (values_.empty() && label_names_.empty()) {
    absl::StrAppend(out, name_, " 0\n");
  }
  for (const auto& [labels, value] : values_) {
    absl::StrAppend(out, name_, LabelText(label_names_, labels), " ", value,
                    "\n");
  }
}

HistogramFamily::HistogramFamily(std::string name, std::string help,
                                 std::vector<std::string> label_names,
                                 std::vector<double> bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      bounds_(std::move(bounds)) {}

void HistogramFamily::Observe(const LabelValues& labels, absl::Duration value) {
  const double seconds = absl::ToDoubleSeconds(value);
  absl::MutexLock lock(&mu_);
  Series& series = series_[labels];
  if (series.buckets.empty()) series.buckets.assign(bounds_.size(), 0);
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (seconds <= bounds_[i]) {
      ++series.buckets[i];
      break;
    }
  }
  ++series.count;
  series.sum += seconds;
}

void HistogramFamily::Render(std::string* out) const {
  Header(out, name_, help_, "histogram");
  absl::MutexLock lock(&mu_);
  for (const auto& [labels, series] : series_) {
    uint64_t cumulative = 0;
    for (size_t i = 0; i < bounds_.size(); ++i) {
      cumulative += series.buckets[i];
      absl::StrAppend(out, name_, "_bucket",
                      LabelText(label_names_, labels,
                                absl::StrCat("le=\"", bounds_[i], "\"")),
                      " ", cumulative, "\n");
    }
    absl::StrAppend(out, name_, "_bucket",
                    LabelText(label_names_, labels, "le=\"+Inf\""), " ",
                    series.count, "\n");
    absl::StrAppend(out, name_, "_sum", LabelText(label_names_, labels), " ",
                    series.sum, "\n");
    absl::StrAppend(out, name_, "_count", LabelText(label_names_, labels), " ",
                    series.count, "\n");
  }
}

Metrics::Metrics() = default;

std::vector<double> Metrics::DefaultLatencyBounds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
          0.5,   1,      2.5,   5,    10,    30,   60};
}

void Metrics::SetGauge(std::string name, std::string help,
                       std::function<double()> read) {
  absl::MutexLock lock(&mu_);
  gauges_.push_back({std::move(name), std::move(help), std::move(read), ""});
}

void Metrics::SetInfo(
    std::string name, std::string help,
    const std::vector<std::pair<std::string, std::string>>& labels) {
  std::vector<std::string> names;
  LabelValues values;
  for (const auto& [label, value] : labels) {
    names.push_back(label);
    values.push_back(value);
  }
  absl::MutexLock lock(&mu_);
  gauges_.push_back({std::move(name), std::move(help), [] { return 1.0; },
                     LabelText(names, values)});
}

std::string Metrics::Render() const {
  std::string out;
  payouts.Render(&out);
  upstream_calls.Render(&out);
  upstream_duration.Render(&out);
  rpcs.Render(&out);
  rpc_duration.Render(&out);
  ledger_write_duration.Render(&out);
  client_payouts.Render(&out);
  auth_failures.Render(&out);
  status_not_understood.Render(&out);
  status_contradictions.Render(&out);
  webhook_deliveries.Render(&out);
  absl::MutexLock lock(&mu_);
  for (const Gauge& gauge : gauges_) {
    Header(&out, gauge.name, gauge.help, "gauge");
    absl::StrAppend(&out, gauge.name, gauge.labels, " ", gauge.read(), "\n");
  }
  return out;
}

}  // namespace aopay
