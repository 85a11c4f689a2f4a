// SPDX-License-Identifier: MIT
// Host copies of a module's tensors and of an optimizer's state for checkpoint::StateSnapshot, each refilling
// the buffers of the previous copy.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/serialize.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/output-archive.h>
#include <torch/utils.h>

namespace torchtrain::detail {

// Copies tensors to host memory, into the buffers of the previous copy when they have the shape and type
// (pinned memory for a CUDA source, so the copy runs at the bus's speed), and lists the copies it made. A
// parameter's copy keeps its requires_grad, which the file records.
class HostCopier {
 public:
  torch::Tensor operator()(torch::Tensor buffer, const torch::Tensor& source) {
    if (!source.defined()) return {};
    torch::NoGradGuard no_grad;
    if (!buffer.defined() || buffer.sizes() != source.sizes() || buffer.scalar_type() != source.scalar_type())
      buffer = torch::empty(source.sizes(),
                            torch::TensorOptions().dtype(source.scalar_type()).pinned_memory(source.is_cuda()));
    buffer.copy_(source);
    buffer.set_requires_grad(source.requires_grad());
    copies.push_back(buffer);
    return buffer;
  }
  std::vector<torch::Tensor> copies;
};

// The tensors of one module as Module::save writes them: its own parameters, its buffers, then its children.
struct ModuleCopy {
  std::vector<std::pair<std::string, torch::Tensor>> parameters, buffers;
  std::vector<std::pair<std::string, ModuleCopy>> children;

  void capture(const torch::nn::Module& module, HostCopier& copy) {
    copy_all(parameters, module.named_parameters(/*recurse=*/false), copy);
    copy_all(buffers, module.named_buffers(/*recurse=*/false), copy);
    std::vector<std::pair<std::string, ModuleCopy>> next;
    for (const auto& child : module.named_children()) {
      if (!child.value()->is_serializable()) continue;
      next.emplace_back(child.key(), take(children, child.key()));
      next.back().second.capture(*child.value(), copy);
    }
    children = std::move(next);
  }

  void save(torch::serialize::OutputArchive& archive) const {
    for (const auto& [name, tensor] : parameters) archive.write(name, tensor);
    for (const auto& [name, tensor] : buffers) archive.write(name, tensor, /*is_buffer=*/true);
    for (const auto& [name, child] : children) {
      torch::serialize::OutputArchive child_archive(archive.compilation_unit());
      child.save(child_archive);
      archive.write(name, child_archive);
    }
  }

 private:
  static void copy_all(std::vector<std::pair<std::string, torch::Tensor>>& copies,
                       const torch::OrderedDict<std::string, torch::Tensor>& tensors, HostCopier& copy) {
    std::vector<std::pair<std::string, torch::Tensor>> next;
    for (const auto& item : tensors) next.emplace_back(item.key(), copy(take(copies, item.key()), item.value()));
    copies = std::move(next);
  }

  // The entry named `name` moved out of `from` (an empty one when there is none): the previous capture's buffer.
  template <class T>
  static T take(std::vector<std::pair<std::string, T>>& from, const std::string& name) {
    for (auto& [key, value] : from)
      if (key == name) return std::move(value);
    return T{};
  }
};

// copy_state: the tensors of one parameter's state copied into `to`, whose tensors are the previous capture's
// buffers. Adam's and AdamW's states are two types with the same fields.
template <class AdamState>
void copy_adam_state(AdamState& to, const AdamState& from, HostCopier& copy) {
  to.step(from.step());
  to.exp_avg(copy(to.exp_avg(), from.exp_avg()));
  to.exp_avg_sq(copy(to.exp_avg_sq(), from.exp_avg_sq()));
  to.max_exp_avg_sq(copy(to.max_exp_avg_sq(), from.max_exp_avg_sq()));
}
inline void copy_state(torch::optim::AdamParamState& to, const torch::optim::AdamParamState& from, HostCopier& copy) {
  copy_adam_state(to, from, copy);
}
inline void copy_state(torch::optim::AdamWParamState& to, const torch::optim::AdamWParamState& from, HostCopier& copy) {
  copy_adam_state(to, from, copy);
}
inline void copy_state(torch::optim::SGDParamState& to, const torch::optim::SGDParamState& from, HostCopier& copy) {
  to.momentum_buffer(copy(to.momentum_buffer(), from.momentum_buffer()));
}
inline void copy_state(torch::optim::AdagradParamState& to, const torch::optim::AdagradParamState& from, HostCopier& copy) {
  to.step(from.step());
  to.sum(copy(to.sum(), from.sum()));
}
inline void copy_state(torch::optim::RMSpropParamState& to, const torch::optim::RMSpropParamState& from, HostCopier& copy) {
  to.step(from.step());
  to.square_avg(copy(to.square_avg(), from.square_avg()));
  to.momentum_buffer(copy(to.momentum_buffer(), from.momentum_buffer()));
  to.grad_avg(copy(to.grad_avg(), from.grad_avg()));
}

using ParamStates = std::vector<std::pair<std::string, std::unique_ptr<torch::optim::OptimizerParamState>>>;
using GroupsWriter = void (*)(torch::serialize::OutputArchive&, const std::vector<torch::optim::OptimizerParamGroup>&);

// Copies an optimizer of type Optimizer (with its ParamState and Options types) into `states`, in the order
// its state map lists them, and returns the writer of its param_groups; null when it is of another type.
template <class Optimizer, class ParamState, class Options>
GroupsWriter capture_optimizer(const torch::optim::Optimizer& optimizer, ParamStates& states, HostCopier& copy) {
  if (!dynamic_cast<const Optimizer*>(&optimizer)) return nullptr;
  std::unordered_map<std::string, std::unique_ptr<torch::optim::OptimizerParamState>> previous;
  for (auto& [key, state] : states) previous.emplace(key, std::move(state));
  states.clear();
  for (const auto& [key, state] : optimizer.state()) {
    auto found = previous.find(key);
    auto to = found != previous.end() && dynamic_cast<ParamState*>(found->second.get())
                  ? std::move(found->second)
                  : std::make_unique<ParamState>();
    copy_state(static_cast<ParamState&>(*to), static_cast<const ParamState&>(*state), copy);
    states.emplace_back(key, std::move(to));
  }
  return &torch::optim::detail::serialize<Options>;
}

}  // namespace torchtrain::detail
