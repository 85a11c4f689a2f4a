// SPDX-License-Identifier: MIT
// A checkpoint's manifest.json: CheckpointManifest::read. It reads from a path, so each input is written to a
// scratch file first. A manifest that reads must write and read back to the same text.
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <string>

#include <torchtrain/checkpoint/manifest.hpp>
#include <torchtrain/detail/text_file.hpp>

#include "fuzz_target.hpp"

namespace {

const std::string& scratch_file() {
  static const std::string path = [] {
    std::string name = (std::filesystem::temp_directory_path() / "torchtrain-fuzz-manifest-XXXXXX").string();
    const int fd = ::mkstemp(name.data());
    if (fd < 0) std::abort();
    ::close(fd);
    return name;
  }();
  return path;
}

}  // namespace

TORCHTRAIN_FUZZ_TARGET(checkpoint_manifest) {
  using namespace torchtrain;
  fuzz::quiet_warnings();
  const std::string& path = scratch_file();
  detail::write_text_file(path, fuzz::as_text(data, size));

  std::optional<CheckpointManifest> manifest;
  fuzz::expect_only_torchtrain_errors([&] { manifest = CheckpointManifest::read(path); });
  if (!manifest) return 0;

  const std::string written = manifest->to_json_string();
  detail::write_text_file(path, written);
  try {
    fuzz::check(CheckpointManifest::read(path).to_json_string() == written,
                "manifest.json changed when written, read and written again");
  } catch (const Error& e) {
    throw fuzz::PropertyViolation(std::string("a manifest that was read cannot read back what it writes: ") +
                                  e.what());
  }
  return 0;
}
