// SPDX-License-Identifier: MIT
// Writing a checkpoint so that a crash at any instant leaves either all of it or none: every file into a
// staging folder and flushed to disk, the manifest last, then one rename.
#pragma once

#include <exception>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/output-archive.h>

#include "torchtrain/checkpoint/layout.hpp"
#include "torchtrain/checkpoint/manifest.hpp"
#include "torchtrain/detail/crc32c.hpp"
#include "torchtrain/detail/durable_file.hpp"
#include "torchtrain/detail/error_text.hpp"
#include "torchtrain/detail/rng_state.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/lr_scheduler.hpp"
#include "torchtrain/trainer_state.hpp"
#include "torchtrain/training_arguments.hpp"

namespace torchtrain::checkpoint {

namespace fs = std::filesystem;

/// The processes of a distributed run writing one checkpoint together: each writes its own random state,
/// rank 0 everything else. `barrier` returns once every rank has called it with the same text. The default is
/// a single process.
struct SaveGroup {
  int rank = 0;
  int world_size = 1;
  std::function<void(const std::string&)> barrier;
};

/// Test hook: called with the path of each file once it is written and flushed into a checkpoint's staging
/// folder, so a test can stop the process in the middle of a save. Empty (nothing is called) unless a test sets it.
inline std::function<void(const fs::path&)>& after_file_written_hook() {
  static std::function<void(const fs::path&)> hook;
  return hook;
}
inline void set_after_file_written_hook(std::function<void(const fs::path&)> hook) {
  after_file_written_hook() = std::move(hook);
}

/// Replaces a file through its staging sibling and a rename (see detail::write_file_atomically).
using detail::write_file_atomically;

/// Writes a checkpoint into a staging folder, each file flushed to disk as it is closed and manifest.json
/// last, then renames the folder into place: a crash at any instant leaves either the complete checkpoint or
/// none. `optimizer`/`scheduler` may be null (save_only_model). Throws CheckpointError naming the file that
/// could not be written; the staging folder is removed and earlier checkpoints are untouched.
///
/// In a distributed run every rank calls it with its `group`: rank 0 creates the staging folder, every rank
/// writes its random state (and its `data_state`) into it, and rank 0 lists all of them in the manifest and
/// renames the folder once they are all written; every rank returns once the checkpoint is complete.
/// `data_state`, a stream dataset's saved position, is written as data_state_file_name's file; every rank has
/// one or none does.
inline void save(const fs::path& folder, const TrainingArguments& args, const TrainerState& state,
                 const torch::nn::Module& model, const torch::optim::Optimizer* optimizer,
                 const LRScheduler* scheduler, const nlohmann::json& loop_state, const SaveGroup& group = {},
                 const std::optional<std::string>& data_state = std::nullopt) {
  const fs::path parent = folder.parent_path();
  const fs::path staging = detail::staging_sibling(folder);
  const bool distributed = group.world_size > 1;
  const std::string rng_file = rng_file_name(group.rank, group.world_size);
  const std::string data_file = data_state_file_name(group.rank, group.world_size);
  // Writes one file of the checkpoint with `fill(file)`, flushed to disk; returns its size and checksum.
  auto write = [&](const std::string& name, auto&& fill) {
    detail::DurableFile file(staging / name);
    fill(file);
    const auto sum = file.commit();
    if (const auto& hook = after_file_written_hook()) hook(staging / name);
    return sum;
  };
  auto write_rng = [&](detail::DurableFile& file) { detail::save_rng_states(file.sink()); };
  auto write_data = [&](detail::DurableFile& file) { file.write(data_state->data(), data_state->size()); };
  if (distributed && group.rank != 0) {
    group.barrier("waiting for rank 0 to create " + staging.string());
    std::string stage = rng_file;
    try {
      write(rng_file, write_rng);
      stage = data_file;
      if (data_state) write(data_file, write_data);
    } catch (const std::exception& e) {
      throw CheckpointError("cannot save checkpoint " + folder.string() + ": " + stage + ": " +
                            detail::error_text(e) + "; the checkpoints saved before it are untouched");
    }
    group.barrier("writing the random states into " + staging.string());
    group.barrier("waiting for rank 0 to complete " + folder.string());
    return;
  }
  CheckpointManifest manifest;
  manifest.global_step = state.global_step;
  auto write_archive = [&](const char* name, auto&& fill) {
    manifest.add(name, write(name, [&](detail::DurableFile& file) {
                   torch::serialize::OutputArchive archive;
                   fill(archive);
                   archive.save_to(file.sink());
                 }));
  };
  auto write_text = [&](const char* name, const std::string& text) {
    manifest.add(name, write(name, [&](detail::DurableFile& file) { file.write(text.data(), text.size()); }));
  };
  try {
    fs::create_directories(parent);
    fs::remove_all(staging);
    fs::create_directories(staging);
    if (distributed) group.barrier("creating " + staging.string());
    write_archive(kModelFile, [&](auto& archive) { model.save(archive); });
    if (optimizer) write_archive(kOptimizerFile, [&](auto& archive) { optimizer->save(archive); });
    if (scheduler) write_text(kSchedulerFile, scheduler->state_dict().dump(2) + "\n");
    manifest.add(rng_file, write(rng_file, write_rng));
    if (data_state) manifest.add(data_file, write(data_file, write_data));
    write_text(kLoopStateFile, loop_state.dump(2) + "\n");
    write_text(kTrainingArgsFile, args.to_json_string());
    write_text(kTrainerStateFile, state.to_json_string());
    if (distributed) {
      group.barrier("writing the random states into " + staging.string());
      for (int r = 1; r < group.world_size; ++r) {  // written and flushed by their own processes
        std::vector<std::string> names{rng_file_name(r, group.world_size)};
        if (data_state) names.push_back(data_state_file_name(r, group.world_size));
        for (const auto& name : names) manifest.add(name, detail::crc32c_of_file((staging / name).string()));
      }
    }
    manifest.write(staging);  // last: a manifest that agrees with the files proves they are complete
    if (const auto& hook = after_file_written_hook()) hook(staging / kManifestFile);
    detail::fsync_path(staging, true);
    fs::remove_all(folder);  // a second save at the same step replaces the first
    fs::rename(staging, folder);
    detail::fsync_path(parent, true);
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    throw CheckpointError("cannot save checkpoint " + folder.string() + ": " + detail::error_text(e) +
                          "; the checkpoints saved before it are untouched");
  }
  if (distributed) group.barrier("completing " + folder.string());
}

}  // namespace torchtrain::checkpoint
