// SPDX-License-Identifier: MIT
// The names report_to accepts, kept apart from the reporters so that argument validation needs none of them.
#pragma once

#include <array>
#include <string_view>

namespace torchtrain::detail {

/// Every integration report_to can name, in the order the Trainer adds their callbacks. The first three are
/// built in; the trackers are callbacks of their own headers (integrations.hpp says which).
inline constexpr std::array<std::string_view, 10> kReporterNames{
    "tensorboard", "csv", "jsonl", "mlflow", "azure_ml", "dagshub", "wandb", "trackio", "dvclive", "codecarbon"};

}  // namespace torchtrain::detail
