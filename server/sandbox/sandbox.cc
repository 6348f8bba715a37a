#include "server/sandbox/sandbox.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <iterator>
#include <list>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/thread_name.h"
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
using sandbox::Script;

constexpr char kPayoutPath[] = "/api/V6/Payout/AOPPayout";
constexpr char kStatusPath[] = "/api/V6/Payout/AOPPayoutStatus";
// A webhook receiver for demos and benchmarks: every POST is journalled and
// answered 204 at once, its signature unchecked.
constexpr char kWebhookPath[] = "/webhooks";

// libevent would listen with a backlog of 128; a burst of a few thousand
// connects (the benchmark's 5,000) would then lose SYNs and stall for a
// second. The socket is made here, so the backlog is ours.
constexpr int kListenBacklog = 4096;
constexpr ev_ssize_t kMaxBodyBytes = 1 << 20;
// How long a connection may sit idle between requests, or take to send one
// or to read an answer, before it is closed (what cpp-httplib, which served
// the sandbox before, did by default).
constexpr int kConnectionTimeoutSeconds = 5;
// accept(2) failing for want of descriptors leaves the connection queued,
// so the listener would wake again at once and spin; it pauses this long
// instead while open connections finish.
constexpr timeval kAcceptPause = {0, 100 * 1000};

// Every method is handed to the sandbox: POST is served and the others get
// an empty 404, rather than evhttp's 405 for methods it was not told about.
constexpr ev_uint16_t kAllMethods =
    EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
    EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
    EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH;

// The status lines the sandbox has always sent (evhttp's own table lacks
// 422 and 429).
const char* ReasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 409:
      return "Conflict";
    case 412:
      return "Precondition Failed";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    default:
      return nullptr;  // evhttp's own
  }
}

// evthread_use_pthreads() sets process-wide hooks and must come before the
// first event_base: with it, Stop() may end the loop from another thread.
bool UseLibeventThreads() {
  static const bool ok = evthread_use_pthreads() == 0;
  return ok;
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
      options.latency_jitter < absl::ZeroDuration() ||
      options.slow < absl::ZeroDuration() ||
      options.settle < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "latency, latency_jitter, slow and settle must be >= 0");
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

// A listening TCP socket on host:port (port 0: a free one), non-blocking,
// with a backlog of kListenBacklog. SO_REUSEADDR lets a restarted sandbox
// take its port back at once; SO_REUSEPORT is not set, so a second sandbox
// on the same port fails instead of sharing it. -1 when no address of
// `host` could be bound.
int ListenOn(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* addresses = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints,
                  &addresses) != 0) {
    return -1;
  }
  int listening = -1;
  for (const addrinfo* address = addresses; address != nullptr && listening < 0;
       address = address->ai_next) {
    const int fd = socket(address->ai_family,
                          address->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                          address->ai_protocol);
    if (fd < 0) continue;
    const int yes = 1;
    const int no = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    // Accepted sockets inherit it (Linux): answers are not held back.
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
    if (address->ai_family == AF_INET6) {
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &no, sizeof(no));
    }
    if (bind(fd, address->ai_addr, address->ai_addrlen) == 0 &&
        listen(fd, kListenBacklog) == 0) {
      listening = fd;
    } else {
      close(fd);
    }
  }
  freeaddrinfo(addresses);
  return listening;
}

int LocalPort(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return -1;
  }
  if (address.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&address)->sin_port);
  }
  if (address.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&address)->sin6_port);
  }
  return -1;
}

// The request's path as the sandbox routes and journals it: without the
// query, percent-decoded ('+' kept).
std::string RequestPath(evhttp_request* request) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(request);
  const char* path = uri == nullptr ? nullptr : evhttp_uri_get_path(uri);
  if (path == nullptr) return "";
  size_t size = 0;
  char* decoded = evhttp_uridecode(path, /*decode_plus=*/0, &size);
  if (decoded == nullptr) return path;
  std::string result(decoded, size);
  std::free(decoded);
  return result;
}

std::string RequestBody(evhttp_request* request) {
  evbuffer* input = evhttp_request_get_input_buffer(request);
  std::string body(evbuffer_get_length(input), '\0');
  evbuffer_copyout(input, body.data(), body.size());
  return body;
}

std::string RequestContentType(evhttp_request* request) {
  const char* value = evhttp_find_header(
      evhttp_request_get_input_headers(request), "Content-Type");
  return value == nullptr ? "" : value;
}

// Sends an answer; no Content-Type when there is no body (the scripted
// 429, the 404 for other methods).
void Reply(evhttp_request* request, int status, const std::string& content_type,
           const std::string& body) {
  if (!body.empty()) {
    evhttp_add_header(evhttp_request_get_output_headers(request),
                      "Content-Type", content_type.c_str());
    evbuffer_add(evhttp_request_get_output_buffer(request), body.data(),
                 body.size());
  }
  // Frees `request`, also when its client has gone (nothing is sent then).
  evhttp_send_reply(request, status, ReasonPhrase(status), nullptr);
}

// Closes the connection `request` came on without a byte of an answer.
void DropConnection(evhttp_request* request) {
  evhttp_connection* connection = evhttp_request_get_connection(request);
  if (connection != nullptr) {
    evhttp_connection_free(connection);  // frees `request` too
  } else {
    evhttp_request_free(request);  // its connection is already gone
  }
}

}  // namespace

// One event-loop thread serves every connection. A request is read,
// journalled, counted and decided on that thread; an answer that has a delay
// (latency, `slow`) is a libevent timer that sends it when it fires, so no
// thread waits out a delay and thousands of answers can be pending at once.
class Sandbox::Impl {
 public:
  explicit Impl(SandboxOptions options)
      : options_(std::move(options)), script_(options_) {
    // getaddrinfo wants the host without IPv6 brackets.
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
  enum class Endpoint { kPayout, kStatus, kOther };

  // A request waiting for its delay, with what its answer is decided from.
  struct Delayed {
    Impl* impl = nullptr;
    evhttp_request* request = nullptr;
    event* timer = nullptr;
    Endpoint endpoint = Endpoint::kOther;
    // A payout's answer, decided on arrival (its delay depends on it).
    Answer answer;
    // A status request's, decided when answering (the status at that time).
    std::string content_type;
    std::string body;
    std::list<Delayed>::iterator self;
  };

  // libevent's callbacks, all on the loop thread.
  static void OnRequest(evhttp_request* request, void* arg);
  static void OnDelayOver(evutil_socket_t, short, void* arg);
  static bufferevent* NewTlsBufferevent(event_base* base, void* arg);
  static void OnAcceptError(evconnlistener* listener, void* arg);
  static void OnAcceptPauseOver(evutil_socket_t, short, void* arg);

  absl::Status LoadTls();
  void Run();
  void Handle(evhttp_request* request);
  // Carries out the answer of a request whose delay is over.
  void Perform(evhttp_request* request, Endpoint endpoint, Answer answer,
               const std::string& content_type, const std::string& body);

  SandboxOptions options_;
  Script script_;
  std::unique_ptr<Journal> journal_;
  int port_ = 0;

  // libevent's objects: made by Start, then used only on the loop thread
  // until Stop has joined it and frees them.
  SSL_CTX* tls_ = nullptr;
  event_base* base_ = nullptr;
  evhttp* http_ = nullptr;
  evconnlistener* listener_ = nullptr;
  event* accept_pause_ = nullptr;
  std::list<Delayed> delayed_;
  std::thread loop_;

  absl::Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;

  std::atomic<int64_t> requests_received_{0};
  uint64_t jittered_ = 0;  // requests given a share of the jitter (loop)
};

absl::Status Sandbox::Impl::LoadTls() {
  // As cpp-httplib's SSLServer set it up, which served the sandbox before.
  tls_ = SSL_CTX_new(TLS_server_method());
  if (tls_ == nullptr)
    return absl::InternalError("cannot create a TLS context");
  SSL_CTX_set_options(tls_, SSL_OP_NO_COMPRESSION |
                                SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION);
  SSL_CTX_set_min_proto_version(tls_, TLS1_1_VERSION);
  if (SSL_CTX_use_certificate_chain_file(tls_, options_.tls_cert.c_str()) !=
          1 ||
      SSL_CTX_use_PrivateKey_file(tls_, options_.tls_key.c_str(),
                                  SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(tls_) != 1) {
    return absl::InvalidArgumentError("cannot load the TLS certificate or key");
  }
  return absl::OkStatus();
}

absl::Status Sandbox::Impl::Start() {
  if (!options_.journal_path.empty()) {
    absl::StatusOr<std::unique_ptr<Journal>> journal =
        Journal::Open(options_.journal_path);
    if (!journal.ok()) return journal.status();
    journal_ = *std::move(journal);
  }
  if (!options_.tls_cert.empty()) {
    if (absl::Status loaded = LoadTls(); !loaded.ok()) return loaded;
  }
  if (!UseLibeventThreads()) {
    return absl::InternalError("libevent has no thread support");
  }

  const int fd = ListenOn(options_.host, options_.port);
  port_ = fd < 0 ? -1 : LocalPort(fd);
  if (port_ <= 0) {
    if (fd >= 0) close(fd);
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", HostForUrl(options_.host), ":",
                     options_.port, " (address in use or not local?)"));
  }

  base_ = event_base_new();
  http_ = base_ == nullptr ? nullptr : evhttp_new(base_);
  evhttp_bound_socket* bound =
      http_ == nullptr ? nullptr : evhttp_accept_socket_with_handle(http_, fd);
  if (bound == nullptr) {
    close(fd);
    return absl::InternalError("cannot set up the sandbox's HTTP server");
  }
  // From here on evhttp owns the socket.
  evhttp_set_gencb(http_, &Impl::OnRequest, this);
  evhttp_set_allowed_methods(http_, kAllMethods);
  // Bodies over the limit get 413 once read to their end, so that the
  // client, still sending, reads the answer rather than a reset.
  evhttp_set_max_body_size(http_, kMaxBodyBytes);
  evhttp_set_flags(http_, EVHTTP_SERVER_LINGERING_CLOSE);
  evhttp_set_timeout(http_, kConnectionTimeoutSeconds);
  evhttp_set_default_content_type(http_, nullptr);
  if (tls_ != nullptr) evhttp_set_bevcb(http_, &Impl::NewTlsBufferevent, this);
  listener_ = evhttp_bound_socket_get_listener(bound);
  evconnlistener_set_error_cb(listener_, &Impl::OnAcceptError);
  accept_pause_ = evtimer_new(base_, &Impl::OnAcceptPauseOver, this);
  if (accept_pause_ == nullptr) {
    return absl::InternalError("cannot set up the sandbox's HTTP server");
  }

  // The socket listens already: connections made from now on are accepted
  // and served once the loop runs.
  loop_ = std::thread([this] {
    NameThisThread("sandbox-loop");
    Run();
  });
  return absl::OkStatus();
}

void Sandbox::Impl::Run() {
  // Writing to a connection whose client has gone raises SIGPIPE, which
  // would end the process (the sandbox also runs inside payout-server and
  // tests, which do not ignore it). Blocked on this thread only, it stays
  // pending on it and the write fails with EPIPE instead.
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
  event_base_dispatch(base_);
}

void Sandbox::Impl::Stop() {
  absl::MutexLock lock(&stop_mu_);
  if (stopped_) return;
  stopped_ = true;
  if (loop_.joinable()) {
    // An event of its own, so that it ends the loop also when the loop has
    // not started yet.
    event_base_loopexit(base_, nullptr);
    loop_.join();
  }
  // The loop has ended; libevent is this thread's now. Pending answers are
  // never sent: their timers go, and their connections close with the rest.
  for (Delayed& delayed : delayed_) {
    event_free(delayed.timer);
    // A request whose client has gone is no longer its connection's.
    if (evhttp_request_get_connection(delayed.request) == nullptr) {
      evhttp_request_free(delayed.request);
    }
  }
  delayed_.clear();
  if (accept_pause_ != nullptr) event_free(accept_pause_);
  accept_pause_ = nullptr;
  // Closes the listening socket and every open connection.
  if (http_ != nullptr) evhttp_free(http_);
  http_ = nullptr;
  listener_ = nullptr;
  if (base_ != nullptr) event_base_free(base_);
  base_ = nullptr;
  if (tls_ != nullptr) SSL_CTX_free(tls_);
  tls_ = nullptr;
  journal_.reset();
}

void Sandbox::Impl::OnRequest(evhttp_request* request, void* arg) {
  static_cast<Impl*>(arg)->Handle(request);
}

void Sandbox::Impl::Handle(evhttp_request* request) {
  // Only POST is served; nothing else is journalled or counted.
  if (evhttp_request_get_command(request) != EVHTTP_REQ_POST) {
    Reply(request, 404, "", "");
    return;
  }
  const std::string path = RequestPath(request);
  std::string body = RequestBody(request);
  if (journal_ != nullptr && !journal_->Append(path, body, absl::Now())) {
    // An answer must never go out for a request the journal does not show.
    Reply(request, 500, kHtmlContentType, kJournalFailedPage);
    return;
  }
  requests_received_.fetch_add(1);
  if (path == kWebhookPath) {
    Reply(request, 204, "", "");
    return;
  }

  Delayed delayed;
  delayed.endpoint = path == kPayoutPath   ? Endpoint::kPayout
                     : path == kStatusPath ? Endpoint::kStatus
                                           : Endpoint::kOther;
  absl::Duration delay = script_.latency();
  if (options_.latency_jitter > absl::ZeroDuration()) {
    constexpr double kGoldenRatio = 0.6180339887498949;
    const double share =
        std::fmod(static_cast<double>(++jittered_) * kGoldenRatio, 1.0);
    delay += share * options_.latency_jitter;
  }
  if (delayed.endpoint == Endpoint::kPayout) {
    // Decided before the wait, which depends on it. Deciding records
    // nothing.
    delayed.answer = script_.DecidePayout(RequestContentType(request), body);
    delay += delayed.answer.delay;
  } else if (delayed.endpoint == Endpoint::kStatus) {
    delayed.content_type = RequestContentType(request);
    delayed.body = std::move(body);
  }
  // A drop goes through the loop even without a delay: the connection is
  // not closed under evhttp's feet while it is still calling this handler.
  if (delay <= absl::ZeroDuration() &&
      delayed.answer.kind != Answer::Kind::kDrop) {
    Perform(request, delayed.endpoint, std::move(delayed.answer),
            delayed.content_type, delayed.body);
    return;
  }

  delayed.impl = this;
  delayed.request = request;
  Delayed& pending = delayed_.emplace_back(std::move(delayed));
  pending.self = std::prev(delayed_.end());
  pending.timer = evtimer_new(base_, &Impl::OnDelayOver, &pending);
  const timeval wait = absl::ToTimeval(std::max(delay, absl::ZeroDuration()));
  if (pending.timer == nullptr || evtimer_add(pending.timer, &wait) != 0) {
    // Out of memory: no answer rather than one before its time.
    if (pending.timer != nullptr) event_free(pending.timer);
    delayed_.erase(pending.self);
    DropConnection(request);
  }
}

void Sandbox::Impl::OnDelayOver(evutil_socket_t, short, void* arg) {
  Delayed& delayed = *static_cast<Delayed*>(arg);
  Impl* impl = delayed.impl;
  evhttp_request* request = delayed.request;
  const Endpoint endpoint = delayed.endpoint;
  Answer answer = std::move(delayed.answer);
  const std::string content_type = std::move(delayed.content_type);
  const std::string body = std::move(delayed.body);
  event_free(delayed.timer);
  impl->delayed_.erase(delayed.self);
  impl->Perform(request, endpoint, std::move(answer), content_type, body);
}

void Sandbox::Impl::Perform(evhttp_request* request, Endpoint endpoint,
                            Answer answer, const std::string& content_type,
                            const std::string& body) {
  if (endpoint == Endpoint::kStatus) {
    answer = script_.DecideStatus(content_type, body);
  } else if (endpoint == Endpoint::kOther) {
    answer = script_.DecideOther();
  }
  switch (answer.kind) {
    case Answer::Kind::kReply:
      Reply(request, answer.http_status, answer.content_type, answer.body);
      return;
    case Answer::Kind::kDrop:
      DropConnection(request);
      return;
    case Answer::Kind::kAccept:
      Reply(request, 200, kJsonContentType, script_.Accept(answer));
      return;
  }
}

bufferevent* Sandbox::Impl::NewTlsBufferevent(event_base* base, void* arg) {
  SSL* ssl = SSL_new(static_cast<Impl*>(arg)->tls_);
  if (ssl == nullptr) return nullptr;
  // The fd comes later, from evhttp; the bufferevent frees `ssl`.
  bufferevent* connection = bufferevent_openssl_socket_new(
      base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
  if (connection == nullptr) {
    SSL_free(ssl);
    return nullptr;
  }
  // A client that closes without TLS's close_notify (most do, between
  // keep-alive requests) has ended the connection, not broken it.
  bufferevent_openssl_set_allow_dirty_shutdown(connection, 1);
  return connection;
}

void Sandbox::Impl::OnAcceptError(evconnlistener* listener, void* arg) {
  evconnlistener_disable(listener);
  evtimer_add(static_cast<Impl*>(arg)->accept_pause_, &kAcceptPause);
}

void Sandbox::Impl::OnAcceptPauseOver(evutil_socket_t, short, void* arg) {
  evconnlistener_enable(static_cast<Impl*>(arg)->listener_);
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
