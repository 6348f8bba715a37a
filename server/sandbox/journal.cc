#include "server/sandbox/journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace aopay::sandbox {
namespace {

// RapidJSON's writer escapes quotes, backslashes and control characters
// (NUL included) and copies every other byte, so the body survives intact.
std::string JournalLine(int64_t seq, absl::string_view path,
                        absl::string_view body, absl::Time received) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  writer.StartObject();
  writer.Key("seq");
  writer.Int64(seq);
  writer.Key("path");
  writer.String(path.data(), static_cast<rapidjson::SizeType>(path.size()));
  writer.Key("body");
  writer.String(body.data(), static_cast<rapidjson::SizeType>(body.size()));
  writer.Key("received_unix_ms");
  writer.Int64(absl::ToUnixMillis(received));
  writer.EndObject();
  std::string line(buffer.GetString(), buffer.GetSize());
  line.push_back('\n');
  return line;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Journal>> Journal::Open(
    const std::string& path) {
  const int fd =
      open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open journal ", path, ": ", std::strerror(errno)));
  }
  return std::unique_ptr<Journal>(new Journal(fd));
}

Journal::~Journal() { close(fd_); }

bool Journal::Append(absl::string_view path, absl::string_view body,
                     absl::Time received) {
  absl::MutexLock lock(&mu_);
  const std::string line = JournalLine(++seq_, path, body, received);
  size_t written = 0;
  while (written < line.size()) {
    const ssize_t n = write(fd_, line.data() + written, line.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    written += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace aopay::sandbox
