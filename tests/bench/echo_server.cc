// echo-server: a bare gRPC server (the same gRPC build and callback API as
// the gateway) to compare the gateway with. One method, EchoService.Echo,
// answers every CreatePayoutRequest at once with a Payout of the gateway's
// size. Prints "listening on HOST:PORT" once it accepts calls; stops on
// SIGTERM or SIGINT.

#include <pthread.h>

#include <csignal>
#include <iostream>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_cat.h"
#include "common/flag_help.h"
#include "common/mutex_checks.h"
#include "echo_service.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "address HOST:PORT to serve on; port 0 picks a free one");

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
  aopay::bench::EchoService service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "echo-server: cannot listen on " << listen << std::endl;
    return 1;
  }
  std::cout << "listening on " << listen.substr(0, colon) << ":" << port
            << std::endl;

  int signal_number = 0;
  while (sigwait(&signals, &signal_number) != 0) {
  }
  server->Shutdown();
  std::cerr << "echo-server: stopped after " << service.calls() << " call(s)"
            << std::endl;
  return 0;
}
