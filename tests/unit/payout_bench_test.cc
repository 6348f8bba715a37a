// payout-bench: the load it drives (client/bench/load.h) against in-process
// fakes on loopback, and the program itself (flags, --help, --echo).

#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "aopay/payout/v1/payout.grpc.pb.h"
#include "client/bench/load.h"
#include "echo_service.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace aopay {
namespace bench {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(30);

// Records every CreatePayout request in arrival order and answers OK, or
// INVALID_ARGUMENT for request ids ending in "-0". While `hold` is set,
// CreatePayout waits for release() before answering (a sync handler may
// block: this is a test's fake).
class FakePayoutService final : public v1::PayoutService::Service {
 public:
  grpc::Status CreatePayout(grpc::ServerContext*,
                            const v1::CreatePayoutRequest* request,
                            v1::Payout* payout) override {
    Record(*request);
    if (hold_) release_.WaitForNotificationWithTimeout(kWait);
    return Answer(*request, payout);
  }

  grpc::Status BatchCreatePayouts(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::BatchCreatePayoutsResponse,
                               v1::CreatePayoutRequest>* stream) override {
    v1::CreatePayoutRequest request;
    while (stream->Read(&request)) {
      Record(request);
      v1::BatchCreatePayoutsResponse response;
      response.set_request_id(request.request_id());
      v1::Payout payout;
      grpc::Status status = Answer(request, &payout);
      if (status.ok()) {
        *response.mutable_payout() = payout;
      } else {
        response.mutable_error()->set_code(status.error_code());
        response.mutable_error()->set_message(status.error_message());
      }
      if (!stream->Write(response)) break;
    }
    return grpc::Status::OK;
  }

  void set_hold(bool hold) { hold_ = hold; }
  // Waits (at most kWait) until `n` requests have arrived.
  void WaitForRequests(size_t n) {
    absl::MutexLock lock(&mu_);
    auto arrived = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return requests_.size() >= n;
    };
    mu_.AwaitWithTimeout(absl::Condition(&arrived), kWait);
  }
  // Idempotent.
  void release() {
    absl::MutexLock lock(&mu_);
    if (!release_.HasBeenNotified()) release_.Notify();
  }

  std::vector<v1::CreatePayoutRequest> requests() const {
    absl::MutexLock lock(&mu_);
    return requests_;
  }

 private:
  void Record(const v1::CreatePayoutRequest& request) {
    absl::MutexLock lock(&mu_);
    requests_.push_back(request);
  }

  static grpc::Status Answer(const v1::CreatePayoutRequest& request,
                             v1::Payout* payout) {
    if (absl::EndsWith(request.request_id(), "-0")) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "seven");
    }
    payout->set_request_id(request.request_id());
    payout->set_state(v1::PAYOUT_STATE_ACCEPTED);
    return grpc::Status::OK;
  }

  std::atomic<bool> hold_{false};
  absl::Notification release_;
  mutable absl::Mutex mu_;
  std::vector<v1::CreatePayoutRequest> requests_ ABSL_GUARDED_BY(mu_);
};

RequestShape TestShape() {
  RequestShape shape;
  shape.request_prefix = "t";
  shape.seed = 42;
  return shape;
}

class LoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&payouts_);
    builder.RegisterService(&echo_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_),
                                   grpc::InsecureChannelCredentials());
  }
  void TearDown() override {
    payouts_.release();
    server_->Shutdown();
  }

  static RequestShape Shape() { return TestShape(); }

  // Every replay sent the very request first sent under its id.
  void ExpectReplaysIdentical(const Samples& samples) {
    absl::flat_hash_map<std::string, v1::CreatePayoutRequest> first;
    int64_t repeats = 0;
    for (const v1::CreatePayoutRequest& request : payouts_.requests()) {
      auto [it, inserted] = first.emplace(request.request_id(), request);
      if (!inserted) {
        ++repeats;
        EXPECT_TRUE(MessageDifferencer::Equals(it->second, request))
            << request.request_id();
      }
    }
    EXPECT_EQ(repeats,
              std::count(samples.replay.begin(), samples.replay.end(), 1));
  }

  FakePayoutService payouts_;
  EchoService echo_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST(MakeRequestTest, SameIndexSameRequestAndNoScriptedEnding) {
  RequestShape shape;
  shape.request_prefix = "run";
  shape.seed = 7;
  for (int64_t i = 0; i < 2000; ++i) {
    const v1::CreatePayoutRequest request = MakeRequest(shape, i);
    EXPECT_TRUE(MessageDifferencer::Equals(request, MakeRequest(shape, i)));
    EXPECT_EQ(request.request_id(), absl::StrCat("run-", i));
    const std::string& account = request.beneficiary().account_number();
    ASSERT_EQ(account.size(), 12u);
    for (const char* scripted : {"0403", "0409", "0412", "0422", "0429", "0500",
                                 "0502", "0504", "0601", "0602"}) {
      EXPECT_FALSE(absl::EndsWith(account, scripted)) << account;
    }
  }
}

TEST(ReplayPlanTest, ReplaysOnlyAnsweredCallsAtTheGivenShare) {
  ReplayPlan none(0, 1);
  for (int64_t call = 0; call < 100; ++call) {
    none.Answered(call);
    EXPECT_FALSE(none.ReplayOf(call + 1).has_value());
  }

  ReplayPlan plan(0.3, 1);
  // Nothing answered yet: every call goes out fresh.
  for (int64_t call = 0; call < 50; ++call) {
    EXPECT_FALSE(plan.ReplayOf(call).has_value());
  }
  plan.Answered(3);
  plan.Answered(17);
  int replays = 0;
  for (int64_t call = 50; call < 2050; ++call) {
    if (std::optional<int64_t> of = plan.ReplayOf(call)) {
      ++replays;
      EXPECT_TRUE(*of == 3 || *of == 17) << *of;
    }
  }
  EXPECT_GT(replays, 500);
  EXPECT_LT(replays, 700);
}

TEST_F(LoadTest, ClosedLoopReplaysEarlierRequestsIdentically) {
  std::unique_ptr<UnaryTarget> target =
      MakeCreatePayoutTarget(channel_, "token");
  LoadOptions options;
  options.calls = 400;
  options.concurrency = 8;
  options.replay_fraction = 0.25;
  const Samples samples = RunUnary(*target, Shape(), options);

  ASSERT_EQ(samples.codes.size(), 400u);
  const int64_t replays =
      std::count(samples.replay.begin(), samples.replay.end(), 1);
  EXPECT_GT(replays, 60);
  EXPECT_LT(replays, 140);
  EXPECT_EQ(payouts_.requests().size(), 400u);
  ExpectReplaysIdentical(samples);
  // t-0 (always sent fresh) is refused by the fake, every time it is sent.
  int64_t refused = 0;
  for (size_t i = 0; i < samples.codes.size(); ++i) {
    if (samples.codes[i] != absl::StatusCode::kOk) {
      EXPECT_EQ(samples.codes[i], absl::StatusCode::kInvalidArgument);
      ++refused;
    }
  }
  EXPECT_GE(refused, 1);
  for (const int64_t ns : samples.latency_ns) EXPECT_GT(ns, 0);
  // The steady window leaves out the first 8 answers (the ramp-up) and the
  // last 8 (the drain).
  ASSERT_TRUE(samples.steady.has_value());
  EXPECT_EQ(samples.steady->answers, 400 - 2 * 8);
  EXPECT_GT(samples.steady->length, absl::ZeroDuration());
  EXPECT_LE(samples.steady->length, samples.wall);
}

TEST_F(LoadTest, OpenLoopCountsLatencyFromTheIntendedStart) {
  // Every answer is held until all ten calls have arrived, so the first call
  // (intended at 0 ms, the tenth at 90 ms) waits at least 90 ms.
  payouts_.set_hold(true);
  std::unique_ptr<UnaryTarget> target = MakeCreatePayoutTarget(channel_, "");
  LoadOptions options;
  options.calls = 10;
  options.rate = 100;
  std::thread releaser([this] {
    payouts_.WaitForRequests(10);
    payouts_.release();
  });
  const Samples samples = RunUnary(*target, Shape(), options);
  releaser.join();
  EXPECT_GE(samples.latency_ns[0],
            absl::ToInt64Nanoseconds(absl::Milliseconds(90)));
  EXPECT_GE(samples.wall, absl::Milliseconds(90));
  // An open loop's in-flight count is not held: no steady window.
  EXPECT_FALSE(samples.steady.has_value());
}

TEST_F(LoadTest, ProgressReportsCallsSentBeforeAnyAnswer) {
  payouts_.set_hold(true);
  std::unique_ptr<UnaryTarget> target = MakeCreatePayoutTarget(channel_, "");
  absl::Mutex mu;
  std::vector<Progress> seen;
  LoadOptions options;
  options.calls = 4;
  options.concurrency = 4;
  options.progress_interval = absl::Milliseconds(10);
  options.on_progress = [&](const Progress& progress) {
    absl::MutexLock lock(&mu);
    seen.push_back(progress);
  };
  std::thread run([&] { RunUnary(*target, Shape(), options); });
  {
    absl::MutexLock lock(&mu);
    auto all_sent = [&seen] {
      return !seen.empty() && seen.back().sent == 4 && seen.back().done == 0;
    };
    EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all_sent), kWait));
  }
  payouts_.release();
  run.join();
  absl::MutexLock lock(&mu);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.front().errors, 0);
}

TEST(FormatProgressTest, OneLine) {
  Progress progress;
  progress.elapsed = absl::Milliseconds(2990);
  progress.sent = 6000;
  progress.done = 5968;
  progress.errors = 3;
  progress.rate = 1994.4;
  EXPECT_EQ(FormatProgress(progress),
            "payout-bench: 3s sent 6000 done 5968 rate 1994/s errors 3");
}

TEST_F(LoadTest, BatchStreamAnswersEveryPayoutWithItsCode) {
  LoadOptions options;
  options.calls = 300;
  options.replay_fraction = 0.2;
  const Samples samples = RunBatch(channel_, "token", Shape(), options);

  ASSERT_EQ(samples.codes.size(), 300u);
  EXPECT_EQ(payouts_.requests().size(), 300u);
  // How many calls replay depends on how far the writer runs ahead of the
  // answers (none when it writes everything first); each one that does is
  // identical to its first sending.
  ExpectReplaysIdentical(samples);
  // A fresh call i sends t-i; the fake refuses t-0.
  for (int64_t i = 0; i < 300; ++i) {
    if (samples.replay[i]) continue;
    EXPECT_EQ(samples.codes[i], i == 0 ? absl::StatusCode::kInvalidArgument
                                       : absl::StatusCode::kOk)
        << i;
  }
  EXPECT_GT(samples.wall, absl::ZeroDuration());
  for (const int64_t ns : samples.latency_ns) EXPECT_GT(ns, 0);
}

TEST_F(LoadTest, MethodTargetDrivesTheEchoServer) {
  std::unique_ptr<UnaryTarget> target =
      MakeMethodTarget(channel_, "", kEchoMethod);
  LoadOptions options;
  options.calls = 50;
  options.concurrency = 5;
  const Samples samples = RunUnary(*target, Shape(), options);
  for (const absl::StatusCode code : samples.codes) {
    EXPECT_EQ(code, absl::StatusCode::kOk);
  }
  EXPECT_EQ(echo_.calls(), 50);
  EXPECT_TRUE(payouts_.requests().empty());
}

// The echo server's shapes (echo_service.h): each answers every call, in
// full, whether it serves on the callback or the async API and answers
// inline or from a pool.
struct EchoShape {
  bool async;
  int answer_threads;
};

class EchoShapeTest : public ::testing::TestWithParam<EchoShape> {};

TEST_P(EchoShapeTest, AnswersEveryCallInFull) {
  std::unique_ptr<ThreadPool> answerer;
  if (GetParam().answer_threads > 0) {
    answerer = std::make_unique<ThreadPool>(GetParam().answer_threads);
  }
  EchoService callback_service(answerer.get());
  AsyncEchoServer async_server(answerer.get());
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  std::unique_ptr<grpc::ServerCompletionQueue> cq;
  if (GetParam().async) {
    builder.RegisterService(async_server.service());
    cq = builder.AddCompletionQueue();
  } else {
    builder.RegisterService(&callback_service);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  if (cq != nullptr) async_server.Start(std::move(cq));
  std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());

  std::unique_ptr<UnaryTarget> target =
      MakeMethodTarget(channel, "", kEchoMethod);
  LoadOptions options;
  options.calls = 200;  // more than the async server asks for ahead
  options.concurrency = 8;
  const Samples samples = RunUnary(*target, TestShape(), options);
  for (const absl::StatusCode code : samples.codes) {
    EXPECT_EQ(code, absl::StatusCode::kOk);
  }

  auto stub = ::aopay::echo::v1::EchoService::NewStub(channel);
  v1::CreatePayoutRequest request = MakeRequest(TestShape(), 7);
  v1::Payout payout;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoSeconds(kWait));
  ASSERT_TRUE(stub->Echo(&context, request, &payout).ok());
  EXPECT_EQ(payout.request_id(), request.request_id());
  EXPECT_EQ(payout.state(), v1::PAYOUT_STATE_ACCEPTED);
  EXPECT_EQ(payout.payout_id().size(), 29u);
  EXPECT_TRUE(
      MessageDifferencer::Equals(payout.beneficiary(), request.beneficiary()));
  EXPECT_EQ(callback_service.calls() + async_server.calls(), 201);

  server->Shutdown();
  if (answerer != nullptr) answerer->Stop();
  async_server.Stop();
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, EchoShapeTest,
    ::testing::Values(EchoShape{false, 0}, EchoShape{false, 2},
                      EchoShape{true, 0}, EchoShape{true, 2}),
    [](const ::testing::TestParamInfo<EchoShape>& info) {
      return absl::StrCat(
          info.param.async ? "Async" : "Callback",
          info.param.answer_threads > 0 ? "FromAPool" : "Inline");
    });

// Runs payout-bench with `args`; returns its exit status, stdout in `out`.
int RunBench(const std::string& args, std::string* out) {
  const std::string command =
      absl::StrCat(PAYOUT_BENCH_BIN, " ", args, " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0)
    out->append(buffer, n);
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(PayoutBenchProgramTest, HelpListsItsOwnFlags) {
  std::string out;
  RunBench("--help", &out);
  for (const char* flag : {"--replay_fraction", "--mode", "--echo",
                           "--progress", "--rate", "--concurrency"}) {
    EXPECT_THAT(out, HasSubstr(flag));
  }
  EXPECT_THAT(out, ::testing::Not(HasSubstr("No flags matched")));
}

TEST(PayoutBenchProgramTest, TransferModeIsNoLongerMode) {
  std::string out;
  EXPECT_EQ(RunBench("--mode=NEFT", &out), 2);
  EXPECT_THAT(out, HasSubstr("--transfer_mode"));
  out.clear();
  EXPECT_EQ(RunBench("--mode=batch --rate=10", &out), 2);
}

TEST_F(LoadTest, ProgramDrivesTheEchoServerAndWritesItsReport) {
  const std::string json = absl::StrCat(::testing::TempDir(), "/echo.json");
  std::string out;
  ASSERT_EQ(RunBench(absl::StrCat("--target=127.0.0.1:", port_,
                                  " --echo --payouts=200 --concurrency=4 "
                                  "--replay_fraction=0.1 --json_out=",
                                  json),
                     &out),
            0)
      << out;
  EXPECT_THAT(out, HasSubstr("throughput"));
  EXPECT_THAT(out, HasSubstr("(192 answers with 4 in flight)"));
  EXPECT_EQ(echo_.calls(), 200);
  std::ifstream in(json);
  std::stringstream report;
  report << in.rdbuf();
  EXPECT_THAT(report.str(), HasSubstr("\"method\": \"Echo\""));
  EXPECT_THAT(report.str(), HasSubstr("\"OK\": 200"));
  EXPECT_THAT(report.str(), HasSubstr("\"steadyPayouts\": 192"));
  EXPECT_THAT(report.str(), HasSubstr("\"steadyPayoutsPerSecond\": "));
}

}  // namespace
}  // namespace bench
}  // namespace aopay
