// Reads the data files Debian's data packages ship, gzipped (zlib) or not, for the examples that use them.
#pragma once

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include <zlib.h>

#include <torchtrain/errors.hpp>

namespace examples {

/// Writes the decompressed contents of the gzip file `source` to `target`.
inline void gunzip(const std::filesystem::path& source, const std::filesystem::path& target) {
  const std::unique_ptr<gzFile_s, int (*)(gzFile)> in(gzopen(source.c_str(), "rb"), gzclose);
  if (!in) throw torchtrain::Error("cannot open " + source.string());
  std::ofstream out(target, std::ios::binary | std::ios::trunc);
  if (!out) throw torchtrain::Error("cannot write " + target.string() + "; check that the folder is writable");
  char buffer[1 << 16];
  for (int n; (n = gzread(in.get(), buffer, sizeof buffer)) != 0;) {
    if (n < 0) throw torchtrain::Error(source.string() + " is not a readable gzip file");
    out.write(buffer, n);
  }
  if (!out.flush()) throw torchtrain::Error("cannot write " + target.string() + "; is the disk full?");
}

/// The contents of the file `source`, decompressed when its name ends in ".gz".
inline std::string text_of(const std::filesystem::path& source) {
  std::string text;
  if (source.extension() == ".gz") {
    const std::unique_ptr<gzFile_s, int (*)(gzFile)> in(gzopen(source.c_str(), "rb"), gzclose);
    if (!in) throw torchtrain::Error("cannot open " + source.string());
    char buffer[1 << 16];
    for (int n; (n = gzread(in.get(), buffer, sizeof buffer)) != 0;) {
      if (n < 0) throw torchtrain::Error(source.string() + " is not a readable gzip file");
      text.append(buffer, static_cast<std::size_t>(n));
    }
  } else {
    std::ifstream in(source, std::ios::binary);
    if (!in) throw torchtrain::Error("cannot open " + source.string());
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return text;
}

}  // namespace examples
