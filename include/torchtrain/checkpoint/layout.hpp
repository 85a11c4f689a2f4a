// SPDX-License-Identifier: MIT
// Where checkpoints are: the folders checkpoint-<step> of output_dir, the files inside one, the staging prefix
// of a save that has not finished, and what is done with whole folders (listing in step order, removing what
// a crash left, rotation).
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "torchtrain/detail/durable_file.hpp"

namespace torchtrain::checkpoint {

namespace fs = std::filesystem;

inline constexpr const char* kModelFile = "model.pt";
inline constexpr const char* kOptimizerFile = "optimizer.pt";
inline constexpr const char* kSchedulerFile = "scheduler.json";
inline constexpr const char* kRngFile = "rng_state.pt";
inline constexpr const char* kLoopStateFile = "loop_state.json";
inline constexpr const char* kTrainerStateFile = "trainer_state.json";
inline constexpr const char* kTrainingArgsFile = "training_args.json";
inline constexpr const char* kManifestFile = "manifest.json";
inline constexpr const char* kStagingPrefix = torchtrain::detail::kStagingPrefix;

/// The random-state file of process `rank` of `world_size`: rng_state.pt alone, rng_state_<rank>.pt in a
/// distributed run (Hugging Face's names).
inline std::string rng_file_name(int rank, int world_size) {
  return world_size > 1 ? "rng_state_" + std::to_string(rank) + ".pt" : kRngFile;
}

/// The position of a stream dataset (its save() archive) of process `rank`: data_state.pt alone,
/// data_state_<rank>.pt in a distributed run.
inline std::string data_state_file_name(int rank, int world_size) {
  return world_size > 1 ? "data_state_" + std::to_string(rank) + ".pt" : "data_state.pt";
}

/// checkpoint-<N> -> N, or nothing for other names.
inline std::optional<std::int64_t> checkpoint_step(const fs::path& folder) {
  constexpr std::string_view prefix = "checkpoint-";
  const std::string name = folder.filename().string();
  if (name.size() == prefix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.find_first_not_of("0123456789", prefix.size()) != std::string::npos)
    return std::nullopt;
  try {
    return std::stoll(name.substr(prefix.size()));
  } catch (const std::out_of_range&) {  // more digits than a step can have: not one of ours
    return std::nullopt;
  }
}

/// The checkpoint-<N> folders of `dir`, sorted by N (never by modification time).
inline std::vector<fs::path> sorted_checkpoints(const fs::path& dir) {
  std::vector<std::pair<std::int64_t, fs::path>> found;
  if (fs::is_directory(dir))
    for (const auto& entry : fs::directory_iterator(dir))
      if (entry.is_directory())
        if (auto step = checkpoint_step(entry.path())) found.emplace_back(*step, entry.path());
  std::sort(found.begin(), found.end());
  std::vector<fs::path> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

/// Removes what a save interrupted by a crash left behind: staging folders and files never renamed into place.
inline void remove_stale_staging(const fs::path& dir) {
  if (!fs::is_directory(dir)) return;
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().rfind(kStagingPrefix, 0) == 0) stale.push_back(entry.path());
  for (const auto& path : stale) {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
}

/// Deletes the oldest checkpoints beyond `limit`, always keeping the best one (REF §8.3, numeric order).
inline void rotate(const fs::path& dir, std::optional<std::int64_t> limit, const std::optional<std::string>& best) {
  if (!limit || *limit <= 0) return;
  auto all = sorted_checkpoints(dir);
  if (best) {
    auto it = std::find(all.begin(), all.end(), fs::path(*best));
    if (it != all.end())
      for (auto i = static_cast<std::size_t>(it - all.begin()); i + 2 < all.size(); ++i) std::swap(all[i], all[i + 1]);
  }
  std::int64_t keep = *limit;
  if (best && keep == 1 && !all.empty() && all.back() != fs::path(*best)) keep = 2;
  const auto count = static_cast<std::int64_t>(all.size());
  for (std::int64_t i = 0; i < count - keep; ++i) {
    std::error_code ignored;
    fs::remove_all(all[static_cast<std::size_t>(i)], ignored);
  }
}

/// With save_total_limit == 1 at the end of training only the best checkpoint survives.
inline void delete_all_but_best(const fs::path& dir, const std::string& best) {
  for (const auto& folder : sorted_checkpoints(dir)) {
    std::error_code ec;
    if (!fs::equivalent(folder, best, ec)) fs::remove_all(folder, ec);
  }
}

}  // namespace torchtrain::checkpoint
