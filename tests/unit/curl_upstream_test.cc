#include "server/upstream/curl/curl_upstream.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/aopay_codec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/test_interposer.h"

namespace aopay {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class CurlEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    ASSERT_EQ(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    // The test servers write to sockets the client may have closed.
    std::signal(SIGPIPE, SIG_IGN);
  }
  void TearDown() override { curl_global_cleanup(); }
};
[[maybe_unused]] ::testing::Environment* const kCurlEnvironment =
    ::testing::AddGlobalTestEnvironment(new CurlEnvironment);

constexpr absl::Duration kWait = absl::Seconds(10);

// --- A tiny HTTP/1.1 server on raw sockets, with optional TLS. ---

struct RawRequest {
  std::string method;
  std::string target;
  std::string version;
  std::vector<std::pair<std::string, std::string>> headers;  // names lowered
  std::string body;
  int connection = 0;  // which accepted connection, from 0
  int index = 0;       // which request on that connection, from 0
  int remote_port = 0;

  std::optional<std::string> Header(absl::string_view name) const {
    for (const auto& [key, value] : headers) {
      if (key == name) return value;
    }
    return std::nullopt;
  }
};

struct Reply {
  int status = 200;
  std::string body;
  // Announced in Content-Length beyond the body, then the connection closes
  // without them: an answer cut off by the network.
  size_t missing_bytes = 0;
};

// Returns the reply, or nullopt to close the connection without answering.
using Handler = std::function<std::optional<Reply>(const RawRequest&)>;

class Gate {
 public:
  ~Gate() { Open(); }
  void Open() {
    absl::MutexLock lock(&mu_);
    open_ = true;
  }
  void Wait() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&open_));
  }

 private:
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
};

class RawServer {
 public:
  // `tls` is borrowed and must outlive the server; nullptr for plain HTTP.
  explicit RawServer(Handler handler, SSL_CTX* tls = nullptr)
      : handler_(std::move(handler)), tls_(tls) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof(address);
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        listen(listen_fd_, 64) != 0 ||
        getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address),
                    &length) != 0) {
      ADD_FAILURE() << "cannot listen on loopback";
    }
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }

  ~RawServer() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      for (int fd : open_fds_) shutdown(fd, SHUT_RDWR);
    }
    shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    for (std::thread& worker : workers_) worker.join();
    close(listen_fd_);
  }

  int port() const { return port_; }
  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_); }
  std::string https_url() const {
    return absl::StrCat("https://127.0.0.1:", port_);
  }

  int connections() const {
    absl::MutexLock lock(&mu_);
    return connections_;
  }
  std::vector<RawRequest> requests() const {
    absl::MutexLock lock(&mu_);
    return requests_;
  }
  int CountBodies(absl::string_view body) const {
    absl::MutexLock lock(&mu_);
    int count = 0;
    for (const RawRequest& request : requests_) count += request.body == body;
    return count;
  }
  // Waits until `n` connections were accepted.
  bool AwaitConnections(int n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return connections_ >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kWait);
  }

 private:
  struct Connection {
    int fd = -1;
    SSL* ssl = nullptr;
    ssize_t Read(char* buffer, size_t size) {
      if (ssl != nullptr) return SSL_read(ssl, buffer, static_cast<int>(size));
      return recv(fd, buffer, size, 0);
    }
    bool WriteAll(absl::string_view data) {
      while (!data.empty()) {
        const ssize_t written =
            ssl != nullptr
                ? SSL_write(ssl, data.data(), static_cast<int>(data.size()))
                : send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (written <= 0) return false;
        data.remove_prefix(static_cast<size_t>(written));
      }
      return true;
    }
  };

  void AcceptLoop() {
    while (true) {
      sockaddr_in peer{};
      socklen_t length = sizeof(peer);
      const int fd =
          accept(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &length);
      absl::MutexLock lock(&mu_);
      if (fd < 0 || stopping_) {
        if (fd >= 0) close(fd);
        return;
      }
      open_fds_.push_back(fd);
      const int index = connections_++;
      workers_.emplace_back([this, fd, index, port = ntohs(peer.sin_port)] {
        Serve(fd, index, port);
      });
    }
  }

  void Serve(int fd, int connection_index, int remote_port) {
    Connection connection{fd, nullptr};
    if (tls_ != nullptr) {
      connection.ssl = SSL_new(tls_);
      SSL_set_fd(connection.ssl, fd);
      if (SSL_accept(connection.ssl) != 1) {
        SSL_free(connection.ssl);
        connection.ssl = nullptr;
        Close(fd);
        return;
      }
    }
    std::string buffer;
    for (int index = 0;; ++index) {
      std::optional<RawRequest> request = ReadRequest(connection, buffer);
      if (!request.has_value()) break;
      request->connection = connection_index;
      request->index = index;
      request->remote_port = remote_port;
      {
        absl::MutexLock lock(&mu_);
        requests_.push_back(*request);
      }
      std::optional<Reply> reply = handler_(*request);
      if (!reply.has_value()) break;
      // One write: a second small one would wait for a delayed ACK.
      const std::string answer = absl::StrCat(
          "HTTP/1.1 ", reply->status, " Whatever\r\n",
          "Content-Type: application/json\r\n",
          "Content-Length: ", reply->body.size() + reply->missing_bytes,
          "\r\n\r\n", reply->body);
      if (!connection.WriteAll(answer) || reply->missing_bytes > 0) break;
    }
    if (connection.ssl != nullptr) SSL_free(connection.ssl);
    Close(fd);
  }

  void Close(int fd) {
    absl::MutexLock lock(&mu_);
    shutdown(fd, SHUT_RDWR);
    close(fd);
    open_fds_.erase(std::find(open_fds_.begin(), open_fds_.end(), fd));
  }

  static std::optional<RawRequest> ReadRequest(Connection& connection,
                                               std::string& buffer) {
    char chunk[16384];
    size_t head_end;
    while ((head_end = buffer.find("\r\n\r\n")) == std::string::npos) {
      const ssize_t got = connection.Read(chunk, sizeof(chunk));
      if (got <= 0) return std::nullopt;
      buffer.append(chunk, static_cast<size_t>(got));
    }
    RawRequest request;
    std::vector<std::string> lines =
        absl::StrSplit(buffer.substr(0, head_end), "\r\n");
    std::vector<std::string> first = absl::StrSplit(lines[0], ' ');
    if (first.size() != 3) return std::nullopt;
    request.method = first[0];
    request.target = first[1];
    request.version = first[2];
    size_t content_length = 0;
    for (size_t i = 1; i < lines.size(); ++i) {
      const size_t colon = lines[i].find(':');
      if (colon == std::string::npos) continue;
      std::string name = absl::AsciiStrToLower(lines[i].substr(0, colon));
      std::string value(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
      if (name == "content-length" &&
          !absl::SimpleAtoi(value, &content_length)) {
        return std::nullopt;
      }
      request.headers.emplace_back(std::move(name), std::move(value));
    }
    buffer.erase(0, head_end + 4);
    while (buffer.size() < content_length) {
      const ssize_t got = connection.Read(chunk, sizeof(chunk));
      if (got <= 0) return std::nullopt;
      buffer.append(chunk, static_cast<size_t>(got));
    }
    request.body = buffer.substr(0, content_length);
    buffer.erase(0, content_length);
    return request;
  }

  const Handler handler_;
  SSL_CTX* const tls_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::thread acceptor_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int connections_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int> open_fds_ ABSL_GUARDED_BY(mu_);
  std::vector<RawRequest> requests_ ABSL_GUARDED_BY(mu_);
  // Written by the acceptor only; joined after it.
  std::vector<std::thread> workers_;
};

Handler AnswerOk(std::string body = R"({"ok":true})") {
  return [body](const RawRequest&) { return Reply{200, body}; };
}

// Holds every request until opened, counting the handlers waiting at once.
class GatedServer {
 public:
  GatedServer() : server_([this](const RawRequest&) { return Hold(); }) {}
  // Opens the gate first so that the server's threads can be joined.
  ~GatedServer() { gate_.Open(); }

  void Open() { gate_.Open(); }
  RawServer& raw() { return server_; }
  std::string url() const { return server_.url(); }
  int waiting() const {
    absl::MutexLock lock(&mu_);
    return waiting_;
  }
  int peak() const {
    absl::MutexLock lock(&mu_);
    return peak_;
  }

 private:
  std::optional<Reply> Hold() {
    {
      absl::MutexLock lock(&mu_);
      peak_ = std::max(peak_, ++waiting_);
    }
    gate_.Wait();
    absl::MutexLock lock(&mu_);
    --waiting_;
    return Reply{200, "{}"};
  }

  mutable absl::Mutex mu_;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  int peak_ ABSL_GUARDED_BY(mu_) = 0;
  Gate gate_;
  RawServer server_;  // last: its threads use the members above
};

// --- Collecting callbacks. ---

// One call's callback; checks it runs exactly once and not on the poster's
// thread (Post must never run it inline).
class Call {
 public:
  static UpstreamClient::Callback Track(std::shared_ptr<Call> call) {
    call->poster_ = std::this_thread::get_id();
    return [call](absl::StatusOr<HttpAnswer> result) {
      absl::MutexLock lock(&call->mu_);
      if (++call->calls_ == 1) call->result_ = std::move(result);
      call->inline_ |= std::this_thread::get_id() == call->poster_;
    };
  }

  // The result, after checking the callback ran exactly once.
  absl::StatusOr<HttpAnswer> Result() {
    absl::MutexLock lock(&mu_);
    auto called = [this]()
                      ABSL_SHARED_LOCKS_REQUIRED(mu_) { return calls_ > 0; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&called), kWait)) {
      ADD_FAILURE() << "callback did not run";
      return absl::InternalError("callback did not run");
    }
    EXPECT_EQ(calls_, 1);
    EXPECT_FALSE(inline_) << "callback ran inside Post";
    return result_;
  }

  bool Done() {
    absl::MutexLock lock(&mu_);
    return calls_ > 0;
  }

  // False if the callback has not run after `timeout`.
  bool AwaitDone(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto called = [this]()
                      ABSL_SHARED_LOCKS_REQUIRED(mu_) { return calls_ > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&called), timeout);
  }

  int calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

 private:
  absl::Mutex mu_;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  bool inline_ ABSL_GUARDED_BY(mu_) = false;
  absl::StatusOr<HttpAnswer> result_ ABSL_GUARDED_BY(mu_) =
      absl::InternalError("unset");
  std::thread::id poster_;
};

std::shared_ptr<Call> Send(CurlUpstream& client, std::string body,
                           bool idempotent = false,
                           std::string path = std::string(kPayoutPath)) {
  auto call = std::make_shared<Call>();
  client.Post(UpstreamRequest{std::move(path), std::move(body), idempotent, {}},
              Call::Track(call));
  return call;
}

absl::StatusOr<HttpAnswer> PostAndWait(CurlUpstream& client, std::string body,
                                       bool idempotent = false) {
  return Send(client, std::move(body), idempotent)->Result();
}

std::unique_ptr<CurlUpstream> MakeClient(CurlUpstreamOptions options) {
  absl::StatusOr<std::unique_ptr<CurlUpstream>> client =
      CurlUpstream::Create(std::move(options));
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

std::unique_ptr<CurlUpstream> MakeClient(const std::string& base_url) {
  CurlUpstreamOptions options;
  options.base_url = base_url;
  options.timeout = kWait;
  return MakeClient(std::move(options));
}

// Polls an observable condition until it holds or `kWait` passes.
bool Eventually(const std::function<bool()>& condition) {
  const absl::Time deadline = absl::Now() + kWait;
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

// --- Answers. ---

TEST(CurlUpstreamTest, SendsAJsonPostAndReturnsTheAnswer) {
  RawServer server(AnswerOk(R"({"status":"ACPT"})"));
  std::unique_ptr<CurlUpstream> client = MakeClient(server.url());
  ASSERT_NE(client, nullptr);

  absl::StatusOr<HttpAnswer> answer = PostAndWait(*client, R"({"a":"1"})");

  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->http_status, 200);
  EXPECT_EQ(answer->body, R"({"status":"ACPT"})");
  EXPECT_FALSE(answer->truncated);
  std::vector<RawRequest> requests = server.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].method, "POST");
  EXPECT_EQ(requests[0].target, kPayoutPath);
  EXPECT_EQ(requests[0].version, "HTTP/1.1");
  EXPECT_EQ(requests[0].Header("content-type"), "application/json");
  EXPECT_EQ(requests[0].Header("expect"), std::nullopt);
  EXPECT_EQ(requests[0].body, R"({"a":"1"})");
}

TEST(CurlUpstreamTest, JoinsBaseUrlAndPathWithOneSlash) {
  RawServer server(AnswerOk());
  std::unique_ptr<CurlUpstream> client =
      MakeClient(absl::StrCat(server.url(), "/prefix/"));
  ASSERT_NE(client, nullptr);

  ASSERT_TRUE(Send(*client, "{}", false, "/x")->Result().ok());
  ASSERT_TRUE(Send(*client, "{}", false, "y")->Result().ok());

  std::vector<RawRequest> requests = server.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].target, "/prefix/x");
  EXPECT_EQ(requests[1].target, "/prefix/y");
}

TEST(CurlUpstreamTest, AnEmptyPathPostsToTheBaseUrlWithTheRequestsHeaders) {
  RawServer server(AnswerOk());
  std::unique_ptr<CurlUpstream> client =
      MakeClient(absl::StrCat(server.url(), "/hooks/payouts"));
  ASSERT_NE(client, nullptr);

  auto call = std::make_shared<Call>();
  client->Post(UpstreamRequest{"", "{}", false, {"Payout-Event-Id: 7"}},
               Call::Track(call));
  ASSERT_TRUE(call->Result().ok());
  // A header with a line break would smuggle in another: nothing is sent.
  auto smuggled = std::make_shared<Call>();
  client->Post(
      UpstreamRequest{"", "{}", false, {"Payout-Event-Id: 8\r\nX-Evil: 1"}},
      Call::Track(smuggled));
  EXPECT_EQ(smuggled->Result().status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(PostAndWait(*client, "{}").ok());

  std::vector<RawRequest> requests = server.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].target, "/hooks/payouts");
  EXPECT_EQ(requests[0].Header("payout-event-id"), "7");
  EXPECT_EQ(requests[0].Header("content-type"), "application/json");
  // The next call has only the client's own headers.
  EXPECT_EQ(requests[1].Header("payout-event-id"), std::nullopt);
}

TEST(CurlUpstreamTest, HttpErrorStatusesAreValuesWithTheirBody) {
  for (int status : {400, 403, 409, 412, 422, 429, 500, 502, 503}) {
    SCOPED_TRACE(status);
    const std::string body = absl::StrCat(R"({"code":)", status, "}");
    RawServer server([&](const RawRequest&) { return Reply{status, body}; });
    std::unique_ptr<CurlUpstream> client = MakeClient(server.url());
    ASSERT_NE(client, nullptr);

    absl::StatusOr<HttpAnswer> answer = PostAndWait(*client, "{}");

    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->http_status, status);
    EXPECT_EQ(answer->body, body);
    EXPECT_FALSE(answer->truncated);
  }
}

TEST(CurlUpstreamTest, BodyOfExactlyTheCapIsKeptWhole) {
  const std::string body(kMaxAnswerBytes, 'x');
  RawServer server(AnswerOk(body));
  std::unique_ptr<CurlUpstream> client = MakeClient(server.url());
  ASSERT_NE(client, nullptr);

  absl::StatusOr<HttpAnswer> answer = PostAndWait(*client, "{}");

  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_FALSE(answer->truncated);
  EXPECT_EQ(answer->body.size(), kMaxAnswerBytes);
}

TEST(CurlUpstreamTest, LongerBodyIsCutToTheCapAndMarkedTruncated) {
  std::string body;
  for (int i = 0; body.size() < 2 * kMaxAnswerBytes; ++i) {
    absl::StrAppend(&body, i, ",");
  }
  RawServer server([&](const RawRequest&) { return Reply{503, body}; });
  std::unique_ptr<CurlUpstream> client = MakeClient(server.url());
  ASSERT_NE(client, nullptr);

  absl::StatusOr<HttpAnswer> answer = PostAndWait(*client, "{}");

  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->http_status, 503);
  EXPECT_TRUE(answer->truncated);
  EXPECT_EQ(answer->body.size(), kMaxAnswerBytes);
  EXPECT_TRUE(answer->body == body.substr(0, kMaxAnswerBytes));
}

// A whole JSON answer with a Content-Length that promises more, then a
// closed connection: the answer came, so it is handed on, marked cut off with
// libcurl's words, for the codec to keep its transaction id (the payout stays
// UNKNOWN).
TEST(CurlUpstreamTest, AnAnswerCutOffByTheConnectionIsHandedOnAsCutOff) {
  const std::string body =
      R"({"statuss":"SUCCESS","resourceData":{"transactionID":"T1"}})";
  RawServer server([&](const RawRequest&) {
    return Reply{200, body, /*missing_bytes=*/50};
  });
  std::unique_ptr<CurlUpstream> client = MakeClient(server.url());
  ASSERT_NE(client, nullptr);

  absl::StatusOr<HttpAnswer> answer = PostAndWait(*client, R"({"n":"C"})");

  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->http_status, 200);
  EXPECT_TRUE(answer->truncated);
  EXPECT_EQ(answer->body, body);
  EXPECT_THAT(answer->cut_off_by, HasSubstr("curl error 18"));
  EXPECT_EQ(server.CountBodies(R"({"n":"C"})"), 1);
}

// --- Failures: certainly not sent. ---

int ClosedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), length), 0);
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  close(fd);
  return ntohs(address.sin_port);
}

TEST(CurlUpstreamTest, RefusedConnectionIsUnavailable) {
  std::unique_ptr<CurlUpstream> client =
      MakeClient(absl::StrCat("http://127.0.0.1:", ClosedPort()));
  ASSERT_NE(client, nullptr);

  absl::StatusOr<HttpAnswer> answer =
      Send(*client, R"({"account":"SECRET-BODY"})", false,
           "/path?token=SECRET-QUERY")
          ->Result();

  EXPECT_EQ(answer.status().code(), absl::StatusCode::kUnavailable)
      << answer.status();
  EXPECT_THAT(answer.status().message(), Not(HasSubstr("SECRET")));
}

// A server that accepts TCP but never speaks TLS holds an https client in
// the handshake, before any request byte.
TEST(CurlUpstreamTest, ConnectTimeoutBeforeSendingIsUnavailable) {
  RawServer silent(AnswerOk());
  CurlUpstreamOptions options;
  options.base_url = silent.https_url();
  options.timeout = absl::Milliseconds(300);
  std::unique_ptr<CurlUpstream> client = MakeClient(options);
  ASSERT_NE(client, nullptr);

  absl::StatusOr<HttpAnswer> answer = PostAndWait(*client, "{}");

  EXPECT_EQ(answer.status().code(), absl::StatusCode::kUnavailable)
      << answer.status();
  EXPECT_TRUE(silent.requests().empty());
}

// --- Failures: may have been sent. ---

TEST(CurlUpstreamTest, TimeoutAfterTheServerReadTheRequestIsDeadlineExceeded) {
  GatedServer server;
  CurlUpstreamOptions options;
  options.base_url = server.url();
  options.timeout = absl::Milliseconds(300);
  std::unique_ptr<CurlUpstream> client = MakeClient(options);
  ASSERT_NE(client, nullptr);

  absl::StatusOr<HttpAnswer> answer =
      PostAndWait(*client, R"({"account":"SECRET-BODY"})");

  EXPECT_EQ(answer.status().code(), absl::StatusCode::kDeadlineExceeded)
      << answer.status();
  EXPECT_THAT(answer.status().message(), Not(HasSubstr("SECRET")));
  EXPECT_EQ(server.raw().requests().size(), 1u);
  server.Open();
}

TEST(CurlUpstreamTest, ConnectionClosedWithoutAnswerIsUnknown) {
  RawServer server([](const RawRequest&) { return std::nullopt; });
  std::unique_ptr<CurlUpstream> client = MakeClient(server.url());
  ASSERT_NE(client, nullptr);

  absl::StatusOr<HttpAnswer> answer = PostAndWait(*client, R"({"n":"B"})");

  EXPECT_EQ(answer.status().code(), absl::StatusCode::kUnknown)
      << answer.status();
  // A fresh connection: libcurl does not re-send here.
  EXPECT_EQ(server.CountBodies(R"({"n":"B"})"), 1);
}

// The at-most-once hazard: libcurl silently re-sends a request on a fresh
// connection when a reused keep-alive connection closes before any answer
// byte (Curl_retry_request). The server answers the first request on each
// connection and swallows the second one, closing without an answer.
Handler AnswerFirstSwallowSecond() {
  return [](const RawRequest& request) -> std::optional<Reply> {
    if (request.index == 0) return Reply{200, R"({"ok":true})"};
    return std::nullopt;
  };
}

TEST(CurlUpstreamTest, PayoutIsNeverResentAfterAReusedConnectionDies) {
  RawServer server(AnswerFirstSwallowSecond());
  std::unique_ptr<CurlUpstream> client = MakeClient(server.url());
  ASSERT_NE(client, nullptr);

  ASSERT_TRUE(PostAndWait(*client, R"({"n":"A"})").ok());
  absl::StatusOr<HttpAnswer> answer = PostAndWait(*client, R"({"n":"B"})");

  EXPECT_EQ(server.CountBodies(R"({"n":"B"})"), 1);
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kUnknown)
      << (answer.ok() ? "answered" : answer.status().ToString());
  std::vector<RawRequest> requests = server.requests();
  ASSERT_GE(requests.size(), 2u);
  EXPECT_EQ(requests[1].connection, 0) << "B did not reuse A's connection";
}

// Pins what libcurl 7.88 does when the transport may retry: it re-sends B on
// a fresh connection, which the server answers. Fine for an idempotent call;
// the reason payouts must not let it.
TEST(CurlUpstreamTest,
     IdempotentCallIsResentByLibcurlAfterAReusedConnectionDies) {
  RawServer server(AnswerFirstSwallowSecond());
  std::unique_ptr<CurlUpstream> client = MakeClient(server.url());
  ASSERT_NE(client, nullptr);

  ASSERT_TRUE(PostAndWait(*client, R"({"n":"A"})", true).ok());
  absl::StatusOr<HttpAnswer> answer =
      PostAndWait(*client, R"({"n":"B"})", true);

  EXPECT_EQ(server.CountBodies(R"({"n":"B"})"), 2);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->http_status, 200);
}

// --- Connections. ---

TEST(CurlUpstreamTest, SequentialCallsReuseAKeptAliveConnection) {
  RawServer server(AnswerOk());
  std::unique_ptr<CurlUpstream> client = MakeClient(server.url());
  ASSERT_NE(client, nullptr);

  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(PostAndWait(*client, absl::StrCat(R"({"i":")", i, "\"}")).ok());
  }

  EXPECT_EQ(server.requests().size(), 20u);
  // One, unless the machine stalled for seconds between two calls.
  EXPECT_LE(server.connections(), 2);
}

// Payouts skip a kept-alive connection idle for 2 s or more (MAXAGE_CONN);
// other calls still take it.
TEST(CurlUpstreamTest, PayoutSkipsAConnectionIdleForTwoSeconds) {
  RawServer server(AnswerOk());
  std::unique_ptr<CurlUpstream> client = MakeClient(server.url());
  ASSERT_NE(client, nullptr);

  ASSERT_TRUE(PostAndWait(*client, "{}", /*idempotent=*/true).ok());
  absl::SleepFor(absl::Milliseconds(2100));  // the idle time under test
  ASSERT_TRUE(PostAndWait(*client, "{}", /*idempotent=*/true).ok());
  EXPECT_EQ(server.connections(), 1);
  absl::SleepFor(absl::Milliseconds(2100));
  ASSERT_TRUE(PostAndWait(*client, "{}", /*idempotent=*/false).ok());
  EXPECT_EQ(server.connections(), 2);
}

// --- Slots and queue. ---

TEST(CurlUpstreamTest, NeverMoreThanMaxInflightOnTheWire) {
  GatedServer server;
  CurlUpstreamOptions options;
  options.base_url = server.url();
  options.max_inflight = 4;
  std::unique_ptr<CurlUpstream> client = MakeClient(options);
  ASSERT_NE(client, nullptr);

  std::vector<std::shared_ptr<Call>> calls;
  for (int i = 0; i < 16; ++i) {
    calls.push_back(Send(*client, absl::StrCat(i)));
  }
  ASSERT_TRUE(Eventually([&] { return server.waiting() == 4; }));
  EXPECT_EQ(client->InFlight(), 4u);
  EXPECT_EQ(client->Queued(), 12u);
  server.Open();
  for (auto& call : calls) EXPECT_TRUE(call->Result().ok());

  EXPECT_EQ(server.peak(), 4);
  EXPECT_EQ(client->InFlight(), 0u);
  EXPECT_EQ(client->Queued(), 0u);
  EXPECT_EQ(server.raw().requests().size(), 16u);
}

TEST(CurlUpstreamTest, FullQueueIsResourceExhaustedAndNothingIsSent) {
  GatedServer server;
  CurlUpstreamOptions options;
  options.base_url = server.url();
  options.max_inflight = 1;
  options.max_queue = 1;
  std::unique_ptr<CurlUpstream> client = MakeClient(options);
  ASSERT_NE(client, nullptr);

  std::shared_ptr<Call> first = Send(*client, "first");
  std::shared_ptr<Call> second = Send(*client, "second");
  std::shared_ptr<Call> third = Send(*client, "third");

  // Answered while the first call still holds the only slot.
  EXPECT_EQ(third->Result().status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(first->Done());
  server.Open();
  EXPECT_TRUE(first->Result().ok());
  EXPECT_TRUE(second->Result().ok());
  EXPECT_EQ(server.raw().CountBodies("third"), 0);
  EXPECT_EQ(server.raw().requests().size(), 2u);
}

// --- Shutdown. ---

TEST(CurlUpstreamTest, ShutdownLetsStartedAndQueuedCallsFinishWithinGrace) {
  GatedServer server;
  CurlUpstreamOptions options;
  options.base_url = server.url();
  options.max_inflight = 1;
  options.max_queue = 1;
  std::unique_ptr<CurlUpstream> client = MakeClient(options);
  ASSERT_NE(client, nullptr);
  std::shared_ptr<Call> started = Send(*client, "started");
  std::shared_ptr<Call> queued = Send(*client, "queued");
  ASSERT_TRUE(Eventually([&] { return server.raw().requests().size() == 1; }));

  std::thread stopper([&] { client->Shutdown(absl::Seconds(30)); });
  // A probe is refused as overloaded until Shutdown begins, then cancelled.
  ASSERT_TRUE(Eventually([&] {
    absl::StatusOr<HttpAnswer> probe = PostAndWait(*client, "probe");
    EXPECT_THAT(probe.status().code(),
                ::testing::AnyOf(absl::StatusCode::kResourceExhausted,
                                 absl::StatusCode::kCancelled));
    return probe.status().code() == absl::StatusCode::kCancelled;
  }));
  server.Open();
  stopper.join();

  EXPECT_TRUE(started->Done());
  EXPECT_TRUE(queued->Done());
  EXPECT_TRUE(started->Result().ok());
  EXPECT_TRUE(queued->Result().ok());
  EXPECT_EQ(server.raw().CountBodies("probe"), 0);
  EXPECT_EQ(PostAndWait(*client, "late").status().code(),
            absl::StatusCode::kCancelled);
}

TEST(CurlUpstreamTest, AfterGraceQueuedCallsAreCancelledAndStartedAborted) {
  GatedServer server;
  CurlUpstreamOptions options;
  options.base_url = server.url();
  options.max_inflight = 1;
  std::unique_ptr<CurlUpstream> client = MakeClient(options);
  ASSERT_NE(client, nullptr);
  std::shared_ptr<Call> started = Send(*client, "started");
  std::shared_ptr<Call> queued = Send(*client, "queued");
  ASSERT_TRUE(Eventually([&] { return server.raw().requests().size() == 1; }));

  client->Shutdown(absl::Milliseconds(200));

  EXPECT_TRUE(started->Done());
  EXPECT_TRUE(queued->Done());
  EXPECT_EQ(started->Result().status().code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(queued->Result().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(client->InFlight(), 0u);
  EXPECT_EQ(client->Queued(), 0u);
  client->Shutdown(absl::Seconds(30));  // idempotent: returns at once
  EXPECT_EQ(PostAndWait(*client, "late").status().code(),
            absl::StatusCode::kCancelled);
  server.Open();
  EXPECT_EQ(server.raw().CountBodies("queued"), 0);
  EXPECT_EQ(server.raw().CountBodies("late"), 0);
}

// Aborted in the TLS handshake, the call had not been sent.
TEST(CurlUpstreamTest, ShutdownAbortingACallNotYetSentCancelsIt) {
  RawServer silent(AnswerOk());
  std::unique_ptr<CurlUpstream> client = MakeClient(silent.https_url());
  ASSERT_NE(client, nullptr);
  std::shared_ptr<Call> connecting = Send(*client, "{}");
  ASSERT_TRUE(silent.AwaitConnections(1));

  client->Shutdown(absl::ZeroDuration());

  EXPECT_EQ(connecting->Result().status().code(), absl::StatusCode::kCancelled);
}

TEST(CurlUpstreamTest, DestroyingTheClientRunsEveryPendingCallback) {
  GatedServer server;
  CurlUpstreamOptions options;
  options.base_url = server.url();
  options.max_inflight = 2;
  std::unique_ptr<CurlUpstream> client = MakeClient(options);
  ASSERT_NE(client, nullptr);
  std::vector<std::shared_ptr<Call>> calls;
  for (int i = 0; i < 6; ++i) calls.push_back(Send(*client, absl::StrCat(i)));
  ASSERT_TRUE(Eventually([&] { return server.raw().requests().size() == 2; }));

  client.reset();

  int unknown = 0;
  int cancelled = 0;
  for (auto& call : calls) {
    EXPECT_EQ(call->calls(), 1);
    const absl::StatusCode code = call->Result().status().code();
    unknown += code == absl::StatusCode::kUnknown;
    cancelled += code == absl::StatusCode::kCancelled;
  }
  EXPECT_EQ(unknown, 2);
  EXPECT_EQ(cancelled, 4);
  server.Open();
}

// --- Options. ---

struct UrlCase {
  std::string url;
  bool accepted;
};

class UrlPolicyTest : public ::testing::TestWithParam<UrlCase> {};

TEST_P(UrlPolicyTest, AcceptsHttpsAnywhereAndHttpOnLoopback) {
  CurlUpstreamOptions options;
  options.base_url = GetParam().url;
  absl::StatusOr<std::unique_ptr<CurlUpstream>> client =
      CurlUpstream::Create(options);
  if (GetParam().accepted) {
    EXPECT_TRUE(client.ok()) << client.status();
  } else {
    EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(client.status().message(), Not(HasSubstr("\n")));
    EXPECT_FALSE(client.status().message().empty());
  }
}

// Creating a client connects nowhere, so these hosts are never contacted.
INSTANTIATE_TEST_SUITE_P(
    Urls, UrlPolicyTest,
    ::testing::Values(UrlCase{"http://127.0.0.1:8089", true},
                      UrlCase{"http://127.3.2.1", true},
                      UrlCase{"http://localhost:8089/", true},
                      UrlCase{"http://LOCALHOST", true},
                      UrlCase{"http://[::1]:8089", true},
                      UrlCase{"https://payout.aopay.co.in", true},
                      UrlCase{"https://10.0.0.1/api", true},
                      UrlCase{"http://10.0.0.1", false},
                      UrlCase{"http://payout.aopay.co.in", false},
                      UrlCase{"http://128.0.0.1", false},
                      UrlCase{"http://127.0.0.1.example.com", false},
                      UrlCase{"http://localhost.example.com", false},
                      UrlCase{"http://[::2]", false},
                      UrlCase{"ftp://127.0.0.1", false},
                      UrlCase{"127.0.0.1:8089", false}, UrlCase{"", false},
                      UrlCase{"https://user:pw@payout.aopay.co.in", false},
                      UrlCase{"https://payout.aopay.co.in/?key=1", false},
                      UrlCase{"https://payout.aopay.co.in/#frag", false}));

TEST(CurlUpstreamTest, RejectsBadLimits) {
  CurlUpstreamOptions options;
  options.base_url = "https://payout.aopay.co.in";
  options.max_inflight = 0;
  EXPECT_EQ(CurlUpstream::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.max_inflight = 1;
  options.timeout = absl::ZeroDuration();
  EXPECT_EQ(CurlUpstream::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.timeout = absl::Seconds(1);
  options.ca_file = "/nonexistent/ca.pem";
  EXPECT_EQ(CurlUpstream::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// --- HTTPS. ---

// A throwaway self-signed certificate for 127.0.0.1.
class TlsFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = EVP_EC_gen("P-256");
    ASSERT_NE(key_, nullptr);
    cert_ = X509_new();
    ASSERT_NE(cert_, nullptr);
    X509_set_version(cert_, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert_), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert_), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert_), 24 * 3600);
    X509_set_pubkey(cert_, key_);
    X509_NAME* name = X509_get_subject_name(cert_);
    X509_NAME_add_entry_by_txt(
        name, "CN", MBSTRING_ASC,
        reinterpret_cast<const unsigned char*>("curl-upstream-test"), -1, -1,
        0);
    X509_set_issuer_name(cert_, name);
    X509V3_CTX context;
    X509V3_set_ctx_nodb(&context);
    X509V3_set_ctx(&context, cert_, cert_, nullptr, nullptr, 0);
    X509_EXTENSION* san = X509V3_EXT_conf_nid(
        nullptr, &context, NID_subject_alt_name, "IP:127.0.0.1");
    ASSERT_NE(san, nullptr);
    X509_add_ext(cert_, san, -1);
    X509_EXTENSION_free(san);
    ASSERT_GT(X509_sign(cert_, key_, EVP_sha256()), 0);

    ca_file_ = absl::StrCat(::testing::TempDir(), "curl_upstream_test_ca_",
                            getpid(), ".pem");
    FILE* file = std::fopen(ca_file_.c_str(), "w");
    ASSERT_NE(file, nullptr);
    EXPECT_EQ(PEM_write_X509(file, cert_), 1);
    std::fclose(file);

    tls_ = SSL_CTX_new(TLS_server_method());
    ASSERT_NE(tls_, nullptr);
    ASSERT_EQ(SSL_CTX_use_certificate(tls_, cert_), 1);
    ASSERT_EQ(SSL_CTX_use_PrivateKey(tls_, key_), 1);
  }

  void TearDown() override {
    std::remove(ca_file_.c_str());
    SSL_CTX_free(tls_);
    X509_free(cert_);
    EVP_PKEY_free(key_);
  }

  EVP_PKEY* key_ = nullptr;
  X509* cert_ = nullptr;
  SSL_CTX* tls_ = nullptr;
  std::string ca_file_;
};

TEST_F(TlsFixture, HttpsWithTheServersCaSucceeds) {
  RawServer server(AnswerOk(R"({"tls":true})"), tls_);
  CurlUpstreamOptions options;
  options.base_url = server.https_url();
  options.ca_file = ca_file_;
  std::unique_ptr<CurlUpstream> client = MakeClient(options);
  ASSERT_NE(client, nullptr);

  absl::StatusOr<HttpAnswer> answer = PostAndWait(*client, "{}");

  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->http_status, 200);
  EXPECT_EQ(answer->body, R"({"tls":true})");
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST_F(TlsFixture, HttpsWithAnUntrustedCertificateIsUnavailable) {
  RawServer server(AnswerOk(), tls_);
  std::unique_ptr<CurlUpstream> client = MakeClient(server.https_url());
  ASSERT_NE(client, nullptr);

  absl::StatusOr<HttpAnswer> answer = PostAndWait(*client, "{}");

  EXPECT_EQ(answer.status().code(), absl::StatusCode::kUnavailable)
      << answer.status();
  EXPECT_TRUE(server.requests().empty());
}

// --- Certificates made up for one test. ---

struct KeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct CertificateDeleter {
  void operator()(X509* certificate) const { X509_free(certificate); }
};
struct SslCtxDeleter {
  void operator()(SSL_CTX* context) const { SSL_CTX_free(context); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyDeleter>;
using CertificatePtr = std::unique_ptr<X509, CertificateDeleter>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

bool AddExtension(X509* certificate, X509* issuer, int nid, const char* value) {
  X509V3_CTX context;
  X509V3_set_ctx_nodb(&context);
  X509V3_set_ctx(&context, issuer, certificate, nullptr, nullptr, 0);
  X509_EXTENSION* extension =
      X509V3_EXT_conf_nid(nullptr, &context, nid, value);
  if (extension == nullptr) return false;
  const bool added = X509_add_ext(certificate, extension, -1) == 1;
  X509_EXTENSION_free(extension);
  return added;
}

// Signed by `issuer` with `issuer_key`; self-signed when `issuer` is null.
// `subject_alt_name` is "" for a CA.
CertificatePtr MakeCertificate(EVP_PKEY* key, const std::string& common_name,
                               X509* issuer, EVP_PKEY* issuer_key, long serial,
                               const std::string& subject_alt_name) {
  CertificatePtr certificate(X509_new());
  if (certificate == nullptr) return nullptr;
  X509* raw = certificate.get();
  X509_set_version(raw, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(raw), serial);
  X509_gmtime_adj(X509_getm_notBefore(raw), -3600);
  X509_gmtime_adj(X509_getm_notAfter(raw), 24 * 3600);
  X509_set_pubkey(raw, key);
  X509_NAME_add_entry_by_txt(
      X509_get_subject_name(raw), "CN", MBSTRING_ASC,
      reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
  X509* signer = issuer != nullptr ? issuer : raw;
  X509_set_issuer_name(raw, X509_get_subject_name(signer));
  const bool is_ca = subject_alt_name.empty();
  const bool extended = is_ca ? AddExtension(raw, signer, NID_basic_constraints,
                                             "critical,CA:TRUE") &&
                                    AddExtension(raw, signer, NID_key_usage,
                                                 "critical,keyCertSign,cRLSign")
                              : AddExtension(raw, signer, NID_subject_alt_name,
                                             subject_alt_name.c_str());
  if (!extended) return nullptr;
  if (X509_sign(raw, issuer_key != nullptr ? issuer_key : key, EVP_sha256()) <=
      0) {
    return nullptr;
  }
  return certificate;
}

// A certificate authority that exists for one test: its certificate in a
// PEM file, and TLS server contexts with certificates it signed.
class TestCa {
 public:
  explicit TestCa(const std::string& name)
      : key_(EVP_EC_gen("P-256")),
        pem_path_(absl::StrCat(::testing::TempDir(), "curl_upstream_test_",
                               name, "_", getpid(), ".pem")) {
    if (key_ != nullptr) {
      certificate_ = MakeCertificate(key_.get(), name, nullptr, nullptr, 1, "");
    }
    FILE* file = std::fopen(pem_path_.c_str(), "w");
    if (certificate_ == nullptr || file == nullptr ||
        PEM_write_X509(file, certificate_.get()) != 1) {
      ADD_FAILURE() << "cannot make the test CA " << name;
    }
    if (file != nullptr) std::fclose(file);
  }
  ~TestCa() { std::remove(pem_path_.c_str()); }
  TestCa(const TestCa&) = delete;
  TestCa& operator=(const TestCa&) = delete;

  const std::string& pem_path() const { return pem_path_; }

  // A server context with a fresh key and a certificate for
  // `subject_alt_name` ("DNS:name" or "IP:address") signed by this CA;
  // nullptr on failure.
  SslCtxPtr ServerContext(const std::string& subject_alt_name) {
    KeyPtr key(EVP_EC_gen("P-256"));
    if (key == nullptr || certificate_ == nullptr) return nullptr;
    CertificatePtr certificate = MakeCertificate(
        key.get(), "curl-upstream-test-server", certificate_.get(), key_.get(),
        ++serial_, subject_alt_name);
    SslCtxPtr context(SSL_CTX_new(TLS_server_method()));
    if (certificate == nullptr || context == nullptr ||
        SSL_CTX_use_certificate(context.get(), certificate.get()) != 1 ||
        SSL_CTX_use_PrivateKey(context.get(), key.get()) != 1) {
      return nullptr;
    }
    return context;
  }

 private:
  KeyPtr key_;
  CertificatePtr certificate_;
  std::string pem_path_;
  long serial_ = 1;
};

// --- Name lookups (see test_interposer.h). ---

// How late past a timeout a call may still end without having stalled.
constexpr absl::Duration kSlack = absl::Seconds(3);

// An https client for `host` (under kFakeDomain: it resolves to 127.0.0.1)
// on `server`'s port, trusting `ca`, connecting for at most a second.
std::unique_ptr<CurlUpstream> ClientFor(
    const std::string& host, const RawServer& server, const TestCa& ca,
    absl::Duration connect_timeout = absl::Seconds(1)) {
  CurlUpstreamOptions options;
  options.base_url = absl::StrCat("https://", host, ":", server.port());
  options.ca_file = ca.pem_path();
  options.timeout = kWait;
  options.connect_timeout = connect_timeout;
  return MakeClient(std::move(options));
}

// Lookups that hang past the connect timeout end their calls at that
// timeout, as certainly not sent, while the lookups still hang. libcurl's
// threaded resolver would otherwise wait for the lookup thread inside
// curl_multi_perform, freezing every call on the loop.
TEST(CurlUpstreamDnsTest, LookupsHangingPastTheConnectTimeoutEndAsNotSent) {
  const std::string host = "hung-lookup.aopay.test";
  TestCa ca("dns-timeout-ca");
  SslCtxPtr tls = ca.ServerContext(absl::StrCat("DNS:", host));
  ASSERT_NE(tls, nullptr);
  RawServer server(AnswerOk(), tls.get());
  std::unique_ptr<CurlUpstream> client = ClientFor(host, server, ca);
  ASSERT_NE(client, nullptr);
  test_interposer::ReleaseOnExit release_lookups;

  test_interposer::HoldLookupsOf(host, 2);
  const absl::Time start = absl::Now();
  std::shared_ptr<Call> first = Send(*client, R"({"n":"first"})");
  ASSERT_TRUE(test_interposer::AwaitHeldLookups(1, kWait));
  std::shared_ptr<Call> second = Send(*client, R"({"n":"second"})");
  ASSERT_TRUE(test_interposer::AwaitHeldLookups(2, kWait));

  const absl::Duration limit = absl::Seconds(1) + kSlack;
  const bool first_ended = first->AwaitDone(limit);
  const bool second_ended = second->AwaitDone(limit);
  const absl::Duration took = absl::Now() - start;
  const bool still_hanging =
      test_interposer::LookupHeld(0) && test_interposer::LookupHeld(1);
  test_interposer::ReleaseHeldLookups();

  EXPECT_TRUE(first_ended && second_ended)
      << "a call outlived its connect timeout by more than " << kSlack;
  EXPECT_LT(took, limit);
  EXPECT_TRUE(still_hanging);
  for (const std::shared_ptr<Call>& call : {first, second}) {
    absl::StatusOr<HttpAnswer> result = call->Result();
    EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable)
        << result.status();
    EXPECT_THAT(std::string(result.status().message()),
                HasSubstr("Resolving timed out"));
  }
  EXPECT_EQ(server.connections(), 0);
}

// The first call's lookup hangs; the second call's lookup answers and fills
// libcurl's DNS cache, where the first call finds the address too. Both get
// their answers while the first lookup still hangs: finishing a call must
// not wait for its abandoned lookup thread either.
TEST(CurlUpstreamDnsTest, CallsGetTheirAnswersWhileAnAbandonedLookupHangs) {
  const std::string host = "abandoned-lookup.aopay.test";
  TestCa ca("dns-cache-ca");
  SslCtxPtr tls = ca.ServerContext(absl::StrCat("DNS:", host));
  ASSERT_NE(tls, nullptr);
  RawServer server(
      [](const RawRequest& request) -> std::optional<Reply> {
        return Reply{200, absl::StrCat(R"({"echo":)", request.body, "}")};
      },
      tls.get());
  // Time enough for TLS handshakes on a slow (sanitized, loaded) machine:
  // the lookup stays held until both calls have ended or kWait has passed.
  std::unique_ptr<CurlUpstream> client =
      ClientFor(host, server, ca, /*connect_timeout=*/kWait);
  ASSERT_NE(client, nullptr);
  test_interposer::ReleaseOnExit release_lookups;

  test_interposer::HoldLookupsOf(host, 1);
  std::shared_ptr<Call> first = Send(*client, R"({"n":"first"})");
  ASSERT_TRUE(test_interposer::AwaitHeldLookups(1, kWait));
  std::shared_ptr<Call> second = Send(*client, R"({"n":"second"})");

  const bool second_ended = second->AwaitDone(kWait);
  const bool first_ended = first->AwaitDone(kWait);
  const bool still_hanging = test_interposer::LookupHeld(0);
  test_interposer::ReleaseHeldLookups();

  EXPECT_TRUE(first_ended && second_ended)
      << "an answered call stalled behind a hung lookup";
  EXPECT_TRUE(still_hanging);
  absl::StatusOr<HttpAnswer> first_answer = first->Result();
  ASSERT_TRUE(first_answer.ok()) << first_answer.status();
  EXPECT_EQ(first_answer->body, R"({"echo":{"n":"first"}})");
  absl::StatusOr<HttpAnswer> second_answer = second->Result();
  ASSERT_TRUE(second_answer.ok()) << second_answer.status();
  EXPECT_EQ(second_answer->body, R"({"echo":{"n":"second"}})");
}

TEST(CurlUpstreamDnsTest, ShutdownCancelsACallWhoseLookupHangsAtOnce) {
  const std::string host = "hung-at-shutdown.aopay.test";
  CurlUpstreamOptions options;
  options.base_url = absl::StrCat("https://", host, ":1");
  options.timeout = kWait;
  std::unique_ptr<CurlUpstream> client = MakeClient(options);
  ASSERT_NE(client, nullptr);
  test_interposer::ReleaseOnExit release_lookups;
  test_interposer::HoldLookupsOf(host, 1);
  std::shared_ptr<Call> call = Send(*client, "{}");
  ASSERT_TRUE(test_interposer::AwaitHeldLookups(1, kWait));

  absl::Notification shut_down;
  std::thread stopper([&] {
    client->Shutdown(absl::ZeroDuration());
    shut_down.Notify();
  });
  const bool prompt = shut_down.WaitForNotificationWithTimeout(kSlack);
  test_interposer::ReleaseHeldLookups();
  stopper.join();

  EXPECT_TRUE(prompt) << "Shutdown waited for the hung lookup";
  EXPECT_EQ(call->Result().status().code(), absl::StatusCode::kCancelled);
}

TEST(CurlUpstreamDnsTest, AHostThatDoesNotResolveIsUnavailableAndSaysSo) {
  std::unique_ptr<CurlUpstream> client =
      MakeClient(absl::StrCat("https://", test_interposer::kUnresolvablePrefix,
                              "aopay", test_interposer::kFakeDomain));
  ASSERT_NE(client, nullptr);

  absl::StatusOr<HttpAnswer> answer = PostAndWait(*client, "{}");

  EXPECT_EQ(answer.status().code(), absl::StatusCode::kUnavailable)
      << answer.status();
  EXPECT_THAT(answer.status().message(), HasSubstr("Could not resolve host"));
}

// --- The trust store. ---

// `system_ca_` plays the system trust store: libcurl's default CA file loads
// its certificate instead, and libcurl's default CA directory an empty one.
// `extra_ca_` is the bundle given as ca_file.
class TrustStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> easy(
        curl_easy_init(), &curl_easy_cleanup);
    ASSERT_NE(easy, nullptr);
    char* default_file = nullptr;
    char* default_dir = nullptr;
    ASSERT_EQ(curl_easy_getinfo(easy.get(), CURLINFO_CAINFO, &default_file),
              CURLE_OK);
    ASSERT_EQ(curl_easy_getinfo(easy.get(), CURLINFO_CAPATH, &default_dir),
              CURLE_OK);
    if (default_file == nullptr && default_dir == nullptr) {
      GTEST_SKIP() << "this libcurl has no default CA file or directory";
    }
    std::string empty_dir =
        absl::StrCat(::testing::TempDir(), "curl_upstream_test_XXXXXX");
    ASSERT_NE(mkdtemp(empty_dir.data()), nullptr);
    empty_dir_ = empty_dir;
    test_interposer::RedirectTrustStore(
        default_file != nullptr ? default_file : "", system_ca_.pem_path(),
        default_dir != nullptr ? default_dir : "", empty_dir_);
  }

  void TearDown() override {
    test_interposer::ClearTrustStoreRedirects();
    if (!empty_dir_.empty()) rmdir(empty_dir_.c_str());
  }

  absl::StatusOr<HttpAnswer> CallOnce(const RawServer& server,
                                      const std::string& ca_file) {
    CurlUpstreamOptions options;
    options.base_url = server.https_url();
    options.timeout = kWait;
    options.ca_file = ca_file;
    std::unique_ptr<CurlUpstream> client = MakeClient(options);
    if (client == nullptr) return absl::InternalError("no client");
    return PostAndWait(*client, "{}");
  }

  TestCa system_ca_{"system-ca"};
  TestCa extra_ca_{"extra-ca"};
  std::string empty_dir_;
};

TEST_F(TrustStoreTest, CaFileIsTrustedBesideTheSystemStore) {
  SslCtxPtr system_tls = system_ca_.ServerContext("IP:127.0.0.1");
  SslCtxPtr extra_tls = extra_ca_.ServerContext("IP:127.0.0.1");
  ASSERT_NE(system_tls, nullptr);
  ASSERT_NE(extra_tls, nullptr);
  RawServer system_server(AnswerOk(R"({"by":"system"})"), system_tls.get());
  RawServer extra_server(AnswerOk(R"({"by":"extra"})"), extra_tls.get());

  absl::StatusOr<HttpAnswer> from_system =
      CallOnce(system_server, extra_ca_.pem_path());
  absl::StatusOr<HttpAnswer> from_extra =
      CallOnce(extra_server, extra_ca_.pem_path());

  ASSERT_TRUE(from_system.ok()) << from_system.status();
  EXPECT_EQ(from_system->body, R"({"by":"system"})");
  ASSERT_TRUE(from_extra.ok()) << from_extra.status();
  EXPECT_EQ(from_extra->body, R"({"by":"extra"})");
}

// The control: the stand-in system store is what libcurl trusts by default,
// and the extra CA is trusted only when given.
TEST_F(TrustStoreTest, WithoutCaFileOnlyTheSystemStoreIsTrusted) {
  SslCtxPtr system_tls = system_ca_.ServerContext("IP:127.0.0.1");
  SslCtxPtr extra_tls = extra_ca_.ServerContext("IP:127.0.0.1");
  ASSERT_NE(system_tls, nullptr);
  ASSERT_NE(extra_tls, nullptr);
  RawServer system_server(AnswerOk(), system_tls.get());
  RawServer extra_server(AnswerOk(), extra_tls.get());

  absl::StatusOr<HttpAnswer> from_system = CallOnce(system_server, "");
  absl::StatusOr<HttpAnswer> from_extra = CallOnce(extra_server, "");

  EXPECT_TRUE(from_system.ok()) << from_system.status();
  EXPECT_EQ(from_extra.status().code(), absl::StatusCode::kUnavailable)
      << from_extra.status();
  EXPECT_THAT(from_extra.status().message(), HasSubstr("certificate"));
  EXPECT_TRUE(extra_server.requests().empty());
}

TEST(CurlUpstreamTest, RejectsACaFileWithoutUsableCertificates) {
  const std::string path = absl::StrCat(
      ::testing::TempDir(), "curl_upstream_test_bad_ca_", getpid(), ".pem");
  for (const char* content :
       {"", "not a certificate\n",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"
        "-----END CERTIFICATE-----\n"}) {
    FILE* file = std::fopen(path.c_str(), "w");
    ASSERT_NE(file, nullptr);
    std::fputs(content, file);
    std::fclose(file);
    CurlUpstreamOptions options;
    options.base_url = "https://payout.aopay.co.in";
    options.ca_file = path;

    absl::StatusOr<std::unique_ptr<CurlUpstream>> client =
        CurlUpstream::Create(options);

    EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument)
        << "content: " << content;
    EXPECT_THAT(client.status().message(), Not(HasSubstr("\n")));
  }
  std::remove(path.c_str());
}

}  // namespace
}  // namespace aopay
