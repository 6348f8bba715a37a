#include "server/transport/grpc_service.h"

#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/errors.h"
#include "common/ids.h"
#include "server/transport/grpc_status.h"
#include "server/transport/proto_convert.h"

namespace aopay {
namespace {

namespace v1 = payout::v1;

// Finishes a unary reactor once, recording the RPC's metrics.
class UnaryFinisher {
 public:
  UnaryFinisher(Metrics& metrics, const char* method,
                grpc::ServerUnaryReactor* reactor)
      : metrics_(&metrics),
        method_(method),
        reactor_(reactor),
        started_(absl::Now()) {}

  void Finish(const absl::Status& status) const {
    metrics_->rpcs.Increment(
        {method_, absl::StatusCodeToString(status.code())});
    metrics_->rpc_duration.Observe({method_}, absl::Now() - started_);
    reactor_->Finish(ToGrpcStatus(status));
  }

  const char* method() const { return method_; }

 private:
  Metrics* metrics_;
  const char* method_;
  grpc::ServerUnaryReactor* reactor_;
  absl::Time started_;
};

// A callback that writes the Payout into `response` and finishes.
PayoutService::Callback<absl::StatusOr<Payout>> PayoutResponder(
    UnaryFinisher finisher, v1::Payout* response) {
  return [finisher, response](absl::StatusOr<Payout> payout) {
    if (payout.ok()) ToProto(*payout, response);
    finisher.Finish(payout.status());
  };
}

// BatchCreatePayouts: reads requests, runs each through CreatePayout's flow
// and writes each answer as it comes, in completion order. At most
// kMaxBacklog requests are being created or waiting to be written per stream;
// reading pauses beyond that, so a caller that writes fast or reads slowly is
// held back by flow control rather than buffered.
//
// Lifetime: gRPC runs OnDone after every reaction, but the creations' callbacks
// come from ledger and upstream threads. Each holds the reactor (holds_) until
// it has returned; the last of OnDone and those callbacks deletes it.
class BatchReactor final
    : public grpc::ServerBidiReactor<v1::CreatePayoutRequest,
                                     v1::BatchCreatePayoutsResponse> {
 public:
  static constexpr size_t kMaxBacklog = 64;

  BatchReactor(PayoutService& service, Metrics& metrics, Client caller)
      : service_(service),
        metrics_(metrics),
        caller_(std::move(caller)),
        started_(absl::Now()) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      {
        absl::MutexLock lock(&mu_);
        reads_done_ = true;
      }
      Pump();
      return;
    }
    // Copy the request out before anything can start the next read into
    // request_.
    PayoutRequest request = FromProto(request_);
    std::string request_id = request_.request_id();
    bool read_more;
    {
      absl::MutexLock lock(&mu_);
      ++in_flight_;
      ++holds_;
      read_more = Backlog() < kMaxBacklog;
      read_paused_ = !read_more;
    }
    service_.Create(std::move(request), caller_,
                    [this, request_id = std::move(request_id)](
                        absl::StatusOr<Payout> payout) {
                      OnCreated(request_id, std::move(payout));
                    });
    if (read_more) StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    bool resume_reading;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      queue_.pop_front();
      if (!ok) write_failed_ = true;
      resume_reading = ResumeReadingLocked();
    }
    if (resume_reading) StartRead(&request_);
    Pump();
  }

  void OnDone() override {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      last = holds_ == 0;
    }
    if (last) delete this;
  }

 private:
  size_t Backlog() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return static_cast<size_t>(in_flight_) + queue_.size();
  }

  bool ResumeReadingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!read_paused_ || Backlog() >= kMaxBacklog) return false;
    read_paused_ = false;
    return true;
  }

  void OnCreated(const std::string& request_id, absl::StatusOr<Payout> payout) {
    v1::BatchCreatePayoutsResponse response;
    response.set_request_id(request_id);
    if (payout.ok()) {
      ToProto(*payout, response.mutable_payout());
    } else {
      *response.mutable_error() = ToRpcStatus(payout.status());
    }
    bool resume_reading;
    {
      absl::MutexLock lock(&mu_);
      --in_flight_;
      queue_.push_back(std::move(response));
      resume_reading = ResumeReadingLocked();
    }
    if (resume_reading) StartRead(&request_);
    Pump();
    bool last;
    {
      absl::MutexLock lock(&mu_);
      last = --holds_ == 0 && done_;
    }
    if (last) delete this;
  }

  // Starts the next write, or finishes once everything is answered. gRPC
  // calls are made outside the lock.
  void Pump() {
    const v1::BatchCreatePayoutsResponse* next = nullptr;
    bool finish = false;
    bool caller_gone = false;
    {
      absl::MutexLock lock(&mu_);
      if (write_failed_) {
        // The caller is gone: its answers are recorded in the ledger anyway.
        if (!writing_) queue_.clear();
      } else if (!writing_ && !queue_.empty()) {
        writing_ = true;
        next = &queue_.front();
      }
      if (!finished_ && reads_done_ && in_flight_ == 0 && queue_.empty() &&
          !writing_) {
        finished_ = true;
        finish = true;
        caller_gone = write_failed_;
      }
    }
    if (next != nullptr) StartWrite(next);
    if (finish) {
      const absl::Status status =
          caller_gone ? absl::CancelledError("the caller went away")
                      : absl::OkStatus();
      metrics_.rpcs.Increment(
          {"BatchCreatePayouts", absl::StatusCodeToString(status.code())});
      metrics_.rpc_duration.Observe({"BatchCreatePayouts"},
                                    absl::Now() - started_);
      Finish(ToGrpcStatus(status));
    }
  }

  PayoutService& service_;
  Metrics& metrics_;
  const Client caller_;
  const absl::Time started_;
  // Written by the one read in progress; read only in OnReadDone.
  v1::CreatePayoutRequest request_;

  absl::Mutex mu_;
  // Answers waiting to be written; the front is being written when
  // writing_. A deque keeps the front's address while others are added.
  std::deque<v1::BatchCreatePayoutsResponse> queue_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int holds_ ABSL_GUARDED_BY(mu_) = 0;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

// A stream refused before any work (UNAUTHENTICATED, PERMISSION_DENIED).
// A streaming call refused before it starts (credentials, scope, bad
// request): finished at once.
template <typename Reactor>
class RefusedStream final : public Reactor {
 public:
  RefusedStream(Metrics& metrics, const char* method,
                const absl::Status& status) {
    metrics.rpcs.Increment({method, absl::StatusCodeToString(status.code())});
    this->Finish(ToGrpcStatus(status));
  }
  void OnDone() override { delete this; }
};

// WatchPayouts: pages of events from the ledger, written one at a time; the
// next page is read only when the last one is written (a slow watcher slows
// only itself and holds at most a page), and an idle watcher waits in the
// event hub without reading the ledger.
//
// Its lifetime: every step that goes on after mu_ is released (a page read,
// a wait in the hub, and the call to Wait itself) is counted in holds_,
// taken under mu_ by the code that decides on the step, before the lock is
// released. OnDone deletes the reactor when no hold is left; else whoever
// gives back the last hold after OnDone does. So no code touches the reactor
// after giving back its hold, and gRPC's OnDone (on another thread, once the
// call is finished) never deletes it under a step still running.
class WatchReactor final : public grpc::ServerWriteReactor<v1::PayoutEvent> {
 public:
  WatchReactor(PayoutService& service, Metrics& metrics,
               grpc::CallbackServerContext* context, Client caller,
               std::vector<PayoutState> states, std::optional<int64_t> after)
      : service_(service),
        metrics_(metrics),
        context_(context),
        caller_(std::move(caller)),
        states_(std::move(states)),
        filter_(std::make_shared<const EventHub::Filter>(
            service_.WatchFilter(caller_, states_))),
        cursor_(after.value_or(std::numeric_limits<int64_t>::max())),
        from_head_(!after.has_value()) {
    int64_t first;
    {
      absl::MutexLock lock(&mu_);
      ++holds_;
      first = cursor_;
    }
    Fetch(first);
  }

  void OnWriteDone(bool ok) override {
    bool fetch = false;
    int64_t after = 0;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        FinishLocked(absl::CancelledError("the watcher went away"));
        return;
      }
      queue_.pop_front();
      if (!WriteNextLocked() && !finished_) {
        fetch = true;
        ++holds_;
        after = cursor_;
      }
    }
    if (fetch) Fetch(after);
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (wait_id_ != 0 && service_.event_hub().Cancel(wait_id_)) {
      wait_id_ = 0;
      --holds_;
    }
    // A write in progress ends (not ok) and finishes the call then.
    if (!writing_) FinishLocked(absl::CancelledError("the watcher went away"));
  }

  void OnDone() override {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      last = holds_ == 0;
    }
    if (last) delete this;
  }

 private:
  // Reads the page after `after`, with a hold taken for it.
  void Fetch(int64_t after) {
    service_.WatchPage(
        after, caller_, states_,
        [this](absl::StatusOr<EventBatch> batch) { OnPage(std::move(batch)); });
  }

  void OnPage(absl::StatusOr<EventBatch> batch) {
    bool wait = false, fetch = false, gone = false;
    int64_t after = 0;
    {
      absl::MutexLock lock(&mu_);
      --holds_;
      if (cancelled_ || finished_ || !batch.ok()) {
        FinishLocked(batch.ok() ? absl::CancelledError("the watcher went away")
                                : batch.status());
        gone = done_ && holds_ == 0;
      } else {
        if (!announced_) {
          // The first page read: the watch is set up, and starts after the
          // given cursor or, with none, after the newest event.
          announced_ = true;
          AnnounceStart(from_head_ ? batch->head : cursor_);
        }
        if (from_head_) {
          from_head_ = false;
          cursor_ = batch->head;
          fetch = true;
        } else {
          const bool moved = batch->last != cursor_;
          cursor_ = batch->last;
          for (const WatchedEvent& watched : batch->events) {
            ToProto(watched, &queue_.emplace_back());
          }
          if (!WriteNextLocked()) {
            // Nothing to write: more may follow at once (events left out
            // moved the cursor), or not yet.
            fetch = moved;
            wait = !moved;
          }
        }
        if (fetch) {
          ++holds_;
          after = cursor_;
        }
        if (wait) holds_ += 2;  // the wait's, and Wait's own
      }
    }
    if (gone) {
      delete this;
      return;
    }
    if (fetch) Fetch(after);
    if (wait) Wait();
  }

  // With two holds taken: one for the wait (given back by OnWake, or by
  // whoever takes the wait back), one for this call.
  void Wait() {
    int64_t after;
    uint64_t wait;
    {
      absl::MutexLock lock(&mu_);
      after = cursor_;
      wait = ++waits_;
    }
    const uint64_t id = service_.event_hub().WaitBeyond(
        after, filter_, [this, wait](int64_t cursor) { OnWake(wait, cursor); });
    bool gone;
    {
      absl::MutexLock lock(&mu_);
      --holds_;  // this call's
      if (woken_ < wait) {
        // Still waiting: recorded so that OnCancel can take the wait back.
        wait_id_ = id;
        // Cancelled before the wait was recorded: OnCancel could not take
        // it back; do it here, or the reactor would wait for the next event.
        if (cancelled_ && service_.event_hub().Cancel(id)) {
          wait_id_ = 0;
          --holds_;
          FinishLocked(absl::CancelledError("the watcher went away"));
        }
      }
      gone = done_ && holds_ == 0;
    }
    if (gone) delete this;
  }

  // The hub woke wait number `wait`: every event up to `cursor` is one this
  // watcher does not see.
  void OnWake(uint64_t wait, int64_t cursor) {
    bool gone = false, fetch = false;
    int64_t after = 0;
    {
      absl::MutexLock lock(&mu_);
      woken_ = wait;
      wait_id_ = 0;
      --holds_;
      cursor_ = std::max(cursor_, cursor);
      if (cancelled_ || finished_) {
        FinishLocked(absl::CancelledError("the watcher went away"));
        gone = done_ && holds_ == 0;
      } else {
        fetch = true;
        ++holds_;
        after = cursor_;
      }
    }
    if (gone) delete this;
    if (fetch) Fetch(after);
  }

  // Sends the initial metadata naming the cursor the stream starts after
  // (docs/api.md#watchpayouts), before any event is written, once the first
  // page was read (a watch the ledger cannot serve never announces one).
  void AnnounceStart(int64_t cursor) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    context_->AddInitialMetadata(kWatchCursorHeader, EventCursor(cursor));
    StartSendInitialMetadata();
  }

  // Starts the next write; false when there is none to start.
  bool WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return writing_;
    if (queue_.empty()) return false;
    writing_ = true;
    StartWrite(&queue_.front());
    return true;
  }

  void FinishLocked(const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    metrics_.rpcs.Increment(
        {"WatchPayouts", absl::StatusCodeToString(status.code())});
    Finish(ToGrpcStatus(status));
  }

  PayoutService& service_;
  Metrics& metrics_;
  grpc::CallbackServerContext* const context_;
  const Client caller_;
  const std::vector<PayoutState> states_;
  // Shared with every wait in the hub (one per page read), never copied.
  const std::shared_ptr<const EventHub::Filter> filter_;
  absl::Mutex mu_;
  int64_t cursor_ ABSL_GUARDED_BY(mu_);
  bool from_head_ ABSL_GUARDED_BY(mu_);
  bool announced_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<v1::PayoutEvent> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  // Waits are numbered; woken_ is the newest one the hub woke.
  uint64_t waits_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t woken_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t wait_id_ ABSL_GUARDED_BY(mu_) = 0;  // the hub's id of the wait
  int holds_ ABSL_GUARDED_BY(mu_) = 0;
};

// Finds the caller and checks `scope`; on refusal finishes the call.
std::optional<Client> Admit(const Authenticator& auth,
                            grpc::CallbackServerContext* context, Scope scope,
                            const UnaryFinisher& finisher) {
  absl::StatusOr<Client> caller =
      auth.Authorize(*context, scope, finisher.method());
  if (!caller.ok()) {
    finisher.Finish(caller.status());
    return std::nullopt;
  }
  return *std::move(caller);
}

// ApprovePayout, RejectPayout and CancelPayout: a payout id and a note, one
// PayoutService call (`act`) for a caller with `scope`.
template <typename Request>
grpc::ServerUnaryReactor* Decision(
    PayoutService& service, const Authenticator& auth, Metrics& metrics,
    grpc::CallbackServerContext* context, const Request& request,
    v1::Payout* response, const char* method, Scope scope,
    void (PayoutService::*act)(
        ApprovalRequest, Client,
        PayoutService::Callback<absl::StatusOr<Payout>>)) {
  auto* reactor = context->DefaultReactor();
  const UnaryFinisher finisher(metrics, method, reactor);
  std::optional<Client> caller = Admit(auth, context, scope, finisher);
  if (!caller) return reactor;
  (service.*act)({request.payout_id(), request.note()}, *std::move(caller),
                 PayoutResponder(finisher, response));
  return reactor;
}

}  // namespace

GrpcPayoutService::GrpcPayoutService(PayoutService& service,
                                     const Authenticator& auth,
                                     Metrics& metrics)
    : service_(service), auth_(auth), metrics_(metrics) {}

grpc::ServerUnaryReactor* GrpcPayoutService::CreatePayout(
    grpc::CallbackServerContext* context,
    const v1::CreatePayoutRequest* request, v1::Payout* response) {
  auto* reactor = context->DefaultReactor();
  const UnaryFinisher finisher(metrics_, "CreatePayout", reactor);
  std::optional<Client> caller = Admit(auth_, context, kScopeWrite, finisher);
  if (!caller) return reactor;
  // The caller's deadline or cancellation does not reach the service: an
  // AOPay call that has started runs to its own timeout and is recorded.
  service_.Create(FromProto(*request), *std::move(caller),
                  PayoutResponder(finisher, response));
  return reactor;
}

grpc::ServerUnaryReactor* GrpcPayoutService::GetPayout(
    grpc::CallbackServerContext* context, const v1::GetPayoutRequest* request,
    v1::Payout* response) {
  auto* reactor = context->DefaultReactor();
  const UnaryFinisher finisher(metrics_, "GetPayout", reactor);
  std::optional<Client> caller = Admit(auth_, context, kScopeRead, finisher);
  if (!caller) return reactor;
  auto done = PayoutResponder(finisher, response);
  if (request->key_case() == v1::GetPayoutRequest::kRequestId) {
    service_.GetByRequestId(request->request_id(), *std::move(caller),
                            std::move(done));
  } else {
    service_.GetByPayoutId(request->payout_id(), *std::move(caller),
                           std::move(done));
  }
  return reactor;
}

grpc::ServerUnaryReactor* GrpcPayoutService::ListPayouts(
    grpc::CallbackServerContext* context, const v1::ListPayoutsRequest* request,
    v1::ListPayoutsResponse* response) {
  auto* reactor = context->DefaultReactor();
  const UnaryFinisher finisher(metrics_, "ListPayouts", reactor);
  std::optional<Client> caller = Admit(auth_, context, kScopeRead, finisher);
  if (!caller) return reactor;
  ListQuery query;
  for (int state : request->states()) {
    query.states.push_back(FromProto(static_cast<v1::PayoutState>(state)));
  }
  query.page_size = request->page_size();
  query.page_token = request->page_token();
  service_.List(std::move(query), *std::move(caller),
                [finisher, response](absl::StatusOr<ListPage> page) {
                  if (page.ok()) {
                    for (const Payout& payout : page->payouts) {
                      ToProto(payout, response->add_payouts());
                    }
                    response->set_next_page_token(page->next_page_token);
                  }
                  finisher.Finish(page.status());
                });
  return reactor;
}

grpc::ServerUnaryReactor* GrpcPayoutService::RefreshPayout(
    grpc::CallbackServerContext* context,
    const v1::RefreshPayoutRequest* request, v1::Payout* response) {
  auto* reactor = context->DefaultReactor();
  const UnaryFinisher finisher(metrics_, "RefreshPayout", reactor);
  std::optional<Client> caller = Admit(auth_, context, kScopeWrite, finisher);
  if (!caller) return reactor;
  service_.Refresh(request->payout_id(), *std::move(caller),
                   PayoutResponder(finisher, response));
  return reactor;
}

grpc::ServerBidiReactor<v1::CreatePayoutRequest,
                        v1::BatchCreatePayoutsResponse>*
GrpcPayoutService::BatchCreatePayouts(grpc::CallbackServerContext* context) {
  absl::StatusOr<Client> caller =
      auth_.Authorize(*context, kScopeWrite, "BatchCreatePayouts");
  if (!caller.ok()) {
    return new RefusedStream<grpc::ServerBidiReactor<
        v1::CreatePayoutRequest, v1::BatchCreatePayoutsResponse>>(
        metrics_, "BatchCreatePayouts", caller.status());
  }
  return new BatchReactor(service_, metrics_, *std::move(caller));
}

grpc::ServerWriteReactor<v1::PayoutEvent>* GrpcPayoutService::WatchPayouts(
    grpc::CallbackServerContext* context,
    const v1::WatchPayoutsRequest* request) {
  using Refused = RefusedStream<grpc::ServerWriteReactor<v1::PayoutEvent>>;
  absl::StatusOr<Client> caller =
      auth_.Authorize(*context, kScopeRead, "WatchPayouts");
  if (!caller.ok())
    return new Refused(metrics_, "WatchPayouts", caller.status());
  std::vector<PayoutState> states;
  for (int state : request->states()) {
    states.push_back(FromProto(static_cast<v1::PayoutState>(state)));
    if (states.back() == PayoutState::kUnspecified) {
      return new Refused(
          metrics_, "WatchPayouts",
          InvalidRequestError({{"states", "must name known payout states"}}));
    }
  }
  std::optional<int64_t> after;
  if (!request->after_cursor().empty()) {
    after = ParseEventCursor(request->after_cursor());
    if (!after.has_value()) {
      return new Refused(
          metrics_, "WatchPayouts",
          InvalidRequestError(
              {{"after_cursor", "is not a cursor this gateway made"}}));
    }
  }
  return new WatchReactor(service_, metrics_, context, *std::move(caller),
                          std::move(states), after);
}

grpc::ServerUnaryReactor* GrpcPayoutService::CancelPayout(
    grpc::CallbackServerContext* context,
    const v1::CancelPayoutRequest* request, v1::Payout* response) {
  return Decision(service_, auth_, metrics_, context, *request, response,
                  "CancelPayout", kScopeWrite, &PayoutService::Cancel);
}

GrpcPayoutAdminService::GrpcPayoutAdminService(PayoutService& service,
                                               const Authenticator& auth,
                                               Metrics& metrics)
    : service_(service), auth_(auth), metrics_(metrics) {}

grpc::ServerUnaryReactor* GrpcPayoutAdminService::ResolvePayout(
    grpc::CallbackServerContext* context,
    const v1::ResolvePayoutRequest* request, v1::Payout* response) {
  auto* reactor = context->DefaultReactor();
  const UnaryFinisher finisher(metrics_, "ResolvePayout", reactor);
  std::optional<Client> caller = Admit(auth_, context, kScopeAdmin, finisher);
  if (!caller) return reactor;
  ResolveRequest resolve;
  resolve.payout_id = request->payout_id();
  resolve.state = FromProto(request->state());
  resolve.transaction_id = request->transaction_id();
  resolve.note = request->note();
  service_.Resolve(std::move(resolve), *std::move(caller),
                   PayoutResponder(finisher, response));
  return reactor;
}

grpc::ServerUnaryReactor* GrpcPayoutAdminService::ApprovePayout(
    grpc::CallbackServerContext* context,
    const v1::ApprovePayoutRequest* request, v1::Payout* response) {
  return Decision(service_, auth_, metrics_, context, *request, response,
                  "ApprovePayout", kScopeApprove, &PayoutService::Approve);
}

grpc::ServerUnaryReactor* GrpcPayoutAdminService::RejectPayout(
    grpc::CallbackServerContext* context,
    const v1::RejectPayoutRequest* request, v1::Payout* response) {
  return Decision(service_, auth_, metrics_, context, *request, response,
                  "RejectPayout", kScopeApprove, &PayoutService::Reject);
}

}  // namespace aopay
