// SPDX-License-Identifier: MIT
// Whole-file reads and writes whose errors name the path and the system's reason.
#pragma once

#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include <sys/stat.h>
#include <unistd.h>

#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};

inline std::string errno_text() { return std::generic_category().message(errno); }

/// The bytes of the file at `path`; throws FileFormatError when it cannot be opened or read.
inline std::string read_text_file(const std::string& path) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) throw FileFormatError(path + ": cannot open the file: " + errno_text());
  std::string text;
  char buf[1 << 16];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, file.get())) > 0) text.append(buf, n);
  if (std::ferror(file.get())) throw FileFormatError(path + ": cannot read the file: " + errno_text());
  return text;
}

/// Replaces the file at `path` with `text`; throws Error when it cannot be written completely.
inline void write_text_file(const std::string& path, std::string_view text) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "wb"));
  if (!file) throw Error(path + ": cannot open the file for writing: " + errno_text());
  const bool written = std::fwrite(text.data(), 1, text.size(), file.get()) == text.size();
  // fclose flushes, so a full disk can first show up here.
  const bool closed = std::fclose(file.release()) == 0;
  if (!written || !closed) throw Error(path + ": cannot write the file: " + errno_text());
}

/// Appends `text` to the file at `path` (created if missing); throws Error naming the path. A failed append is
/// cut back off, so the file never ends in a torn line that a retry would extend.
inline void append_text_file(const std::string& path, std::string_view text) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "ab"));
  if (!file) throw Error(path + ": cannot open the file for appending: " + errno_text());
  struct stat before {};
  const bool sized = ::fstat(::fileno(file.get()), &before) == 0;
  const bool written = std::fwrite(text.data(), 1, text.size(), file.get()) == text.size();
  const bool flushed = std::fflush(file.get()) == 0;
  if (!written || !flushed) {
    const std::string reason = errno_text();
    if (sized) {
      const int cut = ::ftruncate(::fileno(file.get()), before.st_size);  // best effort: the reason is what counts
      (void)cut;
    }
    throw Error(path + ": cannot write the file: " + reason);
  }
  if (std::fclose(file.release()) != 0) throw Error(path + ": cannot write the file: " + errno_text());
}

}  // namespace torchtrain::detail
