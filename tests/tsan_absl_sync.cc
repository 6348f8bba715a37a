// ThreadSanitizer builds only: tells TSan what Abseil's synchronisation does.
//
// Debian's Abseil is not built with -fsanitize=thread, so TSan never sees
// absl::Mutex, absl::CondVar or absl::Notification (or absl::Status's
// reference count, below) take effect: their atomics and futex calls run in
// uninstrumented code. Every field guarded by an absl::Mutex then looks racy
// (hundreds of false reports in curl_upstream_test alone), and so does every
// hand-off through gRPC, which locks absl::Mutex too.
//
// This file, linked into every binary of a ThreadSanitizer build, defines the
// entry points of those classes. The dynamic linker prefers the executable's
// definitions over the library's, for calls from the project, from gRPC and
// from inside Abseil alike. Each one calls the library's own function (found
// with dlsym(RTLD_NEXT)) and marks the happens-before edges the operation
// creates with __tsan_acquire / __tsan_release:
//   - a lock acquires what earlier unlocks released;
//   - an unlock releases; Await and CondVar::Wait unlock and lock again;
//   - Notify releases and a finished wait for the notification acquires.
// Reader locks release to a second address that only writers acquire, so two
// readers are not ordered by the lock they share.
//
// It adds no locking of its own: the behaviour of the program is unchanged.

#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/base/options.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/internal/cctz/include/cctz/time_zone.h"
#include "absl/time/time.h"

#define PAYOUT_TSAN_STRINGIFY_INNER(x) #x
#define PAYOUT_TSAN_STRINGIFY(x) PAYOUT_TSAN_STRINGIFY_INNER(x)

namespace {

// The library's definition of the function whose mangled name is `name`,
// where "@" stands for the mangled absl::<inline namespace>.
template <typename Function>
Function Next(const char* name) {
  static_assert(ABSL_OPTION_USE_INLINE_NAMESPACE == 1,
                "the mangled names below assume Abseil's inline namespace");
  const std::string ns =
      PAYOUT_TSAN_STRINGIFY(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  std::string mangled = name;
  mangled.replace(mangled.find('@'), 1,
                  "4absl" + std::to_string(ns.size()) + ns);
  void* found = dlsym(RTLD_NEXT, mangled.c_str());
  if (found == nullptr) {
    std::fprintf(stderr, "tsan_absl_sync: %s not found\n", mangled.c_str());
    std::abort();
  }
  return reinterpret_cast<Function>(found);
}

// cctz (libabsl_time_zone) keeps the lock of its map of loaded zones in a
// function-local static `new std::mutex` (TimeZoneMutex), built by the first
// load of a named zone. gRPC formats times when it builds or prints error
// statuses, so that is whichever gRPC thread first handles a failed call. A
// later thread finds the static built with a plain load of its guard inside
// the uninstrumented library, skipping __cxa_guard_acquire, so TSan reported
// its pthread_mutex_lock as racing with the allocation. Loading a named zone
// here, before main and so before any other thread exists, builds the static
// on the main thread; thread creation then orders it before every user. The
// library is looked up rather than linked: not every binary uses it.
const bool kTimeZoneStaticsBuilt = [] {
  using Type =
      bool (*)(const std::string&, absl::time_internal::cctz::time_zone*);
  const std::string ns =
      PAYOUT_TSAN_STRINGIFY(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  const std::string name =
      "_ZN4absl" + std::to_string(ns.size()) + ns +
      "13time_internal4cctz14load_time_zoneERKNSt7__cxx1112basic_string"
      "IcSt11char_traitsIcESaIcEEEPNS2_9time_zoneE";
  if (void* load = dlsym(RTLD_DEFAULT, name.c_str())) {
    absl::time_internal::cctz::time_zone zone;
    reinterpret_cast<Type>(load)("localtime", &zone);
  }
  return true;
}();

// Writers release here; readers release to ReaderAddress.
void* WriterAddress(const absl::Mutex* mu) {
  return const_cast<absl::Mutex*>(mu);
}
void* ReaderAddress(const absl::Mutex* mu) {
  return reinterpret_cast<char*>(const_cast<absl::Mutex*>(mu)) + 1;
}

void AcquireWriter(const absl::Mutex* mu) {
  __tsan_acquire(WriterAddress(mu));
  __tsan_acquire(ReaderAddress(mu));
}
void AcquireReader(const absl::Mutex* mu) { __tsan_acquire(WriterAddress(mu)); }
void ReleaseWriter(const absl::Mutex* mu) { __tsan_release(WriterAddress(mu)); }
void ReleaseReader(const absl::Mutex* mu) { __tsan_release(ReaderAddress(mu)); }

// Abseil evaluates a Condition with the lock held but inside its own code:
// on the waiting thread before it blocks or returns, or on the thread that
// unlocks. The wrapper hands itself (and the caller's condition) over to that
// thread, acquires the lock's history before the caller's condition reads the
// guarded state, and releases after, since Abseil may then unlock unseen.
class HeldCondition {
 public:
  HeldCondition(const absl::Mutex* mu, const absl::Condition& cond)
      : mu_(mu), cond_(cond), condition_(&Eval, static_cast<void*>(this)) {
    __tsan_release(this);
  }
  const absl::Condition& condition() const { return condition_; }

 private:
  // Condition's void* constructor: Abseil reads condition_ in its own
  // (uninstrumented) code, so the first instrumented read is after the
  // acquire.
  static bool Eval(void* arg) {
    HeldCondition* self = static_cast<HeldCondition*>(arg);
    __tsan_acquire(self);
    AcquireWriter(self->mu_);
    const bool met = self->cond_.Eval();
    ReleaseWriter(self->mu_);
    return met;
  }
  const absl::Mutex* mu_;
  const absl::Condition& cond_;
  const absl::Condition condition_;
};

using Method = void (*)(absl::Mutex*);
using BoolMethod = bool (*)(absl::Mutex*);
using CondDurationMethod = bool (*)(absl::Mutex*, const absl::Condition&,
                                    absl::Duration);
using CondTimeMethod = bool (*)(absl::Mutex*, const absl::Condition&,
                                absl::Time);

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static const auto real = Next<Method>("_ZN@5Mutex4LockEv");
  real(this);
  AcquireWriter(this);
}

void Mutex::ReaderLock() {
  static const auto real = Next<Method>("_ZN@5Mutex10ReaderLockEv");
  real(this);
  AcquireReader(this);
}

bool Mutex::TryLock() {
  static const auto real = Next<BoolMethod>("_ZN@5Mutex7TryLockEv");
  const bool locked = real(this);
  if (locked) AcquireWriter(this);
  return locked;
}

bool Mutex::ReaderTryLock() {
  static const auto real = Next<BoolMethod>("_ZN@5Mutex13ReaderTryLockEv");
  const bool locked = real(this);
  if (locked) AcquireReader(this);
  return locked;
}

void Mutex::Unlock() {
  static const auto real = Next<Method>("_ZN@5Mutex6UnlockEv");
  ReleaseWriter(this);
  real(this);
}

void Mutex::ReaderUnlock() {
  static const auto real = Next<Method>("_ZN@5Mutex12ReaderUnlockEv");
  ReleaseReader(this);
  real(this);
}

// The *When* functions hold the lock when they return, whatever they return.
void Mutex::LockWhen(const Condition& cond) {
  using Type = void (*)(Mutex*, const Condition&);
  static const auto real = Next<Type>("_ZN@5Mutex8LockWhenERKNS0_9ConditionE");
  HeldCondition held(this, cond);
  real(this, held.condition());
  AcquireWriter(this);
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  using Type = void (*)(Mutex*, const Condition&);
  static const auto real =
      Next<Type>("_ZN@5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  HeldCondition held(this, cond);
  real(this, held.condition());
  AcquireReader(this);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real = Next<CondDurationMethod>(
      "_ZN@5Mutex19LockWhenWithTimeoutERKNS0_"
      "9ConditionENS0_8DurationE");
  HeldCondition held(this, cond);
  const bool met = real(this, held.condition(), timeout);
  AcquireWriter(this);
  return met;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  static const auto real = Next<CondTimeMethod>(
      "_ZN@5Mutex20LockWhenWithDeadlineERKNS0_"
      "9ConditionENS0_4TimeE");
  HeldCondition held(this, cond);
  const bool met = real(this, held.condition(), deadline);
  AcquireWriter(this);
  return met;
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real = Next<CondDurationMethod>(
      "_ZN@5Mutex25ReaderLockWhenWithTimeoutERKNS0_"
      "9ConditionENS0_8DurationE");
  HeldCondition held(this, cond);
  const bool met = real(this, held.condition(), timeout);
  AcquireReader(this);
  return met;
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  static const auto real = Next<CondTimeMethod>(
      "_ZN@5Mutex26ReaderLockWhenWithDeadlineERKNS0_"
      "9ConditionENS0_4TimeE");
  HeldCondition held(this, cond);
  const bool met = real(this, held.condition(), deadline);
  AcquireReader(this);
  return met;
}

// Await is called with the lock held in either mode; it may let others in
// while it waits. Releasing and acquiring as a writer is right for writers
// and only orders a reader more than needed.
void Mutex::Await(const Condition& cond) {
  using Type = void (*)(Mutex*, const Condition&);
  static const auto real = Next<Type>("_ZN@5Mutex5AwaitERKNS0_9ConditionE");
  HeldCondition held(this, cond);
  ReleaseWriter(this);
  real(this, held.condition());
  AcquireWriter(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real = Next<CondDurationMethod>(
      "_ZN@5Mutex16AwaitWithTimeoutERKNS0_"
      "9ConditionENS0_8DurationE");
  HeldCondition held(this, cond);
  ReleaseWriter(this);
  const bool met = real(this, held.condition(), timeout);
  AcquireWriter(this);
  return met;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  static const auto real = Next<CondTimeMethod>(
      "_ZN@5Mutex17AwaitWithDeadlineERKNS0_"
      "9ConditionENS0_4TimeE");
  HeldCondition held(this, cond);
  ReleaseWriter(this);
  const bool met = real(this, held.condition(), deadline);
  AcquireWriter(this);
  return met;
}

void CondVar::Wait(Mutex* mu) {
  using Type = void (*)(CondVar*, Mutex*);
  static const auto real = Next<Type>("_ZN@7CondVar4WaitEPNS0_5MutexE");
  ReleaseWriter(mu);
  real(this, mu);
  AcquireWriter(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  using Type = bool (*)(CondVar*, Mutex*, Duration);
  static const auto real =
      Next<Type>("_ZN@7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  ReleaseWriter(mu);
  const bool timed_out = real(this, mu, timeout);
  AcquireWriter(mu);
  return timed_out;
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  using Type = bool (*)(CondVar*, Mutex*, Time);
  static const auto real =
      Next<Type>("_ZN@7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  ReleaseWriter(mu);
  const bool timed_out = real(this, mu, deadline);
  AcquireWriter(mu);
  return timed_out;
}

void Notification::Notify() {
  using Type = void (*)(Notification*);
  static const auto real = Next<Type>("_ZN@12Notification6NotifyEv");
  __tsan_release(this);
  real(this);
}

void Notification::WaitForNotification() const {
  using Type = void (*)(const Notification*);
  static const auto real =
      Next<Type>("_ZNK@12Notification19WaitForNotificationEv");
  real(this);
  __tsan_acquire(const_cast<Notification*>(this));
}

bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  using Type = bool (*)(const Notification*, Duration);
  static const auto real = Next<Type>(
      "_ZNK@12Notification30WaitForNotificationWith"
      "TimeoutENS0_8DurationE");
  const bool notified = real(this, timeout);
  if (notified) __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  using Type = bool (*)(const Notification*, Time);
  static const auto real = Next<Type>(
      "_ZNK@12Notification31WaitForNotificationWith"
      "DeadlineENS0_4TimeE");
  const bool notified = real(this, deadline);
  if (notified) __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

// absl::Status keeps a message in a shared representation whose reference
// count lives in libabsl_status: the last owner deletes it after an acq_rel
// decrement TSan cannot see. Every drop of a reference releases, and acquires
// what earlier drops released, so that the deleting thread is ordered after
// every other owner's last use.
void Status::UnrefNonInlined(uintptr_t rep) {
  using Type = void (*)(uintptr_t);
  static const auto real = Next<Type>("_ZN@6Status15UnrefNonInlinedEm");
  void* shared = reinterpret_cast<void*>(rep);
  __tsan_release(shared);
  __tsan_acquire(shared);
  real(rep);
}

ABSL_NAMESPACE_END
}  // namespace absl
