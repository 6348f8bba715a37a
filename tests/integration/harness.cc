#include "tests/integration/harness.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "rapidjson/document.h"

extern char** environ;

namespace aopay::testing {
namespace {

constexpr absl::Duration kStartTimeout = absl::Seconds(30);

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

void ReadAll(int fd, std::string* out) {
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) out->append(buffer, n);
}

}  // namespace

std::string MakeTempDir() {
  std::string pattern = ::testing::TempDir() + "payout-it-XXXXXX";
  char* made = mkdtemp(pattern.data());
  EXPECT_NE(made, nullptr) << std::strerror(errno);
  return pattern;
}

std::vector<std::vector<std::string>> QueryLedgerFile(
    const std::string& path, const std::string& sql,
    const std::vector<std::string>& params) {
  std::vector<std::vector<std::string>> rows;
  sqlite3* db = nullptr;
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) !=
          SQLITE_OK ||
      sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << path << ": " << sqlite3_errmsg(db) << " (" << sql << ")";
    sqlite3_close(db);
    return rows;
  }
  for (size_t i = 0; i < params.size(); ++i) {
    sqlite3_bind_text(stmt, static_cast<int>(i + 1), params[i].c_str(), -1,
                      SQLITE_TRANSIENT);
  }
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    std::vector<std::string>& row = rows.emplace_back();
    for (int c = 0; c < sqlite3_column_count(stmt); ++c) {
      const unsigned char* text = sqlite3_column_text(stmt, c);
      row.emplace_back(text == nullptr ? ""
                                       : reinterpret_cast<const char*>(text));
    }
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return rows;
}

ChildProcess::ChildProcess(std::vector<std::string> argv,
                           std::string stderr_path,
                           std::vector<std::string> env)
    : stderr_path_(std::move(stderr_path)) {
  int out_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe: " << std::strerror(errno);
    return;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO,
                                   stderr_path_.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null",
                                   O_RDONLY, 0);
  std::vector<std::string> environment;
  for (char** e = environ; *e != nullptr; ++e) environment.emplace_back(*e);
  for (std::string& e : env) environment.push_back(std::move(e));
  std::vector<char*> c_argv = CStrings(argv);
  std::vector<char*> c_env = CStrings(environment);
  const int spawned = posix_spawn(&pid_, c_argv[0], &actions, nullptr,
                                  c_argv.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  close(out_pipe[1]);
  stdout_fd_ = out_pipe[0];
  if (spawned != 0) {
    ADD_FAILURE() << "spawn " << argv[0] << ": " << std::strerror(spawned);
    pid_ = -1;
  }
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0) Signal(SIGKILL);
  if (stdout_fd_ >= 0) close(stdout_fd_);
  // In a sanitizer build a child's report fails the test, also when the
  // child is killed here and never gets to exit with the sanitizer's code.
  const std::string log = ReadFile(stderr_path_);
  for (absl::string_view marker :
       {"SUMMARY: ThreadSanitizer", "SUMMARY: AddressSanitizer",
        "SUMMARY: UndefinedBehaviorSanitizer"}) {
    if (absl::StrContains(log, marker)) {
      ADD_FAILURE() << marker << " in " << stderr_path_ << ":\n" << log;
      break;
    }
  }
}

absl::StatusOr<std::string> ChildProcess::WaitForListening(
    absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const size_t line_end = pending_.find('\n');
    if (line_end != std::string::npos) {
      std::string line = pending_.substr(0, line_end);
      pending_.erase(0, line_end + 1);
      constexpr absl::string_view kPrefix = "listening on ";
      if (absl::StartsWith(line, kPrefix)) return line.substr(kPrefix.size());
      continue;
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no 'listening on' line; stderr:\n", ReadFile(stderr_path_)));
    }
    pollfd fd{stdout_fd_, POLLIN, 0};
    if (poll(&fd, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <=
        0) {
      continue;
    }
    char buffer[512];
    const ssize_t n = read(stdout_fd_, buffer, sizeof(buffer));
    if (n <= 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "exited before listening; stderr:\n", ReadFile(stderr_path_)));
    }
    pending_.append(buffer, n);
  }
}

int ChildProcess::Signal(int signal_number) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal_number);
  return Wait();
}

int ChildProcess::Wait() {
  if (pid_ <= 0) return -1;
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  return status;
}

CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::string& stdin_text) {
  CommandResult result;
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0 ||
      pipe2(err_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe: " << std::strerror(errno);
    return result;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_pipe[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], STDERR_FILENO);
  std::vector<std::string> args = argv;
  std::vector<char*> c_argv = CStrings(args);
  pid_t pid = -1;
  const int spawned =
      posix_spawn(&pid, c_argv[0], &actions, nullptr, c_argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (spawned != 0) {
    ADD_FAILURE() << "spawn " << argv[0] << ": " << std::strerror(spawned);
    close(in_pipe[1]);
    close(out_pipe[0]);
    close(err_pipe[0]);
    return result;
  }
  std::thread writer([fd = in_pipe[1], &stdin_text] {
    size_t written = 0;
    while (written < stdin_text.size()) {
      const ssize_t n =
          write(fd, stdin_text.data() + written, stdin_text.size() - written);
      if (n <= 0) break;
      written += n;
    }
    close(fd);
  });
  std::thread err_reader([fd = err_pipe[0], &result] {
    ReadAll(fd, &result.err);
    close(fd);
  });
  ReadAll(out_pipe[0], &result.out);
  close(out_pipe[0]);
  writer.join();
  err_reader.join();
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

SandboxProcess::SandboxProcess(std::vector<std::string> extra_flags)
    : dir_(MakeTempDir()), journal_path_(dir_ + "/journal.jsonl") {
  std::vector<std::string> argv = {AOPAY_SANDBOX_BIN, "--listen=127.0.0.1:0",
                                   "--journal=" + journal_path_};
  for (std::string& flag : extra_flags) argv.push_back(std::move(flag));
  process_ =
      std::make_unique<ChildProcess>(std::move(argv), dir_ + "/sandbox.stderr");
  absl::StatusOr<std::string> address =
      process_->WaitForListening(kStartTimeout);
  EXPECT_TRUE(address.ok()) << address.status();
  if (address.ok()) url_ = "http://" + *address;
}

std::vector<JournalEntry> SandboxProcess::Journal() const {
  std::vector<JournalEntry> entries;
  std::ifstream file(journal_path_);
  std::string line;
  while (std::getline(file, line)) {
    rapidjson::Document doc;
    doc.Parse(line.c_str());
    if (doc.HasParseError() || !doc.IsObject()) continue;  // a partial line
    JournalEntry entry;
    if (doc.HasMember("path") && doc["path"].IsString()) {
      entry.path = doc["path"].GetString();
    }
    if (doc.HasMember("body") && doc["body"].IsString()) {
      entry.body.assign(doc["body"].GetString(), doc["body"].GetStringLength());
    }
    rapidjson::Document body;
    body.Parse(entry.body.c_str());
    if (!body.HasParseError() && body.IsObject() &&
        body.HasMember("accountNumber") && body["accountNumber"].IsString()) {
      entry.account_number = body["accountNumber"].GetString();
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

int SandboxProcess::PayoutsFor(const std::string& account) const {
  int count = 0;
  for (const JournalEntry& entry : Journal()) {
    if (entry.path == "/api/V6/Payout/AOPPayout" &&
        entry.account_number == account) {
      ++count;
    }
  }
  return count;
}

int SandboxProcess::CountPath(const std::string& path) const {
  int count = 0;
  for (const JournalEntry& entry : Journal()) count += entry.path == path;
  return count;
}

bool SandboxProcess::WaitForJournal(
    const std::function<bool(const std::vector<JournalEntry>&)>& done,
    absl::Duration timeout) const {
  return Eventually([&] { return done(Journal()); }, timeout);
}

GatewayProcess::GatewayProcess(const std::string& aopay_url,
                               const std::string& ledger_path,
                               std::vector<std::string> extra_flags) {
  std::vector<std::string> argv = {
      PAYOUT_SERVER_BIN, "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
      "--aopay_url=" + aopay_url, "--shutdown_grace=10s"};
  // A postgresql:// URI names a database; anything else a SQLite file,
  // beside which the gateway's stderr is kept.
  const bool postgres = ledger_path.rfind("postgresql://", 0) == 0;
  argv.push_back(postgres ? "--ledger=" + ledger_path
                          : "--ledger=sqlite:" + ledger_path);
  if (aopay_url != "sandbox") argv.push_back("--registration_id=AOP-SANDBOX");
  for (std::string& flag : extra_flags) argv.push_back(std::move(flag));
  process_ = std::make_unique<ChildProcess>(
      std::move(argv),
      (postgres ? MakeTempDir() + "/gateway" : ledger_path) + ".stderr");
  absl::StatusOr<std::string> address =
      process_->WaitForListening(kStartTimeout);
  EXPECT_TRUE(address.ok()) << address.status();
  if (!address.ok()) return;
  address_ = *address;
  Eventually(
      [&] {
        const std::string log = Stderr();
        const size_t at = log.find("metrics on http://");
        if (at == std::string::npos) return false;
        const size_t start = at + std::strlen("metrics on http://");
        metrics_address_ =
            log.substr(start, log.find("/metrics", start) - start);
        return true;
      },
      absl::Seconds(10));
  channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  client_ = std::make_unique<PayoutClient>(channel_);
}

std::string GatewayProcess::Stderr() const {
  return ReadFile(process_->stderr_path());
}

std::string UniqueAccount(const std::string& suffix) {
  static std::atomic<int> counter{0};
  // 4 digits of process id, 4 of counter, then the scripted suffix.
  return absl::StrFormat("%04d%04d%s", getpid() % 10000, counter.fetch_add(1),
                         suffix);
}

std::string UniqueRequestId(const std::string& prefix) {
  static std::atomic<int> counter{0};
  return absl::StrFormat("%s-%d-%d-%d", prefix, getpid(),
                         absl::ToUnixMicros(absl::Now()) % 1000000000,
                         counter.fetch_add(1));
}

v1::CreatePayoutRequest ValidRequest(const std::string& account,
                                     int64_t amount_paise) {
  v1::CreatePayoutRequest request;
  request.set_request_id(UniqueRequestId());
  request.set_amount_paise(amount_paise);
  request.set_mode(v1::TRANSFER_MODE_IMPS);
  v1::Beneficiary* beneficiary = request.mutable_beneficiary();
  beneficiary->set_account_number(account);
  beneficiary->set_ifsc("SBIN0000002");
  beneficiary->set_name("Dean Jon");
  beneficiary->set_email("abc@gmail.com");
  beneficiary->set_mobile("9959640000");
  return request;
}

std::string ExpectedPayoutBody(const std::string& account,
                               const std::string& amount,
                               const std::string& registration) {
  return absl::StrCat(R"({"accountNumber":")", account, R"(","amount":")",
                      amount,
                      R"(","transactionType":"IMPS","beneficiaryIFSC":)"
                      R"("SBIN0000002","beneficiaryName":"Dean Jon",)"
                      R"("emailID":"abc@gmail.com","mobileNo":"9959640000",)"
                      R"("registrationID":")",
                      registration, R"("})");
}

bool Eventually(const std::function<bool()>& check, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration pause = absl::Milliseconds(5);
  while (true) {
    if (check()) return true;
    if (absl::Now() >= deadline) return false;
    // Polling an observable condition, not a guess at how long work takes.
    absl::SleepFor(pause);
    pause = std::min(pause * 2, absl::Milliseconds(100));
  }
}

std::string HttpGet(const std::string& address, const std::string& path) {
  const size_t colon = address.rfind(':');
  httplib::Client client(address.substr(0, colon),
                         std::stoi(address.substr(colon + 1)));
  auto response = client.Get(path.c_str());
  if (!response || response->status != 200) return "";
  return response->body;
}

grpc::health::v1::HealthCheckResponse::ServingStatus CheckHealth(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  if (!stub->Check(&context, request, &response).ok()) {
    return grpc::health::v1::HealthCheckResponse::UNKNOWN;
  }
  return response.status();
}

}  // namespace aopay::testing
