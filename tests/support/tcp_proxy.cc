// A loopback TCP proxy in front of a unix socket (see tcp_proxy.h).

#include "tests/support/tcp_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace aopay::test_support {
namespace {

int ConnectUnix(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) !=
      0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Moves what is readable on `from` to `to`; false when either end closed.
// `seen` (when given) is set when the bytes hold `pattern`.
bool Pump(int from, int to, const std::string& pattern = "",
          bool* seen = nullptr) {
  char buffer[16384];
  const ssize_t got = read(from, buffer, sizeof(buffer));
  if (got <= 0) return false;
  if (seen != nullptr && !pattern.empty() &&
      std::string_view(buffer, got).find(pattern) != std::string_view::npos) {
    *seen = true;
  }
  ssize_t sent = 0;
  while (sent < got) {
    const ssize_t n = write(to, buffer + sent, got - sent);
    if (n <= 0) return false;
    sent += n;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpProxy>> TcpProxy::Start(
    std::string unix_path) {
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return absl::UnavailableError("socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (bind(listener, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      listen(listener, 64) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) !=
          0) {
    close(listener);
    return absl::UnavailableError("cannot listen on loopback");
  }
  return std::unique_ptr<TcpProxy>(
      new TcpProxy(listener, ntohs(address.sin_port), std::move(unix_path)));
}

TcpProxy::TcpProxy(int listener, int port, std::string unix_path)
    : listener_(listener), port_(port), unix_path_(std::move(unix_path)) {
  if (pipe2(wake_, O_CLOEXEC) != 0) abort();
  thread_ = std::thread([this] { Loop(); });
}

TcpProxy::~TcpProxy() {
  stop_.store(true);
  (void)write(wake_[1], "x", 1);
  thread_.join();
  close(listener_);
  close(wake_[0]);
  close(wake_[1]);
}

void TcpProxy::Down() {
  down_.store(true);
  (void)write(wake_[1], "x", 1);
}

void TcpProxy::Up() { down_.store(false); }

void TcpProxy::CutAnswerTo(std::string pattern) {
  absl::MutexLock lock(&mu_);
  cut_pattern_ = std::move(pattern);
}

void TcpProxy::Loop() {
  struct Pair {
    int client;
    int server;
    bool cut_on_answer = false;  // it sent the cut pattern
  };
  std::vector<Pair> pairs;
  auto close_all = [&pairs] {
    for (const Pair& pair : pairs) {
      close(pair.client);
      close(pair.server);
    }
    pairs.clear();
  };
  while (!stop_.load()) {
    std::vector<pollfd> fds = {{wake_[0], POLLIN, 0}, {listener_, POLLIN, 0}};
    for (const Pair& pair : pairs) {
      fds.push_back({pair.client, POLLIN, 0});
      fds.push_back({pair.server, POLLIN, 0});
    }
    if (poll(fds.data(), fds.size(), -1) < 0) continue;
    if (fds[0].revents != 0) {
      char drain[64];
      (void)read(wake_[0], drain, sizeof(drain));
    }
    if (down_.load()) close_all();
    if (fds[1].revents & POLLIN) {
      const int client = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client >= 0) {
        const int server = down_.load() ? -1 : ConnectUnix(unix_path_);
        if (server < 0) {
          close(client);
        } else {
          pairs.push_back(Pair{client, server});
        }
      }
    }
    // Pump the pairs that were polled (new ones come after them).
    std::vector<Pair> alive;
    const size_t polled = fds.size() / 2 - 1;
    for (size_t i = 0; i < pairs.size(); ++i) {
      Pair pair = pairs[i];
      bool ok = true;
      if (i < polled && !down_.load()) {
        const short client_events = fds[2 + 2 * i].revents;
        const short server_events = fds[3 + 2 * i].revents;
        if (client_events != 0) {
          std::string pattern;
          {
            absl::MutexLock lock(&mu_);
            pattern = cut_pattern_;
          }
          bool seen = false;
          ok = Pump(pair.client, pair.server, pattern, &seen);
          if (seen) {
            pair.cut_on_answer = true;
            absl::MutexLock lock(&mu_);
            cut_pattern_.clear();
          }
        }
        if (ok && server_events != 0) {
          // The answer to the cut statement: dropped with the connection.
          ok = !pair.cut_on_answer && Pump(pair.server, pair.client);
        }
      }
      if (ok) {
        alive.push_back(pair);
      } else {
        close(pair.client);
        close(pair.server);
      }
    }
    pairs.swap(alive);
  }
  close_all();
}

}  // namespace aopay::test_support
