// SPDX-License-Identifier: MIT
// StateSnapshot: host copies of a model's and an optimizer's tensors, taken at a save point so that a background
// writer can write them while training changes the originals.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/output-archive.h>

#include "torchtrain/checkpoint/save.hpp"
#include "torchtrain/detail/durable_file.hpp"
#include "torchtrain/detail/host_copy.hpp"

namespace torchtrain::checkpoint {

/// A copy of a model's parameters and buffers and of an optimizer's state in host memory, taken by capture():
/// later training steps cannot change it, so a background writer can write it while training goes on. It costs
/// one copy of that state in host memory, and the next capture() refills the same buffers. Capture again only
/// once the files of the last capture are written.
///
/// model.pt is written as Module::save writes it (parameters, buffers, then each serializable child), so a module
/// that overrides save() is written by the default instead. optimizer.pt is written as the optimizer's own save()
/// writes it: LibTorch's Adam, AdamW, SGD, Adagrad and RMSprop are copied tensor by tensor; any other optimizer is
/// serialized into memory at capture(), which makes the copy slower (the serialization runs on the caller's
/// thread) but gives the same file.
class StateSnapshot {
 public:
  void capture(const torch::nn::Module& model, const torch::optim::Optimizer* optimizer) {
    detail::HostCopier copy;
    model_.capture(model, copy);
    has_optimizer_ = optimizer != nullptr;
    groups_writer_ = nullptr;
    if (optimizer) {
      namespace o = torch::optim;
      using detail::capture_optimizer;
      for (auto capture : {&capture_optimizer<o::AdamW, o::AdamWParamState, o::AdamWOptions>,
                           &capture_optimizer<o::Adam, o::AdamParamState, o::AdamOptions>,
                           &capture_optimizer<o::SGD, o::SGDParamState, o::SGDOptions>,
                           &capture_optimizer<o::Adagrad, o::AdagradParamState, o::AdagradOptions>,
                           &capture_optimizer<o::RMSprop, o::RMSpropParamState, o::RMSpropOptions>})
        if ((groups_writer_ = capture(*optimizer, states_, copy))) break;
      capture_groups_or_serialize(*optimizer);
    }
    tensors_ = std::move(copy.copies);
  }

  /// The host copies of the last capture(), the model's first: they take one copy of the state's bytes.
  const std::vector<torch::Tensor>& tensors() const { return tensors_; }

  /// model.pt's contents; valid while this snapshot lives and until the next capture().
  FileContents model_contents() const {
    return archive_contents([this](torch::serialize::OutputArchive& archive) { model_.save(archive); });
  }

  /// optimizer.pt's contents (empty when capture() had no optimizer); valid as model_contents().
  FileContents optimizer_contents() const {
    if (!has_optimizer_) return {};
    if (!groups_writer_)
      return [this](detail::DurableFile& file) {
        file.write(serialized_optimizer_.data(), serialized_optimizer_.size());
      };
    // torch::optim::serialize(archive, optimizer), over the copies.
    return archive_contents([this](torch::serialize::OutputArchive& archive) {
      archive.write("pytorch_version", c10::IValue("1.5.0"));
      torch::serialize::OutputArchive state_archive(archive.compilation_unit());
      for (const auto& [key, state] : states_) {
        torch::serialize::OutputArchive param_state_archive(state_archive.compilation_unit());
        state->serialize(param_state_archive);
        state_archive.write(key, param_state_archive);
      }
      archive.write("state", state_archive);
      torch::serialize::OutputArchive groups_archive(archive.compilation_unit());
      groups_writer_(groups_archive, groups_);
      archive.write("param_groups", groups_archive);
    });
  }

 private:
  // After a LibTorch optimizer's state: its param groups, whose options are copied (the learning rate changes)
  // and whose params only key the state. Any other optimizer: its own save(), into memory.
  void capture_groups_or_serialize(const torch::optim::Optimizer& optimizer) {
    if (groups_writer_) {
      groups_.clear();
      for (const auto& group : optimizer.param_groups()) groups_.emplace_back(group);
      return;
    }
    serialized_optimizer_.clear();  // keeps its capacity
    torch::serialize::OutputArchive archive;
    optimizer.save(archive);
    archive.save_to([this](const void* data, std::size_t size) {
      serialized_optimizer_.append(static_cast<const char*>(data), size);
      return size;
    });
  }

  detail::ModuleCopy model_;
  bool has_optimizer_ = false;
  detail::ParamStates states_;
  std::vector<torch::optim::OptimizerParamGroup> groups_;
  detail::GroupsWriter groups_writer_ = nullptr;
  std::string serialized_optimizer_;
  std::vector<torch::Tensor> tensors_;
};

}  // namespace torchtrain::checkpoint
