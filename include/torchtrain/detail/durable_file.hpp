// SPDX-License-Identifier: MIT
// Writing files that survive a crash: DurableFile (written with write(2), checksummed as its bytes go out,
// flushed to disk on commit), fsync_path, and write_file_atomically, the one way torchtrain replaces a file.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>

#include "torchtrain/detail/crc32c.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

/// What a file or folder being written is called until it is renamed into place; output_dir entries with this
/// prefix are left-overs of an interrupted write.
inline constexpr const char* kStagingPrefix = ".tmp-";

/// `path`'s staging sibling: dir/name -> dir/.tmp-name.
inline std::filesystem::path staging_sibling(const std::filesystem::path& path) {
  return path.parent_path() / (std::string(kStagingPrefix) + path.filename().string());
}

/// Creates (or truncates) `path`. The first failed write is remembered and every later byte dropped, so the
/// writer can be handed to code that must not be unwound mid-write (LibTorch's zip writer); commit() then
/// throws Error naming the file and the system's reason. Without commit() the file is left as is.
class DurableFile {
 public:
  explicit DurableFile(std::filesystem::path path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error(path_.string() + ": cannot create the file: " + std::strerror(errno));
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
      throw Error(path_.string() + ": cannot write the file: " + std::strerror(error_) +
                  (error_ == ENOSPC || error_ == EFBIG || error_ == EDQUOT ? " (free disk space or raise the file size limit)"
                                                                           : ""));
    return sum_;
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  int error_ = 0;
  FileChecksum sum_;
};

/// Flushes a file, or a folder's entries (after a rename into it), to disk; throws Error naming the path.
inline void fsync_path(const std::filesystem::path& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open '" + path.string() + "' to flush it to disk: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (rc != 0) throw Error("cannot flush '" + path.string() + "' to disk (fsync failed): " + std::strerror(error));
}

/// Replaces the file at `path` with `bytes`: they are written to its staging sibling (.tmp-<name>) and flushed to
/// disk, the sibling is renamed over the file and the folder flushed, so a crash at any instant leaves either
/// the old file or the new one, and a completed call survives a power loss. Throws Error naming the path; the
/// sibling is then removed.
inline void write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
  const std::filesystem::path tmp = staging_sibling(path);
  try {
    DurableFile file(tmp);
    file.write(bytes.data(), bytes.size());
    file.commit();
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw Error(path.string() + ": cannot replace the file: " + ec.message());
  }
  const std::filesystem::path folder = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  fsync_path(folder, /*directory=*/true);
}

}  // namespace torchtrain::detail
