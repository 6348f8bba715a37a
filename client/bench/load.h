#ifndef AOPAY_CLIENT_BENCH_LOAD_H_
#define AOPAY_CLIENT_BENCH_LOAD_H_

// The load payout-bench drives: which requests it sends (fresh ones and
// idempotent replays), how it sends them (closed loop, open loop, one
// BatchCreatePayouts stream) and to what (the gateway's CreatePayout, or any
// method that takes a CreatePayoutRequest and answers a Payout, such as the
// bare echo server of tests/bench). Free of flags: payout_bench.cc fills
// LoadOptions.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aopay/payout/v1/payout.pb.h"
#include "grpcpp/grpcpp.h"

namespace aopay {
namespace bench {

namespace v1 = ::aopay::payout::v1;

// The full name of the echo method of tests/bench/echo.proto.
inline constexpr char kEchoMethod[] = "/aopay.echo.v1.EchoService/Echo";

// What every payout of a run looks like.
struct RequestShape {
  std::string request_prefix;  // request ids are PREFIX-N
  std::string account;         // empty: an account derived from N
  std::string ifsc = "SBIN0000002";
  int64_t amount_paise = 100;
  v1::TransferMode mode = v1::TRANSFER_MODE_IMPS;
  uint64_t seed = 0;  // varies the derived accounts between runs
};

// The request of fresh call `index`: a pure function of (shape, index), so a
// replay of it is identical field for field. Derived accounts never end in
// one of the sandbox's scripted endings.
v1::CreatePayoutRequest MakeRequest(const RequestShape& shape, int64_t index);

// Which earlier request a call re-sends. A call is a replay with probability
// `fraction` (decided from the seed and its index, so the same calls replay
// in every run with that seed). A replay re-sends a fresh request whose
// answer has already come back — a caller retrying after losing an answer —
// so that it measures the idempotent path rather than REQUEST_IN_PROGRESS;
// when no answer has come back yet the call is sent fresh instead.
//
// Thread-safe.
class ReplayPlan {
 public:
  ReplayPlan(double fraction, uint64_t seed);

  // The fresh index call `call` sends, or nullopt for a fresh call of its
  // own index.
  std::optional<int64_t> ReplayOf(int64_t call);
  // Marks fresh call `index` as answered (replays are not recorded).
  void Answered(int64_t index);

 private:
  bool WantsReplay(int64_t call) const;

  const double fraction_;
  const uint64_t seed_;
  absl::Mutex mu_;
  std::vector<int64_t> answered_ ABSL_GUARDED_BY(mu_);
  uint64_t draws_ ABSL_GUARDED_BY(mu_) = 0;
};

// Sends one call to the server. `done` runs once, on a gRPC thread, and must
// not block. Implementations are thread-safe.
class UnaryTarget {
 public:
  using Done = std::function<void(absl::StatusCode)>;
  virtual ~UnaryTarget() = default;
  virtual void Call(const v1::CreatePayoutRequest& request,
                    absl::Duration timeout, Done done) = 0;
};

// PayoutService.CreatePayout.
std::unique_ptr<UnaryTarget> MakeCreatePayoutTarget(
    std::shared_ptr<grpc::Channel> channel, std::string bearer_token);
// `method` ("/package.Service/Method"), which takes a CreatePayoutRequest and
// answers a Payout, called without generated code (the echo server).
std::unique_ptr<UnaryTarget> MakeMethodTarget(
    std::shared_ptr<grpc::Channel> channel, std::string bearer_token,
    std::string method);

// A snapshot of a run in progress.
struct Progress {
  absl::Duration elapsed;
  int64_t sent = 0;
  int64_t done = 0;
  int64_t errors = 0;  // answers other than OK
  double rate = 0;     // answers a second since the previous snapshot
};

// "payout-bench: 3s sent 6000 done 5968 rate 1994/s errors 0"
std::string FormatProgress(const Progress& progress);

struct LoadOptions {
  int64_t calls = 1000;
  // Closed loop: keep `concurrency` calls in flight. Open loop when `rate` is
  // set: start `rate` calls a second whatever is in flight; latency then
  // counts from each call's intended start, so a slow server cannot hide its
  // queue (no coordinated omission).
  int32_t concurrency = 32;
  std::optional<double> rate;
  double replay_fraction = 0;
  absl::Duration timeout = absl::Seconds(60);
  // Every `progress_interval`, `on_progress` gets a snapshot (none when it is
  // empty or the interval is not positive).
  absl::Duration progress_interval = absl::Seconds(1);
  std::function<void(const Progress&)> on_progress;
};

// A closed loop's steady state: from the answer that completes the first
// `concurrency` answers (every call then in flight was sent in reply to an
// answer) to the answer that starts the last call (after it, fewer than
// `concurrency` are in flight). Its rate is the sustained one, without the
// ramp-up and the drain a whole-run rate includes.
struct SteadyWindow {
  int64_t answers = 0;  // answered inside the window
  absl::Duration length;
};

// One sample per call, in call order.
struct Samples {
  absl::Duration wall;
  // Closed loop with more than twice `concurrency` calls only.
  std::optional<SteadyWindow> steady;
  std::vector<int64_t> latency_ns;
  std::vector<absl::StatusCode> codes;
  std::vector<uint8_t> replay;  // 1 for a replay
};

// Drives `options.calls` unary calls at `target`; returns when all are
// answered.
Samples RunUnary(UnaryTarget& target, const RequestShape& shape,
                 const LoadOptions& options);

// Sends `options.calls` payouts over one BatchCreatePayouts stream (rate and
// concurrency do not apply: the gateway's flow control paces the stream).
// Each answer's latency counts from the moment its request was handed to the
// stream. Calls the stream never answered (it failed) get the stream's code.
Samples RunBatch(const std::shared_ptr<grpc::Channel>& channel,
                 const std::string& bearer_token, const RequestShape& shape,
                 const LoadOptions& options);

}  // namespace bench
}  // namespace aopay

#endif  // AOPAY_CLIENT_BENCH_LOAD_H_
