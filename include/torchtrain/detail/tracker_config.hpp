// SPDX-License-Identifier: MIT
// The config that W&B and Trackio file a run under, as Hugging Face builds it: the arguments and the model's size.
#pragma once

#include <cstdint>
#include <unordered_set>

#include <torch/nn/module.h>

#include "torchtrain/trainer_types.hpp"
#include "torchtrain/training_arguments.hpp"

namespace torchtrain::detail {

/// The model's parameter count; a parameter shared by several modules counts once, as model.num_parameters().
inline std::int64_t count_parameters(const torch::nn::Module& model) {
  std::unordered_set<const void*> seen;
  std::int64_t count = 0;
  for (const auto& parameter : model.parameters())
    if (seen.insert(parameter.unsafeGetTensorImpl()).second) count += parameter.numel();
  return count;
}

/// args.to_dict() then model/num_parameters, HF's order (a C++ model has no config of its own to put first).
inline LogEntry tracker_config(const TrainingArguments& args, const torch::nn::Module* model) {
  LogEntry config = args.to_json();
  if (model != nullptr) config["model/num_parameters"] = count_parameters(*model);
  return config;
}

}  // namespace torchtrain::detail
