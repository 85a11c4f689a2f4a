// SPDX-License-Identifier: MIT
// Results files, as Hugging Face's Trainer.save_metrics writes them: <split>_results.json and all_results.json.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/durable_file.hpp"
#include "torchtrain/detail/text_file.hpp"

namespace torchtrain {

/// Writes `metrics` to `dir/<split>_results.json` (keys sorted, indented by 4, as HF's json.dump) and, when
/// `combined`, merges them into `dir/all_results.json` (an unreadable one is started afresh). Each file is
/// replaced atomically; errors are torchtrain::Error naming the file.
inline void save_metrics(const std::filesystem::path& dir, const std::string& split, const nlohmann::ordered_json& metrics,
                         bool combined = true) {
  std::filesystem::create_directories(dir);
  nlohmann::json values = nlohmann::json::object();
  for (const auto& [k, v] : metrics.items()) values[k] = v;
  detail::write_file_atomically(dir / (split + "_results.json"), values.dump(4) + "\n");
  if (!combined) return;
  nlohmann::json all = nlohmann::json::object();
  const std::filesystem::path all_path = dir / "all_results.json";
  if (std::filesystem::exists(all_path)) {
    all = nlohmann::json::parse(detail::read_text_file(all_path.string()), nullptr, false);
    if (!all.is_object()) all = nlohmann::json::object();
  }
  all.update(values);
  detail::write_file_atomically(all_path, all.dump(4) + "\n");
}

}  // namespace torchtrain
