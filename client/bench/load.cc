#include "client/bench/load.h"

#include <algorithm>
#include <deque>
#include <iterator>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "aopay/payout/v1/payout.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"

namespace aopay {
namespace bench {
namespace {

// Account endings that make the sandbox answer with a scripted error or
// delay (docs/sandbox.md); derived accounts never end in them.
constexpr int kScriptedEndings[] = {403, 409, 412, 422, 429,
                                    500, 502, 504, 601, 602};

// splitmix64: a well-mixed 64-bit hash of (seed, n), enough for choosing
// accounts and replays reproducibly.
uint64_t Mix(uint64_t seed, uint64_t n) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (n + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A uniform double in [0, 1).
double Unit(uint64_t bits) { return (bits >> 11) * 0x1.0p-53; }

std::string DerivedAccount(uint64_t seed, int64_t index) {
  uint64_t bits = Mix(seed, static_cast<uint64_t>(index));
  int ending = static_cast<int>(bits % 10000);
  while (std::find(std::begin(kScriptedEndings), std::end(kScriptedEndings),
                   ending) != std::end(kScriptedEndings)) {
    ending = (ending + 1) % 10000;
  }
  const uint64_t head = 10000000 + (bits / 10000) % 90000000;
  return absl::StrFormat("%08d%04d", head, ending);
}

void AddToken(grpc::ClientContext& context, const std::string& token) {
  if (!token.empty()) {
    context.AddMetadata("authorization", absl::StrCat("Bearer ", token));
  }
}

void SetDeadline(grpc::ClientContext& context, absl::Duration timeout) {
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

// One unary call in flight: what gRPC's callback API needs to outlive the
// call, and the caller's completion.
struct OneCall {
  grpc::ClientContext context;
  v1::CreatePayoutRequest request;
  v1::Payout payout;
  UnaryTarget::Done done;

  // A call with its token, deadline and request set; released to gRPC by
  // the caller and owned again by Finish.
  static OneCall* Start(const v1::CreatePayoutRequest& request,
                        const std::string& token, absl::Duration timeout,
                        UnaryTarget::Done done) {
    auto call = std::make_unique<OneCall>();
    AddToken(call->context, token);
    SetDeadline(call->context, timeout);
    call->request = request;
    call->done = std::move(done);
    return call.release();
  }

  // Frees the call before reporting: done() may end the run.
  static void Finish(OneCall* raw, const grpc::Status& status) {
    std::unique_ptr<OneCall> owned(raw);
    UnaryTarget::Done done = std::move(owned->done);
    owned.reset();
    done(static_cast<absl::StatusCode>(status.error_code()));
  }
};

class CreatePayoutTarget final : public UnaryTarget {
 public:
  CreatePayoutTarget(std::shared_ptr<grpc::Channel> channel, std::string token)
      : stub_(v1::PayoutService::NewStub(std::move(channel))),
        token_(std::move(token)) {}

  void Call(const v1::CreatePayoutRequest& request, absl::Duration timeout,
            Done done) override {
    OneCall* raw = OneCall::Start(request, token_, timeout, std::move(done));
    stub_->async()->CreatePayout(
        &raw->context, &raw->request, &raw->payout,
        [raw](grpc::Status status) { OneCall::Finish(raw, status); });
  }

 private:
  std::unique_ptr<v1::PayoutService::Stub> stub_;
  const std::string token_;
};

class MethodTarget final : public UnaryTarget {
 public:
  MethodTarget(std::shared_ptr<grpc::Channel> channel, std::string token,
               std::string method)
      : stub_(std::move(channel)),
        token_(std::move(token)),
        method_(std::move(method)) {}

  void Call(const v1::CreatePayoutRequest& request, absl::Duration timeout,
            Done done) override {
    OneCall* raw = OneCall::Start(request, token_, timeout, std::move(done));
    stub_.UnaryCall(&raw->context, method_, grpc::StubOptions(), &raw->request,
                    &raw->payout, [raw](grpc::Status status) {
                      OneCall::Finish(raw, status);
                    });
  }

 private:
  grpc::TemplatedGenericStub<v1::CreatePayoutRequest, v1::Payout> stub_;
  const std::string token_;
  const std::string method_;
};

// Counters shared by the calls of a run and its progress reporter.
struct Counters {
  std::atomic<int64_t> sent{0};
  std::atomic<int64_t> done{0};
  std::atomic<int64_t> errors{0};
};

// Calls options.on_progress every options.progress_interval until the
// destructor, from a thread of its own.
class ProgressReporter {
 public:
  ProgressReporter(const LoadOptions& options, const Counters& counters)
      : options_(options), counters_(counters), start_(absl::Now()) {
    if (!options_.on_progress ||
        options_.progress_interval <= absl::ZeroDuration()) {
      return;
    }
    thread_ = std::thread([this] { Loop(); });
  }
  ~ProgressReporter() {
    stop_.Notify();
    if (thread_.joinable()) thread_.join();
  }
  ProgressReporter(const ProgressReporter&) = delete;
  ProgressReporter& operator=(const ProgressReporter&) = delete;

 private:
  void Loop() {
    absl::Time previous = start_;
    int64_t previous_done = 0;
    while (!stop_.WaitForNotificationWithTimeout(options_.progress_interval)) {
      const absl::Time now = absl::Now();
      Progress progress;
      progress.elapsed = now - start_;
      progress.sent = counters_.sent.load();
      progress.done = counters_.done.load();
      progress.errors = counters_.errors.load();
      const double seconds = absl::ToDoubleSeconds(now - previous);
      progress.rate =
          seconds > 0 ? (progress.done - previous_done) / seconds : 0;
      previous = now;
      previous_done = progress.done;
      options_.on_progress(progress);
    }
  }

  const LoadOptions& options_;
  const Counters& counters_;
  const absl::Time start_;
  absl::Notification stop_;
  std::thread thread_;
};

// One unary run. Run() from one thread; completions arrive on gRPC threads
// and each writes only its own call's slots.
class UnaryRun {
 public:
  UnaryRun(UnaryTarget& target, const RequestShape& shape,
           const LoadOptions& options)
      : target_(target),
        shape_(shape),
        options_(options),
        replays_(options.replay_fraction, shape.seed) {
    samples_.latency_ns.assign(options.calls, 0);
    samples_.codes.assign(options.calls, absl::StatusCode::kOk);
    samples_.replay.assign(options.calls, 0);
  }

  Samples Run() {
    ProgressReporter progress(options_, counters_);
    start_ = absl::Now();
    if (options_.rate) {
      const absl::Duration interval = absl::Seconds(1) / *options_.rate;
      for (int64_t i = 0; i < options_.calls; ++i) {
        const absl::Time intended = start_ + interval * i;
        // Pacing, not synchronisation: the schedule is the point of an open
        // loop.
        const absl::Duration wait = intended - absl::Now();
        if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
        Issue(i, intended);
      }
    } else {
      const int64_t first =
          std::min<int64_t>(options_.concurrency, options_.calls);
      next_.store(first);
      for (int64_t i = 0; i < first; ++i) Issue(i, absl::Now());
    }
    all_done_.WaitForNotification();
    samples_.wall = end_ - start_;
    if (!options_.rate && options_.calls > 2 * int64_t{options_.concurrency}) {
      samples_.steady =
          SteadyWindow{options_.calls - 2 * int64_t{options_.concurrency},
                       steady_end_ - steady_start_};
    }
    return std::move(samples_);
  }

 private:
  void Issue(int64_t call, absl::Time intended) {
    const std::optional<int64_t> replay_of = replays_.ReplayOf(call);
    samples_.replay[call] = replay_of.has_value();
    counters_.sent.fetch_add(1);
    target_.Call(
        MakeRequest(shape_, replay_of.value_or(call)), options_.timeout,
        [this, call, intended, fresh = !replay_of.has_value()](
            absl::StatusCode code) { OnDone(call, fresh, intended, code); });
  }

  void OnDone(int64_t call, bool fresh, absl::Time intended,
              absl::StatusCode code) {
    const absl::Time now = absl::Now();
    // Written before `done` counts this answer: the last answer's count,
    // which ends the run, comes after both.
    const int64_t answer = answers_.fetch_add(1) + 1;
    if (answer == options_.concurrency) steady_start_ = now;
    if (answer == options_.calls - options_.concurrency) steady_end_ = now;
    samples_.latency_ns[call] = absl::ToInt64Nanoseconds(now - intended);
    samples_.codes[call] = code;
    if (code != absl::StatusCode::kOk) counters_.errors.fetch_add(1);
    if (fresh) replays_.Answered(call);
    if (!options_.rate) {
      const int64_t next = next_.fetch_add(1);
      if (next < options_.calls) Issue(next, absl::Now());
    }
    if (counters_.done.fetch_add(1) + 1 == options_.calls) {
      end_ = now;
      all_done_.Notify();  // last use of `this` on this thread
    }
  }

  UnaryTarget& target_;
  const RequestShape& shape_;
  const LoadOptions& options_;
  ReplayPlan replays_;
  Samples samples_;
  Counters counters_;
  absl::Time start_;
  absl::Time end_;  // written by the last completion, before Notify()
  std::atomic<int64_t> next_{0};
  std::atomic<int64_t> answers_{0};
  absl::Time steady_start_;  // closed loop: see SteadyWindow
  absl::Time steady_end_;
  absl::Notification all_done_;
};

}  // namespace

v1::CreatePayoutRequest MakeRequest(const RequestShape& shape, int64_t index) {
  v1::CreatePayoutRequest request;
  request.set_request_id(absl::StrCat(shape.request_prefix, "-", index));
  v1::Beneficiary& b = *request.mutable_beneficiary();
  b.set_account_number(shape.account.empty() ? DerivedAccount(shape.seed, index)
                                             : shape.account);
  b.set_ifsc(shape.ifsc);
  b.set_name("Bench Beneficiary");
  b.set_email("bench@example.com");
  b.set_mobile("9876543210");
  request.set_amount_paise(shape.amount_paise);
  request.set_mode(shape.mode);
  return request;
}

ReplayPlan::ReplayPlan(double fraction, uint64_t seed)
    : fraction_(fraction), seed_(seed) {}

bool ReplayPlan::WantsReplay(int64_t call) const {
  return fraction_ > 0 && Unit(Mix(seed_ ^ 0x5265706c6179ULL,
                                   static_cast<uint64_t>(call))) < fraction_;
}

std::optional<int64_t> ReplayPlan::ReplayOf(int64_t call) {
  if (!WantsReplay(call)) return std::nullopt;
  absl::MutexLock lock(&mu_);
  if (answered_.empty()) return std::nullopt;
  const uint64_t pick = Mix(seed_, draws_++) % answered_.size();
  return answered_[pick];
}

void ReplayPlan::Answered(int64_t index) {
  if (fraction_ <= 0) return;
  absl::MutexLock lock(&mu_);
  answered_.push_back(index);
}

std::unique_ptr<UnaryTarget> MakeCreatePayoutTarget(
    std::shared_ptr<grpc::Channel> channel, std::string bearer_token) {
  return std::make_unique<CreatePayoutTarget>(std::move(channel),
                                              std::move(bearer_token));
}

std::unique_ptr<UnaryTarget> MakeMethodTarget(
    std::shared_ptr<grpc::Channel> channel, std::string bearer_token,
    std::string method) {
  return std::make_unique<MethodTarget>(
      std::move(channel), std::move(bearer_token), std::move(method));
}

std::string FormatProgress(const Progress& progress) {
  return absl::StrFormat(
      "payout-bench: %ds sent %d done %d rate %.0f/s errors %d",
      absl::ToInt64Seconds(progress.elapsed + absl::Milliseconds(500)),
      progress.sent, progress.done, progress.rate, progress.errors);
}

Samples RunUnary(UnaryTarget& target, const RequestShape& shape,
                 const LoadOptions& options) {
  if (options.calls <= 0) return Samples{};
  return UnaryRun(target, shape, options).Run();
}

Samples RunBatch(const std::shared_ptr<grpc::Channel>& channel,
                 const std::string& bearer_token, const RequestShape& shape,
                 const LoadOptions& options) {
  Samples samples;
  samples.latency_ns.assign(options.calls, 0);
  samples.codes.assign(options.calls, absl::StatusCode::kOk);
  samples.replay.assign(options.calls, 0);
  std::vector<uint8_t> answered(options.calls, 0);
  ReplayPlan replays(options.replay_fraction, shape.seed);
  Counters counters;

  // The calls sent but not yet answered, by request id (a replay shares its
  // id with the fresh call), each with the moment it was handed over.
  struct Pending {
    int64_t call;
    bool fresh;
    absl::Time sent;
  };
  absl::Mutex mu;
  absl::flat_hash_map<std::string, std::deque<Pending>> pending;

  std::unique_ptr<v1::PayoutService::Stub> stub =
      v1::PayoutService::NewStub(channel);
  grpc::ClientContext context;
  AddToken(context, bearer_token);
  SetDeadline(context, options.timeout);
  const absl::Time start = absl::Now();
  absl::Time end = start;
  grpc::Status status;
  {
    ProgressReporter progress(options, counters);
    auto stream = stub->BatchCreatePayouts(&context);
    // A failed Write means the stream is over; Finish() says why.
    std::thread writer([&] {
      for (int64_t call = 0; call < options.calls; ++call) {
        const std::optional<int64_t> replay_of = replays.ReplayOf(call);
        samples.replay[call] = replay_of.has_value();
        v1::CreatePayoutRequest request =
            MakeRequest(shape, replay_of.value_or(call));
        {
          absl::MutexLock lock(&mu);
          pending[request.request_id()].push_back(
              Pending{call, !replay_of.has_value(), absl::Now()});
        }
        counters.sent.fetch_add(1);
        if (!stream->Write(request)) return;
      }
      stream->WritesDone();
    });
    v1::BatchCreatePayoutsResponse answer;
    while (stream->Read(&answer)) {
      const absl::Time now = absl::Now();
      std::optional<Pending> found;
      {
        absl::MutexLock lock(&mu);
        auto it = pending.find(answer.request_id());
        if (it != pending.end() && !it->second.empty()) {
          found = it->second.front();
          it->second.pop_front();
          if (it->second.empty()) pending.erase(it);
        }
      }
      if (!found) continue;  // not ours: counted nowhere
      const absl::StatusCode code =
          answer.has_error()
              ? static_cast<absl::StatusCode>(answer.error().code())
              : absl::StatusCode::kOk;
      samples.latency_ns[found->call] =
          absl::ToInt64Nanoseconds(now - found->sent);
      samples.codes[found->call] = code;
      answered[found->call] = 1;
      if (code != absl::StatusCode::kOk) counters.errors.fetch_add(1);
      if (found->fresh) replays.Answered(found->call);
      counters.done.fetch_add(1);
      end = now;
    }
    writer.join();
    status = stream->Finish();
  }
  const absl::StatusCode stream_code =
      status.ok() ? absl::StatusCode::kUnknown
                  : static_cast<absl::StatusCode>(status.error_code());
  for (int64_t call = 0; call < options.calls; ++call) {
    if (answered[call]) continue;
    samples.codes[call] = stream_code;
    samples.latency_ns[call] = absl::ToInt64Nanoseconds(absl::Now() - start);
  }
  samples.wall = end - start;
  return samples;
}

}  // namespace bench
}  // namespace aopay
