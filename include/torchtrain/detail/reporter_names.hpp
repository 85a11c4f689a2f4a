// SPDX-License-Identifier: MIT
// The names report_to accepts, kept apart from the reporters so that argument validation needs none of them.
#pragma once

#include <array>
#include <string_view>

namespace torchtrain::detail {

/// The built-in reporters, in the order the Trainer adds them for report_to = all.
inline constexpr std::array<std::string_view, 3> kReporterNames{"tensorboard", "csv", "jsonl"};

}  // namespace torchtrain::detail
