// SPDX-License-Identifier: MIT
// The reporters that TrainingArguments::report_to names, as Hugging Face's integrations.
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "torchtrain/callbacks/csv_logger.hpp"
#include "torchtrain/callbacks/jsonl_logger.hpp"
#include "torchtrain/callbacks/tensorboard.hpp"
#include "torchtrain/detail/reporter_names.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/trainer_callback.hpp"

namespace torchtrain {

/// A tracker that report_to can name. Its header registers it (register_reporting_integration), so a program
/// that includes no tracker header needs none of their libraries.
struct ReportingIntegration {
  std::string name;                                  // one of detail::kReporterNames
  std::function<std::shared_ptr<TrainerCallback>()> make;
  /// Whether report_to = all takes it: its configuration (an environment variable) says where to write.
  std::function<bool()> configured;
};

namespace detail {

struct IntegrationRegistry {
  std::mutex mutex;
  std::vector<ReportingIntegration> entries;
};

inline IntegrationRegistry& integration_registry() {
  static IntegrationRegistry registry;
  return registry;
}

// What a program must do to report to `name`, a tracker whose header it did not include.
inline std::string how_to_enable(std::string_view name) {
  if (name == "mlflow" || name == "azure_ml" || name == "dagshub")
    return "#include <torchtrain/callbacks/mlflow.hpp> and link torchtrain::mlflow (libcurl)";
  if (name == "trackio") return "#include <torchtrain/callbacks/trackio.hpp> and link torchtrain::trackio (libsqlite3)";
  return "#include <torchtrain/callbacks/" + std::string(name) + ".hpp>";
}

}  // namespace detail

/// Makes `integration` available to report_to; a second registration of a name replaces the first. Returns true,
/// so that a header can register at static initialisation: `inline const bool registered = register...(...)`.
inline bool register_reporting_integration(ReportingIntegration integration) {
  auto& registry = detail::integration_registry();
  std::lock_guard<std::mutex> lock(registry.mutex);
  auto& entries = registry.entries;
  entries.erase(std::remove_if(entries.begin(), entries.end(),
                               [&](const ReportingIntegration& e) { return e.name == integration.name; }),
                entries.end());
  entries.push_back(std::move(integration));
  return true;
}

/// The callbacks of `report_to` (validated: "all", "none", or names of kReporterNames), in the order of
/// kReporterNames whatever the order given; a name given twice counts once. "all" is the built-in reporters
/// and the registered trackers whose configuration is set. Naming a tracker whose header the program did not
/// include is an ArgumentError saying which header and library it needs.
inline std::vector<std::shared_ptr<TrainerCallback>> get_reporting_integration_callbacks(
    const std::vector<std::string>& report_to) {
  const bool all = report_to.size() == 1 && report_to.front() == "all";
  std::vector<ReportingIntegration> trackers;
  {
    auto& registry = detail::integration_registry();
    std::lock_guard<std::mutex> lock(registry.mutex);
    trackers = registry.entries;
  }
  std::vector<std::shared_ptr<TrainerCallback>> callbacks;
  for (const auto name : detail::kReporterNames) {
    const bool named = std::find(report_to.begin(), report_to.end(), name) != report_to.end();
    if (!all && !named) continue;
    if (name == "tensorboard") {
      callbacks.push_back(std::make_shared<TensorBoardCallback>());
    } else if (name == "csv") {
      callbacks.push_back(std::make_shared<CSVLogger>());
    } else if (name == "jsonl") {
      callbacks.push_back(std::make_shared<JSONLinesLogger>());
    } else {
      const auto tracker = std::find_if(trackers.begin(), trackers.end(),
                                        [&](const ReportingIntegration& t) { return t.name == name; });
      if (tracker == trackers.end()) {
        if (!named) continue;
        throw ArgumentError("report_to names \"" + std::string(name) + "\", which this program does not include: " +
                            detail::how_to_enable(name));
      }
      if (named || tracker->configured()) callbacks.push_back(tracker->make());
    }
  }
  return callbacks;
}

}  // namespace torchtrain
