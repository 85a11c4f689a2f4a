// SPDX-License-Identifier: MIT
// TrainingSnapshot: what loading a checkpoint changes, kept aside so that a failed load can put it back.
#pragma once

#include <cstddef>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "torchtrain/detail/module_archive.hpp"
#include "torchtrain/detail/rng_state.hpp"
#include "torchtrain/lr_scheduler.hpp"

namespace torchtrain::detail {

/// Loading replaces storages and optimizer state objects instead of writing into them, so keeping the old ones
/// costs no copy: aliases of the parameters, the optimizer's state map moved out, small clones of the rest.
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
    put_rng_states(rng_, rng_.size() - 1);
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

}  // namespace torchtrain::detail
