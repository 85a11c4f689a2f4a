// Unpacks the gzipped data files Debian's data packages ship (zlib), for the examples that read them.
#pragma once

#include <filesystem>
#include <fstream>
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

}  // namespace examples
