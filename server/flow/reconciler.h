#ifndef AOPAY_SERVER_FLOW_RECONCILER_H_
#define AOPAY_SERVER_FLOW_RECONCILER_H_

#include <cstddef>
#include <deque>
#include <map>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/flow/payout_service.h"

namespace aopay {

// Refreshes ACCEPTED payouts in the background until AOPay reports them
// final (--reconcile_interval). Each payout is asked about again after a
// delay that starts at the interval and doubles up to kMaxDelay; the ledger is
// walked a page at a time so old payouts are not starved. At most
// `max_in_flight` refreshes run at once, below the service's own bound on
// refreshes, so the reconciler never overloads it and leaves room for
// callers' RefreshPayout; a refresh the service still refuses as overloaded
// is asked again next pass, without backing off. Thread-safe; the service
// must outlive it and every refresh it has started.
class Reconciler {
 public:
  static constexpr absl::Duration kMaxDelay = absl::Hours(1);
  static constexpr int kPageSize = 100;

  Reconciler(PayoutService& service, absl::Duration interval,
             size_t max_in_flight);

  // Called periodically; starts the next page when the previous one is done
  // and the pass is due.
  void Tick(absl::Time now);

 private:
  struct Backoff {
    absl::Time next;
    absl::Duration delay;
  };

  void OnPage(absl::Time now, absl::StatusOr<ListPage> page);
  void OnRefreshed(const std::string& payout_id, absl::Time now,
                   const absl::StatusOr<Payout>& payout);
  // Starts due refreshes while fewer than max_in_flight_ run.
  void StartMore(absl::Time now);

  PayoutService& service_;
  const absl::Duration interval_;
  const size_t max_in_flight_;
  absl::Mutex mu_;
  bool busy_ ABSL_GUARDED_BY(mu_) = false;  // a page is being worked on
  std::deque<std::string> due_ ABSL_GUARDED_BY(mu_);  // of this page
  size_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::string page_token_ ABSL_GUARDED_BY(mu_);
  absl::Time next_pass_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::map<std::string, Backoff> backoff_ ABSL_GUARDED_BY(mu_);
  // Payouts listed so far in this pass; at its end, back-off entries of
  // payouts no longer ACCEPTED (resolved, refreshed elsewhere) are dropped.
  std::set<std::string> seen_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aopay

#endif  // AOPAY_SERVER_FLOW_RECONCILER_H_
