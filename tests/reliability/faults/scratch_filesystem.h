#ifndef AOPAY_TESTS_RELIABILITY_FAULTS_SCRATCH_FILESYSTEM_H_
#define AOPAY_TESTS_RELIABILITY_FAULTS_SCRATCH_FILESYSTEM_H_

// A small filesystem mounted by a test, so that its faults (full, read-only)
// touch nothing else on the machine. Needs root; Mount* fail with
// FAILED_PRECONDITION when the machine cannot provide one, and the test then
// skips. The destructor unmounts (lazily if something still holds it open)
// and removes the mount point.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace aopay::testing {

class ScratchFilesystem {
 public:
  // tmpfs of `size_bytes`.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ScratchFilesystem>>
  MountTmpfs(int64_t size_bytes);
  // ext4 on a loop device backed by an image file of `size_bytes`, mounted
  // with errors=remount-ro: an error makes the kernel turn it read-only under
  // the processes using it, as a failing disk does.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ScratchFilesystem>>
  MountExt4(int64_t size_bytes);

  ~ScratchFilesystem();
  ScratchFilesystem(const ScratchFilesystem&) = delete;
  ScratchFilesystem& operator=(const ScratchFilesystem&) = delete;

  const std::string& path() const { return path_; }

  // Writes a filler file until the filesystem is full; returns its path.
  [[nodiscard]] absl::StatusOr<std::string> Fill();
  // ext4 only: reports a filesystem error to the kernel (sysfs
  // trigger_fs_error), which turns the filesystem read-only at once.
  [[nodiscard]] absl::Status TriggerErrorToReadOnly();
  // True when a new file can be created and written here.
  bool Writable() const;
  // ext4 only, with nothing open on it: unmounts, checks and repairs the
  // image (e2fsck), and mounts it again read-write at the same path.
  [[nodiscard]] absl::Status RepairAndRemount();

 private:
  ScratchFilesystem(std::string path, std::string image);
  [[nodiscard]] absl::Status MountImage();

  std::string path_;
  std::string image_;  // "" for tmpfs
  bool mounted_ = false;
};

}  // namespace aopay::testing

#endif  // AOPAY_TESTS_RELIABILITY_FAULTS_SCRATCH_FILESYSTEM_H_
