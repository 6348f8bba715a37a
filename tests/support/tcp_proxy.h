#ifndef AOPAY_TESTS_SUPPORT_TCP_PROXY_H_
#define AOPAY_TESTS_SUPPORT_TCP_PROXY_H_

// A loopback TCP proxy in front of a unix socket, for tests that take a
// database away and give it back: while "down" it closes every connection it
// has and every new one at once (a database that is unreachable); "up"
// forwards bytes both ways.

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace aopay::test_support {

class TcpProxy {
 public:
  // Listens on 127.0.0.1, a free port, in front of `unix_path`.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<TcpProxy>> Start(
      std::string unix_path);
  ~TcpProxy();

  int port() const { return port_; }
  // Down: cuts every connection now and refuses new ones until Up().
  void Down();
  void Up();
  // The next connection that sends `pattern` to the database (within one
  // read) is cut when the database's next bytes for it come back, and those
  // bytes are dropped: a statement (or a COMMIT) that ran, whose caller
  // never hears of it. Once.
  void CutAnswerTo(std::string pattern);

 private:
  TcpProxy(int listener, int port, std::string unix_path);
  void Loop();

  const int listener_;
  const int port_;
  const std::string unix_path_;
  int wake_[2] = {-1, -1};
  std::atomic<bool> down_{false};
  absl::Mutex mu_;
  std::string cut_pattern_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace aopay::test_support

#endif  // AOPAY_TESTS_SUPPORT_TCP_PROXY_H_
