// SPDX-License-Identifier: MIT
// Which checkpoints can be resumed from. validate() reads a folder once: its manifest, then every file it
// lists, checked against its size and CRC32C, and trainer_state.json parsed from the bytes just checked. The
// ValidCheckpoint it returns holds those bytes, so that load() reads nothing again.
#pragma once

#include <exception>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "torchtrain/checkpoint/layout.hpp"
#include "torchtrain/checkpoint/manifest.hpp"
#include "torchtrain/detail/crc32c.hpp"
#include "torchtrain/detail/file_bytes.hpp"
#include "torchtrain/detail/python_json.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/trainer_state.hpp"

namespace torchtrain::checkpoint {

namespace fs = std::filesystem;

/// What validate() keeps of the files it checks.
enum class Contents {
  kept,       ///< every listed file's bytes, for load(): a resume then reads each byte once
  checksums,  ///< nothing but trainer_state.json: a check alone (invalid_reason, get_last_checkpoint)
};

/// A checkpoint folder whose manifest agrees with its files, as validate() found it. Move-only: it may hold
/// the bytes of the whole checkpoint (in the page cache's own pages for the large files; see FileBytes).
struct ValidCheckpoint {
  fs::path folder;
  CheckpointManifest manifest;
  TrainerState state;                              // trainer_state.json
  std::map<std::string, detail::FileBytes> files;  // each listed file's checked bytes, with Contents::kept

  /// Whether the checkpoint has the file `name` (its manifest lists every file of the folder).
  bool has(const std::string& name) const { return manifest.find(name) != nullptr; }
  /// The checked bytes of `name`; nothing when the checkpoint has no such file or its bytes were not kept.
  std::optional<std::string_view> contents(const std::string& name) const {
    const auto it = files.find(name);
    if (it == files.end()) return std::nullopt;
    return it->second.view();
  }
};

/// What validate() found: the checkpoint, or the reason its folder cannot be resumed from.
struct Validation {
  std::optional<ValidCheckpoint> checkpoint;
  std::string reason;  // empty when `checkpoint` is set
};

/// Reads and checks `folder`, each file once: its manifest.json must exist, list model.pt and
/// trainer_state.json, and agree with every file in the folder (names and sizes, then the CRC32C of each file's
/// bytes as read), and trainer_state.json must parse.
inline Validation validate(const fs::path& folder, Contents contents = Contents::kept) {
  Validation out;
  const fs::path manifest_path = folder / kManifestFile;
  if (!fs::is_regular_file(manifest_path)) {
    out.reason = std::string("it has no ") + kManifestFile + ", so its save never finished";
    return out;
  }
  ValidCheckpoint checkpoint;
  checkpoint.folder = folder;
  try {
    checkpoint.manifest = CheckpointManifest::read(manifest_path);
  } catch (const FileFormatError& e) {
    out.reason = std::string("its manifest is malformed: ") + e.what();
    return out;
  }
  for (const char* file : {kModelFile, kTrainerStateFile})
    if (!checkpoint.has(file)) {
      out.reason = std::string("its manifest lists no ") + file;
      return out;
    }
  auto mismatch = checkpoint.manifest.verify(folder, [&](const CheckpointManifest::File& f) {
    const std::string path = (folder / f.name).string();
    if (contents == Contents::checksums && f.name != kTrainerStateFile) return detail::crc32c_of_file(path);
    auto bytes = detail::FileBytes::read(path);
    const auto sum = bytes.checksum();
    checkpoint.files.emplace(f.name, std::move(bytes));
    return sum;
  });
  if (mismatch) {
    out.reason = std::move(*mismatch);
    return out;
  }
  try {
    const std::string path = (folder / kTrainerStateFile).string();
    checkpoint.state = TrainerState::from_json(detail::parse_python_json(*checkpoint.contents(kTrainerStateFile), path), path);
  } catch (const std::exception& e) {
    out.reason = std::string("its trainer_state.json cannot be read: ") + e.what();
    return out;
  }
  if (contents == Contents::checksums) checkpoint.files.clear();
  out.checkpoint = std::move(checkpoint);
  return out;
}

/// Why `folder` cannot be resumed from, or nothing when it can (see validate).
inline std::optional<std::string> invalid_reason(const fs::path& folder) {
  auto checked = validate(folder, Contents::checksums);
  if (checked.checkpoint) return std::nullopt;
  return std::move(checked.reason);
}

/// The newest checkpoint of `dir` that can be resumed from; each newer one skipped is named in a warning, and
/// the older ones are not read.
inline std::optional<ValidCheckpoint> newest_valid(const fs::path& dir, Contents contents = Contents::kept) {
  auto all = sorted_checkpoints(dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    auto checked = validate(*it, contents);
    if (checked.checkpoint) return std::move(checked.checkpoint);
    detail::warn("Skipping checkpoint " + it->string() + " because " + checked.reason);
  }
  return std::nullopt;
}

/// The newest checkpoint folder of `dir` that can be resumed from (Hugging Face's get_last_checkpoint, but by
/// validity rather than by name alone); each newer one skipped is named in a warning.
inline std::optional<fs::path> get_last_checkpoint(const fs::path& dir) {
  auto last = newest_valid(dir, Contents::checksums);
  if (!last) return std::nullopt;
  return std::move(last->folder);
}

/// The checkpoint train(resume_from_checkpoint) means, validated and ready for load(): `path`, or the newest
/// valid one in `output_dir`. Throws CheckpointError saying why there is none.
inline ValidCheckpoint resolve(bool latest, const std::optional<std::string>& path, const std::string& output_dir) {
  if (path) {
    if (!fs::exists(*path))
      throw CheckpointError("resume_from_checkpoint: '" + *path + "' does not exist; pass a checkpoint folder "
                            "(output_dir/checkpoint-<step>), or true for the newest valid one in output_dir");
    if (!fs::is_directory(*path))
      throw CheckpointError("resume_from_checkpoint: '" + *path + "' is a file, not a checkpoint folder");
    auto checked = validate(*path);
    if (!checked.checkpoint)
      throw CheckpointError("resume_from_checkpoint: cannot resume from '" + *path + "' because " + checked.reason);
    return std::move(*checked.checkpoint);
  }
  if (!latest) throw CheckpointError("resume_from_checkpoint: nothing to resume from");
  if (auto last = newest_valid(output_dir)) return std::move(*last);
  throw CheckpointError("No valid checkpoint found in output directory (" + output_dir +
                        "); train without resume_from_checkpoint, or pass a checkpoint folder");
}

}  // namespace torchtrain::checkpoint
