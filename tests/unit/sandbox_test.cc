// The sandbox over real HTTP on loopback, as the gateway sees it: the
// documented bodies, validation, every scripted account suffix, the status
// endpoint, the journal, latency, concurrency and stopping. Bodies are
// written and read here by hand (RapidJSON), never with the gateway's codec.

#include "server/sandbox/sandbox.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "rapidjson/document.h"

namespace aopay {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kPayoutPath[] = "/api/V6/Payout/AOPPayout";
constexpr char kStatusPath[] = "/api/V6/Payout/AOPPayoutStatus";
constexpr char kRegistration[] = "AOP-SANDBOX";
constexpr char kMessage403[] =
    "APIs not enabled. Please reach out to care@AOP.com";
constexpr char kMessage409[] = "Beneficiary Id already exists";
constexpr char kMessage412[] = "Post data is empty or not a valid JSON";
constexpr char kMessage422[] = "Please provide a valid Bank IFSC code.";
constexpr char kAccepted[] = "fundTransfer successfully processed";

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer builds only. Debian's libcpp-httplib is not instrumented
// and builds function-local statics on first use: regexes in Client's
// constructor and ClientImpl::read_response_line. A thread that finds such a
// static already built skips __cxa_guard_acquire (the only step TSan sees)
// after a plain load of the guard inside the library, so this test's client
// threads were reported as racing with the one that built it. Building them
// before main, before any test starts a thread, lets thread creation order
// them before every user. Nothing goes over the network: a throwaway client
// reads an answer from memory.

// Reads `input` and discards what is written back.
class MemoryStream : public httplib::Stream {
 public:
  explicit MemoryStream(std::string input) : input_(std::move(input)) {}
  bool is_readable() const override { return true; }
  bool is_writable() const override { return true; }
  ssize_t read(char* ptr, size_t size) override {
    const size_t n = std::min(size, input_.size() - read_);
    std::memcpy(ptr, input_.data() + read_, n);
    read_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char*, size_t size) override {
    return static_cast<ssize_t>(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = "127.0.0.1";
    port = 0;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = "127.0.0.1";
    port = 0;
  }
  socket_t socket() const override { return INVALID_SOCKET; }

 private:
  const std::string input_;
  size_t read_ = 0;
};

class ClientStaticsWarmer : public httplib::ClientImpl {
 public:
  ClientStaticsWarmer() : httplib::ClientImpl("127.0.0.1", 1) {}
  void Warm() {
    MemoryStream stream("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    httplib::Request request;
    request.method = "GET";
    request.path = "/";
    httplib::Response response;
    httplib::Error error = httplib::Error::Success;
    process_request(stream, request, response, /*close_connection=*/false,
                    error);
  }
};

const bool kHttplibClientStaticsBuilt = [] {
  ClientStaticsWarmer().Warm();
  httplib::Client client("http://127.0.0.1:1");  // parses the URL only
  return true;
}();
#endif

// ---------------------------------------------------------------------------
// Helpers.

std::unique_ptr<Sandbox> StartSandbox(SandboxOptions options = {}) {
  options.port = 0;
  absl::StatusOr<std::unique_ptr<Sandbox>> sandbox =
      Sandbox::Start(std::move(options));
  EXPECT_TRUE(sandbox.ok()) << sandbox.status();
  return sandbox.ok() ? *std::move(sandbox) : nullptr;
}

std::string Quote(const std::string& text) { return "\"" + text + "\""; }

// A JSON object from members whose values are raw JSON text.
using Members = std::vector<std::pair<std::string, std::string>>;
std::string Object(const Members& members) {
  std::vector<std::string> parts;
  for (const auto& [key, value] : members) {
    parts.push_back(Quote(key) + ":" + value);
  }
  return "{" + absl::StrJoin(parts, ",") + "}";
}

Members PayoutMembers(const std::string& account = "100000011836") {
  return {{"accountNumber", Quote(account)},
          {"amount", Quote("12.00")},
          {"transactionType", Quote("IMPS")},
          {"beneficiaryIFSC", Quote("SBIN0000002")},
          {"beneficiaryName", Quote("Dean Jon")},
          {"emailID", Quote("abc@gmail.com")},
          {"mobileNo", Quote("9959640000")},
          {"registrationID", Quote(kRegistration)}};
}

std::string PayoutBody(const std::string& account = "100000011836") {
  return Object(PayoutMembers(account));
}

Members With(Members members, const std::string& key,
             const std::string& raw_value) {
  for (auto& member : members) {
    if (member.first == key) member.second = raw_value;
  }
  return members;
}

Members Without(Members members, const std::string& key) {
  Members out;
  for (auto& member : members) {
    if (member.first != key) out.push_back(std::move(member));
  }
  return out;
}

std::string StatusBody(const std::string& transaction_id,
                       const std::string& registration = kRegistration) {
  return Object({{"transactionID", Quote(transaction_id)},
                 {"registrationID", Quote(registration)}});
}

std::unique_ptr<httplib::Client> ClientFor(const Sandbox& sandbox) {
  auto client = std::make_unique<httplib::Client>(sandbox.base_url());
  client->set_connection_timeout(std::chrono::seconds(5));
  client->set_read_timeout(std::chrono::seconds(30));
  client->enable_server_certificate_verification(false);
  client->set_tcp_nodelay(true);
  return client;
}

httplib::Result Post(const Sandbox& sandbox, const std::string& path,
                     const std::string& body,
                     const std::string& content_type = "application/json") {
  return ClientFor(sandbox)->Post(path, body, content_type);
}

rapidjson::Document Parse(const std::string& text) {
  rapidjson::Document document;
  document.Parse(text.data(), text.size());
  EXPECT_FALSE(document.HasParseError()) << text;
  return document;
}

// The string at a path of member names; "<missing>" when absent or not a
// string.
std::string At(const rapidjson::Value& value,
               std::initializer_list<const char*> path) {
  const rapidjson::Value* current = &value;
  for (const char* name : path) {
    if (!current->IsObject()) return "<missing>";
    const auto member = current->FindMember(name);
    if (member == current->MemberEnd()) return "<missing>";
    current = &member->value;
  }
  if (!current->IsString()) return "<missing>";
  return std::string(current->GetString(), current->GetStringLength());
}

struct Accepted {
  std::string transaction_id;
  std::string reference_no;
};

Accepted MustAccept(const Sandbox& sandbox, const std::string& account) {
  httplib::Result result = Post(sandbox, kPayoutPath, PayoutBody(account));
  EXPECT_TRUE(result) << httplib::to_string(result.error());
  if (!result) return {};
  EXPECT_EQ(result->status, 200) << result->body;
  const rapidjson::Document body = Parse(result->body);
  return {At(body, {"initiateAuthGenericFundTransferAPIResp", "resourceData",
                    "transactionID"}),
          At(body, {"initiateAuthGenericFundTransferAPIResp", "resourceData",
                    "transactionReferenceNo"})};
}

// The transactionStatus word the status endpoint reports, or "HTTP <n>".
std::string StatusWord(const Sandbox& sandbox, const std::string& id,
                       const std::string& registration = kRegistration) {
  httplib::Result result =
      Post(sandbox, kStatusPath, StatusBody(id, registration));
  if (!result) return "no answer";
  if (result->status != 200) return absl::StrCat("HTTP ", result->status);
  return At(Parse(result->body), {"resourceData", "transactionStatus"});
}

bool Eventually(const std::function<bool()>& condition,
                absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return condition();
}

std::string TempPath(const std::string& name) {
  static std::atomic<int> counter{0};
  return absl::StrCat(::testing::TempDir(), "/sandbox_test_", getpid(), "_",
                      counter.fetch_add(1), "_", name);
}

// A connection to 127.0.0.1:port whose reads time out after 10 s; -1 when
// it could not be made.
int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) !=
      0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& data) {
  return send(fd, data.data(), data.size(), MSG_NOSIGNAL) ==
         static_cast<ssize_t>(data.size());
}

// Every byte received on `fd` until the server closes it.
std::string ReadUntilClosed(int fd) {
  std::string received;
  char buffer[4096];
  ssize_t n = 0;
  while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) {
    received.append(buffer, static_cast<size_t>(n));
  }
  return received;
}

// Sends `request` on a fresh connection and returns every byte received
// until the server closes it.
std::string RawExchange(int port, const std::string& request) {
  const int fd = Connect(port);
  if (fd < 0) return "connect failed";
  const std::string received =
      SendAll(fd, request) ? ReadUntilClosed(fd) : "send failed";
  close(fd);
  return received;
}

// A POST with a JSON body; the connection is closed after its answer unless
// `keep_alive`.
std::string RawPost(const std::string& path, const std::string& body,
                    bool keep_alive = false) {
  return absl::StrCat("POST ", path,
                      " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                      "application/json\r\nContent-Length: ",
                      body.size(), "\r\n",
                      keep_alive ? "" : "Connection: close\r\n", "\r\n", body);
}

// Threads of this process now.
int ThreadCount() {
  int count = 0;
  std::unique_ptr<DIR, int (*)(DIR*)> tasks(opendir("/proc/self/task"),
                                            closedir);
  if (tasks == nullptr) return -1;
  while (const dirent* entry = readdir(tasks.get())) {
    if (entry->d_name[0] != '.') ++count;
  }
  return count;
}

// ---------------------------------------------------------------------------
// Starting.

TEST(SandboxStartTest, PicksAFreePortAndServesAtItsBaseUrl) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  EXPECT_GT(sandbox->port(), 0);
  EXPECT_EQ(sandbox->base_url(),
            absl::StrCat("http://127.0.0.1:", sandbox->port()));
  // Start has returned, so a request must succeed at once.
  MustAccept(*sandbox, "100000011836");
}

TEST(SandboxStartTest, RejectsBadOptions) {
  struct Case {
    std::string name;
    std::function<void(SandboxOptions&)> change;
  };
  const std::vector<Case> cases = {
      {"negative port", [](SandboxOptions& o) { o.port = -1; }},
      {"port too big", [](SandboxOptions& o) { o.port = 65536; }},
      {"empty host", [](SandboxOptions& o) { o.host = ""; }},
      {"no registrations", [](SandboxOptions& o) { o.registrations = {}; }},
      {"empty registration",
       [](SandboxOptions& o) {
         o.registrations = {"A", ""};
       }},
      {"negative latency",
       [](SandboxOptions& o) { o.latency = -absl::Seconds(1); }},
      {"negative latency jitter",
       [](SandboxOptions& o) { o.latency_jitter = -absl::Seconds(1); }},
      {"negative slow", [](SandboxOptions& o) { o.slow = -absl::Seconds(1); }},
      {"negative settle",
       [](SandboxOptions& o) { o.settle = -absl::Seconds(1); }},
      {"cert without key", [](SandboxOptions& o) { o.tls_cert = "x.pem"; }},
      {"key without cert", [](SandboxOptions& o) { o.tls_key = "x.pem"; }},
      {"no threads", [](SandboxOptions& o) { o.threads = 0; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    SandboxOptions options;
    options.port = 0;
    c.change(options);
    absl::StatusOr<std::unique_ptr<Sandbox>> sandbox = Sandbox::Start(options);
    EXPECT_EQ(sandbox.status().code(), absl::StatusCode::kInvalidArgument)
        << sandbox.status();
  }
}

TEST(SandboxStartTest, FailsOnAPortInUse) {
  std::unique_ptr<Sandbox> first = StartSandbox();
  ASSERT_NE(first, nullptr);
  SandboxOptions options;
  options.port = first->port();
  absl::StatusOr<std::unique_ptr<Sandbox>> second = Sandbox::Start(options);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable)
      << second.status();
}

TEST(SandboxStartTest, FailsOnAJournalItCannotOpen) {
  SandboxOptions options;
  options.port = 0;
  options.journal_path = "/nonexistent-directory/journal.jsonl";
  EXPECT_FALSE(Sandbox::Start(options).ok());
}

TEST(SandboxStartTest, FailsOnAnUnreadableCertificate) {
  SandboxOptions options;
  options.port = 0;
  options.tls_cert = "/nonexistent-directory/cert.pem";
  options.tls_key = "/nonexistent-directory/key.pem";
  EXPECT_FALSE(Sandbox::Start(options).ok());
}

// ---------------------------------------------------------------------------
// Success.

TEST(SandboxPayoutTest, SuccessHasTheDocumentedShape) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  const absl::Time before = absl::Now();
  httplib::Result result =
      Post(*sandbox, kPayoutPath, PayoutBody("100000011836"));
  const absl::Time after = absl::Now();
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->get_header_value("Content-Type"), "application/json");

  const rapidjson::Document body = Parse(result->body);
  ASSERT_TRUE(body.IsObject());
  // Exactly the documented members, at every level.
  EXPECT_EQ(body.MemberCount(), 4u);
  const rapidjson::Value& wrapper =
      body["initiateAuthGenericFundTransferAPIResp"];
  ASSERT_TRUE(wrapper.IsObject());
  EXPECT_EQ(wrapper.MemberCount(), 2u);
  ASSERT_TRUE(wrapper["metaData"].IsObject());
  EXPECT_EQ(wrapper["metaData"].MemberCount(), 4u);
  ASSERT_TRUE(wrapper["resourceData"].IsObject());
  EXPECT_EQ(wrapper["resourceData"].MemberCount(), 4u);

  EXPECT_EQ(At(wrapper, {"metaData", "status"}), "SUCCESS");
  EXPECT_EQ(At(wrapper, {"metaData", "message"}), kAccepted);
  EXPECT_EQ(At(wrapper, {"metaData", "version"}), "v1");
  const std::string time = At(wrapper, {"metaData", "time"});
  EXPECT_TRUE(std::regex_match(
      time, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")))
      << time;
  absl::Time parsed;
  std::string error;
  ASSERT_TRUE(absl::ParseTime("%Y-%m-%d%ET%H:%M:%E3SZ", time,
                              absl::UTCTimeZone(), &parsed, &error))
      << error;
  EXPECT_GE(parsed, absl::FromUnixMillis(absl::ToUnixMillis(before)));
  EXPECT_LE(parsed, after);

  EXPECT_EQ(At(wrapper, {"resourceData", "status"}), "ACPT");
  EXPECT_TRUE(
      std::regex_match(At(wrapper, {"resourceData", "transactionReferenceNo"}),
                       std::regex(R"([1-9]\d{11})")));
  EXPECT_TRUE(std::regex_match(At(wrapper, {"resourceData", "transactionID"}),
                               std::regex(R"(TERF\d+)")));
  EXPECT_EQ(At(wrapper, {"resourceData", "beneficiaryName"}), "DEAN JON");

  EXPECT_EQ(At(body, {"statuss"}), "SUCCESS");
  EXPECT_EQ(At(body, {"message"}), kAccepted);
  EXPECT_EQ(At(body, {"value"}), "");
}

TEST(SandboxPayoutTest, IdsAreFresh) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  std::set<std::string> transaction_ids;
  std::set<std::string> reference_nos;
  constexpr int kPayouts = 25;
  for (int i = 0; i < kPayouts; ++i) {
    const Accepted accepted = MustAccept(*sandbox, "100000011836");
    EXPECT_THAT(accepted.transaction_id, StartsWith("TERF"));
    EXPECT_EQ(accepted.reference_no.size(), 12u);
    transaction_ids.insert(accepted.transaction_id);
    reference_nos.insert(accepted.reference_no);
  }
  EXPECT_EQ(transaction_ids.size(), static_cast<size_t>(kPayouts));
  EXPECT_EQ(reference_nos.size(), static_cast<size_t>(kPayouts));
}

TEST(SandboxPayoutTest, AcceptsEveryValidIfscShape) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  for (const char* ifsc : {"SBIN0000002", "HDFC0ABC123", "ICIC0Z9Y8X7"}) {
    SCOPED_TRACE(ifsc);
    httplib::Result result =
        Post(*sandbox, kPayoutPath,
             Object(With(PayoutMembers(), "beneficiaryIFSC", Quote(ifsc))));
    ASSERT_TRUE(result);
    EXPECT_EQ(result->status, 200) << result->body;
  }
}

// ---------------------------------------------------------------------------
// Validation and scripted errors: one row each.

struct ErrorCase {
  std::string name;
  std::string body;
  int sub_code;
  std::string content_type = "application/json";
};

void ExpectDocumentedError(const httplib::Result& result, int sub_code) {
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_EQ(result->status, sub_code);
  EXPECT_EQ(result->get_header_value("Content-Type"), "application/json");
  const rapidjson::Document body = Parse(result->body);
  ASSERT_TRUE(body.IsObject());
  EXPECT_EQ(body.MemberCount(), 3u) << result->body;
  EXPECT_EQ(At(body, {"status"}), "ERROR");
  EXPECT_EQ(At(body, {"subCode"}), absl::StrCat(sub_code));
  const std::string message = sub_code == 403   ? kMessage403
                              : sub_code == 409 ? kMessage409
                              : sub_code == 412 ? kMessage412
                                                : kMessage422;
  EXPECT_EQ(At(body, {"message"}), message);
}

std::vector<ErrorCase> PayoutErrorCases() {
  std::vector<ErrorCase> cases = {
      {"empty body", "", 412},
      {"white space", "  \n", 412},
      {"not JSON", "accountNumber=100000011836", 412},
      {"truncated JSON", PayoutBody().substr(0, 40), 412},
      {"trailing garbage", PayoutBody() + " x", 412},
      {"an array", "[" + PayoutBody() + "]", 412},
      {"a string", "\"hello\"", 412},
      {"a number", "42", 412},
      {"an empty object", "{}", 412},
      {"invalid UTF-8",
       Object(With(PayoutMembers(), "beneficiaryName", "\"D\xff\xfen\"")), 412},
      {"form content type", PayoutBody(), 412,
       "application/x-www-form-urlencoded"},
      {"text content type", PayoutBody(), 412, "text/plain"},
      {"unknown registration",
       Object(With(PayoutMembers(), "registrationID", Quote("AOP-554"))), 403},
      {"registration in another case",
       Object(With(PayoutMembers(), "registrationID", Quote("aop-sandbox"))),
       403},
      {"lower-case IFSC",
       Object(With(PayoutMembers(), "beneficiaryIFSC", Quote("sbin0000002"))),
       422},
      {"IFSC fifth character not 0",
       Object(With(PayoutMembers(), "beneficiaryIFSC", Quote("SBIN1000002"))),
       422},
      {"IFSC too short",
       Object(With(PayoutMembers(), "beneficiaryIFSC", Quote("SBIN000002"))),
       422},
      {"IFSC too long",
       Object(With(PayoutMembers(), "beneficiaryIFSC", Quote("SBIN00000022"))),
       422},
      {"IFSC digit in bank code",
       Object(With(PayoutMembers(), "beneficiaryIFSC", Quote("SB1N0000002"))),
       422},
      {"IFSC punctuation",
       Object(With(PayoutMembers(), "beneficiaryIFSC", Quote("SBIN0-00002"))),
       422},
      {"IFSC with spaces",
       Object(With(PayoutMembers(), "beneficiaryIFSC", Quote(" SBIN0000002"))),
       422},
      // Validation comes in AOPay's order, and before any script.
      {"412 before 403",
       Object(Without(With(PayoutMembers(), "registrationID", Quote("X")),
                      "amount")),
       412},
      {"403 before 422",
       Object(With(With(PayoutMembers(), "registrationID", Quote("X")),
                   "beneficiaryIFSC", Quote("bad"))),
       403},
      {"422 before a scripted 409",
       Object(With(PayoutMembers("100000010409"), "beneficiaryIFSC",
                   Quote("bad"))),
       422},
      // The scripted answers.
      {"scripted 0403", PayoutBody("100000010403"), 403},
      {"scripted 0409", PayoutBody("100000010409"), 409},
      {"scripted 0412", PayoutBody("100000010412"), 412},
      {"scripted 0422", PayoutBody("100000010422"), 422},
  };
  for (const auto& [field, value] : PayoutMembers()) {
    cases.push_back(
        {"missing " + field, Object(Without(PayoutMembers(), field)), 412});
    cases.push_back(
        {field + " a number", Object(With(PayoutMembers(), field, "12")), 412});
    cases.push_back(
        {field + " null", Object(With(PayoutMembers(), field, "null")), 412});
    cases.push_back({field + " an object",
                     Object(With(PayoutMembers(), field, "{\"a\":\"b\"}")),
                     412});
  }
  return cases;
}

TEST(SandboxPayoutTest, AnswersEachErrorAsDocumented) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  for (const ErrorCase& c : PayoutErrorCases()) {
    SCOPED_TRACE(c.name);
    ExpectDocumentedError(Post(*sandbox, kPayoutPath, c.body, c.content_type),
                          c.sub_code);
  }
}

TEST(SandboxPayoutTest, Scripted0429IsAnEmptyTooManyRequests) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  httplib::Result result =
      Post(*sandbox, kPayoutPath, PayoutBody("100000010429"));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 429);
  EXPECT_EQ(result->body, "");
}

TEST(SandboxPayoutTest, Scripted0500IsAnHtmlPage) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  httplib::Result result =
      Post(*sandbox, kPayoutPath, PayoutBody("100000010500"));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 500);
  EXPECT_THAT(result->get_header_value("Content-Type"),
              StartsWith("text/html"));
  EXPECT_THAT(result->body, HasSubstr("<html>"));
  rapidjson::Document document;
  document.Parse(result->body.c_str());
  EXPECT_TRUE(document.HasParseError());
}

TEST(SandboxPayoutTest, Scripted0502ClosesWithoutAByteOfAnswer) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  // The raw exchange works at all: a normal payout gets its answer.
  EXPECT_THAT(RawExchange(sandbox->port(), RawPost(kPayoutPath, PayoutBody())),
              StartsWith("HTTP/1.1 200 "));
  // No status line, no header, nothing.
  EXPECT_EQ(RawExchange(sandbox->port(),
                        RawPost(kPayoutPath, PayoutBody("100000010502"))),
            "");
  // Through an HTTP client: a connection error, not an HTTP status.
  httplib::Result result =
      Post(*sandbox, kPayoutPath, PayoutBody("100000010502"));
  EXPECT_FALSE(result);
  // The request did arrive, and the sandbox goes on serving.
  EXPECT_EQ(sandbox->requests_received(), 3);
  MustAccept(*sandbox, "100000011836");
}

TEST(SandboxPayoutTest, Scripted0504AnswersSuccessOnlyAfterSlow) {
  SandboxOptions options;
  options.slow = absl::Milliseconds(300);
  std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
  ASSERT_NE(sandbox, nullptr);
  const absl::Time start = absl::Now();
  const Accepted accepted = MustAccept(*sandbox, "100000010504");
  EXPECT_GE(absl::Now() - start, options.slow);
  EXPECT_THAT(accepted.transaction_id, StartsWith("TERF"));
  // Only that suffix is slow.
  const absl::Time fast_start = absl::Now();
  MustAccept(*sandbox, "100000011836");
  EXPECT_LT(absl::Now() - fast_start, options.slow);
}

TEST(SandboxPayoutTest, UnknownPathsAreNotFound) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  httplib::Result result =
      Post(*sandbox, "/api/V5/Payout/AOPPayout", PayoutBody());
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 404);
  EXPECT_EQ(At(Parse(result->body), {"status"}), "ERROR");
}

TEST(SandboxPayoutTest, WebhooksAreTakenWithANoContentAnswer) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  httplib::Result result = Post(*sandbox, "/webhooks", R"({"cursor":"x"})");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 204);
  EXPECT_TRUE(result->body.empty());
}

TEST(SandboxPayoutTest, OtherMethodsGetAnEmptyNotFound) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  for (const char* method : {"GET", "PUT", "DELETE", "PATCH", "OPTIONS"}) {
    SCOPED_TRACE(method);
    const std::string answer = RawExchange(
        sandbox->port(),
        absl::StrCat(method, " ", kPayoutPath,
                     " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n"));
    EXPECT_THAT(answer, StartsWith("HTTP/1.1 404 Not Found\r\n"));
    EXPECT_THAT(answer, HasSubstr("\r\nContent-Length: 0\r\n"));
    EXPECT_THAT(answer, ::testing::EndsWith("\r\n\r\n"));  // no body
  }
  // Neither journalled nor counted.
  EXPECT_EQ(sandbox->requests_received(), 0);
}

TEST(SandboxPayoutTest, BodiesOverOneMebibyteAreRefused) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  EXPECT_THAT(
      RawExchange(sandbox->port(),
                  RawPost(kPayoutPath, std::string((1 << 20) + 1, 'x'))),
      StartsWith("HTTP/1.1 413 "));
  EXPECT_EQ(sandbox->requests_received(), 0);
  // 1 MiB itself is read (and is no payout).
  EXPECT_THAT(RawExchange(sandbox->port(),
                          RawPost(kPayoutPath, std::string(1 << 20, 'x'))),
              StartsWith("HTTP/1.1 412 "));
  EXPECT_EQ(sandbox->requests_received(), 1);
}

TEST(SandboxPayoutTest, AnswersPipelinedRequestsInOrder) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  const std::string answers = RawExchange(
      sandbox->port(),
      RawPost(kPayoutPath, PayoutBody("100000010422"), /*keep_alive=*/true) +
          RawPost(kPayoutPath, PayoutBody("100000010409"),
                  /*keep_alive=*/true) +
          RawPost(kStatusPath, StatusBody("TERF1")));
  const size_t first = answers.find("HTTP/1.1 422 ");
  const size_t second = answers.find("HTTP/1.1 409 ");
  const size_t third = answers.find("HTTP/1.1 404 ");
  EXPECT_EQ(first, 0u) << answers;
  EXPECT_NE(second, std::string::npos) << answers;
  EXPECT_NE(third, std::string::npos) << answers;
  EXPECT_LT(first, second);
  EXPECT_LT(second, third);
  EXPECT_EQ(sandbox->requests_received(), 3);
}

// ---------------------------------------------------------------------------
// The status endpoint.

TEST(SandboxStatusTest, ReportsPendingUntilSettleAndScriptedFatesAtOnce) {
  SandboxOptions options;
  options.settle = absl::Hours(1);
  std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
  ASSERT_NE(sandbox, nullptr);
  EXPECT_EQ(
      StatusWord(*sandbox, MustAccept(*sandbox, "100000011836").transaction_id),
      "PENDING");
  EXPECT_EQ(
      StatusWord(*sandbox, MustAccept(*sandbox, "100000010601").transaction_id),
      "FAILED");
  EXPECT_EQ(
      StatusWord(*sandbox, MustAccept(*sandbox, "100000010602").transaction_id),
      "REVERSED");
}

TEST(SandboxStatusTest, ReportsSuccessOnceSettled) {
  SandboxOptions options;
  options.settle = absl::ZeroDuration();
  std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
  ASSERT_NE(sandbox, nullptr);
  const Accepted accepted = MustAccept(*sandbox, "100000011836");
  httplib::Result result =
      Post(*sandbox, kStatusPath, StatusBody(accepted.transaction_id));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->get_header_value("Content-Type"), "application/json");
  const rapidjson::Document body = Parse(result->body);
  EXPECT_EQ(At(body, {"status"}), "SUCCESS");
  EXPECT_NE(At(body, {"message"}), "<missing>");
  EXPECT_EQ(At(body, {"resourceData", "transactionID"}),
            accepted.transaction_id);
  EXPECT_EQ(At(body, {"resourceData", "transactionReferenceNo"}),
            accepted.reference_no);
  EXPECT_EQ(At(body, {"resourceData", "transactionStatus"}), "SUCCESS");
  // 0601 and 0602 stay as scripted.
  EXPECT_EQ(
      StatusWord(*sandbox, MustAccept(*sandbox, "100000010601").transaction_id),
      "FAILED");
  EXPECT_EQ(
      StatusWord(*sandbox, MustAccept(*sandbox, "100000010602").transaction_id),
      "REVERSED");
}

TEST(SandboxStatusTest, MovesFromPendingToSuccessAfterSettle) {
  SandboxOptions options;
  options.settle = absl::Milliseconds(50);
  std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
  ASSERT_NE(sandbox, nullptr);
  const absl::Time accepted_by = absl::Now();
  const std::string id = MustAccept(*sandbox, "100000011836").transaction_id;
  std::set<std::string> words;
  ASSERT_TRUE(Eventually(
      [&] {
        const std::string word = StatusWord(*sandbox, id);
        words.insert(word);
        return word == "SUCCESS";
      },
      absl::Seconds(10)));
  EXPECT_GE(absl::Now() - accepted_by, options.settle);
  words.erase("SUCCESS");
  words.erase("PENDING");
  EXPECT_TRUE(words.empty()) << absl::StrJoin(words, ",");
}

TEST(SandboxStatusTest, UnknownTransactionIsNotFound) {
  SandboxOptions options;
  options.registrations = {kRegistration, "AOP-OTHER"};
  std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
  ASSERT_NE(sandbox, nullptr);
  const std::string id = MustAccept(*sandbox, "100000011836").transaction_id;
  for (const auto& [name, body] :
       std::vector<std::pair<std::string, std::string>>{
           {"never issued", StatusBody("TERF1")},
           {"another registration's", StatusBody(id, "AOP-OTHER")}}) {
    SCOPED_TRACE(name);
    httplib::Result result = Post(*sandbox, kStatusPath, body);
    ASSERT_TRUE(result);
    EXPECT_EQ(result->status, 404);
    EXPECT_EQ(
        result->body,
        R"({"status":"ERROR","subCode":"404","message":"Transaction not found"})");
  }
}

TEST(SandboxStatusTest, ValidatesItsBody) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  const std::string id = MustAccept(*sandbox, "100000011836").transaction_id;
  const std::vector<ErrorCase> cases = {
      {"empty", "", 412},
      {"not JSON", "transactionID=" + id, 412},
      {"an array", "[]", 412},
      {"missing transactionID",
       Object({{"registrationID", Quote(kRegistration)}}), 412},
      {"missing registrationID", Object({{"transactionID", Quote(id)}}), 412},
      {"transactionID a number",
       Object({{"transactionID", "920898"},
               {"registrationID", Quote(kRegistration)}}),
       412},
      {"text content type", StatusBody(id), 412, "text/plain"},
      {"unknown registration", StatusBody(id, "AOP-554"), 403},
  };
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.name);
    ExpectDocumentedError(Post(*sandbox, kStatusPath, c.body, c.content_type),
                          c.sub_code);
  }
}

// ---------------------------------------------------------------------------
// The journal.

struct JournalLine {
  int64_t seq = -1;
  std::string path;
  std::string body;
  int64_t received_unix_ms = -1;
};

std::vector<JournalLine> ReadJournal(const std::string& path) {
  std::vector<JournalLine> lines;
  std::ifstream file(path, std::ios::binary);
  std::string text;
  while (std::getline(file, text)) {
    rapidjson::Document document;
    document.Parse(text.data(), text.size());
    EXPECT_FALSE(document.HasParseError()) << text;
    EXPECT_TRUE(document.IsObject()) << text;
    if (document.HasParseError() || !document.IsObject()) continue;
    EXPECT_EQ(document.MemberCount(), 4u) << text;
    JournalLine line;
    if (document.HasMember("seq") && document["seq"].IsInt64()) {
      line.seq = document["seq"].GetInt64();
    }
    line.path = At(document, {"path"});
    line.body = At(document, {"body"});
    if (document.HasMember("received_unix_ms") &&
        document["received_unix_ms"].IsInt64()) {
      line.received_unix_ms = document["received_unix_ms"].GetInt64();
    }
    lines.push_back(std::move(line));
  }
  return lines;
}

TEST(SandboxJournalTest, RecordsEveryRequestBeforeAnsweringIt) {
  SandboxOptions options;
  options.journal_path = TempPath("journal.jsonl");
  std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
  ASSERT_NE(sandbox, nullptr);

  const std::string awkward_body =
      std::string("{\"quote\":\"\\\"\",\"tab\":\"\t\",\"nul\":\"") +
      std::string(1, '\0') +
      "\",\"rupee\":\"\xe2\x82\xb9\",\"bad\":\"\xff\"}\n";
  struct Sent {
    std::string path;
    std::string body;
  };
  const std::vector<Sent> sent = {
      {kPayoutPath, PayoutBody("100000011836")},
      {kPayoutPath, ""},
      {kPayoutPath, awkward_body},
      {kPayoutPath, PayoutBody("100000010422")},
      {kPayoutPath, PayoutBody("100000010429")},
      {kPayoutPath, PayoutBody("100000010502")},
      {kStatusPath, StatusBody("TERF1")},
      {"/somewhere/else", "x"},
  };
  const int64_t start_ms = absl::ToUnixMillis(absl::Now());
  for (size_t i = 0; i < sent.size(); ++i) {
    SCOPED_TRACE(sent[i].path + " " + std::to_string(i));
    Post(*sandbox, sent[i].path, sent[i].body);
    // Answered (or dropped), so already journalled: no waiting.
    EXPECT_EQ(ReadJournal(options.journal_path).size(), i + 1);
    EXPECT_EQ(sandbox->requests_received(), static_cast<int64_t>(i + 1));
  }
  const int64_t end_ms = absl::ToUnixMillis(absl::Now());

  const std::vector<JournalLine> lines = ReadJournal(options.journal_path);
  ASSERT_EQ(lines.size(), sent.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(lines[i].seq, static_cast<int64_t>(i + 1));
    EXPECT_EQ(lines[i].path, sent[i].path);
    EXPECT_EQ(lines[i].body, sent[i].body);  // byte for byte
    EXPECT_GE(lines[i].received_unix_ms, start_ms);
    EXPECT_LE(lines[i].received_unix_ms, end_ms);
  }
  sandbox->Stop();
  std::remove(options.journal_path.c_str());
}

TEST(SandboxJournalTest, AppendsToAnExistingJournal) {
  SandboxOptions options;
  options.journal_path = TempPath("appended.jsonl");
  for (int run = 1; run <= 2; ++run) {
    std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
    ASSERT_NE(sandbox, nullptr);
    MustAccept(*sandbox, "100000011836");
    EXPECT_EQ(ReadJournal(options.journal_path).size(),
              static_cast<size_t>(run));
  }
  std::remove(options.journal_path.c_str());
}

TEST(SandboxJournalTest, ConcurrentRequestsGetOneWholeLineEach) {
  SandboxOptions options;
  options.journal_path = TempPath("concurrent.jsonl");
  std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
  ASSERT_NE(sandbox, nullptr);
  constexpr int kThreads = 16;
  constexpr int kEach = 10;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&sandbox, t] {
      auto client = ClientFor(*sandbox);
      client->set_keep_alive(true);
      for (int i = 0; i < kEach; ++i) {
        client->Post(kPayoutPath,
                     PayoutBody(absl::StrCat("9", 100000 + t, 10000 + i)),
                     "application/json");
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const std::vector<JournalLine> lines = ReadJournal(options.journal_path);
  ASSERT_EQ(lines.size(), static_cast<size_t>(kThreads * kEach));
  std::set<std::string> bodies;
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i].seq, static_cast<int64_t>(i + 1));
    bodies.insert(lines[i].body);
  }
  EXPECT_EQ(bodies.size(), lines.size());
  sandbox->Stop();
  std::remove(options.journal_path.c_str());
}

TEST(SandboxJournalTest, ARequestItCannotJournalGetsA500AtOnce) {
  SandboxOptions options;
  options.journal_path = "/dev/full";  // every write fails with ENOSPC
  options.latency = absl::Seconds(60);
  std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
  ASSERT_NE(sandbox, nullptr);
  const absl::Time start = absl::Now();
  httplib::Result result =
      Post(*sandbox, kPayoutPath, PayoutBody("100000011836"));
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  // Not the script's answer, and not after the latency.
  EXPECT_EQ(result->status, 500);
  EXPECT_THAT(result->get_header_value("Content-Type"),
              StartsWith("text/html"));
  EXPECT_THAT(result->body, HasSubstr("could not write its journal"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  EXPECT_EQ(sandbox->requests_received(), 0);
}

// ---------------------------------------------------------------------------
// Latency, concurrency, stopping.

TEST(SandboxTimingTest, LatencyDelaysEveryAnswer) {
  SandboxOptions options;
  options.latency = absl::Milliseconds(200);
  std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
  ASSERT_NE(sandbox, nullptr);
  const std::vector<std::pair<std::string, std::string>> requests = {
      {kPayoutPath, PayoutBody("100000011836")},
      {kPayoutPath, "not json"},
      {kPayoutPath, PayoutBody("100000010429")},
      {kStatusPath, StatusBody("TERF1")},
  };
  for (const auto& [path, body] : requests) {
    SCOPED_TRACE(body);
    const absl::Time start = absl::Now();
    httplib::Result result = Post(*sandbox, path, body);
    EXPECT_TRUE(result);
    EXPECT_GE(absl::Now() - start, options.latency);
  }
  // A dropped connection is delayed too.
  const absl::Time start = absl::Now();
  EXPECT_FALSE(Post(*sandbox, kPayoutPath, PayoutBody("100000010502")));
  EXPECT_GE(absl::Now() - start, options.latency);
}

// The jitter's shares come in a fixed order: the first request waits 0.618
// of it, the second 0.236, the third 0.854.
TEST(SandboxTimingTest, LatencyJitterAddsEachRequestsShare) {
  SandboxOptions options;
  options.latency = absl::Milliseconds(50);
  options.latency_jitter = absl::Milliseconds(400);
  std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
  ASSERT_NE(sandbox, nullptr);
  for (const double share : {0.618, 0.236, 0.854}) {
    SCOPED_TRACE(share);
    const absl::Time start = absl::Now();
    EXPECT_TRUE(Post(*sandbox, kPayoutPath, PayoutBody("100000011836")));
    EXPECT_GE(absl::Now() - start,
              options.latency + share * options.latency_jitter);
  }
}

TEST(SandboxTimingTest, AnswersConcurrently) {
  SandboxOptions options;
  options.latency = absl::Milliseconds(500);
  std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
  ASSERT_NE(sandbox, nullptr);
  constexpr int kRequests = 200;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  const absl::Time start = absl::Now();
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&] {
      httplib::Result result =
          Post(*sandbox, kPayoutPath, PayoutBody("100000011836"));
      if (result && result->status == 200) ok.fetch_add(1);
    });
  }
  for (std::thread& thread : threads) thread.join();
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_EQ(ok.load(), kRequests);
  EXPECT_GE(elapsed, options.latency);
  // Serially this would take 100 s; even in batches of eight, 12.5 s.
  EXPECT_LT(elapsed, absl::Seconds(5));
}

TEST(SandboxTimingTest, ServesManyRequestsOnOneConnection) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  auto client = ClientFor(*sandbox);
  client->set_keep_alive(true);
  for (int i = 0; i < 200; ++i) {
    httplib::Result result =
        client->Post(kPayoutPath, PayoutBody(), "application/json");
    ASSERT_TRUE(result) << i << ": " << httplib::to_string(result.error());
    ASSERT_EQ(result->status, 200);
  }
}

TEST(SandboxTimingTest, DelayedAnswersWaitOnTimersNotThreads) {
  SandboxOptions options;
  options.latency = absl::Milliseconds(500);
  std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
  ASSERT_NE(sandbox, nullptr);
  const int threads_before = ThreadCount();
  constexpr int kConnections = 300;
  std::vector<int> connections;
  for (int i = 0; i < kConnections; ++i) {
    const int fd = Connect(sandbox->port());
    ASSERT_GE(fd, 0) << i;
    connections.push_back(fd);
    ASSERT_TRUE(SendAll(fd, RawPost(kPayoutPath, PayoutBody())));
  }
  ASSERT_TRUE(
      Eventually([&] { return sandbox->requests_received() == kConnections; },
                 absl::Seconds(10)));
  // 300 answers are waiting out their latency, and not one more thread.
  EXPECT_EQ(ThreadCount(), threads_before);
  for (const int fd : connections) {
    EXPECT_THAT(ReadUntilClosed(fd), StartsWith("HTTP/1.1 200 OK\r\n"));
    close(fd);
  }
}

TEST(SandboxTimingTest, ClientsThatLeaveBeforeTheirAnswerDoNotDisturbIt) {
  SandboxOptions options;
  options.latency = absl::Milliseconds(200);
  std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
  ASSERT_NE(sandbox, nullptr);
  constexpr int kLeavers = 20;
  for (int i = 0; i < kLeavers; ++i) {
    const int fd = Connect(sandbox->port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(SendAll(fd, RawPost(kPayoutPath, PayoutBody())));
    // Half close politely, half reset: each answer, when its timer fires,
    // goes to a connection that is gone.
    if (i % 2 == 0) {
      const linger reset{1, 0};
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
    }
    close(fd);
  }
  ASSERT_TRUE(
      Eventually([&] { return sandbox->requests_received() == kLeavers; },
                 absl::Seconds(10)));
  // Its answer comes after theirs were written (an earlier deadline fires
  // first).
  MustAccept(*sandbox, "100000011836");
  MustAccept(*sandbox, "100000011836");
}

// Starts a payout on its own thread; the sandbox has it once
// requests_received() counts it.
class PendingPayout {
 public:
  PendingPayout(const Sandbox& sandbox, const std::string& account) {
    thread_ = std::thread([this, &sandbox, account] {
      answered_ =
          static_cast<bool>(Post(sandbox, kPayoutPath, PayoutBody(account)));
      done_.Notify();
    });
  }
  ~PendingPayout() { thread_.join(); }
  bool WaitDone(absl::Duration timeout) {
    return done_.WaitForNotificationWithTimeout(timeout);
  }
  bool answered() const { return answered_; }

 private:
  std::thread thread_;
  absl::Notification done_;
  bool answered_ = false;
};

TEST(SandboxStopTest, ReturnsPromptlyWhileAnAnswerIsPending) {
  struct Case {
    std::string name;
    std::string account;
    absl::Duration latency;
  };
  for (const Case& c : {Case{"slow 0504", "100000010504", absl::ZeroDuration()},
                        Case{"latency", "100000011836", absl::Seconds(60)}}) {
    SCOPED_TRACE(c.name);
    SandboxOptions options;
    options.slow = absl::Seconds(60);
    options.latency = c.latency;
    std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
    ASSERT_NE(sandbox, nullptr);
    PendingPayout pending(*sandbox, c.account);
    ASSERT_TRUE(Eventually([&] { return sandbox->requests_received() == 1; },
                           absl::Seconds(10)));
    const absl::Time start = absl::Now();
    sandbox->Stop();
    EXPECT_LT(absl::Now() - start, absl::Seconds(2));
    ASSERT_TRUE(pending.WaitDone(absl::Seconds(10)));
    EXPECT_FALSE(pending.answered());  // no answer at all, not a success
  }
}

TEST(SandboxStopTest, ReturnsPromptlyWithAnIdleKeepAliveConnection) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  auto client = ClientFor(*sandbox);
  client->set_keep_alive(true);
  ASSERT_TRUE(client->Post(kPayoutPath, PayoutBody(), "application/json"));
  // Otherwise that connection would stay open until its 5 s idle timeout.
  const absl::Time start = absl::Now();
  sandbox->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST(SandboxStopTest, IsIdempotentAndRefusesConnectionsAfterwards) {
  std::unique_ptr<Sandbox> sandbox = StartSandbox();
  ASSERT_NE(sandbox, nullptr);
  sandbox->Stop();
  sandbox->Stop();
  EXPECT_FALSE(Post(*sandbox, kPayoutPath, PayoutBody()));
  EXPECT_EQ(sandbox->requests_received(), 0);
}

// ---------------------------------------------------------------------------
// HTTPS.

struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct X509Free {
  void operator()(X509* certificate) const { X509_free(certificate); }
};
struct FileClose {
  void operator()(FILE* file) const { std::fclose(file); }
};

// A self-signed certificate for 127.0.0.1 and its key, as PEM files.
bool WriteSelfSignedCertificate(const std::string& cert_path,
                                const std::string& key_path) {
  std::unique_ptr<EVP_PKEY, PkeyFree> key(EVP_EC_gen("P-256"));
  std::unique_ptr<X509, X509Free> certificate(X509_new());
  if (key == nullptr || certificate == nullptr) return false;
  ASN1_INTEGER_set(X509_get_serialNumber(certificate.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(certificate.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(certificate.get()), 3600);
  X509_set_pubkey(certificate.get(), key.get());
  X509_NAME* name = X509_get_subject_name(certificate.get());
  X509_NAME_add_entry_by_txt(
      name, "CN", MBSTRING_ASC,
      reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
  X509_set_issuer_name(certificate.get(), name);
  if (X509_sign(certificate.get(), key.get(), EVP_sha256()) == 0) return false;
  std::unique_ptr<FILE, FileClose> cert_file(
      std::fopen(cert_path.c_str(), "w"));
  std::unique_ptr<FILE, FileClose> key_file(std::fopen(key_path.c_str(), "w"));
  return cert_file != nullptr && key_file != nullptr &&
         PEM_write_X509(cert_file.get(), certificate.get()) == 1 &&
         PEM_write_PrivateKey(key_file.get(), key.get(), nullptr, nullptr, 0,
                              nullptr, nullptr) == 1;
}

TEST(SandboxTlsTest, ServesHttpsIncludingTheScriptedDrop) {
  SandboxOptions options;
  options.tls_cert = TempPath("cert.pem");
  options.tls_key = TempPath("key.pem");
  ASSERT_TRUE(WriteSelfSignedCertificate(options.tls_cert, options.tls_key));
  std::unique_ptr<Sandbox> sandbox = StartSandbox(options);
  ASSERT_NE(sandbox, nullptr);
  EXPECT_EQ(sandbox->base_url(),
            absl::StrCat("https://127.0.0.1:", sandbox->port()));
  MustAccept(*sandbox, "100000011836");
  ExpectDocumentedError(Post(*sandbox, kPayoutPath, PayoutBody("100000010409")),
                        409);
  EXPECT_FALSE(Post(*sandbox, kPayoutPath, PayoutBody("100000010502")));
  // Plain HTTP to the HTTPS port gets no payout answer.
  EXPECT_THAT(RawExchange(sandbox->port(), RawPost(kPayoutPath, PayoutBody())),
              ::testing::Not(HasSubstr("ACPT")));
  sandbox->Stop();
  std::remove(options.tls_cert.c_str());
  std::remove(options.tls_key.c_str());
}

}  // namespace
}  // namespace aopay
