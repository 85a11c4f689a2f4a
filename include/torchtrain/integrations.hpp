// SPDX-License-Identifier: MIT
// The reporters that TrainingArguments::report_to names, as Hugging Face's integrations.
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "torchtrain/callbacks/csv_logger.hpp"
#include "torchtrain/callbacks/jsonl_logger.hpp"
#include "torchtrain/callbacks/tensorboard.hpp"
#include "torchtrain/detail/reporter_names.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/trainer_callback.hpp"

namespace torchtrain {

/// The callbacks of `report_to` (validated: "all", "none", or names of kReporterNames), in the order of
/// kReporterNames whatever the order given; a name given twice counts once.
inline std::vector<std::shared_ptr<TrainerCallback>> get_reporting_integration_callbacks(
    const std::vector<std::string>& report_to) {
  const bool all = report_to.size() == 1 && report_to.front() == "all";
  std::vector<std::shared_ptr<TrainerCallback>> callbacks;
  for (const auto name : detail::kReporterNames) {
    if (!all && std::find(report_to.begin(), report_to.end(), name) == report_to.end()) continue;
    if (name == "tensorboard")
      callbacks.push_back(std::make_shared<TensorBoardCallback>());
    else if (name == "csv")
      callbacks.push_back(std::make_shared<CSVLogger>());
    else if (name == "jsonl")
      callbacks.push_back(std::make_shared<JSONLinesLogger>());
  }
  return callbacks;
}

}  // namespace torchtrain
