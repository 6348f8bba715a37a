#include "server/sandbox/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "httplib.h"
#include "server/sandbox/delay_scheduler.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace aopay {
namespace {

constexpr char kPayoutPath[] = "/api/V6/Payout/AOPPayout";
constexpr char kStatusPath[] = "/api/V6/Payout/AOPPayoutStatus";

// AOPay's documented messages (docs/aopay.md), verbatim.
constexpr char kMessage403[] =
    "APIs not enabled. Please reach out to care@AOP.com";
constexpr char kMessage409[] = "Beneficiary Id already exists";
constexpr char kMessage412[] = "Post data is empty or not a valid JSON";
constexpr char kMessage422[] = "Please provide a valid Bank IFSC code.";
constexpr char kMessageAccepted[] = "fundTransfer successfully processed";
// Not documented by AOPay: the status endpoint and unknown paths.
constexpr char kMessageNoTransaction[] = "Transaction not found";
constexpr char kMessageNoResource[] = "Resource not found";
constexpr char kMessageStatus[] = "Transaction status fetched successfully";

constexpr char kHtml500[] =
    "<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title>"
    "</head>\n<body><h1>Internal Server Error</h1>\n<p>The server "
    "encountered an internal error and was unable to complete your request."
    "</p>\n<hr><address>aopay-sandbox</address></body></html>\n";
constexpr char kHtmlJournalFailed[] =
    "<!DOCTYPE html>\n<html><body><h1>Internal Server Error</h1>\n"
    "<p>aopay-sandbox could not write its journal.</p></body></html>\n";
constexpr char kHtmlNotDropped[] =
    "<!DOCTYPE html>\n<html><body><h1>Bad Gateway</h1>\n<p>aopay-sandbox "
    "could not close the connection (scripted 0502).</p></body></html>\n";

constexpr char kJson[] = "application/json";
constexpr char kHtml[] = "text/html; charset=utf-8";

// httplib listens with a backlog of 5 (compiled into the library); a burst
// of a few hundred connects would then lose SYNs and stall for a second.
constexpr int kListenBacklog = 4096;
constexpr size_t kKeepAliveMaxCount = 100000;
constexpr size_t kMaxBodyBytes = 1 << 20;
constexpr absl::Duration kStartTimeout = absl::Seconds(30);

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer builds only. Debian's libcpp-httplib is not instrumented
// and builds function-local statics on first use: the set of request
// methods in Server::parse_request_line, and regexes in Client's
// constructor and ClientImpl::read_response_line. A thread that finds such a
// static already built skips __cxa_guard_acquire (the only step TSan sees)
// after a plain load of the guard inside the library, so its reads were
// reported as racing with the thread that built it (the sandbox's workers;
// sandbox_test's client threads). Building them here, on the thread that
// starts the sandbox and before the listener, its workers or a test's
// client threads exist, lets thread creation order them before every user.
// Nothing goes over the network: a throwaway server parses a request, and a
// throwaway client reads an answer, from memory.

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

class ServerStaticsWarmer : public httplib::Server {
 public:
  void Warm() {
    MemoryStream stream("GET / HTTP/1.1\r\n\r\n");  // answered 404
    bool connection_closed = false;
    process_request(stream, /*close_connection=*/true, connection_closed,
                    nullptr);
  }
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

void WarmHttplibStatics() {
  ServerStaticsWarmer().Warm();
  ClientStaticsWarmer().Warm();
  httplib::Client client("http://127.0.0.1:1");  // parses the URL only
}
#endif

// ---------------------------------------------------------------------------
// JSON, with RapidJSON directly: the sandbox must not share the gateway's
// codec.

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

void WriteString(JsonWriter& writer, absl::string_view value) {
  writer.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

void WriteField(JsonWriter& writer, absl::string_view key,
                absl::string_view value) {
  writer.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
  WriteString(writer, value);
}

std::string Contents(const rapidjson::StringBuffer& buffer) {
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string ErrorBody(absl::string_view sub_code, absl::string_view message) {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  writer.StartObject();
  WriteField(writer, "status", "ERROR");
  WriteField(writer, "subCode", sub_code);
  WriteField(writer, "message", message);
  writer.EndObject();
  return Contents(buffer);
}

std::string AcceptedBody(absl::Time now, absl::string_view reference_no,
                         absl::string_view transaction_id,
                         absl::string_view beneficiary_name) {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  writer.StartObject();
  writer.Key("initiateAuthGenericFundTransferAPIResp");
  writer.StartObject();
  writer.Key("metaData");
  writer.StartObject();
  WriteField(writer, "status", "SUCCESS");
  WriteField(writer, "message", kMessageAccepted);
  WriteField(writer, "version", "v1");
  WriteField(
      writer, "time",
      absl::FormatTime("%Y-%m-%d%ET%H:%M:%E3SZ", now, absl::UTCTimeZone()));
  writer.EndObject();
  writer.Key("resourceData");
  writer.StartObject();
  WriteField(writer, "status", "ACPT");
  WriteField(writer, "transactionReferenceNo", reference_no);
  WriteField(writer, "transactionID", transaction_id);
  WriteField(writer, "beneficiaryName", beneficiary_name);
  writer.EndObject();
  writer.EndObject();
  WriteField(writer, "statuss", "SUCCESS");
  WriteField(writer, "message", kMessageAccepted);
  WriteField(writer, "value", "");
  writer.EndObject();
  return Contents(buffer);
}

std::string StatusBody(absl::string_view transaction_id,
                       absl::string_view reference_no, absl::string_view word) {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  writer.StartObject();
  WriteField(writer, "status", "SUCCESS");
  WriteField(writer, "message", kMessageStatus);
  writer.Key("resourceData");
  writer.StartObject();
  WriteField(writer, "transactionID", transaction_id);
  WriteField(writer, "transactionReferenceNo", reference_no);
  WriteField(writer, "transactionStatus", word);
  writer.EndObject();
  writer.EndObject();
  return Contents(buffer);
}

// The body goes in as a JSON string holding exactly its bytes: RapidJSON's
// writer escapes quotes, backslashes and control characters (NUL included)
// and copies every other byte, valid UTF-8 or not, so a reader gets the
// body back byte for byte.
std::string JournalLine(int64_t seq, absl::string_view path,
                        absl::string_view body, absl::Time received) {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  writer.StartObject();
  writer.Key("seq");
  writer.Int64(seq);
  WriteField(writer, "path", path);
  WriteField(writer, "body", body);
  writer.Key("received_unix_ms");
  writer.Int64(absl::ToUnixMillis(received));
  writer.EndObject();
  std::string line = Contents(buffer);
  line.push_back('\n');
  return line;
}

// Reads `body` as AOPay would: a JSON object in which every named field is
// present and a string. False means 412.
[[nodiscard]] bool ReadStringFields(
    const std::string& body,
    std::initializer_list<std::pair<const char*, std::string*>> fields) {
  if (body.empty()) return false;
  rapidjson::Document document;
  document.Parse<rapidjson::kParseIterativeFlag |
                 rapidjson::kParseValidateEncodingFlag>(body.data(),
                                                        body.size());
  if (document.HasParseError() || !document.IsObject()) return false;
  for (const auto& [name, out] : fields) {
    const auto member = document.FindMember(name);
    if (member == document.MemberEnd() || !member->value.IsString()) {
      return false;
    }
    out->assign(member->value.GetString(), member->value.GetStringLength());
  }
  return true;
}

// The documented request header; a body sent as anything else (curl's
// default form encoding, say) is not JSON to the server.
bool HasJsonContentType(const httplib::Request& request) {
  std::string type = request.get_header_value("Content-Type");
  type = type.substr(0, type.find(';'));
  return absl::AsciiStrToLower(absl::StripAsciiWhitespace(type)) == kJson;
}

// ^[A-Z]{4}0[A-Z0-9]{6}$
bool IsValidIfsc(absl::string_view ifsc) {
  if (ifsc.size() != 11) return false;
  for (size_t i = 0; i < ifsc.size(); ++i) {
    const char c = ifsc[i];
    const bool upper = c >= 'A' && c <= 'Z';
    const bool digit = c >= '0' && c <= '9';
    if (i < 4 ? !upper : i == 4 ? c != '0' : !(upper || digit)) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Sockets. httplib 0.11 gives a handler no way to close its connection
// without answering, nor a way to close idle keep-alive connections on stop;
// both need the accepted socket, which the handler does not see. With TLS it
// is SSL_get_fd(request.ssl). Without, it is the process's one socket whose
// local and peer endpoints equal the request's, found among the open
// descriptors. That is exact (an established TCP 4-tuple is unique) and
// stable (the socket serving a request is not closed before its handler
// returns).

struct Endpoint {
  std::string ip;
  int port = -1;
};

// A socket's local (or peer) end, spelled as httplib spells it in Request.
std::optional<Endpoint> SocketEndpoint(int fd, bool peer) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  sockaddr* raw = reinterpret_cast<sockaddr*>(&address);
  if ((peer ? getpeername(fd, raw, &length) : getsockname(fd, raw, &length)) !=
      0) {
    return std::nullopt;
  }
  Endpoint endpoint;
  if (address.ss_family == AF_INET) {
    endpoint.port =
        ntohs(reinterpret_cast<const sockaddr_in*>(&address)->sin_port);
  } else if (address.ss_family == AF_INET6) {
    endpoint.port =
        ntohs(reinterpret_cast<const sockaddr_in6*>(&address)->sin6_port);
  } else {
    return std::nullopt;
  }
  char host[NI_MAXHOST];
  if (getnameinfo(raw, length, host, sizeof(host), nullptr, 0,
                  NI_NUMERICHOST) != 0) {
    return std::nullopt;
  }
  endpoint.ip = host;
  return endpoint;
}

struct DirCloser {
  void operator()(DIR* directory) const { closedir(directory); }
};

// Calls `visit` with every descriptor open in this process.
template <typename Visit>
void ForEachOpenDescriptor(Visit visit) {
  std::unique_ptr<DIR, DirCloser> directory(opendir("/proc/self/fd"));
  if (directory == nullptr) return;
  const int own_fd = dirfd(directory.get());
  while (const dirent* entry = readdir(directory.get())) {
    int fd = -1;
    if (!absl::SimpleAtoi(entry->d_name, &fd) || fd == own_fd) continue;
    visit(fd);
  }
}

// Shuts down (both ways) the connection `request` arrived on, so that not
// one byte of an answer reaches the client. False if it was not found.
bool DropConnection(const httplib::Request& request) {
  if (request.ssl != nullptr) {
    const int fd = SSL_get_fd(request.ssl);
    return fd >= 0 && shutdown(fd, SHUT_RDWR) == 0;
  }
  bool dropped = false;
  ForEachOpenDescriptor([&](int fd) {
    if (dropped) return;
    const std::optional<Endpoint> local = SocketEndpoint(fd, /*peer=*/false);
    if (!local || local->port != request.local_port ||
        local->ip != request.local_addr) {
      return;
    }
    const std::optional<Endpoint> peer = SocketEndpoint(fd, /*peer=*/true);
    if (!peer || peer->port != request.remote_port ||
        peer->ip != request.remote_addr) {
      return;
    }
    dropped = shutdown(fd, SHUT_RDWR) == 0;
  });
  return dropped;
}

// ---------------------------------------------------------------------------

// One JSON line per request, appended with one write(2) each: no user-space
// buffer, so a line is in the file (readable by other processes) as soon as
// Append returns.
class Journal {
 public:
  static absl::StatusOr<std::unique_ptr<Journal>> Open(
      const std::string& path) {
    const int fd =
        open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot open journal ", path, ": ", std::strerror(errno)));
    }
    return std::unique_ptr<Journal>(new Journal(fd));
  }
  ~Journal() { close(fd_); }
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Thread-safe; lines appear in `seq` order.
  [[nodiscard]] bool Append(absl::string_view path, absl::string_view body,
                            absl::Time received) {
    absl::MutexLock lock(&mu_);
    const std::string line = JournalLine(++seq_, path, body, received);
    size_t written = 0;
    while (written < line.size()) {
      const ssize_t n =
          write(fd_, line.data() + written, line.size() - written);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      written += static_cast<size_t>(n);
    }
    return true;
  }

 private:
  explicit Journal(int fd) : fd_(fd) {}

  absl::Mutex mu_;
  const int fd_;
  int64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
};

// Fresh identifiers. A counter makes them unique within a sandbox; a random
// start makes a collision between two sandboxes (a restarted one, say)
// unlikely.
class IdSource {
 public:
  IdSource() {
    std::random_device device;
    std::uniform_int_distribution<int64_t> start(0, kSpan - 1);
    transaction_start_ = start(device);
    reference_start_ = start(device);
  }

  std::string NextTransactionId() {
    return absl::StrCat(
        "TERF",
        kLowest + (transaction_start_ + transactions_.fetch_add(1)) % kSpan);
  }
  // 12 digits, no leading zero.
  std::string NextReferenceNo() {
    return absl::StrCat(kLowest +
                        (reference_start_ + references_.fetch_add(1)) % kSpan);
  }

 private:
  static constexpr int64_t kLowest = 100'000'000'000;
  static constexpr int64_t kSpan = 900'000'000'000;

  int64_t transaction_start_ = 0;
  int64_t reference_start_ = 0;
  std::atomic<int64_t> transactions_{0};
  std::atomic<int64_t> references_{0};
};

// What the status endpoint will say about an accepted payout.
enum class Fate { kSettles, kFails, kReverses };

struct Transaction {
  std::string reference_no;
  std::string registration;
  absl::Time accepted;
  Fate fate = Fate::kSettles;
};

// What to do with a request once its delay has passed.
struct Answer {
  enum class Kind { kReply, kDrop, kAccept };
  Kind kind = Kind::kReply;
  // kReply
  int http_status = 200;
  std::string content_type;
  std::string body;
  // Waited on top of the latency.
  absl::Duration delay = absl::ZeroDuration();
  // kAccept
  std::string beneficiary_name;
  std::string registration;
  Fate fate = Fate::kSettles;
};

Answer Reply(int http_status, std::string content_type, std::string body) {
  Answer answer;
  answer.http_status = http_status;
  answer.content_type = std::move(content_type);
  answer.body = std::move(body);
  return answer;
}

// A documented AOPay error, with HTTP status = subCode.
Answer DocumentedError(int sub_code) {
  const char* message = sub_code == 403   ? kMessage403
                        : sub_code == 409 ? kMessage409
                        : sub_code == 412 ? kMessage412
                                          : kMessage422;
  return Reply(sub_code, kJson, ErrorBody(absl::StrCat(sub_code), message));
}

std::string HostForUrl(const std::string& host) {
  return host.find(':') == std::string::npos ? host
                                             : absl::StrCat("[", host, "]");
}

absl::Status CheckOptions(const SandboxOptions& options) {
  if (options.host.empty()) return absl::InvalidArgumentError("empty host");
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("port ", options.port, " is not in 0..65535"));
  }
  if (options.registrations.empty()) {
    return absl::InvalidArgumentError("no registrations");
  }
  for (const std::string& registration : options.registrations) {
    if (registration.empty()) {
      return absl::InvalidArgumentError("an empty registration");
    }
  }
  if (options.latency < absl::ZeroDuration() ||
      options.slow < absl::ZeroDuration() ||
      options.settle < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("latency, slow and settle must be >= 0");
  }
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "tls_cert and tls_key go together: give both or neither");
  }
  if (options.threads < 1 || options.threads > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads ", options.threads, " is not in 1..100000"));
  }
  return absl::OkStatus();
}

}  // namespace

class Sandbox::Impl {
 public:
  explicit Impl(SandboxOptions options)
      : options_(std::move(options)),
        registrations_(options_.registrations.begin(),
                       options_.registrations.end()) {
    // httplib wants the host without IPv6 brackets.
    if (options_.host.size() > 2 && options_.host.front() == '[' &&
        options_.host.back() == ']') {
      options_.host = options_.host.substr(1, options_.host.size() - 2);
    }
  }
  ~Impl() { Stop(); }

  absl::Status Start();
  void Stop();

  int port() const { return port_; }
  std::string base_url() const {
    return absl::StrCat(options_.tls_cert.empty() ? "http" : "https", "://",
                        HostForUrl(options_.host), ":", port_);
  }
  int64_t requests_received() const { return requests_received_.load(); }

 private:
  enum class ListenState { kBinding, kServing, kEnded };

  void HandlePayout(const httplib::Request& request,
                    httplib::Response& response);
  void HandleStatus(const httplib::Request& request,
                    httplib::Response& response);
  void HandleOther(const httplib::Request& request,
                   httplib::Response& response);

  // Journals and counts `request`. False (with a 500 answer in `response`)
  // when the journal cannot be written: an answer must never go out for a
  // request the journal does not show.
  bool Receive(const httplib::Request& request, httplib::Response& response);
  // Waits `delay`; false as soon as the sandbox is stopping.
  bool Delay(absl::Duration delay);
  Answer DecidePayout(const httplib::Request& request) const;
  Answer DecideStatus(const httplib::Request& request);
  void Perform(const httplib::Request& request, const Answer& answer,
               httplib::Response& response);
  // Records an accepted payout and returns the documented success body.
  std::string Accept(const Answer& answer);
  // Shuts down every connection accepted on the sandbox's address, so that
  // workers idling in keep-alive end now rather than after its timeout.
  void CloseOpenConnections();

  SandboxOptions options_;
  const absl::flat_hash_set<std::string> registrations_;
  std::unique_ptr<Journal> journal_;
  std::unique_ptr<httplib::Server> server_;
  std::thread listener_;
  int port_ = 0;
  // The listening socket (owned by server_) and its address.
  int listen_fd_ = -1;
  Endpoint listen_endpoint_;
  bool listen_wildcard_ = false;

  absl::Mutex listen_mu_;
  ListenState listen_state_ ABSL_GUARDED_BY(listen_mu_) = ListenState::kBinding;

  absl::Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;
  absl::Notification stopping_;
  // Releases the handlers waiting out `latency` and `slow`.
  DelayScheduler delays_;

  std::atomic<int64_t> requests_received_{0};
  IdSource ids_;

  absl::Mutex transactions_mu_;
  absl::flat_hash_map<std::string, Transaction> transactions_
      ABSL_GUARDED_BY(transactions_mu_);
};

absl::Status Sandbox::Impl::Start() {
#if defined(__SANITIZE_THREAD__)
  WarmHttplibStatics();
#endif
  if (!options_.journal_path.empty()) {
    absl::StatusOr<std::unique_ptr<Journal>> journal =
        Journal::Open(options_.journal_path);
    if (!journal.ok()) return journal.status();
    journal_ = *std::move(journal);
  }

  if (options_.tls_cert.empty()) {
    server_ = std::make_unique<httplib::Server>();
  } else {
    auto server = std::make_unique<httplib::SSLServer>(
        options_.tls_cert.c_str(), options_.tls_key.c_str());
    if (!server->is_valid()) {
      return absl::InvalidArgumentError(
          "cannot load the TLS certificate or key");
    }
    server_ = std::move(server);
  }
  // httplib creates the pool when its accept loop starts, so this is also
  // the moment the sandbox is up.
  server_->new_task_queue = [this] {
    auto* pool = new httplib::ThreadPool(static_cast<size_t>(options_.threads));
    absl::MutexLock lock(&listen_mu_);
    listen_state_ = ListenState::kServing;
    return pool;
  };
  server_->set_keep_alive_max_count(kKeepAliveMaxCount);
  server_->set_payload_max_length(kMaxBodyBytes);
  server_->set_tcp_nodelay(true);
  // Replaces httplib's default, which sets SO_REUSEPORT and so would let a
  // second sandbox bind the same port silently.
  server_->set_socket_options([this](socket_t fd) {
    const int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_fd_ = fd;
  });
  server_->Post(kPayoutPath, [this](const httplib::Request& request,
                                    httplib::Response& response) {
    HandlePayout(request, response);
  });
  server_->Post(kStatusPath, [this](const httplib::Request& request,
                                    httplib::Response& response) {
    HandleStatus(request, response);
  });
  server_->Post(".*", [this](const httplib::Request& request,
                             httplib::Response& response) {
    HandleOther(request, response);
  });

  if (options_.port == 0) {
    port_ = server_->bind_to_any_port(options_.host);
  } else if (server_->bind_to_port(options_.host, options_.port)) {
    port_ = options_.port;
  } else {
    port_ = -1;
  }
  if (port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", HostForUrl(options_.host), ":",
                     options_.port, " (address in use or not local?)"));
  }
  // Listening again on a listening socket only changes its backlog.
  listen(listen_fd_, kListenBacklog);
  if (std::optional<Endpoint> local = SocketEndpoint(listen_fd_, false)) {
    listen_endpoint_ = *std::move(local);
  }
  listen_wildcard_ =
      listen_endpoint_.ip == "0.0.0.0" || listen_endpoint_.ip == "::";

  listener_ = std::thread([this] {
    server_->listen_after_bind();
    absl::MutexLock lock(&listen_mu_);
    listen_state_ = ListenState::kEnded;
  });
  absl::MutexLock lock(&listen_mu_);
  listen_mu_.AwaitWithTimeout(
      absl::Condition(
          +[](ListenState* state) { return *state != ListenState::kBinding; },
          &listen_state_),
      kStartTimeout);
  if (listen_state_ != ListenState::kServing) {
    return absl::InternalError("the sandbox's HTTP server did not start");
  }
  return absl::OkStatus();
}

void Sandbox::Impl::Stop() {
  absl::MutexLock lock(&stop_mu_);
  if (stopped_) return;
  stopped_ = true;
  // In this order: no new connections, then no live ones, then wake the
  // waiting handlers, whose answers now have nowhere to go.
  if (server_ != nullptr) server_->stop();
  if (listener_.joinable()) CloseOpenConnections();
  stopping_.Notify();
  delays_.Stop();
  if (listener_.joinable()) listener_.join();
  journal_.reset();
}

void Sandbox::Impl::CloseOpenConnections() {
  ForEachOpenDescriptor([&](int fd) {
    const std::optional<Endpoint> local = SocketEndpoint(fd, /*peer=*/false);
    if (!local || local->port != port_) return;
    if (!listen_wildcard_ && local->ip != listen_endpoint_.ip) return;
    // The listening socket (closed by now anyway) has no peer.
    if (!SocketEndpoint(fd, /*peer=*/true)) return;
    shutdown(fd, SHUT_RDWR);
  });
}

bool Sandbox::Impl::Receive(const httplib::Request& request,
                            httplib::Response& response) {
  const absl::Time now = absl::Now();
  if (journal_ != nullptr &&
      !journal_->Append(request.path, request.body, now)) {
    response.status = 500;
    response.set_content(kHtmlJournalFailed, kHtml);
    return false;
  }
  requests_received_.fetch_add(1);
  return true;
}

bool Sandbox::Impl::Delay(absl::Duration delay) {
  if (delay <= absl::ZeroDuration()) return !stopping_.HasBeenNotified();
  return delays_.WaitUntil(absl::Now() + delay);
}

void Sandbox::Impl::HandlePayout(const httplib::Request& request,
                                 httplib::Response& response) {
  if (!Receive(request, response)) return;
  const Answer answer = DecidePayout(request);
  if (!Delay(options_.latency + answer.delay)) {
    response.status = 503;  // Not sent: Stop has closed the connection.
    return;
  }
  Perform(request, answer, response);
}

void Sandbox::Impl::HandleStatus(const httplib::Request& request,
                                 httplib::Response& response) {
  if (!Receive(request, response)) return;
  // Decided after the delay: the status is the one at answer time.
  if (!Delay(options_.latency)) {
    response.status = 503;
    return;
  }
  Perform(request, DecideStatus(request), response);
}

void Sandbox::Impl::HandleOther(const httplib::Request& request,
                                httplib::Response& response) {
  if (!Receive(request, response)) return;
  if (!Delay(options_.latency)) {
    response.status = 503;
    return;
  }
  Perform(request, Reply(404, kJson, ErrorBody("404", kMessageNoResource)),
          response);
}

Answer Sandbox::Impl::DecidePayout(const httplib::Request& request) const {
  std::string account, amount, type, ifsc, name, email, mobile, registration;
  if (!HasJsonContentType(request) ||
      !ReadStringFields(request.body, {{"accountNumber", &account},
                                       {"amount", &amount},
                                       {"transactionType", &type},
                                       {"beneficiaryIFSC", &ifsc},
                                       {"beneficiaryName", &name},
                                       {"emailID", &email},
                                       {"mobileNo", &mobile},
                                       {"registrationID", &registration}})) {
    return DocumentedError(412);
  }
  if (!registrations_.contains(registration)) return DocumentedError(403);
  if (!IsValidIfsc(ifsc)) return DocumentedError(422);

  const absl::string_view suffix =
      account.size() < 4
          ? absl::string_view()
          : absl::string_view(account).substr(account.size() - 4);
  if (suffix == "0403") return DocumentedError(403);
  if (suffix == "0409") return DocumentedError(409);
  if (suffix == "0412") return DocumentedError(412);
  if (suffix == "0422") return DocumentedError(422);
  if (suffix == "0429") return Reply(429, "", "");
  if (suffix == "0500") return Reply(500, kHtml, kHtml500);
  Answer answer;
  if (suffix == "0502") {
    answer.kind = Answer::Kind::kDrop;
    return answer;
  }
  answer.kind = Answer::Kind::kAccept;
  answer.beneficiary_name = absl::AsciiStrToUpper(name);
  answer.registration = std::move(registration);
  if (suffix == "0504") answer.delay = options_.slow;
  if (suffix == "0601") answer.fate = Fate::kFails;
  if (suffix == "0602") answer.fate = Fate::kReverses;
  return answer;
}

Answer Sandbox::Impl::DecideStatus(const httplib::Request& request) {
  std::string transaction_id, registration;
  if (!HasJsonContentType(request) ||
      !ReadStringFields(request.body, {{"transactionID", &transaction_id},
                                       {"registrationID", &registration}})) {
    return DocumentedError(412);
  }
  if (!registrations_.contains(registration)) return DocumentedError(403);

  const absl::Time now = absl::Now();
  absl::MutexLock lock(&transactions_mu_);
  const auto found = transactions_.find(transaction_id);
  if (found == transactions_.end() ||
      found->second.registration != registration) {
    return Reply(404, kJson, ErrorBody("404", kMessageNoTransaction));
  }
  const Transaction& transaction = found->second;
  absl::string_view word;
  switch (transaction.fate) {
    case Fate::kFails:
      word = "FAILED";
      break;
    case Fate::kReverses:
      word = "REVERSED";
      break;
    case Fate::kSettles:
      word =
          now - transaction.accepted >= options_.settle ? "SUCCESS" : "PENDING";
      break;
  }
  return Reply(200, kJson,
               StatusBody(transaction_id, transaction.reference_no, word));
}

void Sandbox::Impl::Perform(const httplib::Request& request,
                            const Answer& answer, httplib::Response& response) {
  switch (answer.kind) {
    case Answer::Kind::kReply:
      response.status = answer.http_status;
      if (!answer.body.empty()) {
        response.set_content(answer.body, answer.content_type);
      }
      return;
    case Answer::Kind::kDrop:
      // httplib then fails to write its default answer and closes.
      if (!DropConnection(request)) {
        response.status = 502;
        response.set_content(kHtmlNotDropped, kHtml);
      }
      return;
    case Answer::Kind::kAccept:
      response.status = 200;
      response.set_content(Accept(answer), kJson);
      return;
  }
}

std::string Sandbox::Impl::Accept(const Answer& answer) {
  const absl::Time now = absl::Now();
  std::string transaction_id = ids_.NextTransactionId();
  std::string reference_no = ids_.NextReferenceNo();
  std::string body =
      AcceptedBody(now, reference_no, transaction_id, answer.beneficiary_name);
  Transaction transaction;
  transaction.reference_no = std::move(reference_no);
  transaction.registration = answer.registration;
  transaction.accepted = now;
  transaction.fate = answer.fate;
  absl::MutexLock lock(&transactions_mu_);
  transactions_.insert_or_assign(std::move(transaction_id),
                                 std::move(transaction));
  return body;
}

absl::StatusOr<std::unique_ptr<Sandbox>> Sandbox::Start(
    SandboxOptions options) {
  if (absl::Status checked = CheckOptions(options); !checked.ok()) {
    return checked;
  }
  auto impl = std::make_unique<Impl>(std::move(options));
  if (absl::Status started = impl->Start(); !started.ok()) return started;
  return std::unique_ptr<Sandbox>(new Sandbox(std::move(impl)));
}

Sandbox::Sandbox(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Sandbox::~Sandbox() { Stop(); }

int Sandbox::port() const { return impl_->port(); }

std::string Sandbox::base_url() const { return impl_->base_url(); }

int64_t Sandbox::requests_received() const {
  return impl_->requests_received();
}

void Sandbox::Stop() { impl_->Stop(); }

}  // namespace aopay
