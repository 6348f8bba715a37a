// watch-load: WatchPayouts from the caller's side, for run_benchmarks.sh.
//
//   --mode=replay   one watcher reads --events events from the start of the
//                   ledger as fast as the gateway sends them; prints
//                   "watch-load: replay N events, S s, R events/s".
//   --mode=idle     opens --watchers watches (no cursor: from now on; only
//                   events into --states, when given) over
//                   --channels connections, waits until every one has its
//                   header (the gateway has set it up), prints
//                   "watch-load: N watchers open", holds them for --hold,
//                   then cancels them all; prints
//                   "watch-load: N watchers closed, E ended early".
//
// Exit status 0 when everything asked for happened, 1 otherwise, 2 on bad
// flags.

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/marshalling.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "aopay/payout/v1/payout.grpc.pb.h"
#include "common/flag_help.h"
#include "common/ids.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "the gateway's address");
ABSL_FLAG(std::string, mode, "replay", "replay or idle (see the file)");
ABSL_FLAG(int64_t, events, 10000, "replay: events to read");
ABSL_FLAG(int, watchers, 1000, "idle: watches to open");
ABSL_FLAG(int, channels, 10, "idle: connections to spread them over");
ABSL_FLAG(absl::Duration, hold, absl::Seconds(5), "idle: how long to hold");
ABSL_FLAG(std::vector<std::string>, states, {},
          "idle: watch only events into these states (e.g. REVERSED); "
          "empty: every event");
ABSL_FLAG(absl::Duration, max_time, absl::Seconds(120),
          "give up after this long");

namespace {

namespace v1 = ::aopay::payout::v1;

int Replay(const std::shared_ptr<grpc::Channel>& channel, int64_t events,
           absl::Duration max_time) {
  auto stub = v1::PayoutService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + max_time));
  v1::WatchPayoutsRequest request;
  request.set_after_cursor(aopay::EventCursor(0));
  const absl::Time start = absl::Now();
  auto reader = stub->WatchPayouts(&context, request);
  v1::PayoutEvent event;
  int64_t read = 0;
  while (read < events && reader->Read(&event)) ++read;
  const absl::Duration took = absl::Now() - start;
  context.TryCancel();
  reader->Finish().IgnoreError();
  const double seconds = absl::ToDoubleSeconds(took);
  std::cout << absl::StrFormat(
                   "watch-load: replay %d events, %.2f s, %.0f events/s", read,
                   seconds, seconds > 0 ? read / seconds : 0)
            << std::endl;
  return read == events ? 0 : 1;
}

// What the idle watches have done so far.
struct Counts {
  explicit Counts(int watchers) : watchers(watchers) {}
  bool AllOpen() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return open >= watchers;
  }
  bool AllDone() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return done >= watchers;
  }

  const int watchers;
  absl::Mutex mu;
  int open ABSL_GUARDED_BY(mu) = 0;   // header received
  int done ABSL_GUARDED_BY(mu) = 0;   // ended
  int early ABSL_GUARDED_BY(mu) = 0;  // ended, not by our cancel
};

// One watch: counts its header, and its end.
class Watch final : public grpc::ClientReadReactor<v1::PayoutEvent> {
 public:
  Watch(v1::PayoutService::Stub& stub, const v1::WatchPayoutsRequest& request,
        Counts& counts)
      : request_(request), counts_(counts) {
    stub.async()->WatchPayouts(&context_, &request_, this);
    StartRead(&event_);
    StartCall();
  }
  void Cancel() { context_.TryCancel(); }

  void OnReadInitialMetadataDone(bool ok) override {
    absl::MutexLock lock(&counts_.mu);
    if (ok) ++counts_.open;
  }
  void OnReadDone(bool ok) override {
    if (ok) StartRead(&event_);  // an event after all: keep reading
  }
  void OnDone(const grpc::Status& status) override {
    absl::MutexLock lock(&counts_.mu);
    if (status.error_code() != grpc::StatusCode::CANCELLED) ++counts_.early;
    ++counts_.done;
  }

 private:
  grpc::ClientContext context_;
  v1::WatchPayoutsRequest request_;
  v1::PayoutEvent event_;
  Counts& counts_;
};

int Idle(const std::string& target, const v1::WatchPayoutsRequest& request,
         int watchers, int channels, absl::Duration hold,
         absl::Duration max_time) {
  std::vector<std::unique_ptr<v1::PayoutService::Stub>> stubs;
  for (int i = 0; i < channels; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("aopay.watch_load.channel", i);  // one connection each
    stubs.push_back(v1::PayoutService::NewStub(grpc::CreateCustomChannel(
        target, grpc::InsecureChannelCredentials(), args)));
  }
  Counts counts(watchers);
  std::vector<std::unique_ptr<Watch>> watches;
  for (int i = 0; i < watchers; ++i) {
    watches.push_back(
        std::make_unique<Watch>(*stubs[i % channels], request, counts));
  }
  const absl::Time deadline = absl::Now() + max_time;
  bool all_open;
  {
    absl::MutexLock lock(&counts.mu);
    all_open = counts.mu.AwaitWithDeadline(
        absl::Condition(&counts, &Counts::AllOpen), deadline);
    std::cout << absl::StrFormat("watch-load: %d watchers open", counts.open)
              << std::endl;
  }
  absl::SleepFor(hold);  // the benchmark measures the gateway meanwhile
  for (auto& watch : watches) watch->Cancel();
  absl::MutexLock lock(&counts.mu);
  const bool all_done = counts.mu.AwaitWithDeadline(
      absl::Condition(&counts, &Counts::AllDone), deadline);
  std::cout << absl::StrFormat("watch-load: %d watchers closed, %d ended early",
                               counts.done, counts.early)
            << std::endl;
  // Reactors still running cannot be freed: leave them to the exit.
  if (!all_done) std::_Exit(1);
  return all_open && counts.early == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "WatchPayouts load: one watcher replaying events, or many idle ones.");
  absl::FlagsUsageConfig usage;
  aopay::HelpListsFlagsOf(usage, "watch_load.cc");
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const std::string target = absl::GetFlag(FLAGS_target);
  const absl::Duration max_time = absl::GetFlag(FLAGS_max_time);
  if (mode == "replay" && absl::GetFlag(FLAGS_events) > 0) {
    return Replay(
        grpc::CreateChannel(target, grpc::InsecureChannelCredentials()),
        absl::GetFlag(FLAGS_events), max_time);
  }
  const int watchers = absl::GetFlag(FLAGS_watchers);
  const int channels = absl::GetFlag(FLAGS_channels);
  v1::WatchPayoutsRequest request;
  for (const std::string& name : absl::GetFlag(FLAGS_states)) {
    v1::PayoutState state;
    if (!v1::PayoutState_Parse("PAYOUT_STATE_" + name, &state)) {
      std::cerr << "watch-load: unknown state " << name << std::endl;
      return 2;
    }
    request.add_states(state);
  }
  if (mode == "idle" && watchers > 0 && channels > 0) {
    return Idle(target, request, watchers, channels, absl::GetFlag(FLAGS_hold),
                max_time);
  }
  std::cerr << "watch-load: --mode must be replay (--events > 0) or idle "
               "(--watchers, --channels > 0)"
            << std::endl;
  return 2;
}
