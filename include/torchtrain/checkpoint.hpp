// SPDX-License-Identifier: MIT
// Checkpoints: the folder layout, crash-safe writing, finding the newest one, rotation, and loading.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <ATen/Context.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize.h>

#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/lr_scheduler.hpp"
#include "torchtrain/trainer_state.hpp"
#include "torchtrain/training_arguments.hpp"

namespace torchtrain::checkpoint {

namespace fs = std::filesystem;

inline constexpr const char* kModelFile = "model.pt";
inline constexpr const char* kOptimizerFile = "optimizer.pt";
inline constexpr const char* kSchedulerFile = "scheduler.json";
inline constexpr const char* kRngFile = "rng_state.pt";
inline constexpr const char* kLoopStateFile = "loop_state.json";
inline constexpr const char* kTrainerStateFile = "trainer_state.json";
inline constexpr const char* kTrainingArgsFile = "training_args.json";
inline constexpr const char* kStagingPrefix = ".tmp-";

namespace detail {

inline void fsync_path(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) throw CheckpointError("cannot open '" + path.string() + "' to flush it to disk");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw CheckpointError("cannot flush '" + path.string() + "' to disk (fsync failed)");
}

inline void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.flush();
  if (!out) throw CheckpointError("cannot write '" + path.string() + "' (disk full or not writable?)");
}

// checkpoint-<N> -> N, or nothing for other names.
inline std::optional<std::int64_t> checkpoint_step(const fs::path& folder) {
  static const std::regex pattern("^checkpoint-([0-9]+)$");
  std::smatch m;
  const std::string name = folder.filename().string();
  if (!std::regex_match(name, m, pattern)) return std::nullopt;
  return std::stoll(m[1].str());
}

}  // namespace detail

/// Writes `text` to `path` through a temporary sibling and a rename, so readers never see half a file.
inline void write_file_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.parent_path() / (std::string(kStagingPrefix) + path.filename().string());
  detail::write_text(tmp, text);
  detail::fsync_path(tmp, false);
  fs::rename(tmp, path);
}

inline void save_module(const torch::nn::Module& module, const fs::path& path) {
  torch::serialize::OutputArchive archive;
  module.save(archive);
  archive.save_to(path.string());
}

inline void load_module(torch::nn::Module& module, const fs::path& path) {
  torch::serialize::InputArchive archive;
  archive.load_from(path.string());
  module.load(archive);
}

/// The checkpoint-<N> folders of `dir`, sorted by N (never by modification time).
inline std::vector<fs::path> sorted_checkpoints(const fs::path& dir) {
  std::vector<std::pair<std::int64_t, fs::path>> found;
  if (fs::is_directory(dir))
    for (const auto& entry : fs::directory_iterator(dir))
      if (entry.is_directory())
        if (auto step = detail::checkpoint_step(entry.path())) found.emplace_back(*step, entry.path());
  std::sort(found.begin(), found.end());
  std::vector<fs::path> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

/// Why `folder` cannot be resumed from, or nothing when it can.
inline std::optional<std::string> invalid_reason(const fs::path& folder) {
  for (const char* file : {kModelFile, kTrainerStateFile})
    if (!fs::is_regular_file(folder / file)) return std::string("it has no ") + file;
  try {
    TrainerState::load_from_json((folder / kTrainerStateFile).string());
  } catch (const std::exception& e) {
    return std::string("its trainer_state.json cannot be read: ") + e.what();
  }
  return std::nullopt;
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

/// The newest checkpoint of `dir` that can be resumed from; each newer one skipped is named in a warning.
inline std::optional<fs::path> get_last_checkpoint(const fs::path& dir) {
  auto all = sorted_checkpoints(dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (auto why = invalid_reason(*it)) {
      torchtrain::detail::warn("Skipping checkpoint " + it->string() + " because " + *why);
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

/// Writes a checkpoint into a staging folder, flushes it, then renames it into place: a crash at any
/// instant leaves either the complete checkpoint or none. `optimizer`/`scheduler` may be null
/// (save_only_model).
inline void save(const fs::path& folder, const TrainingArguments& args, const TrainerState& state,
                 const torch::nn::Module& model, const torch::optim::Optimizer* optimizer,
                 const LRScheduler* scheduler, const nlohmann::json& loop_state) {
  const fs::path parent = folder.parent_path();
  fs::create_directories(parent);
  const fs::path staging = parent / (std::string(kStagingPrefix) + folder.filename().string());
  fs::remove_all(staging);
  fs::create_directories(staging);
  try {
    save_module(model, staging / kModelFile);
    if (optimizer) torch::save(*optimizer, (staging / kOptimizerFile).string());
    if (scheduler) detail::write_text(staging / kSchedulerFile, scheduler->state_dict().dump(2) + "\n");
    std::vector<torch::Tensor> rng{at::globalContext().defaultGenerator(at::kCPU).get_state()};
    torch::save(rng, (staging / kRngFile).string());
    detail::write_text(staging / kLoopStateFile, loop_state.dump(2) + "\n");
    args.save_to_json((staging / kTrainingArgsFile).string());
    detail::write_text(staging / kTrainerStateFile, state.to_json_string());
    for (const auto& entry : fs::directory_iterator(staging)) detail::fsync_path(entry.path(), false);
    detail::fsync_path(staging, true);
    fs::remove_all(folder);  // a second save at the same step replaces the first
    fs::rename(staging, folder);
    detail::fsync_path(parent, true);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    throw;
  }
}

struct Loaded {
  TrainerState state;
  nlohmann::json loop_state;
};

/// Restores the model, optimizer, scheduler and RNG from `folder` and returns its state.
inline Loaded load(const fs::path& folder, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                   LRScheduler* scheduler) {
  Loaded loaded{TrainerState::load_from_json((folder / kTrainerStateFile).string()), nullptr};
  load_module(model, folder / kModelFile);
  if (optimizer && fs::exists(folder / kOptimizerFile)) torch::load(*optimizer, (folder / kOptimizerFile).string());
  if (scheduler && fs::exists(folder / kSchedulerFile))
    scheduler->load_state_dict(nlohmann::json::parse(torchtrain::detail::read_text_file((folder / kSchedulerFile).string())));
  if (fs::exists(folder / kRngFile)) {
    std::vector<torch::Tensor> rng;
    torch::load(rng, (folder / kRngFile).string());
    if (!rng.empty()) {
      auto generator = at::globalContext().defaultGenerator(at::kCPU);
      generator.set_state(rng.front());
    }
  }
  if (fs::exists(folder / kLoopStateFile))
    loaded.loop_state = nlohmann::json::parse(torchtrain::detail::read_text_file((folder / kLoopStateFile).string()));
  return loaded;
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

/// HF's save_metrics: `<split>_results.json`, and the same keys merged into `all_results.json`.
template <class Metrics>
void save_metrics(const fs::path& dir, const std::string& split, const Metrics& metrics, bool combined) {
  fs::create_directories(dir);
  nlohmann::json values = nlohmann::json::object();
  for (const auto& [k, v] : metrics.items()) values[k] = v;
  write_file_atomically(dir / (split + "_results.json"), values.dump(4) + "\n");
  if (!combined) return;
  nlohmann::json all = nlohmann::json::object();
  const fs::path all_path = dir / "all_results.json";
  if (fs::exists(all_path)) {
    all = nlohmann::json::parse(torchtrain::detail::read_text_file(all_path.string()), nullptr, false);
    if (!all.is_object()) all = nlohmann::json::object();
  }
  all.update(values);
  write_file_atomically(all_path, all.dump(4) + "\n");
}

}  // namespace torchtrain::checkpoint
