#include "server/upstream/curl/curl_upstream.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "common/openssl_ptr.h"
#include "common/thread_name.h"

namespace aopay {
namespace {

struct EasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
struct MultiDeleter {
  void operator()(CURLM* multi) const { curl_multi_cleanup(multi); }
};
struct ShareDeleter {
  void operator()(CURLSH* share) const { curl_share_cleanup(share); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
struct UrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};
struct CurlStringDeleter {
  void operator()(char* text) const { curl_free(text); }
};
// Owns a file descriptor (-1: none).
class FdPtr {
 public:
  explicit FdPtr(int fd) : fd_(fd) {}
  FdPtr(FdPtr&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  FdPtr& operator=(FdPtr&&) = delete;
  ~FdPtr() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};
using EasyPtr = std::unique_ptr<CURL, EasyDeleter>;
using MultiPtr = std::unique_ptr<CURLM, MultiDeleter>;
using SharePtr = std::unique_ptr<CURLSH, ShareDeleter>;
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;
using UrlPtr = std::unique_ptr<CURLU, UrlDeleter>;
using CurlString = std::unique_ptr<char, CurlStringDeleter>;

// The CAs of options.ca_file, read once; trusted besides the system's.
using CaCertificates = std::vector<CertificatePtr>;

// Payouts only reuse a kept-alive connection that has been idle for less than
// two seconds (libcurl compares whole idle seconds with ">"). A server closes
// an idle connection after its keep-alive timeout; if that close crosses our
// request on the wire, the request may have arrived and no answer comes back,
// so the payout ends UNKNOWN (never re-sent, see BeforeSend). The shortest
// idle timeouts in common use are around five seconds (Apache httpd, Node.js),
// so staying well below that keeps the race rare, while a busy gateway still
// reuses its connections. The price is a fresh TCP and TLS handshake for a
// payout after a quiet spell. Idempotent calls keep libcurl's default.
constexpr long kPayoutMaxIdleSeconds = 1;

absl::StatusOr<std::string> GetUrlPart(CURLU* url, CURLUPart part) {
  char* raw = nullptr;
  const CURLUcode code = curl_url_get(url, part, &raw, 0);
  CurlString text(raw);
  if (code != CURLUE_OK || text == nullptr) {
    return absl::NotFoundError("no such part");
  }
  return std::string(text.get());
}

bool IsLoopbackHost(absl::string_view host) {
  if (absl::EqualsIgnoreCase(host, "localhost")) return true;
  std::string bare(host);
  if (absl::ConsumePrefix(&host, "[") && absl::ConsumeSuffix(&host, "]")) {
    bare = std::string(host);
    in6_addr v6{};
    return inet_pton(AF_INET6, bare.c_str(), &v6) == 1 &&
           IN6_IS_ADDR_LOOPBACK(&v6);
  }
  in_addr v4{};
  return inet_pton(AF_INET, bare.c_str(), &v4) == 1 &&
         (ntohl(v4.s_addr) >> 24) == 127;
}

// Returns the base URL without trailing slashes, ready for a path.
absl::StatusOr<std::string> CheckBaseUrl(const std::string& base_url,
                                         absl::string_view name) {
  UrlPtr url(curl_url());
  if (url == nullptr) return absl::ResourceExhaustedError("out of memory");
  if (curl_url_set(url.get(), CURLUPART_URL, base_url.c_str(), 0) !=
      CURLUE_OK) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " is not an absolute http(s) URL"));
  }
  absl::StatusOr<std::string> scheme = GetUrlPart(url.get(), CURLUPART_SCHEME);
  absl::StatusOr<std::string> host = GetUrlPart(url.get(), CURLUPART_HOST);
  if (!scheme.ok() || !host.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " has no scheme or host"));
  }
  if (GetUrlPart(url.get(), CURLUPART_USER).ok() ||
      GetUrlPart(url.get(), CURLUPART_PASSWORD).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must not carry user info"));
  }
  if (GetUrlPart(url.get(), CURLUPART_QUERY).ok() ||
      GetUrlPart(url.get(), CURLUPART_FRAGMENT).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must not have a query or fragment"));
  }
  const std::string lower_scheme = absl::AsciiStrToLower(*scheme);
  if (lower_scheme == "http") {
    if (!IsLoopbackHost(*host)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name,
                       " must use https:// unless the host is loopback "
                       "(127.0.0.0/8, [::1], localhost)"));
    }
  } else if (lower_scheme != "https") {
    return absl::InvalidArgumentError(absl::StrCat(name, " must use https://"));
  }
  return std::string(absl::StripSuffix(base_url, "/"));
}

// One libcurl multi handle and its connection cache. libcurl 7.88 looks for
// a reusable connection by walking every connection to the host, so a
// transfer costs time in proportion to the connections open: with 5,000 in
// flight that walk was half the gateway's CPU. The loop spreads transfers
// over shards of at most kShardConnections connections each, all driven by
// its one thread and one epoll set.
struct Shard {
  MultiPtr multi;
  uint32_t index = 0;
  size_t active = 0;                              // transfers added
  absl::Time timer_due = absl::InfiniteFuture();  // libcurl's timer
  int epoll_fd = -1;                              // the loop's epoll set
};

constexpr size_t kShardConnections = 256;

// epoll's data for a socket: its shard and descriptor; the wakeup eventfd
// has the shard kNoShard.
constexpr uint32_t kNoShard = UINT32_MAX;
uint64_t EpollKey(uint32_t shard, int fd) {
  return (static_cast<uint64_t>(shard) << 32) | static_cast<uint32_t>(fd);
}

// Everything one call needs while libcurl works on it. Owned by the loop;
// its address is what libcurl's callbacks receive.
struct Transfer {
  UpstreamRequest request;
  UpstreamClient::Callback done;
  std::string url;
  SlistPtr headers;  // the client's and the request's own, when it has any
  EasyPtr easy;
  HttpAnswer answer;
  int attempts = 0;             // times libcurl was about to send the request
  bool refused_resend = false;  // BeforeSend stopped a second copy
  Shard* shard = nullptr;       // whose multi handle runs it
  char error[CURL_ERROR_SIZE] = {};
};

size_t KeepBody(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  const size_t length = size * count;
  const size_t room = kMaxAnswerBytes - transfer->answer.body.size();
  if (length > room) {
    transfer->answer.body.append(data, room);
    transfer->answer.truncated = true;
    return 0;  // anything but `length` ends the transfer (CURLE_WRITE_ERROR)
  }
  transfer->answer.body.append(data, length);
  return length;
}

// libcurl calls this right before it writes each attempt's request: once
// normally, again for each silent re-send it decides on (a reused
// connection that died before the first answer byte). A second attempt of a
// payout is a possible double payment, so it is refused.
int BeforeSend(void* user, char* /*remote_ip*/, char* /*local_ip*/,
               int /*remote_port*/, int /*local_port*/) {
  auto* transfer = static_cast<Transfer*>(user);
  ++transfer->attempts;
  if (transfer->attempts > 1 && !transfer->request.idempotent) {
    transfer->refused_resend = true;
    return CURL_PREREQFUNC_ABORT;
  }
  return CURL_PREREQFUNC_OK;
}

// Reads every certificate of a PEM bundle. INVALID_ARGUMENT when the file
// cannot be read, a certificate block in it cannot be parsed, or it holds
// none. Text around the PEM blocks is ignored, as OpenSSL does.
absl::StatusOr<std::shared_ptr<const CaCertificates>> LoadCaBundle(
    const std::string& path, absl::string_view name) {
  ERR_clear_error();
  BioPtr file(BIO_new_file(path.c_str(), "r"));
  if (file == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(name, " cannot be read"));
  }
  auto certificates = std::make_shared<CaCertificates>();
  while (X509* certificate =
             PEM_read_bio_X509_AUX(file.get(), nullptr, nullptr, nullptr)) {
    certificates->emplace_back(certificate);
  }
  // Running out of PEM blocks is the normal end; any other error is a
  // certificate block that does not parse.
  const unsigned long error = ERR_peek_last_error();
  ERR_clear_error();
  if (ERR_GET_LIB(error) != ERR_LIB_PEM ||
      ERR_GET_REASON(error) != PEM_R_NO_START_LINE) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " holds a certificate that cannot be parsed"));
  }
  if (certificates->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " holds no PEM certificate"));
  }
  return std::shared_ptr<const CaCertificates>(std::move(certificates));
}

// libcurl calls this with each new connection's OpenSSL context after it has
// loaded the system's CAs into it (CURLOPT_SSL_CTX_FUNCTION); the extra CAs
// join them. libcurl may hand the same certificate store again (it caches
// it per multi handle); OpenSSL 3 accepts a certificate already there.
CURLcode AddExtraCas(CURL* /*easy*/, void* ssl_ctx, void* user) {
  const auto* certificates = static_cast<const CaCertificates*>(user);
  X509_STORE* store = SSL_CTX_get_cert_store(static_cast<SSL_CTX*>(ssl_ctx));
  if (store == nullptr) return CURLE_SSL_CACERT_BADFILE;
  for (const CertificatePtr& certificate : *certificates) {
    if (X509_STORE_add_cert(store, certificate.get()) != 1) {
      ERR_clear_error();
      return CURLE_SSL_CACERT_BADFILE;
    }
  }
  return CURLE_OK;
}

// The request headers every call sends; libcurl only reads the list, so one
// list serves every transfer for the client's lifetime.
absl::StatusOr<SlistPtr> MakeHeaders() {
  SlistPtr headers;
  for (const char* header : {"Content-Type: application/json", "Expect:"}) {
    curl_slist* longer = curl_slist_append(headers.get(), header);
    if (longer == nullptr) {
      return absl::ResourceExhaustedError("curl_slist_append failed");
    }
    (void)headers.release();  // now part of `longer`
    headers.reset(longer);
  }
  return headers;
}

// Fills in the options; the easy handle is created here. `headers`,
// `extra_cas` and `share` (null when there are none) must outlive the
// transfer.
absl::Status Configure(const CurlUpstreamOptions& options,
                       const curl_slist* headers,
                       const CaCertificates* extra_cas, CURLSH* share,
                       Transfer& transfer) {
  // A handle from an earlier call comes reset (curl_easy_reset): it keeps
  // only its buffers.
  if (transfer.easy == nullptr) transfer.easy.reset(curl_easy_init());
  if (transfer.easy == nullptr) {
    return absl::ResourceExhaustedError("curl_easy_init failed");
  }

  CURL* easy = transfer.easy.get();
  CURLcode code = CURLE_OK;
  const char* failed = nullptr;
  auto set = [&](const char* name, auto option, auto value) {
    if (code != CURLE_OK) return;
    code = curl_easy_setopt(easy, option, value);
    if (code != CURLE_OK) failed = name;
  };
  const int64_t timeout_ms = absl::ToInt64Milliseconds(options.timeout);
  const int64_t connect_ms =
      std::min(timeout_ms, absl::ToInt64Milliseconds(options.connect_timeout));

  set("URL", CURLOPT_URL, transfer.url.c_str());
  set("POST", CURLOPT_POST, 1L);
  // The body stays in `transfer.request` until the handle is cleaned up.
  set("POSTFIELDS", CURLOPT_POSTFIELDS, transfer.request.body.data());
  set("POSTFIELDSIZE_LARGE", CURLOPT_POSTFIELDSIZE_LARGE,
      static_cast<curl_off_t>(transfer.request.body.size()));
  set("HTTPHEADER", CURLOPT_HTTPHEADER, headers);
  set("HTTP_VERSION", CURLOPT_HTTP_VERSION,
      static_cast<long>(CURL_HTTP_VERSION_1_1));
  set("NOSIGNAL", CURLOPT_NOSIGNAL, 1L);
  // With the threaded resolver, a transfer that ends while its lookup is
  // still running (timed out resolving, aborted at shutdown, or finished with
  // an address another transfer's lookup put in the DNS cache) waits inside
  // curl_multi_perform for the lookup thread to return: every call on the
  // loop stalls for as long as getaddrinfo hangs. QUICK_EXIT makes libcurl
  // detach that thread instead; it frees itself when getaddrinfo returns.
  set("QUICK_EXIT", CURLOPT_QUICK_EXIT, 1L);
  set("TIMEOUT_MS", CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_ms));
  set("CONNECTTIMEOUT_MS", CURLOPT_CONNECTTIMEOUT_MS,
      static_cast<long>(connect_ms));
  set("FOLLOWLOCATION", CURLOPT_FOLLOWLOCATION, 0L);
  set("PROTOCOLS_STR", CURLOPT_PROTOCOLS_STR, "http,https");
  set("REDIR_PROTOCOLS_STR", CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  // An http_proxy/https_proxy variable in the environment must not quietly
  // route payouts through somebody else's machine.
  set("PROXY", CURLOPT_PROXY, "");
  set("SSL_VERIFYPEER", CURLOPT_SSL_VERIFYPEER, 1L);
  set("SSL_VERIFYHOST", CURLOPT_SSL_VERIFYHOST, 2L);
  if (extra_cas != nullptr) {
    set("SSL_CTX_FUNCTION", CURLOPT_SSL_CTX_FUNCTION, &AddExtraCas);
    set("SSL_CTX_DATA", CURLOPT_SSL_CTX_DATA,
        const_cast<void*>(static_cast<const void*>(extra_cas)));
  }
  set("WRITEFUNCTION", CURLOPT_WRITEFUNCTION, &KeepBody);
  set("WRITEDATA", CURLOPT_WRITEDATA, static_cast<void*>(&transfer));
  set("PREREQFUNCTION", CURLOPT_PREREQFUNCTION, &BeforeSend);
  set("PREREQDATA", CURLOPT_PREREQDATA, static_cast<void*>(&transfer));
  set("ERRORBUFFER", CURLOPT_ERRORBUFFER, transfer.error);
  set("PRIVATE", CURLOPT_PRIVATE, static_cast<void*>(&transfer));
  if (share != nullptr) set("SHARE", CURLOPT_SHARE, share);
  if (!transfer.request.idempotent) {
    set("MAXAGE_CONN", CURLOPT_MAXAGE_CONN, kPayoutMaxIdleSeconds);
  }
  if (code != CURLE_OK) {
    return absl::FailedPreconditionError(
        absl::StrCat("libcurl refused option CURLOPT_", failed, ": ",
                     curl_easy_strerror(code)));
  }
  return absl::OkStatus();
}

// Rule for "certainly not sent": libcurl got nowhere near writing the
// request. Three of its own facts say whether it did: BeforeSend runs right
// before each attempt's request is written (after TCP connect and TLS
// handshake); CURLINFO_REQUEST_SIZE counts request bytes written;
// CURLINFO_PRETRANSFER_TIME_T is stamped when the transfer phase begins. Only
// when all three are zero was nothing sent. The CURLcode alone does not say:
// it names the last failure, and an idempotent call may end in
// CURLE_COULDNT_CONNECT after an earlier attempt went out. A fact that cannot
// be read counts as "may have been sent".
bool MayHaveBeenSent(const Transfer& transfer) {
  if (transfer.attempts > 0) return true;
  long request_size = 0;
  curl_off_t pretransfer_us = 0;
  if (curl_easy_getinfo(transfer.easy.get(), CURLINFO_REQUEST_SIZE,
                        &request_size) != CURLE_OK ||
      curl_easy_getinfo(transfer.easy.get(), CURLINFO_PRETRANSFER_TIME_T,
                        &pretransfer_us) != CURLE_OK) {
    return true;
  }
  return request_size > 0 || pretransfer_us > 0;
}

// libcurl's words for a failure, without any URL query (it never quotes
// bodies). The error buffer can be empty; strerror never is.
std::string Describe(CURLcode code, const char* error_buffer) {
  std::string text = error_buffer != nullptr && error_buffer[0] != '\0'
                         ? std::string(error_buffer)
                         : std::string(curl_easy_strerror(code));
  for (size_t query = text.find('?'); query != std::string::npos;
       query = text.find('?', query + 1)) {
    const size_t end = text.find_first_of(" '\"\t\r\n", query);
    text.replace(query, end == std::string::npos ? end : end - query, "?...");
  }
  return absl::StrCat(text, " (curl error ", static_cast<int>(code), ")");
}

absl::StatusOr<HttpAnswer> Outcome(Transfer& transfer, CURLcode code) {
  long http_status = 0;
  if (curl_easy_getinfo(transfer.easy.get(), CURLINFO_RESPONSE_CODE,
                        &http_status) != CURLE_OK) {
    http_status = 0;
  }
  if (code == CURLE_OK ||
      (code == CURLE_WRITE_ERROR && transfer.answer.truncated)) {
    transfer.answer.http_status = static_cast<int>(http_status);
    return std::move(transfer.answer);
  }
  if (http_status >= 200) {
    // AOPay's answer began (its final status line came; an interim 1xx
    // does not count), then the transfer failed: a Content-Length that
    // promised more, a connection closed mid-body, a timeout. What came is
    // handed on, cut off, for the codec: UNKNOWN whatever it says.
    transfer.answer.http_status = static_cast<int>(http_status);
    transfer.answer.truncated = true;
    transfer.answer.cut_off_by = Describe(code, transfer.error);
    return std::move(transfer.answer);
  }
  if (transfer.refused_resend) {
    return absl::UnknownError(
        "the connection to AOPay closed without an answer after the request "
        "was sent; it was not re-sent and may have been received");
  }
  const std::string detail = Describe(code, transfer.error);
  if (!MayHaveBeenSent(transfer)) {
    return absl::UnavailableError(
        absl::StrCat("could not reach AOPay, nothing was sent: ", detail));
  }
  if (code == CURLE_OPERATION_TIMEDOUT) {
    return absl::DeadlineExceededError(absl::StrCat(
        "AOPay did not answer in time; the request may have been received: ",
        detail));
  }
  return absl::UnknownError(absl::StrCat(
      "AOPay call failed after the request may have been sent: ", detail));
}

}  // namespace

class CurlUpstream::Loop {
 public:
  Loop(CurlUpstreamOptions options, std::string base_url, SlistPtr headers,
       std::shared_ptr<const CaCertificates> extra_cas, SharePtr share,
       std::vector<MultiPtr> multis, FdPtr epoll, FdPtr wake)
      : options_(std::move(options)),
        headers_(std::move(headers)),
        extra_cas_(std::move(extra_cas)),
        base_url_(std::move(base_url)),
        epoll_(std::move(epoll)),
        wake_(std::move(wake)),
        share_(std::move(share)) {
    for (MultiPtr& multi : multis) {
      auto shard = std::make_unique<Shard>();
      shard->multi = std::move(multi);
      shard->index = static_cast<uint32_t>(shards_.size());
      shard->epoll_fd = epoll_.get();
      shards_.push_back(std::move(shard));
    }
  }

  ~Loop() {
    if (!thread_.joinable()) return;  // Start failed: nothing was posted
    Shutdown(absl::ZeroDuration());
    {
      absl::MutexLock lock(&mu_);
      quit_ = true;
    }
    Wake();
    if (thread_.joinable()) thread_.join();
  }

  // Hands libcurl's sockets and timer to this loop (curl_multi_socket_action
  // with epoll: each turn costs what is ready, not what is in flight).
  absl::Status Start() {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = EpollKey(kNoShard, wake_.get());
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &event) != 0) {
      return absl::FailedPreconditionError("cannot watch the loop's eventfd");
    }
    for (const std::unique_ptr<Shard>& shard : shards_) {
      CURLM* multi = shard->multi.get();
      void* data = static_cast<void*>(shard.get());
      if (curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, &OnSocket) !=
              CURLM_OK ||
          curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, data) != CURLM_OK ||
          curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, &OnTimer) !=
              CURLM_OK ||
          curl_multi_setopt(multi, CURLMOPT_TIMERDATA, data) != CURLM_OK) {
        return absl::FailedPreconditionError(
            "cannot hand libcurl's sockets to the event loop");
      }
    }
    thread_ = std::thread([this] {
      NameThisThread(options_.thread_name);
      Run();
    });
    return absl::OkStatus();
  }

  void Post(UpstreamRequest request, Callback done) {
    bool wake = false;
    {
      absl::MutexLock lock(&mu_);
      // Only the first of a burst wakes the loop: until the loop takes
      // to_start_ and rejected_ it will not sleep.
      wake = to_start_.empty() && rejected_.empty();
      Call call{std::move(request), std::move(done)};
      if (stopping_) {
        rejected_.push_back(
            {std::move(call.done),
             absl::CancelledError(
                 "the upstream client is shutting down; the call was not "
                 "sent")});
      } else if (slots_used_ < options_.max_inflight) {
        ++slots_used_;
        to_start_.push_back(std::move(call));
      } else if (waiting_.size() < options_.max_queue) {
        waiting_.push_back(std::move(call));
        wake = false;  // taken when a slot frees, not on a wakeup
      } else {
        rejected_.push_back(
            {std::move(call.done),
             absl::ResourceExhaustedError(absl::StrCat(
                 "the upstream queue is full (", options_.max_queue,
                 " waiting); the call was not sent"))});
      }
    }
    if (wake) Wake();
  }

  size_t InFlight() const {
    absl::MutexLock lock(&mu_);
    return slots_used_;
  }

  size_t Queued() const {
    absl::MutexLock lock(&mu_);
    return waiting_.size();
  }

  void Shutdown(absl::Duration grace) {
    {
      absl::MutexLock lock(&mu_);
      const absl::Time deadline =
          absl::Now() + std::max(grace, absl::ZeroDuration());
      deadline_ = stopping_ ? std::min(deadline_, deadline) : deadline;
      stopping_ = true;
    }
    Wake();
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&drained_));
  }

 private:
  struct Call {
    UpstreamRequest request;
    Callback done;
  };
  struct Delivery {
    Callback done;
    absl::StatusOr<HttpAnswer> result;
  };

  void Run() {
    std::vector<Delivery> out;
    std::deque<Call> starting;  // reused: a deque allocates when built
    std::vector<epoll_event> events(256);
    while (true) {
      starting.clear();
      bool abort_now = false;
      {
        absl::MutexLock lock(&mu_);
        starting.swap(to_start_);
        for (Delivery& rejected : rejected_) out.push_back(std::move(rejected));
        rejected_.clear();
        if (stopping_ && !aborted_ && absl::Now() >= deadline_) {
          aborted_ = abort_now = true;
          for (Call& call : waiting_) out.push_back(Cancel(std::move(call)));
          waiting_.clear();
        }
        if (aborted_) {
          for (Call& call : starting) out.push_back(Cancel(std::move(call)));
          slots_used_ -= starting.size();
          starting.clear();
        }
      }
      for (Call& call : starting) StartTransfer(std::move(call), out);
      if (abort_now) AbortActive(out);
      Deliver(out);

      RunDueTimers();
      Collect(out);
      Deliver(out);

      int wait_ms = 1000;
      {
        absl::MutexLock lock(&mu_);
        if (stopping_ && slots_used_ == 0 && waiting_.empty() &&
            rejected_.empty()) {
          drained_ = true;
        }
        if (quit_ && drained_ && rejected_.empty()) break;
        if (!to_start_.empty() || !rejected_.empty()) {
          wait_ms = 0;
        } else if (stopping_ && !aborted_) {
          const int64_t until_deadline = absl::ToInt64Milliseconds(
              absl::Ceil(deadline_ - absl::Now(), absl::Milliseconds(1)));
          wait_ms =
              static_cast<int>(std::clamp<int64_t>(until_deadline, 0, wait_ms));
        }
      }
      absl::Time timer_due = absl::InfiniteFuture();
      for (const std::unique_ptr<Shard>& shard : shards_) {
        timer_due = std::min(timer_due, shard->timer_due);
      }
      if (timer_due != absl::InfiniteFuture()) {
        const int64_t until_timer = absl::ToInt64Milliseconds(
            absl::Ceil(timer_due - absl::Now(), absl::Milliseconds(1)));
        wait_ms = static_cast<int>(
            std::clamp<int64_t>(until_timer, 0, static_cast<int64_t>(wait_ms)));
      }
      // Wakes early for socket activity or a wakeup from Post/Shutdown
      // (never lost: the eventfd stays readable until read); libcurl's timer
      // bounds the wait.
      const int ready = epoll_wait(epoll_.get(), events.data(),
                                   static_cast<int>(events.size()), wait_ms);
      for (int i = 0; i < ready; ++i) {
        const uint32_t shard = static_cast<uint32_t>(events[i].data.u64 >> 32);
        const int fd = static_cast<int>(events[i].data.u64 & 0xffffffffu);
        if (shard == kNoShard) {
          uint64_t count = 0;
          (void)!read(fd, &count, sizeof(count));
          continue;
        }
        int mask = 0;
        if (events[i].events & EPOLLIN) mask |= CURL_CSELECT_IN;
        if (events[i].events & EPOLLOUT) mask |= CURL_CSELECT_OUT;
        if (events[i].events & (EPOLLERR | EPOLLHUP)) mask |= CURL_CSELECT_ERR;
        int running = 0;
        curl_multi_socket_action(shards_[shard]->multi.get(), fd, mask,
                                 &running);
      }
      Collect(out);
      Deliver(out);
    }
  }

  void Wake() {
    const uint64_t one = 1;
    (void)!write(wake_.get(), &one, sizeof(one));
  }

  // libcurl's timer: called from inside its own calls on the loop thread.
  static int OnTimer(CURLM* /*multi*/, long timeout_ms, void* user) {
    auto* shard = static_cast<Shard*>(user);
    shard->timer_due = timeout_ms < 0
                           ? absl::InfiniteFuture()
                           : absl::Now() + absl::Milliseconds(timeout_ms);
    return 0;
  }

  // libcurl's sockets: which to watch, for what; called on the loop thread.
  // libcurl keeps a pointer per socket it watches (curl_multi_assign) and
  // forgets it with CURL_POLL_REMOVE: a socket without one is not in the
  // epoll set yet, so each change costs one epoll_ctl (a kept-alive
  // connection's next call comes back as a new socket: ADD, not MOD).
  static int OnSocket(CURL* /*easy*/, curl_socket_t socket, int what,
                      void* user, void* socket_data) {
    auto* shard = static_cast<Shard*>(user);
    if (what == CURL_POLL_REMOVE) {
      // libcurl may already have closed it; then the kernel dropped it too.
      epoll_ctl(shard->epoll_fd, EPOLL_CTL_DEL, socket, nullptr);
      return 0;
    }
    epoll_event event{};
    event.data.u64 = EpollKey(shard->index, socket);
    if (what & CURL_POLL_IN) event.events |= EPOLLIN;
    if (what & CURL_POLL_OUT) event.events |= EPOLLOUT;
    const bool watched = socket_data != nullptr;
    const int op = watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(shard->epoll_fd, op, socket, &event) != 0) {
      // The set and libcurl disagree (a descriptor number reused before its
      // removal reached us): do the other operation.
      const bool disagree = watched ? errno == ENOENT : errno == EEXIST;
      const int other = watched ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
      if (!disagree || epoll_ctl(shard->epoll_fd, other, socket, &event) != 0) {
        return -1;  // libcurl fails the transfers on this socket
      }
    }
    if (!watched) curl_multi_assign(shard->multi.get(), socket, shard);
    return 0;
  }

  void RunDueTimers() {
    const absl::Time now = absl::Now();
    for (const std::unique_ptr<Shard>& shard : shards_) {
      if (shard->timer_due > now) continue;
      shard->timer_due = absl::InfiniteFuture();
      int running = 0;
      curl_multi_socket_action(shard->multi.get(), CURL_SOCKET_TIMEOUT, 0,
                               &running);
    }
  }

  void Collect(std::vector<Delivery>& out) {
    RunDueTimers();
    for (const std::unique_ptr<Shard>& shard : shards_) {
      int left = 0;
      while (CURLMsg* message =
                 curl_multi_info_read(shard->multi.get(), &left)) {
        if (message->msg == CURLMSG_DONE) {
          FinishTransfer(message->easy_handle, message->data.result, out);
        }
      }
    }
  }

  // The shard with the fewest transfers: connections spread evenly.
  Shard& LeastBusyShard() {
    Shard* best = shards_.front().get();
    for (const std::unique_ptr<Shard>& shard : shards_) {
      if (shard->active < best->active) best = shard.get();
    }
    return *best;
  }

  static Delivery Cancel(Call call) {
    return {std::move(call.done),
            absl::CancelledError(
                "the upstream client shut down before the call was sent")};
  }

  void StartTransfer(Call call, std::vector<Delivery>& out) {
    auto transfer = std::make_unique<Transfer>();
    if (!spare_handles_.empty()) {
      transfer->easy = std::move(spare_handles_.back());
      spare_handles_.pop_back();
    }
    transfer->request = std::move(call.request);
    transfer->done = std::move(call.done);
    const std::string& path = transfer->request.path;
    const bool has_slash = path.empty() || absl::StartsWith(path, "/");
    transfer->url = absl::StrCat(base_url_, has_slash ? "" : "/", path);
    absl::Status status = AddRequestHeaders(*transfer);
    if (status.ok()) {
      status = Configure(options_,
                         transfer->headers != nullptr ? transfer->headers.get()
                                                      : headers_.get(),
                         extra_cas_.get(), share_.get(), *transfer);
    }
    Shard& shard = LeastBusyShard();
    if (status.ok()) {
      const CURLMcode added =
          curl_multi_add_handle(shard.multi.get(), transfer->easy.get());
      if (added != CURLM_OK) {
        status = absl::InternalError(curl_multi_strerror(added));
      }
    }
    if (!status.ok()) {
      ReleaseSlot();
      out.push_back({std::move(transfer->done),
                     absl::UnavailableError(absl::StrCat(
                         "could not set up the AOPay call, nothing was sent: ",
                         status.message()))});
      return;
    }
    CURL* easy = transfer->easy.get();
    transfer->shard = &shard;
    ++shard.active;
    active_.emplace(easy, std::move(transfer));
  }

  // A request with headers of its own gets a list of the client's and its
  // own; the others share the client's.
  absl::Status AddRequestHeaders(Transfer& transfer) const {
    if (transfer.request.headers.empty()) return absl::OkStatus();
    SlistPtr list;
    auto append = [&list](const char* header) {
      curl_slist* longer = curl_slist_append(list.get(), header);
      if (longer == nullptr) return false;
      (void)list.release();  // now part of `longer`
      list.reset(longer);
      return true;
    };
    for (const curl_slist* it = headers_.get(); it != nullptr; it = it->next) {
      if (!append(it->data)) {
        return absl::ResourceExhaustedError("curl_slist_append failed");
      }
    }
    for (const std::string& header : transfer.request.headers) {
      if (header.find_first_of("\r\n") != std::string::npos) {
        return absl::InvalidArgumentError("a header holds a line break");
      }
      if (!append(header.c_str())) {
        return absl::ResourceExhaustedError("curl_slist_append failed");
      }
    }
    transfer.headers = std::move(list);
    return absl::OkStatus();
  }

  void FinishTransfer(CURL* easy, CURLcode code, std::vector<Delivery>& out) {
    auto found = active_.find(easy);
    if (found == active_.end()) return;
    std::unique_ptr<Transfer> transfer = std::move(found->second);
    active_.erase(found);
    curl_multi_remove_handle(transfer->shard->multi.get(), easy);
    --transfer->shard->active;
    absl::StatusOr<HttpAnswer> result = Outcome(*transfer, code);
    ReleaseSlot();
    out.push_back({std::move(transfer->done), std::move(result)});
    Recycle(std::move(transfer->easy));
  }

  // Keeps a finished call's handle for the next call: creating one costs
  // tens of kilobytes of buffers, allocated and freed per call. Every option
  // is reset; the next call sets its own.
  void Recycle(EasyPtr easy) {
    if (easy == nullptr || spare_handles_.size() >= kMaxSpareHandles) return;
    curl_easy_reset(easy.get());
    spare_handles_.push_back(std::move(easy));
  }

  // Shutdown's grace is over: whatever is still on the wire is dropped.
  void AbortActive(std::vector<Delivery>& out) {
    for (auto& [easy, transfer] : active_) {
      curl_multi_remove_handle(transfer->shard->multi.get(), easy);
      --transfer->shard->active;
      absl::Status status =
          MayHaveBeenSent(*transfer)
              ? absl::UnknownError(
                    "the upstream client shut down during the AOPay call; "
                    "the request may have been received")
              : absl::CancelledError(
                    "the upstream client shut down before the call was sent");
      ReleaseSlot();
      out.push_back({std::move(transfer->done), std::move(status)});
    }
    active_.clear();
  }

  // A finished call's slot goes to the oldest waiting call, if any.
  void ReleaseSlot() {
    absl::MutexLock lock(&mu_);
    if (!aborted_ && !waiting_.empty()) {
      to_start_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    } else {
      --slots_used_;
    }
  }

  static void Deliver(std::vector<Delivery>& out) {
    for (Delivery& delivery : out) {
      if (delivery.done) delivery.done(std::move(delivery.result));
    }
    out.clear();
  }

  const CurlUpstreamOptions options_;
  const SlistPtr headers_;  // shared by every transfer
  const std::shared_ptr<const CaCertificates> extra_cas_;  // null: none
  const std::string base_url_;
  const FdPtr epoll_;  // libcurl's sockets and wake_
  const FdPtr wake_;   // an eventfd: Wake from any thread
  // Loop thread only. Declared after epoll_, which libcurl's callbacks touch
  // (curl_multi_cleanup may still call them), and before active_ so the
  // handles go first.
  // The shards' one DNS cache and TLS session cache (not their connections):
  // an address one shard looked up serves the others, as in one multi
  // handle. Used by the loop thread only, so it needs no lock callbacks.
  const SharePtr share_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::unordered_map<CURL*, std::unique_ptr<Transfer>> active_;
  // Finished calls' handles, reset, for the next calls (loop thread only).
  static constexpr size_t kMaxSpareHandles = 1024;
  std::vector<EasyPtr> spare_handles_;

  mutable absl::Mutex mu_;
  std::deque<Call> to_start_ ABSL_GUARDED_BY(mu_);  // hold a slot
  std::deque<Call> waiting_ ABSL_GUARDED_BY(mu_);   // wait for a slot
  std::vector<Delivery> rejected_ ABSL_GUARDED_BY(mu_);
  // Calls in to_start_ or on the wire.
  size_t slots_used_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool aborted_ ABSL_GUARDED_BY(mu_) = false;  // grace is over
  bool drained_ ABSL_GUARDED_BY(mu_) = false;  // every callback has run
  bool quit_ ABSL_GUARDED_BY(mu_) = false;

  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<CurlUpstream>> CurlUpstream::Create(
    CurlUpstreamOptions options) {
  absl::StatusOr<std::string> base_url =
      CheckBaseUrl(options.base_url, options.base_url_name);
  if (!base_url.ok()) return base_url.status();
  if (options.timeout <= absl::ZeroDuration() ||
      options.connect_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "timeout and connect_timeout must be positive");
  }
  if (options.max_inflight == 0) {
    return absl::InvalidArgumentError("max_inflight must be at least 1");
  }
  std::shared_ptr<const CaCertificates> extra_cas;
  if (!options.ca_file.empty()) {
    absl::StatusOr<std::shared_ptr<const CaCertificates>> loaded =
        LoadCaBundle(options.ca_file, options.ca_file_name);
    if (!loaded.ok()) return loaded.status();
    extra_cas = *std::move(loaded);
  }

  // A dry run of the per-call options finds a libcurl without one of them
  // (CURLOPT_PREREQFUNCTION needs 7.80, CURLOPT_QUICK_EXIT 7.87,
  // CURLOPT_SSL_CTX_FUNCTION the OpenSSL backend) before any payout depends
  // on it.
  absl::StatusOr<SlistPtr> headers = MakeHeaders();
  if (!headers.ok()) return headers.status();
  Transfer probe;
  probe.url = *base_url;
  if (absl::Status status =
          Configure(options, headers->get(), extra_cas.get(), nullptr, probe);
      !status.ok()) {
    return status;
  }

  const size_t shard_count = std::clamp<size_t>(
      (options.max_inflight + kShardConnections - 1) / kShardConnections, 1,
      64);
  const long max_connects = static_cast<long>(std::min<size_t>(
      (options.max_inflight + shard_count - 1) / shard_count, 1 << 20));
  SharePtr share(curl_share_init());
  if (share == nullptr ||
      curl_share_setopt(share.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) !=
          CURLSHE_OK ||
      curl_share_setopt(share.get(), CURLSHOPT_SHARE,
                        CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
    return absl::ResourceExhaustedError("libcurl refused the shared caches");
  }
  std::vector<MultiPtr> multis;
  for (size_t i = 0; i < shard_count; ++i) {
    MultiPtr multi(curl_multi_init());
    if (multi == nullptr) {
      return absl::ResourceExhaustedError("curl_multi_init failed");
    }
    if (curl_multi_setopt(multi.get(), CURLMOPT_MAXCONNECTS, max_connects) !=
            CURLM_OK ||
        curl_multi_setopt(multi.get(), CURLMOPT_PIPELINING,
                          static_cast<long>(CURLPIPE_NOTHING)) != CURLM_OK) {
      return absl::FailedPreconditionError(
          "libcurl refused the connection cache options");
    }
    multis.push_back(std::move(multi));
  }
  FdPtr epoll(epoll_create1(EPOLL_CLOEXEC));
  FdPtr wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (epoll.get() < 0 || wake.get() < 0) {
    return absl::ResourceExhaustedError(
        "cannot create the upstream client's epoll or eventfd");
  }
  auto loop = std::make_unique<Loop>(std::move(options), *std::move(base_url),
                                     *std::move(headers), std::move(extra_cas),
                                     std::move(share), std::move(multis),
                                     std::move(epoll), std::move(wake));
  if (absl::Status started = loop->Start(); !started.ok()) return started;
  return std::unique_ptr<CurlUpstream>(new CurlUpstream(std::move(loop)));
}

CurlUpstream::CurlUpstream(std::unique_ptr<Loop> loop)
    : loop_(std::move(loop)) {}

CurlUpstream::~CurlUpstream() = default;

void CurlUpstream::Shutdown(absl::Duration grace) { loop_->Shutdown(grace); }

void CurlUpstream::Post(UpstreamRequest request, Callback done) {
  loop_->Post(std::move(request), std::move(done));
}

size_t CurlUpstream::InFlight() const { return loop_->InFlight(); }

size_t CurlUpstream::Queued() const { return loop_->Queued(); }

}  // namespace aopay
