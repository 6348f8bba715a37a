#include "tests/reliability/faults/scratch_filesystem.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"

namespace aopay::testing {
namespace {

constexpr char kMount[] = "/usr/bin/mount";
constexpr char kUmount[] = "/usr/bin/umount";
constexpr char kMkfsExt4[] = "/usr/sbin/mkfs.ext4";
constexpr char kFsck[] = "/usr/sbin/e2fsck";

absl::Status Missing(const char* tool) {
  return absl::FailedPreconditionError(absl::StrCat(tool, " is not installed"));
}

absl::Status Run(const std::vector<std::string>& argv) {
  const CommandResult result = RunCommand(argv);
  if (result.exit_code != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(argv[0], " exited ", result.exit_code, ": ", result.err));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> MakeMountPoint() {
  std::string pattern = ::testing::TempDir() + "payout-faults-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("mkdtemp: ", std::strerror(errno)));
  }
  return pattern;
}

// The device mounted at `path` ("/dev/loop3"), from /proc/self/mountinfo.
std::string SourceOf(const std::string& path) {
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  std::string source;
  while (std::getline(mountinfo, line)) {
    const std::vector<std::string> halves = absl::StrSplit(line, " - ");
    if (halves.size() != 2) continue;
    const std::vector<std::string> left = absl::StrSplit(halves[0], ' ');
    const std::vector<std::string> right = absl::StrSplit(halves[1], ' ');
    if (left.size() > 4 && right.size() > 1 && left[4] == path) {
      source = right[1];  // the last mount at `path` is the visible one
    }
  }
  return source;
}

}  // namespace

ScratchFilesystem::ScratchFilesystem(std::string path, std::string image)
    : path_(std::move(path)), image_(std::move(image)) {}

absl::StatusOr<std::unique_ptr<ScratchFilesystem>>
ScratchFilesystem::MountTmpfs(int64_t size_bytes) {
  if (geteuid() != 0) {
    return absl::FailedPreconditionError("mounting a tmpfs needs root");
  }
  absl::StatusOr<std::string> path = MakeMountPoint();
  if (!path.ok()) return path.status();
  std::unique_ptr<ScratchFilesystem> fs(new ScratchFilesystem(*path, ""));
  const std::string options = absl::StrCat("size=", size_bytes, ",mode=0700");
  if (mount("tmpfs", path->c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
            options.c_str()) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("mount -t tmpfs: ", std::strerror(errno)));
  }
  fs->mounted_ = true;
  return fs;
}

absl::StatusOr<std::unique_ptr<ScratchFilesystem>> ScratchFilesystem::MountExt4(
    int64_t size_bytes) {
  if (geteuid() != 0) {
    return absl::FailedPreconditionError("mounting a loop device needs root");
  }
  for (const char* tool : {kMount, kUmount, kMkfsExt4, kFsck}) {
    if (access(tool, X_OK) != 0) return Missing(tool);
  }
  absl::StatusOr<std::string> path = MakeMountPoint();
  if (!path.ok()) return path.status();
  const std::string image = *path + ".img";
  std::unique_ptr<ScratchFilesystem> fs(new ScratchFilesystem(*path, image));
  { std::ofstream create(image); }
  if (truncate(image.c_str(), size_bytes) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("sizing the image: ", std::strerror(errno)));
  }
  if (absl::Status made = Run({kMkfsExt4, "-q", "-F", image}); !made.ok()) {
    return made;
  }
  if (absl::Status mounted = fs->MountImage(); !mounted.ok()) return mounted;
  return fs;
}

absl::Status ScratchFilesystem::MountImage() {
  absl::Status mounted = Run(
      {kMount, "-t", "ext4", "-o", "loop,errors=remount-ro", image_, path_});
  if (mounted.ok()) mounted_ = true;
  return mounted;
}

ScratchFilesystem::~ScratchFilesystem() {
  if (mounted_ && umount2(path_.c_str(), 0) != 0) {
    // Something still holds a file open on it: detach it now, the kernel
    // frees it when the last user goes.
    umount2(path_.c_str(), MNT_DETACH);
  }
  rmdir(path_.c_str());
  if (!image_.empty()) unlink(image_.c_str());
}

absl::StatusOr<std::string> ScratchFilesystem::Fill() {
  const std::string filler = path_ + "/filler";
  const int fd =
      open(filler.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("filler: ", std::strerror(errno)));
  }
  // write() fills what is left, then fails with ENOSPC.
  const std::string block(64 * 1024, 'f');
  int error = 0;
  while (true) {
    if (write(fd, block.data(), block.size()) < 0) {
      if (errno == EINTR) continue;
      error = errno;
      break;
    }
  }
  close(fd);
  if (error != ENOSPC) {
    return absl::InternalError(
        absl::StrCat("filling stopped on: ", std::strerror(error)));
  }
  return filler;
}

absl::Status ScratchFilesystem::TriggerErrorToReadOnly() {
  const std::string source = SourceOf(path_);
  const size_t slash = source.rfind('/');
  if (image_.empty() || slash == std::string::npos) {
    return absl::FailedPreconditionError("not an ext4 loop mount");
  }
  const std::string knob = absl::StrCat(
      "/sys/fs/ext4/", source.substr(slash + 1), "/trigger_fs_error");
  std::ofstream trigger(knob);
  trigger << "reliability test: simulated disk error";
  trigger.close();
  if (!trigger) {
    return absl::FailedPreconditionError(absl::StrCat("cannot write ", knob));
  }
  return absl::OkStatus();
}

bool ScratchFilesystem::Writable() const {
  const std::string probe = path_ + "/.probe";
  const int fd =
      open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  const bool wrote = write(fd, "x", 1) == 1 && fsync(fd) == 0;
  close(fd);
  unlink(probe.c_str());
  return wrote;
}

absl::Status ScratchFilesystem::RepairAndRemount() {
  if (image_.empty()) return absl::FailedPreconditionError("not ext4");
  if (absl::Status unmounted = Run({kUmount, path_}); !unmounted.ok()) {
    return unmounted;
  }
  mounted_ = false;
  // Exit codes 1 and 2 mean "errors corrected".
  const CommandResult fsck = RunCommand({kFsck, "-f", "-y", image_});
  if (fsck.exit_code > 2) {
    return absl::InternalError(
        absl::StrCat("e2fsck exited ", fsck.exit_code, ": ", fsck.out));
  }
  return MountImage();
}

}  // namespace aopay::testing
