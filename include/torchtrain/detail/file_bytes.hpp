// SPDX-License-Identifier: MIT
// FileBytes: the whole content of a file held in memory, with the CRC32C of exactly those bytes.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "torchtrain/detail/crc32c.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

/// A file read once: what is checked against its checksum is what is then parsed, with no second read.
/// A file smaller than kMapFrom is read into a string. A larger one is mapped read-only instead, so that its
/// bytes are the page cache's own: reading it into fresh memory would first have the kernel allocate and zero
/// every page of that memory, which on a 2-core VM costs more than the copy (about 0.4 s for 800 MB). The file
/// must not be truncated by another process while it is mapped; torchtrain never rewrites a file in place.
class FileBytes {
 public:
  static constexpr std::size_t kMapFrom = std::size_t{1} << 20;

  /// Reads the file at `path`; throws FileFormatError naming it when it cannot be opened or read.
  static FileBytes read(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw FileFormatError(path + ": cannot open the file: " + errno_text());
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat status {};
    if (::fstat(fd, &status) != 0) throw FileFormatError(path + ": cannot read the file: " + errno_text());
    FileBytes out;
    const auto size = static_cast<std::size_t>(status.st_size);
    if (S_ISREG(status.st_mode) && size >= kMapFrom) {
      void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
      if (mapped != MAP_FAILED) {
        out.mapped_ = static_cast<const char*>(mapped);
        out.mapped_size_ = size;
        out.crc32c_ = crc32c(mapped, size);
        return out;
      }  // a file system that cannot map files: read it instead
    }
    out.text_.resize(size + 1);  // one byte more, to see the end of the file in the same loop
    std::size_t filled = 0;
    for (;;) {
      if (filled == out.text_.size()) out.text_.resize(2 * filled);  // the file grew since fstat
      const ::ssize_t n = ::read(fd, &out.text_[filled], out.text_.size() - filled);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw FileFormatError(path + ": cannot read the file: " + errno_text());
      if (n == 0) break;
      filled += static_cast<std::size_t>(n);
    }
    out.text_.resize(filled);
    out.crc32c_ = crc32c(out.text_.data(), out.text_.size());
    return out;
  }

  FileBytes() = default;
  FileBytes(FileBytes&& other) noexcept { *this = std::move(other); }
  FileBytes& operator=(FileBytes&& other) noexcept {
    if (this != &other) {
      unmap();
      text_ = std::move(other.text_);
      mapped_ = std::exchange(other.mapped_, nullptr);
      mapped_size_ = std::exchange(other.mapped_size_, 0);
      crc32c_ = other.crc32c_;
    }
    return *this;
  }
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes() { unmap(); }

  std::string_view view() const { return mapped_ ? std::string_view(mapped_, mapped_size_) : std::string_view(text_); }
  FileChecksum checksum() const { return {view().size(), crc32c_}; }

 private:
  void unmap() {
    if (mapped_) ::munmap(const_cast<char*>(mapped_), mapped_size_);
    mapped_ = nullptr;
    mapped_size_ = 0;
  }

  std::string text_;
  const char* mapped_ = nullptr;
  std::size_t mapped_size_ = 0;
  std::uint32_t crc32c_ = 0;
};

}  // namespace torchtrain::detail
