// SPDX-License-Identifier: MIT
// Data parallelism on a ProcessGroup: identical starting weights, averaged gradients, and the few values the
// ranks must agree on (the control flags, the logged loss, the evaluation outputs).
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "torchtrain/distributed.hpp"
#include "torchtrain/trainer_control.hpp"

namespace torchtrain::detail {

// Runs `collective` on `tensors` packed into one flat buffer per dtype, then copies the results back: one
// message per step whatever the number of parameters.
template <class Collective>
void flattened(ProcessGroup& group, const std::vector<torch::Tensor>& tensors, Collective&& collective) {
  std::map<c10::ScalarType, std::vector<torch::Tensor>> by_type;
  for (const auto& t : tensors) by_type[t.scalar_type()].push_back(t);
  torch::NoGradGuard no_grad;
  for (auto& [type, group_tensors] : by_type) {
    std::vector<torch::Tensor> flat;
    flat.reserve(group_tensors.size());
    for (const auto& t : group_tensors) flat.push_back(t.reshape({-1}));
    torch::Tensor buffer = torch::cat(flat).to(group.device());
    collective(buffer);
    std::int64_t offset = 0;
    for (auto& t : group_tensors) {
      t.copy_(buffer.narrow(0, offset, t.numel()).view_as(t));
      offset += t.numel();
    }
  }
}

/// Gives every rank rank 0's parameters and buffers.
inline void broadcast_module(ProcessGroup& group, torch::nn::Module& module) {
  std::vector<torch::Tensor> tensors;
  for (const auto& p : module.parameters()) tensors.push_back(p);
  for (const auto& b : module.buffers())
    if (b.defined()) tensors.push_back(b);
  flattened(group, tensors, [&](torch::Tensor& buffer) { group.broadcast(buffer, "broadcasting the initial weights"); });
}

/// Replaces each gradient by its mean over the ranks. A parameter without a gradient on this rank takes part
/// with zeros, so every rank sends the same layout.
inline void average_gradients(ProcessGroup& group, const std::vector<torch::Tensor>& parameters) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : parameters) {
    if (!p.requires_grad()) continue;
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
  const double world = static_cast<double>(group.world_size());
  flattened(group, grads, [&](torch::Tensor& buffer) {
    group.all_reduce(buffer, "averaging the gradients");
    buffer.div_(world);
  });
}

/// The mean over the ranks of each value.
inline std::vector<double> average_over_ranks(ProcessGroup& group, const std::vector<double>& values,
                                              const std::string& what) {
  torch::Tensor t = torch::tensor(values, torch::kDouble).to(group.device());
  group.all_reduce(t, what);
  t = (t / static_cast<double>(group.world_size())).to(torch::kCPU);
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

/// What the ranks agreed on at a decision point: the largest of their preemption signals (0: none) and rank 0's
/// `save_status` (the state of its background checkpoint write).
struct AgreedDecisions {
  int signal = 0;
  int save_status = 0;
};

/// Makes `control` rank 0's on every rank, with rank 0's `save_status`, and the largest of the ranks' `signal`s,
/// so a preemption signal that reached any rank stops all of them at the same step.
inline AgreedDecisions agree_on_control(ProcessGroup& group, TrainerControl& control, int signal, int save_status) {
  const bool zero = group.rank() == 0;
  torch::Tensor flags = torch::tensor(
      std::vector<std::int64_t>{zero && control.should_training_stop, zero && control.should_epoch_stop,
                                zero && control.should_save, zero && control.should_evaluate,
                                zero && control.should_log, signal, zero ? save_status : 0},
      torch::kLong);
  flags = flags.to(group.device());
  group.all_reduce(flags, "agreeing on the callbacks' decisions", c10d::ReduceOp::MAX);
  flags = flags.to(torch::kCPU);
  const auto* f = flags.data_ptr<std::int64_t>();
  control.should_training_stop = f[0] != 0;
  control.should_epoch_stop = f[1] != 0;
  control.should_save = f[2] != 0;
  control.should_evaluate = f[3] != 0;
  control.should_log = f[4] != 0;
  return {static_cast<int>(f[5]), static_cast<int>(f[6])};
}

/// The largest of the ranks' `value`s.
inline int max_over_ranks(ProcessGroup& group, int value, const std::string& what) {
  torch::Tensor t = torch::tensor(std::vector<std::int64_t>{value}, torch::kLong).to(group.device());
  group.all_reduce(t, what, c10d::ReduceOp::MAX);
  return static_cast<int>(t.to(torch::kCPU).item<std::int64_t>());
}

/// The examples rank `rank` of `world` evaluates: rank, rank + world, ... below `total` (no padding).
inline std::vector<std::size_t> evaluation_shard(std::size_t total, int rank, int world) {
  std::vector<std::size_t> shard;
  for (std::size_t i = static_cast<std::size_t>(rank); i < total; i += static_cast<std::size_t>(world))
    shard.push_back(i);
  return shard;
}

/// Reassembles the rows of a dataset of `total` examples whose shards (see evaluation_shard) the ranks hold in
/// `local`: every rank gets all rows in dataset order. `local` may be undefined on a rank without examples.
inline torch::Tensor gather_evaluation(ProcessGroup& group, const torch::Tensor& local, std::size_t total,
                                       const std::string& what) {
  const int world = group.world_size();
  // Shape and type travel first, since a rank may hold no row: [defined, dtype, rank, sizes...].
  constexpr std::int64_t kMaxDims = 8;
  std::vector<std::int64_t> meta(3 + kMaxDims, 0);
  if (local.defined()) {
    if (local.dim() == 0 || local.dim() > kMaxDims)
      throw ArgumentError("evaluation: " + what + " must have between 1 and " + std::to_string(kMaxDims) +
                          " dimensions to be gathered across processes; got " + std::to_string(local.dim()));
    meta[0] = 1;
    meta[1] = static_cast<std::int64_t>(local.scalar_type());
    meta[2] = local.dim();
    for (std::int64_t d = 0; d < local.dim(); ++d) meta[static_cast<std::size_t>(3 + d)] = local.size(d);
  }
  const auto metas = group.all_gather(torch::tensor(meta, torch::kLong).to(group.device()), "gathering the " + what);
  torch::Tensor first;
  std::int64_t longest = 0;  // dimension 1, which batches of sequences may pad to different lengths
  for (const auto& gathered : metas) {
    const auto m = gathered.to(torch::kCPU);
    if (m[0].item<std::int64_t>() == 0) continue;
    if (!first.defined()) first = m;
    if (m[2].item<std::int64_t>() > 1) longest = std::max(longest, m[4].item<std::int64_t>());
  }
  if (!first.defined()) return {};
  const auto* m = first.data_ptr<std::int64_t>();
  std::vector<std::int64_t> shape(m + 3, m + 3 + m[2]);
  const std::int64_t rows = static_cast<std::int64_t>((total + static_cast<std::size_t>(world) - 1) /
                                                      static_cast<std::size_t>(world));
  shape[0] = rows;
  if (shape.size() > 1) shape[1] = longest;
  // Each rank pads its shard to the longest one, and dimension 1 with -100 as the evaluation loop does;
  // interleaving the shards puts the padded rows past `total`.
  torch::Tensor padded =
      torch::full(shape, -100, torch::TensorOptions().dtype(static_cast<c10::ScalarType>(m[1])));
  if (local.defined() && local.size(0) > 0) {
    auto target = padded.narrow(0, 0, local.size(0));
    if (local.dim() > 1) target = target.narrow(1, 0, local.size(1));
    target.copy_(local);
  }
  const auto shards = group.all_gather(padded.to(group.device()), "gathering the " + what);
  return torch::stack(shards, 1).flatten(0, 1).narrow(0, 0, static_cast<std::int64_t>(total)).to(torch::kCPU);
}

}  // namespace torchtrain::detail
