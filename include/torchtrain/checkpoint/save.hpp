// SPDX-License-Identifier: MIT
// Writing a checkpoint so that a crash at any instant leaves either all of it or none: every file into a
// staging folder and flushed to disk, the manifest last, then one rename.
#pragma once

#include <cstdint>
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

/// Writes one file's bytes into the file it is given.
using FileContents = std::function<void(detail::DurableFile&)>;

/// A file written by `fill`, an OutputArchive's fill (model.save, optimizer->save), as LibTorch writes it.
inline FileContents archive_contents(std::function<void(torch::serialize::OutputArchive&)> fill) {
  return [fill = std::move(fill)](detail::DurableFile& file) {
    torch::serialize::OutputArchive archive;
    fill(archive);
    archive.save_to(file.sink());
  };
}

/// What one process writes into a checkpoint, ready to be written: the same whether it reads the live objects
/// (contents_of, for save) or a snapshot of them (the background writer). Rank 0 writes all of it, another rank
/// its random states and data position only.
struct CheckpointContents {
  std::int64_t global_step = 0;
  FileContents model;
  FileContents optimizer;                  // empty: none (save_only_model)
  std::optional<std::string> scheduler;    // scheduler.json's text; none with save_only_model
  std::vector<torch::Tensor> rng_states;   // as detail::rng_states() lists them
  std::optional<std::string> data_state;   // a stream dataset's saved position
  std::string loop_state, training_args, trainer_state;
};

/// The contents of a checkpoint of the live objects, which must not change until it is written.
/// `optimizer`/`scheduler` may be null (save_only_model).
inline CheckpointContents contents_of(const TrainingArguments& args, const TrainerState& state,
                                      const torch::nn::Module& model, const torch::optim::Optimizer* optimizer,
                                      const LRScheduler* scheduler, const nlohmann::json& loop_state,
                                      std::optional<std::string> data_state = std::nullopt) {
  CheckpointContents contents;
  contents.global_step = state.global_step;
  contents.model = archive_contents([&model](auto& archive) { model.save(archive); });
  if (optimizer) contents.optimizer = archive_contents([optimizer](auto& archive) { optimizer->save(archive); });
  if (scheduler) contents.scheduler = scheduler->state_dict().dump(2) + "\n";
  contents.rng_states = detail::rng_states();
  contents.data_state = std::move(data_state);
  contents.loop_state = loop_state.dump(2) + "\n";
  contents.training_args = args.to_json_string();
  contents.trainer_state = state.to_json_string();
  return contents;
}

}  // namespace torchtrain::checkpoint

namespace torchtrain::detail {

inline CheckpointError checkpoint_save_error(const std::filesystem::path& folder, const std::string& what) {
  return CheckpointError("cannot save checkpoint " + folder.string() + ": " + what +
                         "; the checkpoints saved before it are untouched");
}

// Writes one file of the checkpoint with `fill(file)`, flushed to disk; returns its size and checksum.
inline FileChecksum write_checkpoint_file(const std::filesystem::path& staging, const std::string& name,
                                         const checkpoint::FileContents& fill) {
  DurableFile file(staging / name);
  fill(file);
  const auto sum = file.commit();
  if (const auto& hook = checkpoint::after_file_written_hook()) hook(staging / name);
  return sum;
}

inline checkpoint::FileContents text_contents(const std::string& text) {
  return [&text](DurableFile& file) { file.write(text.data(), text.size()); };
}

inline checkpoint::FileContents rng_contents(const std::vector<torch::Tensor>& states) {
  return [&states](DurableFile& file) { write_rng_states(states, file.sink()); };
}

}  // namespace torchtrain::detail

namespace torchtrain::checkpoint {

/// The part of a save that every rank takes part in, before rank 0 completes it: rank 0 creates an empty staging
/// folder for `folder`, then every other rank writes its random states (and its data position) into it, each
/// flushed to disk. Throws CheckpointError naming the file; earlier checkpoints are untouched.
inline void prepare_checkpoint(const fs::path& folder, const CheckpointContents& contents, const SaveGroup& group = {}) {
  const fs::path staging = detail::staging_sibling(folder);
  const bool distributed = group.world_size > 1;
  if (group.rank == 0) {
    try {
      fs::create_directories(folder.parent_path());
      fs::remove_all(staging);
      fs::create_directories(staging);
    } catch (const std::exception& e) {
      std::error_code ignored;
      fs::remove_all(staging, ignored);
      throw detail::checkpoint_save_error(folder, detail::error_text(e));
    }
  }
  if (distributed) group.barrier("creating " + staging.string());
  if (group.rank != 0) {
    std::string file = rng_file_name(group.rank, group.world_size);
    try {
      detail::write_checkpoint_file(staging, file, detail::rng_contents(contents.rng_states));
      file = data_state_file_name(group.rank, group.world_size);
      if (contents.data_state) detail::write_checkpoint_file(staging, file, detail::text_contents(*contents.data_state));
    } catch (const std::exception& e) {
      throw detail::checkpoint_save_error(folder, file + ": " + detail::error_text(e));
    }
  }
  if (distributed) group.barrier("writing the random states into " + staging.string());
}

/// The rest of a save, on rank 0, after prepare_checkpoint: writes rank 0's
/// files, lists the other ranks' files with their checksums, writes the manifest and renames the staging folder
/// into place. Throws CheckpointError naming the file that could not be written; the staging folder is then
/// removed and earlier checkpoints are untouched.
inline void complete_checkpoint(const fs::path& folder, const CheckpointContents& contents, int world_size = 1) {
  const fs::path staging = detail::staging_sibling(folder);
  CheckpointManifest manifest;
  manifest.global_step = contents.global_step;
  auto write = [&](const std::string& name, const FileContents& fill) {
    manifest.add(name, detail::write_checkpoint_file(staging, name, fill));
  };
  try {
    write(kModelFile, contents.model);
    if (contents.optimizer) write(kOptimizerFile, contents.optimizer);
    if (contents.scheduler) write(kSchedulerFile, detail::text_contents(*contents.scheduler));
    write(rng_file_name(0, world_size), detail::rng_contents(contents.rng_states));
    if (contents.data_state) write(data_state_file_name(0, world_size), detail::text_contents(*contents.data_state));
    write(kLoopStateFile, detail::text_contents(contents.loop_state));
    write(kTrainingArgsFile, detail::text_contents(contents.training_args));
    write(kTrainerStateFile, detail::text_contents(contents.trainer_state));
    for (int r = 1; r < world_size; ++r) {  // written and flushed by their own processes
      std::vector<std::string> names{rng_file_name(r, world_size)};
      if (contents.data_state) names.push_back(data_state_file_name(r, world_size));
      for (const auto& name : names)
        manifest.add(name, detail::crc32c_of_file((staging / name).string()));
    }
    manifest.write(staging);  // last: a manifest that agrees with the files proves they are complete
    if (const auto& hook = after_file_written_hook()) hook(staging / kManifestFile);
    detail::fsync_path(staging, true);
    fs::remove_all(folder);  // a second save at the same step replaces the first
    fs::rename(staging, folder);
    detail::fsync_path(folder.parent_path(), true);
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    throw detail::checkpoint_save_error(folder, detail::error_text(e));
  }
}

/// Writes `contents` as checkpoint `folder` (prepare_checkpoint, then complete_checkpoint): a crash at any
/// instant leaves either the complete checkpoint or none. Throws CheckpointError naming the file that could not
/// be written; earlier checkpoints are untouched.
///
/// In a distributed run every rank calls it with its `group` and its own contents: rank 0 creates the staging
/// folder, every rank writes its random state (and its data position) into it, and rank 0 lists all of them in
/// the manifest and renames the folder once they are all written; every rank returns once the checkpoint is
/// complete. Every rank has a data position or none does.
inline void save(const fs::path& folder, const CheckpointContents& contents, const SaveGroup& group = {}) {
  prepare_checkpoint(folder, contents, group);
  if (group.rank == 0) complete_checkpoint(folder, contents, group.world_size);
  if (group.world_size > 1) group.barrier("completing " + folder.string());
}

/// save() of the live objects (contents_of). `optimizer`/`scheduler` may be null (save_only_model).
inline void save(const fs::path& folder, const TrainingArguments& args, const TrainerState& state,
                 const torch::nn::Module& model, const torch::optim::Optimizer* optimizer,
                 const LRScheduler* scheduler, const nlohmann::json& loop_state, const SaveGroup& group = {},
                 std::optional<std::string> data_state = std::nullopt) {
  save(folder, contents_of(args, state, model, optimizer, scheduler, loop_state, std::move(data_state)), group);
}

}  // namespace torchtrain::checkpoint
