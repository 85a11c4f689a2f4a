// SPDX-License-Identifier: MIT
// The default optimizer: AdamW with Hugging Face's weight-decay grouping.
#pragma once

#include <memory>
#include <set>
#include <vector>

#include <torch/nn.h>
#include <torch/optim/adamw.h>

#include "torchtrain/training_arguments_fields.hpp"

namespace torchtrain {

namespace detail {

inline bool is_normalization(const torch::nn::Module& m) {
  return dynamic_cast<const torch::nn::LayerNormImpl*>(&m) || dynamic_cast<const torch::nn::GroupNormImpl*>(&m) ||
         dynamic_cast<const torch::nn::BatchNorm1dImpl*>(&m) || dynamic_cast<const torch::nn::BatchNorm2dImpl*>(&m) ||
         dynamic_cast<const torch::nn::BatchNorm3dImpl*>(&m) ||
         dynamic_cast<const torch::nn::InstanceNorm1dImpl*>(&m) ||
         dynamic_cast<const torch::nn::InstanceNorm2dImpl*>(&m) ||
         dynamic_cast<const torch::nn::InstanceNorm3dImpl*>(&m);
}

}  // namespace detail

/// AdamW over the trainable parameters, in two groups: weight decay on weights, none on biases and on the
/// parameters of normalization layers (LayerNorm, GroupNorm, BatchNorm, InstanceNorm).
inline std::unique_ptr<torch::optim::Optimizer> create_optimizer(torch::nn::Module& model,
                                                                 const TrainingArguments& args) {
  std::set<const torch::TensorImpl*> no_decay;
  for (const auto& item : model.named_modules("", /*include_self=*/true))
    if (detail::is_normalization(*item.value()))
      for (const auto& p : item.value()->parameters()) no_decay.insert(p.unsafeGetTensorImpl());

  std::vector<torch::Tensor> decay_params, no_decay_params;
  for (const auto& item : model.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    const std::string& name = item.key();
    const bool is_bias = name == "bias" || (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0);
    (is_bias || no_decay.count(item.value().unsafeGetTensorImpl()) ? no_decay_params : decay_params)
        .push_back(item.value());
  }

  auto options = torch::optim::AdamWOptions(args.learning_rate)
                     .betas({args.adam_beta1, args.adam_beta2})
                     .eps(args.adam_epsilon)
                     .weight_decay(args.weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay_params.empty())
    groups.emplace_back(decay_params, std::make_unique<torch::optim::AdamWOptions>(options));
  if (!no_decay_params.empty()) {
    auto without = std::make_unique<torch::optim::AdamWOptions>(options);
    without->weight_decay(0.0);
    groups.emplace_back(no_decay_params, std::move(without));
  }
  return std::make_unique<torch::optim::AdamW>(std::move(groups), options);
}

}  // namespace torchtrain
