// SPDX-License-Identifier: MIT
// Loading a checkpoint into a model, optimizer, scheduler and the random generators: everything or nothing,
// from the bytes validation already read and checked.
#pragma once

#include <exception>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize.h>

#include "torchtrain/checkpoint/layout.hpp"
#include "torchtrain/checkpoint/validation.hpp"
#include "torchtrain/detail/error_text.hpp"
#include "torchtrain/detail/module_archive.hpp"
#include "torchtrain/detail/rng_state.hpp"
#include "torchtrain/detail/training_snapshot.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/loop_state.hpp"
#include "torchtrain/lr_scheduler.hpp"
#include "torchtrain/trainer_state.hpp"

namespace torchtrain::checkpoint {

namespace fs = std::filesystem;

/// What load() returns besides what it restores in place.
struct Loaded {
  TrainerState state;
  nlohmann::json loop_state;  // loop_state.json (checked by LoopState::from_json), null for a checkpoint without it
};

/// Restores the model, optimizer, scheduler and RNG from `checkpoint` (validated with Contents::kept, as
/// resolve and newest_valid do) and returns its state; `restore_more` (for example the callback states) runs
/// last, inside the same guarantee. Nothing is read from the disk: every file is parsed from the bytes
/// validation checked, and checked against the model (each parameter's name, shape and dtype) before
/// anything changes. If anything fails, the model, optimizer, scheduler and RNG are put back exactly as they
/// were and CheckpointError names the file. The RNG comes from `rng_file` (see rng_file_name), and stays as it
/// is when the checkpoint has no such file.
inline Loaded load(ValidCheckpoint checkpoint, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                   LRScheduler* scheduler, const std::function<void(const TrainerState&)>& restore_more = {},
                   const std::string& rng_file = kRngFile) {
  const fs::path folder = checkpoint.folder;
  const std::string where = "cannot load checkpoint " + folder.string() + ": ";
  if (!checkpoint.contents(kModelFile))
    throw ArgumentError(where + "it was validated with Contents::checksums, which keeps none of its files; "
                                "validate it with Contents::kept (the default)");
  auto bytes = [&](const std::string& file) { return *checkpoint.contents(file); };
  auto json = [&](const std::string& file) { return nlohmann::json::parse(bytes(file)); };
  Loaded loaded;
  loaded.state = std::move(checkpoint.state);
  torch::serialize::InputArchive model_archive, optimizer_archive;
  detail::TensorPairs model_tensors;
  std::optional<nlohmann::json> scheduler_state;
  std::vector<torch::Tensor> rng;
  const bool has_optimizer = optimizer && checkpoint.has(kOptimizerFile);
  std::string stage;
  try {
    stage = kLoopStateFile;
    if (checkpoint.has(kLoopStateFile)) loaded.loop_state = json(kLoopStateFile);
    LoopState::from_json(loaded.loop_state);  // checked here, before anything changes
    stage = kModelFile;
    model_archive.load_from(bytes(kModelFile).data(), bytes(kModelFile).size());
    detail::match_module_archive(model, model_archive, model_tensors);
    stage = kOptimizerFile;
    if (has_optimizer) optimizer_archive.load_from(bytes(kOptimizerFile).data(), bytes(kOptimizerFile).size());
    stage = kSchedulerFile;
    if (scheduler && checkpoint.has(kSchedulerFile)) scheduler_state = json(kSchedulerFile);
    stage = rng_file;
    if (checkpoint.has(rng_file)) torch::load(rng, bytes(rng_file).data(), bytes(rng_file).size());
  } catch (const std::exception& e) {
    throw CheckpointError(where + stage + ": " + detail::error_text(e) + "; nothing was changed");
  }
  checkpoint.files.clear();  // everything is parsed into tensors and JSON of its own: the bytes can go

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

/// Validates `folder` (see validate) and loads it: the same guarantee, and CheckpointError with the reason
/// when it is not valid.
inline Loaded load(const fs::path& folder, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                   LRScheduler* scheduler, const std::function<void(const TrainerState&)>& restore_more = {},
                   const std::string& rng_file = kRngFile) {
  auto checked = validate(folder);
  if (!checked.checkpoint) throw CheckpointError("cannot load checkpoint " + folder.string() + ": " + checked.reason);
  return load(std::move(*checked.checkpoint), model, optimizer, scheduler, restore_more, rng_file);
}

}  // namespace torchtrain::checkpoint
