// SPDX-License-Identifier: MIT
// Loading a checkpoint into a model, optimizer, scheduler and the random generators: everything or nothing.
#pragma once

#include <exception>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize.h>

#include "torchtrain/checkpoint/layout.hpp"
#include "torchtrain/checkpoint/validation.hpp"
#include "torchtrain/detail/error_text.hpp"
#include "torchtrain/detail/loss_tracker.hpp"
#include "torchtrain/detail/module_archive.hpp"
#include "torchtrain/detail/rng_state.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/detail/training_snapshot.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/lr_scheduler.hpp"
#include "torchtrain/trainer_state.hpp"

namespace torchtrain::checkpoint {

namespace fs = std::filesystem;

/// What load() returns besides what it restores in place.
struct Loaded {
  TrainerState state;
  nlohmann::json loop_state;  // the running loss sums (loop_state.json), null for a checkpoint without them
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
    return nlohmann::json::parse(detail::read_text_file((folder / file).string()));
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
    detail::LossTracker::check_state(loaded.loop_state);
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

}  // namespace torchtrain::checkpoint
