// ThreadSanitizer builds only: tells TSan when gRPC hands a batch of call
// operations, and its results, from one thread to another.
//
// Debian's gRPC is not built with -fsanitize=thread. gRPC++ is mostly inline
// code, compiled into the project's binaries and so instrumented: StartWrite,
// StartRead or Finish fill a CallOpSet (next to the reactor's own state) on
// the caller's thread and pass it to grpc_call_start_batch; libgrpc performs
// the operations, on whichever thread its event engine picks, and posts the
// completion to a completion queue; a gRPC++ thread takes it from the queue
// and runs CallOpSet::FinalizeResult, then OnWriteDone, OnReadDone or the
// unary callback. What orders those threads is the completion queue inside
// libgrpc: atomics and locks TSan cannot see. Without this file each hand-off
// is reported as a race, e.g. between grpcpp's FillOps and FinalizeResult, or
// between the thread that built a failed call's status message and the one
// that copies it out in CallOpClientRecvStatus::FinishOp.
//
// This file, linked into every binary of a ThreadSanitizer build (like
// tsan_absl_sync.cc), defines the functions through which batches are
// started, completed and collected. The dynamic linker prefers the
// executable's definitions over libgrpc's, for calls from the project, from
// libgrpc++ and from inside libgrpc alike (libgrpc calls grpc_cq_end_op
// through its PLT). Each one calls libgrpc's own function (found with
// dlsym(RTLD_NEXT)) and marks the happens-before edges gRPC guarantees:
//   - grpc_call_start_batch releases on the batch's tag before libgrpc can
//     see the batch;
//   - grpc_cq_end_op, which libgrpc calls when a batch (or a requested
//     server call) is complete, releases on its tag before posting it;
//   - grpc_completion_queue_next and _pluck acquire on the tag of the
//     completion they return, before gRPC++ runs anything for it.
//   - grpc::internal::ServerCallbackCall::ScheduleOnDone, which gRPC++
//     calls when a callback-API server call drops its last reference,
//     releases before libgrpc++ hands OnDone to libgrpc's executor, and
//     grpc_call_unref, which the call's clean-up (CallOnDone) calls after
//     OnDone and before it frees the call's server context, acquires (see
//     kOnDoneHandOff below).
// These are the edges an instrumented gRPC would show TSan itself. A tag is
// reused only after its previous completion was collected, so what a
// completion acquires really happened before it.
//
// gRPC++ sends callback-API completions through grpc_completion_queue_next:
// this gRPC's I/O manager does not run in the background, so gRPC++ polls a
// completion queue on its own threads (CompletionQueue::
// CallbackAlternativeCQ) and runs each tag's functor there. If the I/O
// manager ran in the background, libgrpc would run the functors itself and
// the acquire above would be missing; grpc_iomgr_run_in_background stops the
// program in that case rather than let TSan report false races.
//
// It adds no locking of its own: the behaviour of the program is unchanged.

#include <dlfcn.h>
#include <grpc/grpc.h>
#include <grpcpp/support/server_callback.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "absl/base/options.h"
#include "absl/status/status.h"

#define PAYOUT_TSAN_STRINGIFY_INNER(x) #x
#define PAYOUT_TSAN_STRINGIFY(x) PAYOUT_TSAN_STRINGIFY_INNER(x)

// libgrpc's completion record (src/core/lib/surface/completion_queue.h).
struct grpc_cq_completion;

namespace {

template <typename Function>
Function Next(const char* name) {
  void* found = dlsym(RTLD_NEXT, name);
  if (found == nullptr) {
    std::fprintf(stderr, "tsan_grpc_sync: %s not found\n", name);
    std::abort();
  }
  return reinterpret_cast<Function>(found);
}

// grpc_cq_end_op's mangled name; absl::Status sits in Abseil's inline
// namespace.
std::string EndOpMangledName() {
  static_assert(ABSL_OPTION_USE_INLINE_NAMESPACE == 1,
                "the mangled name below assumes Abseil's inline namespace");
  const std::string ns =
      PAYOUT_TSAN_STRINGIFY(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  return "_Z14grpc_cq_end_opP21grpc_completion_queuePvN4absl" +
         std::to_string(ns.size()) + ns +
         "6StatusEPFvS1_P18grpc_cq_completionES1_S6_b";
}

void AcquireCompletion(const grpc_event& event) {
  if (event.type == GRPC_OP_COMPLETE && event.tag != nullptr) {
    __tsan_acquire(event.tag);
  }
}

}  // namespace

// libgrpc (iomgr.h) declares it without extern "C".
bool grpc_iomgr_run_in_background() {
  using Type = bool (*)();
  static const auto real = Next<Type>("_Z28grpc_iomgr_run_in_backgroundv");
  const bool background = real();
  if (background) {
    std::fprintf(stderr,
                 "tsan_grpc_sync: gRPC's I/O manager runs in the background, "
                 "so callback completions bypass grpc_completion_queue_next "
                 "and TSan would not see their hand-off (see "
                 "tests/tsan_grpc_sync.cc)\n");
    std::abort();
  }
  return background;
}

// Declared in libgrpc's src/core/lib/surface/completion_queue.h (not
// installed), where grpc_error_handle is absl::Status.
void grpc_cq_end_op(grpc_completion_queue* cq, void* tag, absl::Status error,
                    void (*done)(void* done_arg, grpc_cq_completion* storage),
                    void* done_arg, grpc_cq_completion* storage,
                    bool internal) {
  using Type = void (*)(grpc_completion_queue*, void*, absl::Status,
                        void (*)(void*, grpc_cq_completion*), void*,
                        grpc_cq_completion*, bool);
  static const auto real = Next<Type>(EndOpMangledName().c_str());
  if (tag != nullptr) __tsan_release(tag);
  real(cq, tag, std::move(error), done, done_arg, storage, internal);
}

// The hand-off of a server call's clean-up. A callback-API server call ends
// when its reference count (callbacks_outstanding_) drops to zero. gRPC++'s
// inline code drops references with atomics TSan sees (the callbacks of
// writes, of Finish and of the call's completion op), libgrpc++ with atomics
// it does not (after running OnCancel on libgrpc's executor). Whichever
// thread drops the last one calls ScheduleOnDone, which posts CallOnDone to
// libgrpc's executor; CallOnDone runs OnDone, unrefs the grpc_call and then
// frees the server context, whose completion tag another thread ran before
// dropping its reference. Without the edges below that free was reported
// against the tag's run (WatchTest, watchers that cancel while events flow).
// ScheduleOnDone first acquires what the count's earlier decrements
// released, then releases on kOnDoneHandOff; grpc_call_unref acquires it.
// The executor's closure carries no key this file can see on both sides, so
// one key serves every call, and the edge is wider than gRPC's own: a thread
// that has called ScheduleOnDone (for any call) is ordered before every
// later clean-up, and a thread that has run a clean-up after every earlier
// ScheduleOnDone. Only gRPC's own threads call either. The project's
// threads (ledger, executor, event hub) call neither, so a reactor they use
// after OnDone deleted it is still reported; a misuse confined to gRPC's
// threads (a reaction racing OnDone) may be hidden here, and is what the
// AddressSanitizer stage, which needs no ordering to see a use after
// free, catches.
namespace {
char kOnDoneHandOff;
}  // namespace

namespace grpc::internal {

void ServerCallbackCall::ScheduleOnDone(bool inline_ondone) {
  using Type = void (*)(ServerCallbackCall*, bool);
  static const auto real =
      Next<Type>("_ZN4grpc8internal18ServerCallbackCall14ScheduleOnDoneEb");
  __tsan_acquire(&callbacks_outstanding_);
  __tsan_release(&kOnDoneHandOff);
  real(this, inline_ondone);
}

}  // namespace grpc::internal

extern "C" {

grpc_call_error grpc_call_start_batch(grpc_call* call, const grpc_op* ops,
                                      size_t nops, void* tag, void* reserved) {
  using Type =
      grpc_call_error (*)(grpc_call*, const grpc_op*, size_t, void*, void*);
  static const auto real = Next<Type>("grpc_call_start_batch");
  if (tag != nullptr) __tsan_release(tag);
  return real(call, ops, nops, tag, reserved);
}

grpc_event grpc_completion_queue_next(grpc_completion_queue* cq,
                                      gpr_timespec deadline, void* reserved) {
  using Type = grpc_event (*)(grpc_completion_queue*, gpr_timespec, void*);
  static const auto real = Next<Type>("grpc_completion_queue_next");
  const grpc_event event = real(cq, deadline, reserved);
  AcquireCompletion(event);
  return event;
}

grpc_event grpc_completion_queue_pluck(grpc_completion_queue* cq, void* tag,
                                       gpr_timespec deadline, void* reserved) {
  using Type =
      grpc_event (*)(grpc_completion_queue*, void*, gpr_timespec, void*);
  static const auto real = Next<Type>("grpc_completion_queue_pluck");
  const grpc_event event = real(cq, tag, deadline, reserved);
  AcquireCompletion(event);
  return event;
}

void grpc_call_unref(grpc_call* call) {
  using Type = void (*)(grpc_call*);
  static const auto real = Next<Type>("grpc_call_unref");
  __tsan_acquire(&kOnDoneHandOff);
  real(call);
}

}  // extern "C"
