// SPDX-License-Identifier: MIT
// DurableFile: a file written with write(2), checksummed as its bytes go out, and flushed to disk on commit.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include "torchtrain/detail/crc32c.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

/// Creates (or truncates) `path`. The first failed write is remembered and every later byte dropped, so the
/// writer can be handed to code that must not be unwound mid-write (LibTorch's zip writer); commit() then
/// throws CheckpointError naming the file and the system's reason. Without commit() the file is left as is.
class DurableFile {
 public:
  explicit DurableFile(std::filesystem::path path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw CheckpointError(path_.string() + ": cannot create the file: " + std::strerror(errno));
  }
  ~DurableFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  DurableFile(const DurableFile&) = delete;
  DurableFile& operator=(const DurableFile&) = delete;

  void write(const void* data, std::size_t size) {
    if (error_ != 0) return;
    sum_.crc32c = crc32c(data, size, sum_.crc32c);
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
      const ::ssize_t n = ::write(fd_, p, size);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error_ = n < 0 ? errno : EIO;
        return;
      }
      p += n;
      size -= static_cast<std::size_t>(n);
      sum_.size += static_cast<std::uint64_t>(n);
    }
  }

  /// What torch::save and OutputArchive::save_to accept; it always reports success (see the class comment).
  std::function<std::size_t(const void*, std::size_t)> sink() {
    return [this](const void* data, std::size_t size) {
      write(data, size);
      return size;
    };
  }

  /// Flushes the file to disk, closes it and returns its size and checksum.
  FileChecksum commit() {
    if (error_ == 0 && ::fsync(fd_) != 0) error_ = errno;
    const int closed = ::close(fd_);
    fd_ = -1;
    if (error_ == 0 && closed != 0) error_ = errno;
    if (error_ != 0)
      throw CheckpointError(path_.string() + ": cannot write the file: " + std::strerror(error_) +
                            (error_ == ENOSPC || error_ == EFBIG || error_ == EDQUOT
                                 ? " (free disk space or raise the file size limit)"
                                 : ""));
    return sum_;
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  int error_ = 0;
  FileChecksum sum_;
};

}  // namespace torchtrain::detail
