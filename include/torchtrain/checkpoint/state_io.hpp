// SPDX-License-Identifier: MIT
// A module's weights on their own: model.pt as save_module writes it (torch::load(model, path) reads it too),
// and load_module, which refuses a file saved from another architecture and then leaves the module unchanged.
#pragma once

#include <exception>
#include <filesystem>

#include <torch/nn/module.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "torchtrain/detail/error_text.hpp"
#include "torchtrain/detail/module_archive.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain::checkpoint {

/// Writes the parameters and buffers of `module` to `path`.
inline void save_module(const torch::nn::Module& module, const std::filesystem::path& path) {
  torch::serialize::OutputArchive archive;
  module.save(archive);
  archive.save_to(path.string());
}

/// Loads weights saved by save_module; a file of another architecture is an error, and the module unchanged.
inline void load_module(torch::nn::Module& module, const std::filesystem::path& path) {
  detail::TensorPairs tensors;
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path.string());
    detail::match_module_archive(module, archive, tensors);
  } catch (const std::exception& e) {
    throw CheckpointError("cannot load " + path.string() + ": " + detail::error_text(e));
  }
  detail::assign_storages(tensors);
}

}  // namespace torchtrain::checkpoint
