// SPDX-License-Identifier: MIT
// Checkpoints: the folder layout, crash-safe writing, finding the newest valid one, rotation, and loading that
// changes nothing unless it succeeds.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <ATen/Context.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize.h>

#include "torchtrain/checkpoint_manifest.hpp"
#include "torchtrain/detail/crc32c.hpp"
#include "torchtrain/detail/durable_file.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/loop_state.hpp"
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
inline constexpr const char* kManifestFile = CheckpointManifest::kFileName;
inline constexpr const char* kStagingPrefix = torchtrain::detail::kStagingPrefix;

/// The processes of a distributed run writing one checkpoint together: each writes its own random state,
/// rank 0 everything else. `barrier` returns once every rank has called it with the same text. The default is
/// a single process.
struct SaveGroup {
  int rank = 0;
  int world_size = 1;
  std::function<void(const std::string&)> barrier;
};

/// The random-state file of process `rank` of `world_size`: rng_state.pt alone, rng_state_<rank>.pt in a
/// distributed run (Hugging Face's names).
inline std::string rng_file_name(int rank, int world_size) {
  return world_size > 1 ? "rng_state_" + std::to_string(rank) + ".pt" : kRngFile;
}

namespace detail {

// checkpoint-<N> -> N, or nothing for other names.
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

// LibTorch's messages without the C++ backtrace it appends.
inline std::string error_text(const std::exception& e) {
  if (const auto* torch_error = dynamic_cast<const c10::Error*>(&e)) return torch_error->what_without_backtrace();
  return e.what();
}

// The default generators: the CPU's first, then one per CUDA device (none in a CPU-only process).
inline std::vector<at::Generator> rng_generators(std::size_t cuda_devices) {
  std::vector<at::Generator> generators{at::globalContext().defaultGenerator(at::kCPU)};
  for (std::size_t i = 0; i < cuda_devices; ++i)
    generators.push_back(at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i))));
  return generators;
}

inline std::vector<torch::Tensor> rng_states() {
  std::vector<torch::Tensor> states;
  for (auto& generator : rng_generators(torch::cuda::device_count())) {
    std::lock_guard<std::mutex> lock(generator.mutex());
    states.push_back(generator.get_state());
  }
  return states;
}

// Restores what rng_states() returned, for as many CUDA devices as both have; `source` names it in the warning.
inline void set_rng_states(const std::vector<torch::Tensor>& states, const std::string& source) {
  const std::size_t live_cuda = torch::cuda::device_count();
  const std::size_t saved_cuda = states.empty() ? 0 : states.size() - 1;
  if (saved_cuda != live_cuda)
    torchtrain::detail::warn(source + " holds the random state of " + std::to_string(saved_cuda) +
                             " CUDA device(s) and this process has " + std::to_string(live_cuda) +
                             "; random numbers on the devices not restored will differ from an uninterrupted run.");
  auto generators = rng_generators(std::min(saved_cuda, live_cuda));
  for (std::size_t i = 0; i < generators.size() && i < states.size(); ++i) {
    std::lock_guard<std::mutex> lock(generators[i].mutex());
    generators[i].set_state(states[i]);
  }
}

// Each parameter and buffer of `module` (recursively) paired with its tensor in `archive`, whose shape and
// dtype must match: Module::load would instead silently reshape the parameters to whatever the file holds.
using TensorPairs = std::vector<std::pair<torch::Tensor, torch::Tensor>>;
inline void match_module_archive(torch::nn::Module& module, torch::serialize::InputArchive& archive, TensorPairs& out,
                                 const std::string& prefix = "") {
  auto match = [&](const std::string& key, const torch::Tensor& live, bool is_buffer) {
    torch::Tensor saved;
    if (!archive.try_read(key, saved, is_buffer))
      throw CheckpointError("it has no " + prefix + key + "; it was saved from a different model");
    if (!live.defined()) return;
    if (saved.sizes() != live.sizes() || saved.scalar_type() != live.scalar_type())
      throw CheckpointError(prefix + key + " is " + std::string(c10::toString(saved.scalar_type())) +
                            c10::str(saved.sizes()) + " in the file and " + c10::toString(live.scalar_type()) +
                            c10::str(live.sizes()) + " in the model; it was saved from a different model");
    out.emplace_back(live, saved.to(live.device()));
  };
  for (const auto& p : module.named_parameters(/*recurse=*/false)) match(p.key(), p.value(), false);
  for (const auto& b : module.named_buffers(/*recurse=*/false)) match(b.key(), b.value(), true);
  for (const auto& child : module.named_children()) {
    if (!child.value()->is_serializable()) continue;
    torch::serialize::InputArchive child_archive;
    if (!archive.try_read(child.key(), child_archive))
      throw CheckpointError("it has no module " + prefix + child.key() + "; it was saved from a different model");
    match_module_archive(*child.value(), child_archive, out, prefix + child.key() + ".");
  }
}

// Points each live tensor at its new storage. The old storage is never written, so an alias of it restores it.
inline void assign_storages(const TensorPairs& pairs) {
  torch::NoGradGuard no_grad;
  for (const auto& [live, source] : pairs) live.set_(source);  // Tensor's in-place methods are const
}

/// What load() changes, kept aside before it changes anything so that a failed load can put it back. Loading
/// replaces storages and optimizer state objects instead of writing into them, so keeping the old ones costs
/// no copy: aliases of the parameters, the optimizer's state map moved out, small clones of the rest.
class TrainingSnapshot {
 public:
  TrainingSnapshot(torch::nn::Module& model, torch::optim::Optimizer* optimizer, LRScheduler* scheduler)
      : optimizer_(optimizer), scheduler_(scheduler), rng_(rng_states()) {
    for (const auto& p : model.parameters())
      if (p.defined()) model_.emplace_back(p, p.detach());
    for (const auto& b : model.buffers())
      if (b.defined()) model_.emplace_back(b, b.detach());
    if (optimizer) {
      optimizer_state_ = std::move(optimizer->state());
      optimizer->state().clear();  // parameters without saved state must not keep the current one
      for (const auto& group : optimizer->param_groups()) group_options_.push_back(group.options().clone());
    }
    if (scheduler) scheduler_state_ = scheduler->state_dict();
  }

  void restore() {
    assign_storages(model_);
    if (optimizer_) {
      optimizer_->state() = std::move(optimizer_state_);
      for (std::size_t i = 0; i < group_options_.size(); ++i)
        optimizer_->param_groups()[i].set_options(std::move(group_options_[i]));
    }
    if (scheduler_) scheduler_->load_state_dict(scheduler_state_);
    auto generators = rng_generators(rng_.size() - 1);
    for (std::size_t i = 0; i < generators.size(); ++i) {
      std::lock_guard<std::mutex> lock(generators[i].mutex());
      generators[i].set_state(rng_[i]);
    }
  }

 private:
  TensorPairs model_;
  torch::optim::Optimizer* optimizer_;
  LRScheduler* scheduler_;
  std::vector<torch::Tensor> rng_;
  std::remove_reference_t<decltype(std::declval<torch::optim::Optimizer&>().state())> optimizer_state_;
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> group_options_;
  nlohmann::json scheduler_state_;
};

// Test hook: called with the path of each file once it is written and flushed into a checkpoint's staging
// folder, so a test can stop the process in the middle of a save. Empty (nothing is called) unless a test sets it.
inline std::function<void(const fs::path&)>& after_file_written_hook() {
  static std::function<void(const fs::path&)> hook;
  return hook;
}
inline void set_after_file_written_hook(std::function<void(const fs::path&)> hook) {
  after_file_written_hook() = std::move(hook);
}

}  // namespace detail

/// Replaces a file through its staging sibling and a rename (see detail::write_file_atomically).
using torchtrain::detail::write_file_atomically;

inline void save_module(const torch::nn::Module& module, const fs::path& path) {
  torch::serialize::OutputArchive archive;
  module.save(archive);
  archive.save_to(path.string());
}

/// Loads weights saved by save_module; a file of another architecture is an error, and the module unchanged.
inline void load_module(torch::nn::Module& module, const fs::path& path) {
  detail::TensorPairs tensors;
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path.string());
    detail::match_module_archive(module, archive, tensors);
  } catch (const std::exception& e) {
    throw CheckpointError("cannot load " + path.string() + ": " + detail::error_text(e));
  }
  detail::assign_storages(tensors);
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

/// Writes a checkpoint into a staging folder, each file flushed to disk as it is closed and manifest.json
/// last, then renames the folder into place: a crash at any instant leaves either the complete checkpoint or
/// none. `optimizer`/`scheduler` may be null (save_only_model). Throws CheckpointError naming the file that
/// could not be written; the staging folder is removed and earlier checkpoints are untouched.
///
/// In a distributed run every rank calls it with its `group`: rank 0 creates the staging folder, every rank
/// writes its random state into it, and rank 0 lists all of them in the manifest and renames the folder once
/// they are all written; every rank returns once the checkpoint is complete.
inline void save(const fs::path& folder, const TrainingArguments& args, const TrainerState& state,
                 const torch::nn::Module& model, const torch::optim::Optimizer* optimizer,
                 const LRScheduler* scheduler, const nlohmann::json& loop_state, const SaveGroup& group = {}) {
  const fs::path parent = folder.parent_path();
  const fs::path staging = parent / (std::string(kStagingPrefix) + folder.filename().string());
  const bool distributed = group.world_size > 1;
  const std::string rng_file = rng_file_name(group.rank, group.world_size);
  auto write_rng = [&](torchtrain::detail::DurableFile& file) {
    torch::serialize::OutputArchive archive;  // CPU state as "0", CUDA device i as "i+1" (torch::load reads a vector)
    const auto states = detail::rng_states();
    for (std::size_t i = 0; i < states.size(); ++i) archive.write(std::to_string(i), states[i]);
    archive.save_to(file.sink());
    return file.commit();
  };
  if (distributed && group.rank != 0) {
    group.barrier("waiting for rank 0 to create " + staging.string());
    try {
      torchtrain::detail::DurableFile file(staging / rng_file);
      write_rng(file);
      if (const auto& hook = detail::after_file_written_hook()) hook(staging / rng_file);
    } catch (const std::exception& e) {
      throw CheckpointError("cannot save checkpoint " + folder.string() + ": " + rng_file + ": " +
                            detail::error_text(e) + "; the checkpoints saved before it are untouched");
    }
    group.barrier("writing the random states into " + staging.string());
    group.barrier("waiting for rank 0 to complete " + folder.string());
    return;
  }
  CheckpointManifest manifest;
  manifest.global_step = state.global_step;
  auto write_archive = [&](const char* name, auto&& fill) {
    torchtrain::detail::DurableFile file(staging / name);
    torch::serialize::OutputArchive archive;
    fill(archive);
    archive.save_to(file.sink());
    manifest.add(name, file.commit());
    if (const auto& hook = detail::after_file_written_hook()) hook(staging / name);
  };
  auto write_text = [&](const char* name, const std::string& text) {
    torchtrain::detail::DurableFile file(staging / name);
    file.write(text.data(), text.size());
    manifest.add(name, file.commit());
    if (const auto& hook = detail::after_file_written_hook()) hook(staging / name);
  };
  try {
    fs::create_directories(parent);
    fs::remove_all(staging);
    fs::create_directories(staging);
    if (distributed) group.barrier("creating " + staging.string());
    write_archive(kModelFile, [&](auto& archive) { model.save(archive); });
    if (optimizer) write_archive(kOptimizerFile, [&](auto& archive) { optimizer->save(archive); });
    if (scheduler) write_text(kSchedulerFile, scheduler->state_dict().dump(2) + "\n");
    {
      torchtrain::detail::DurableFile file(staging / rng_file);
      manifest.add(rng_file, write_rng(file));
      if (const auto& hook = detail::after_file_written_hook()) hook(staging / rng_file);
    }
    write_text(kLoopStateFile, loop_state.dump(2) + "\n");
    write_text(kTrainingArgsFile, args.to_json_string());
    write_text(kTrainerStateFile, state.to_json_string());
    if (distributed) {
      group.barrier("writing the random states into " + staging.string());
      for (int r = 1; r < group.world_size; ++r) {  // written and flushed by their own processes
        const std::string name = rng_file_name(r, group.world_size);
        manifest.add(name, torchtrain::detail::crc32c_of_file((staging / name).string()));
      }
    }
    manifest.write(staging);  // last: a manifest that agrees with the files proves they are complete
    if (const auto& hook = detail::after_file_written_hook()) hook(staging / kManifestFile);
    torchtrain::detail::fsync_path(staging, true);
    fs::remove_all(folder);  // a second save at the same step replaces the first
    fs::rename(staging, folder);
    torchtrain::detail::fsync_path(parent, true);
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    throw CheckpointError("cannot save checkpoint " + folder.string() + ": " + detail::error_text(e) +
                          "; the checkpoints saved before it are untouched");
  }
  if (distributed) group.barrier("completing " + folder.string());
}

struct Loaded {
  TrainerState state;
  nlohmann::json loop_state;
};

/// Restores the model, optimizer, scheduler and RNG from `folder` and returns its state; `restore_more` (for
/// example the callback states) runs last, inside the same guarantee. The folder must be valid (see
/// invalid_reason), and every file is read and checked before anything changes. If anything fails, the
/// model, optimizer, scheduler and RNG are put back exactly as they were and CheckpointError names the file.
/// The RNG comes from `rng_file` (see rng_file_name), and stays as it is when the checkpoint has no such file.
inline Loaded load(const fs::path& folder, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                   LRScheduler* scheduler, const std::function<void(const TrainerState&)>& restore_more = {},
                   const std::string& rng_file = kRngFile) {
  const std::string where = "cannot load checkpoint " + folder.string() + ": ";
  if (auto why = invalid_reason(folder)) throw CheckpointError(where + *why);
  auto read_json = [&](const char* file) {
    return nlohmann::json::parse(torchtrain::detail::read_text_file((folder / file).string()));
  };
  Loaded loaded;
  torch::serialize::InputArchive model_archive, optimizer_archive;
  detail::TensorPairs model_tensors;
  std::optional<nlohmann::json> scheduler_state;
  std::vector<torch::Tensor> rng;
  const bool has_optimizer = optimizer && fs::exists(folder / kOptimizerFile);
  std::string stage = kTrainerStateFile;
  try {
    loaded.state = TrainerState::load_from_json((folder / kTrainerStateFile).string());
    stage = kLoopStateFile;
    if (fs::exists(folder / kLoopStateFile)) loaded.loop_state = read_json(kLoopStateFile);
    LoopState::from_json(loaded.loop_state);  // checked here, before anything changes
    stage = kModelFile;
    model_archive.load_from((folder / kModelFile).string());
    detail::match_module_archive(model, model_archive, model_tensors);
    stage = kOptimizerFile;
    if (has_optimizer) optimizer_archive.load_from((folder / kOptimizerFile).string());
    stage = kSchedulerFile;
    if (scheduler && fs::exists(folder / kSchedulerFile)) scheduler_state = read_json(kSchedulerFile);
    stage = rng_file;
    if (fs::exists(folder / rng_file)) torch::load(rng, (folder / rng_file).string());
  } catch (const std::exception& e) {
    throw CheckpointError(where + stage + ": " + detail::error_text(e) + "; nothing was changed");
  }

  detail::TrainingSnapshot before(model, has_optimizer ? optimizer : nullptr, scheduler);
  try {
    stage = kModelFile;
    detail::assign_storages(model_tensors);
    stage = kOptimizerFile;
    if (has_optimizer) optimizer->load(optimizer_archive);
    stage = kSchedulerFile;
    if (scheduler_state) scheduler->load_state_dict(*scheduler_state);
    stage = rng_file;
    if (!rng.empty()) detail::set_rng_states(rng, (folder / rng_file).string());
    stage = std::string("the callback states of ") + kTrainerStateFile;
    if (restore_more) restore_more(loaded.state);
  } catch (const std::exception& e) {
    before.restore();
    throw CheckpointError(where + stage + ": " + detail::error_text(e) +
                          "; the model, optimizer, scheduler, RNG and callbacks are as they were");
  }
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

}  // namespace torchtrain::checkpoint
