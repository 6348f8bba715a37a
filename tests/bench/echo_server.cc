// echo-server: a bare gRPC server (the same gRPC build and callback API as
// the gateway) to compare the gateway with. One method, EchoService.Echo,
// answers every CreatePayoutRequest at once with a Payout of the gateway's
// size. Prints "listening on HOST:PORT" once it accepts calls; stops on
// SIGTERM or SIGINT. --api, --answer_threads and --health change how it
// serves, to measure what each costs (echo_service.h).

#include <pthread.h>

#include <csignal>
#include <iostream>
#include <memory>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_cat.h"
#include "common/flag_help.h"
#include "common/mutex_checks.h"
#include "echo_service.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/executor/executor.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "address HOST:PORT to serve on; port 0 picks a free one");
ABSL_FLAG(std::string, api, "callback",
          "callback (gRPC's callback API, as the gateway serves) or async "
          "(the async API, one thread of the server's own driving one "
          "completion queue)");
ABSL_FLAG(int, answer_threads, 0,
          "answer each call from a pool of this many threads instead of "
          "inline, as the gateway answers from its callbacks threads (0: "
          "inline)");
ABSL_FLAG(bool, health, false,
          "also serve gRPC's default health service, a callback-API service "
          "(as the gateway does)");

int main(int argc, char** argv) {
  aopay::SkipLockOrderChecksInReleaseBuilds();
  absl::SetProgramUsageMessage(
      "a bare gRPC echo server to compare the payout gateway with.");
  absl::FlagsUsageConfig usage;
  aopay::HelpListsFlagsOf(usage, "echo_server.cc");
  absl::SetFlagsUsageConfig(usage);
  if (absl::ParseCommandLine(argc, argv).size() > 1) {
    std::cerr << "echo-server: unexpected argument" << std::endl;
    return 2;
  }

  // Signals are taken by sigwait below; gRPC's threads inherit the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string listen = absl::GetFlag(FLAGS_listen);
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) {
    std::cerr << "echo-server: --listen must be HOST:PORT" << std::endl;
    return 2;
  }
  const std::string api = absl::GetFlag(FLAGS_api);
  if (api != "callback" && api != "async") {
    std::cerr << "echo-server: --api must be callback or async" << std::endl;
    return 2;
  }
  const int answer_threads = absl::GetFlag(FLAGS_answer_threads);
  if (answer_threads < 0) {
    std::cerr << "echo-server: --answer_threads must not be negative"
              << std::endl;
    return 2;
  }
  std::unique_ptr<aopay::ThreadPool> answerer;
  if (answer_threads > 0) {
    answerer = std::make_unique<aopay::ThreadPool>(
        static_cast<size_t>(answer_threads), "answerer");
  }
  aopay::bench::EchoService callback_service(answerer.get());
  aopay::bench::AsyncEchoServer async_server(answerer.get());
  if (absl::GetFlag(FLAGS_health)) {
    grpc::EnableDefaultHealthCheckService(true);
  }
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  std::unique_ptr<grpc::ServerCompletionQueue> cq;
  if (api == "async") {
    builder.RegisterService(async_server.service());
    cq = builder.AddCompletionQueue();
  } else {
    builder.RegisterService(&callback_service);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "echo-server: cannot listen on " << listen << std::endl;
    return 1;
  }
  if (cq != nullptr) async_server.Start(std::move(cq));
  std::cout << "listening on " << listen.substr(0, colon) << ":" << port
            << std::endl;

  int signal_number = 0;
  while (sigwait(&signals, &signal_number) != 0) {
  }
  server->Shutdown();
  // Answers still on their way finish before the queue they report to
  // closes.
  if (answerer != nullptr) answerer->Stop();
  async_server.Stop();
  std::cerr << "echo-server: stopped after "
            << callback_service.calls() + async_server.calls() << " call(s)"
            << std::endl;
  return 0;
}
