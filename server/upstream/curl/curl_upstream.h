#ifndef AOPAY_SERVER_UPSTREAM_CURL_CURL_UPSTREAM_H_
#define AOPAY_SERVER_UPSTREAM_CURL_CURL_UPSTREAM_H_

// UpstreamClient over libcurl's multi interface: one event-loop thread, pooled
// keep-alive connections, a bounded FIFO of calls waiting for a slot.

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/limits.h"
#include "server/upstream/upstream_client.h"

namespace aopay {

struct CurlUpstreamOptions {
  // "https://host[:port][/prefix]", or "http://..." only for a loopback host
  // (127.0.0.0/8, [::1], localhost). No user info, query or fragment.
  std::string base_url;
  // The longest one call may take, connecting included.
  absl::Duration timeout = kDefaultUpstreamTimeout;
  // The longest connecting (TCP and TLS) may take; capped at `timeout`.
  absl::Duration connect_timeout = absl::Seconds(10);
  // Calls on the wire at once; also the size of the connection cache.
  size_t max_inflight = kDefaultMaxInflight;
  // Calls waiting for a slot beyond which Post answers RESOURCE_EXHAUSTED.
  size_t max_queue = kDefaultMaxQueue;
  // A PEM bundle of CAs trusted in addition to the system's; "" = the
  // system's only. Read once, by Create.
  std::string ca_file;
  // The loop thread's name (NameThisThread): which client is busy.
  std::string thread_name = "upstream";
  // How Create's errors name base_url and ca_file: the operator may know
  // them as the flags that set them ("--aopay_url", "--aopay_ca=PATH").
  std::string base_url_name = "base_url";
  std::string ca_file_name = "ca_file";
};

// Thread-safe. Post, InFlight and Queued may be called from any thread,
// including from inside a callback. Callbacks run one at a time on the
// client's own loop thread and must not block; they must not call Shutdown or
// destroy the client.
//
// A name lookup that hangs holds up only its own call: the call ends at its
// connect timeout (or at Shutdown) as not sent, while the lookup thread is
// left to finish on its own.
//
// A request with idempotent=false is put on the wire at most once: if libcurl
// would re-send it (it does so on its own when a reused keep-alive connection
// dies before any answer byte), the call is aborted instead and fails with
// UNKNOWN. No proxy is used, whatever the environment says.
//
// Lifetime: the loop thread runs from Create until the destructor. The
// destructor calls Shutdown(absl::ZeroDuration()) and then joins the thread;
// no call to Post may race with it.
class CurlUpstream final : public UpstreamClient {
 public:
  // Checks the options (INVALID_ARGUMENT with a one-line reason, also for a
  // ca_file that cannot be read, holds no certificate or one that does not
  // parse) and starts the loop thread. Does not connect anywhere.
  // curl_global_init must have run before. Needs libcurl 7.87 or later with
  // the OpenSSL backend (FAILED_PRECONDITION otherwise).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<CurlUpstream>> Create(
      CurlUpstreamOptions options);

  ~CurlUpstream() override;
  CurlUpstream(const CurlUpstream&) = delete;
  CurlUpstream& operator=(const CurlUpstream&) = delete;

  // Stops taking calls (a later Post gets CANCELLED), lets started and queued
  // calls run until `grace` has passed, then fails the calls still queued
  // with CANCELLED (never sent) and aborts the started ones: UNKNOWN if the
  // request may have gone out, CANCELLED if curl had not begun sending it.
  // Every callback of a call posted before Shutdown has run when it returns.
  // Idempotent; concurrent callers all wait for the same drain.
  void Shutdown(absl::Duration grace);

  // Errors as UpstreamClient documents: UNAVAILABLE (nothing sent: resolve,
  // connect, TLS handshake or certificate failure), RESOURCE_EXHAUSTED (queue
  // full), CANCELLED (shutting down, not sent), DEADLINE_EXCEEDED (timed out
  // after the request may have gone out), UNKNOWN (anything else after the
  // request may have gone out). Any HTTP status is a value; an answer longer
  // than kMaxAnswerBytes is a value with truncated=true and the first
  // kMaxAnswerBytes of the body, and so is an answer whose status line came
  // before the transfer failed (truncated=true, what came of the body, and
  // cut_off_by saying how it failed). Messages name neither the URL's query
  // nor any body data.
  void Post(UpstreamRequest request, Callback done) override;
  size_t InFlight() const override;
  size_t Queued() const override;

 private:
  class Loop;
  explicit CurlUpstream(std::unique_ptr<Loop> loop);

  std::unique_ptr<Loop> loop_;
};

}  // namespace aopay

#endif  // AOPAY_SERVER_UPSTREAM_CURL_CURL_UPSTREAM_H_
