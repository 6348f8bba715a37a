#include "server/sandbox/sandbox.h"

#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "httplib.h"
#include "server/sandbox/delay_scheduler.h"
#include "server/sandbox/journal.h"
#include "server/sandbox/script.h"
#include "server/sandbox/wire.h"

namespace aopay {
namespace {

// The sandbox's own wire format, script and journal live in
// aopay::sandbox: the gateway's domain has types of the same names
// (PayoutRequest), and one program links both.
using sandbox::Answer;
using sandbox::Journal;
using sandbox::kHtmlContentType;
using sandbox::kJournalFailedPage;
using sandbox::kJsonContentType;
using sandbox::kNotDroppedPage;
using sandbox::Script;

constexpr char kPayoutPath[] = "/api/V6/Payout/AOPPayout";
constexpr char kStatusPath[] = "/api/V6/Payout/AOPPayoutStatus";

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
      : options_(std::move(options)), script_(options_) {
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

  // What every request goes through before its answer: journalled and
  // counted, then held for the latency plus `delay`. False when it is to get
  // no answer: the journal could not be written (`response` then holds a
  // 500; an answer must never go out for a request the journal does not
  // show), or the sandbox is stopping.
  bool Admit(const httplib::Request& request, httplib::Response& response,
             absl::Duration delay = absl::ZeroDuration());
  void Perform(const httplib::Request& request, const Answer& answer,
               httplib::Response& response);
  // Shuts down every connection accepted on the sandbox's address, so that
  // workers idling in keep-alive end now rather than after its timeout.
  void CloseOpenConnections();

  SandboxOptions options_;
  Script script_;
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

bool Sandbox::Impl::Admit(const httplib::Request& request,
                          httplib::Response& response, absl::Duration delay) {
  const absl::Time now = absl::Now();
  if (journal_ != nullptr &&
      !journal_->Append(request.path, request.body, now)) {
    response.status = 500;
    response.set_content(kJournalFailedPage, kHtmlContentType);
    return false;
  }
  requests_received_.fetch_add(1);
  delay += script_.latency();
  const bool waited = delay <= absl::ZeroDuration()
                          ? !stopping_.HasBeenNotified()
                          : delays_.WaitUntil(absl::Now() + delay);
  // Not sent: Stop has closed the connection.
  if (!waited) response.status = 503;
  return waited;
}

void Sandbox::Impl::HandlePayout(const httplib::Request& request,
                                 httplib::Response& response) {
  // Decided before the wait, which depends on it. Deciding records nothing.
  const Answer answer = script_.DecidePayout(
      request.get_header_value("Content-Type"), request.body);
  if (Admit(request, response, answer.delay)) {
    Perform(request, answer, response);
  }
}

void Sandbox::Impl::HandleStatus(const httplib::Request& request,
                                 httplib::Response& response) {
  // Decided after the wait: the status is the one at answer time.
  if (Admit(request, response)) {
    Perform(request,
            script_.DecideStatus(request.get_header_value("Content-Type"),
                                 request.body),
            response);
  }
}

void Sandbox::Impl::HandleOther(const httplib::Request& request,
                                httplib::Response& response) {
  if (Admit(request, response)) {
    Perform(request, script_.DecideOther(), response);
  }
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
        response.set_content(kNotDroppedPage, kHtmlContentType);
      }
      return;
    case Answer::Kind::kAccept:
      response.status = 200;
      response.set_content(script_.Accept(answer), kJsonContentType);
      return;
  }
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
