// SPDX-License-Identifier: MIT
// A module's parameters and buffers matched by name, shape and dtype against a saved archive, and then pointed
// at the saved tensors: loading that either fits the model exactly or changes nothing.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <c10/util/StringUtil.h>
#include <torch/nn/module.h>
#include <torch/serialize/input-archive.h>
#include <torch/utils.h>

#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

/// (live tensor, the tensor that replaces it)
using TensorPairs = std::vector<std::pair<torch::Tensor, torch::Tensor>>;

/// Each parameter and buffer of `module` (recursively) paired with its tensor in `archive`, whose shape and
/// dtype must match: Module::load would instead silently reshape the parameters to whatever the file holds.
/// Throws CheckpointError naming the first that is missing or differs.
inline void match_module_archive(torch::nn::Module& module, torch::serialize::InputArchive& archive, TensorPairs& out,
                                 const std::string& prefix = "") {
  auto match = [&](const std::string& key, const torch::Tensor& live, bool is_buffer) {
    torch::Tensor saved;
    if (!archive.try_read(key, saved, is_buffer))
      throw CheckpointError("it has no " + prefix + key + "; it was saved from a different model");
    if (!live.defined()) return;
    if (saved.sizes() != live.sizes() || saved.scalar_type() != live.scalar_type())
      throw CheckpointError(prefix + key + " is " + std::string(c10::toString(saved.scalar_type())) +
                            c10::str(saved.sizes()) + " in the file and " + c10::toString(live.scalar_type()) +
                            c10::str(live.sizes()) + " in the model; it was saved from a different model");
    out.emplace_back(live, saved.to(live.device()));
  };
  for (const auto& p : module.named_parameters(/*recurse=*/false)) match(p.key(), p.value(), false);
  for (const auto& b : module.named_buffers(/*recurse=*/false)) match(b.key(), b.value(), true);
  for (const auto& child : module.named_children()) {
    if (!child.value()->is_serializable()) continue;
    torch::serialize::InputArchive child_archive;
    if (!archive.try_read(child.key(), child_archive))
      throw CheckpointError("it has no module " + prefix + child.key() + "; it was saved from a different model");
    match_module_archive(*child.value(), child_archive, out, prefix + child.key() + ".");
  }
}

/// Points each live tensor at its new storage. The old storage is never written, so an alias of it restores it.
inline void assign_storages(const TensorPairs& pairs) {
  torch::NoGradGuard no_grad;
  for (const auto& [live, source] : pairs) live.set_(source);  // Tensor's in-place methods are const
}

}  // namespace torchtrain::detail
