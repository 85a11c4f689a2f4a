// SPDX-License-Identifier: MIT
// The optimizer of TrainingArguments::optim (AdamW by default), with Hugging Face's weight-decay grouping.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <torch/nn.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include "torchtrain/detail/optimizer_names.hpp"
#include "torchtrain/errors.hpp"
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

/// The optimizer options of `args.optim` for a param group with `weight_decay`.
inline std::unique_ptr<torch::optim::OptimizerOptions> optimizer_options(const TrainingArguments& args,
                                                                         double weight_decay) {
  const std::string& name = args.optim;
  const auto read = [&] { return parse_optim_args(args.optim_args, name); };
  const auto get = [](const std::map<std::string, double>& kv, const char* key, double otherwise) {
    const auto it = kv.find(key);
    return it == kv.end() ? otherwise : it->second;
  };
  if (name == "adamw_torch" || name == "adam") {
    if (name == "adam")
      return std::make_unique<torch::optim::AdamOptions>(torch::optim::AdamOptions(args.learning_rate)
                                                             .betas({args.adam_beta1, args.adam_beta2})
                                                             .eps(args.adam_epsilon)
                                                             .weight_decay(weight_decay));
    return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(args.learning_rate)
                                                            .betas({args.adam_beta1, args.adam_beta2})
                                                            .eps(args.adam_epsilon)
                                                            .weight_decay(weight_decay));
  }
  if (name == "sgd") {
    const auto kv = read();
    return std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(args.learning_rate)
                                                          .momentum(get(kv, "momentum", 0))
                                                          .dampening(get(kv, "dampening", 0))
                                                          .nesterov(get(kv, "nesterov", 0) != 0)
                                                          .weight_decay(weight_decay));
  }
  if (name == "adagrad") {
    const auto kv = read();
    return std::make_unique<torch::optim::AdagradOptions>(
        torch::optim::AdagradOptions(args.learning_rate)
            .lr_decay(get(kv, "lr_decay", 0))
            .initial_accumulator_value(get(kv, "initial_accumulator_value", 0))
            .eps(get(kv, "eps", 1e-10))
            .weight_decay(weight_decay));
  }
  if (name == "rmsprop") {
    const auto kv = read();
    return std::make_unique<torch::optim::RMSpropOptions>(torch::optim::RMSpropOptions(args.learning_rate)
                                                              .alpha(get(kv, "alpha", 0.99))
                                                              .eps(get(kv, "eps", 1e-8))
                                                              .momentum(get(kv, "momentum", 0))
                                                              .centered(get(kv, "centered", 0) != 0)
                                                              .weight_decay(weight_decay));
  }
  throw ArgumentError(unknown_optimizer(name));
}

template <class Optimizer, class Options>
std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::optim::OptimizerParamGroup> groups,
                                                        std::unique_ptr<torch::optim::OptimizerOptions> defaults) {
  return std::make_unique<Optimizer>(std::move(groups), static_cast<const Options&>(*defaults));
}

}  // namespace detail

/// The optimizer `args.optim` names (AdamW by default), with `optim_args`, over the trainable parameters, in two
/// groups as HF makes them: weight decay on weights, none on biases and on the parameters of normalization
/// layers (LayerNorm, GroupNorm, BatchNorm, InstanceNorm). Throws ArgumentError for an unknown name or argument.
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

  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay_params.empty()) groups.emplace_back(decay_params, detail::optimizer_options(args, args.weight_decay));
  if (!no_decay_params.empty()) groups.emplace_back(no_decay_params, detail::optimizer_options(args, 0.0));
  auto defaults = detail::optimizer_options(args, args.weight_decay);
  namespace o = torch::optim;
  if (args.optim == "adam") return detail::make_optimizer<o::Adam, o::AdamOptions>(std::move(groups), std::move(defaults));
  if (args.optim == "sgd") return detail::make_optimizer<o::SGD, o::SGDOptions>(std::move(groups), std::move(defaults));
  if (args.optim == "adagrad")
    return detail::make_optimizer<o::Adagrad, o::AdagradOptions>(std::move(groups), std::move(defaults));
  if (args.optim == "rmsprop")
    return detail::make_optimizer<o::RMSprop, o::RMSpropOptions>(std::move(groups), std::move(defaults));
  return detail::make_optimizer<o::AdamW, o::AdamWOptions>(std::move(groups), std::move(defaults));
}

}  // namespace torchtrain
