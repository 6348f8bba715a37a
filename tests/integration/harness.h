#ifndef AOPAY_TESTS_INTEGRATION_HARNESS_H_
#define AOPAY_TESTS_INTEGRATION_HARNESS_H_

// Real processes on loopback for integration tests: the sandbox, the gateway
// and payoutctl, started from the build tree, each on a port the kernel
// picks. Nothing here sleeps to synchronise: readiness is the process's own
// "listening on HOST:PORT" line, and conditions are polled with a deadline.

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/payout_client.h"
#include "grpc/health/v1/health.pb.h"

namespace aopay::testing {

// A fresh directory under the test's temporary directory.
std::string MakeTempDir();

// The rows `sql` selects from the SQLite ledger file at `path` (opened
// read-only, beside a running gateway if need be), each as its columns'
// text (NULL as ""), with `params` bound as text to ?1, ?2, ...; a test
// failure, and no rows, when the file or the query cannot be read.
std::vector<std::vector<std::string>> QueryLedgerFile(
    const std::string& path, const std::string& sql,
    const std::vector<std::string>& params = {});

// A child process with stdout on a pipe (for the readiness line) and stderr
// in a file. Killed (SIGKILL) when destroyed if still running.
class ChildProcess {
 public:
  ChildProcess(std::vector<std::string> argv, std::string stderr_path,
               std::vector<std::string> env = {});
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // The HOST:PORT of the first "listening on HOST:PORT" line on stdout.
  absl::StatusOr<std::string> WaitForListening(absl::Duration timeout);
  // Sends `signal` and waits for the exit; returns the exit status as
  // `waitpid` reports it.
  int Signal(int signal_number);
  // Waits for the exit (the process must end by itself).
  int Wait();
  bool running() const { return pid_ > 0; }
  // The process id while running, -1 after it ended.
  pid_t pid() const { return pid_; }
  const std::string& stderr_path() const { return stderr_path_; }

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string stderr_path_;
  std::string pending_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs a command to completion, capturing stdout and stderr.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::string& stdin_text = "");

// One request the sandbox received, from its journal.
struct JournalEntry {
  std::string path;
  std::string body;            // raw, as sent
  std::string account_number;  // from the body, "" when unreadable
};

// aopay-sandbox on 127.0.0.1:0 with a journal.
class SandboxProcess {
 public:
  explicit SandboxProcess(std::vector<std::string> extra_flags = {});
  const std::string& url() const { return url_; }
  std::vector<JournalEntry> Journal() const;
  // Payout calls received for `account`.
  int PayoutsFor(const std::string& account) const;
  int CountPath(const std::string& path) const;
  // Polls the journal until `done` holds or `timeout` passes.
  bool WaitForJournal(
      const std::function<bool(const std::vector<JournalEntry>&)>& done,
      absl::Duration timeout) const;

 private:
  std::string dir_;
  std::string journal_path_;
  std::unique_ptr<ChildProcess> process_;
  std::string url_;
};

// payout-server on 127.0.0.1:0 against `aopay_url`, ledger in `ledger_path`
// (a SQLite file, or a postgresql:// URI).
class GatewayProcess {
 public:
  GatewayProcess(const std::string& aopay_url, const std::string& ledger_path,
                 std::vector<std::string> extra_flags = {});
  const std::string& address() const { return address_; }
  const std::string& metrics_address() const { return metrics_address_; }
  PayoutClient& client() { return *client_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  ChildProcess& process() { return *process_; }
  std::string Stderr() const;

 private:
  std::unique_ptr<ChildProcess> process_;
  std::string address_;
  std::string metrics_address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<PayoutClient> client_;
};

// A 12-digit account number ending in `suffix` (4 digits), unique within the
// test process.
std::string UniqueAccount(const std::string& suffix = "1836");
// A request id unique within the test run.
std::string UniqueRequestId(const std::string& prefix = "req");
// A valid request for `account`.
v1::CreatePayoutRequest ValidRequest(const std::string& account,
                                     int64_t amount_paise = 1234);

// The body the gateway must send for ValidRequest(account, amount), built
// here by hand (not with the gateway's codec).
std::string ExpectedPayoutBody(const std::string& account,
                               const std::string& amount,
                               const std::string& registration);

// Polls `check` until it returns true or `timeout` passes.
bool Eventually(const std::function<bool()>& check, absl::Duration timeout);

// grpc.health.v1.Health/Check of `service` ("" for the server as a whole);
// UNKNOWN when the call fails.
grpc::health::v1::HealthCheckResponse::ServingStatus CheckHealth(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& service);

// Fetches http://ADDRESS/PATH; "" when it fails.
std::string HttpGet(const std::string& address, const std::string& path);

}  // namespace aopay::testing

#endif  // AOPAY_TESTS_INTEGRATION_HARNESS_H_
