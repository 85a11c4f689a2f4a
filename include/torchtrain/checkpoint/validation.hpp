// SPDX-License-Identifier: MIT
// Which checkpoints can be resumed from: a folder is valid when its manifest agrees with every file in it and
// its trainer_state.json reads; get_last_checkpoint and resolve find the one a resume means.
#pragma once

#include <exception>
#include <filesystem>
#include <optional>
#include <string>

#include "torchtrain/checkpoint/layout.hpp"
#include "torchtrain/checkpoint/manifest.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/trainer_state.hpp"

namespace torchtrain::checkpoint {

namespace fs = std::filesystem;

/// Why `folder` cannot be resumed from, or nothing when it can: its manifest.json must exist, list model.pt
/// and trainer_state.json, and agree with every file in the folder (names, sizes, CRC32C checksums).
inline std::optional<std::string> invalid_reason(const fs::path& folder) {
  const fs::path manifest_path = folder / kManifestFile;
  if (!fs::is_regular_file(manifest_path)) return std::string("it has no ") + kManifestFile + ", so its save never finished";
  CheckpointManifest manifest;
  try {
    manifest = CheckpointManifest::read(manifest_path);
  } catch (const FileFormatError& e) {
    return std::string("its manifest is malformed: ") + e.what();
  }
  for (const char* file : {kModelFile, kTrainerStateFile})
    if (!manifest.find(file)) return std::string("its manifest lists no ") + file;
  if (auto why = manifest.verify(folder)) return why;
  try {
    TrainerState::load_from_json((folder / kTrainerStateFile).string());
  } catch (const std::exception& e) {
    return std::string("its trainer_state.json cannot be read: ") + e.what();
  }
  return std::nullopt;
}

/// The newest checkpoint of `dir` that can be resumed from; each newer one skipped is named in a warning.
inline std::optional<fs::path> get_last_checkpoint(const fs::path& dir) {
  auto all = sorted_checkpoints(dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (auto why = invalid_reason(*it)) {
      detail::warn("Skipping checkpoint " + it->string() + " because " + *why);
      continue;
    }
    return *it;
  }
  return std::nullopt;
}

/// The folder train(resume_from_checkpoint) means: the newest valid one in `output_dir`, or `path`.
inline fs::path resolve(bool latest, const std::optional<std::string>& path, const std::string& output_dir) {
  if (path) {
    if (!fs::is_directory(*path))
      throw CheckpointError("resume_from_checkpoint: '" + *path + "' is not a checkpoint folder");
    if (auto why = invalid_reason(*path))
      throw CheckpointError("resume_from_checkpoint: cannot resume from '" + *path + "' because " + *why);
    return *path;
  }
  if (!latest) throw CheckpointError("resume_from_checkpoint: nothing to resume from");
  if (auto last = get_last_checkpoint(output_dir)) return *last;
  throw CheckpointError("No valid checkpoint found in output directory (" + output_dir +
                        "); train without resume_from_checkpoint, or pass a checkpoint folder");
}

}  // namespace torchtrain::checkpoint
