// SPDX-License-Identifier: MIT
// One row of a classification CSV (numeric features, then an integer class label): parsed without allocating,
// checked with errors that name the file and the line. TensorDataset::from_csv and CsvStream share it.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

/// The comma-separated cells of `line` as numbers into `values`; `cells` is their count either way. False when
/// a cell is empty, not a number (spaces and tabs around it are allowed) or not finite.
inline bool parse_csv_numbers(const std::string& line, std::vector<double>& values, std::size_t& cells) {
  values.clear();
  cells = 1;
  for (char c : line) cells += c == ',';
  bool numeric = true;
  const char* p = line.c_str();
  const char* const end = p + line.size();
  for (;;) {
    while (p < end && (*p == ' ' || *p == '\t')) ++p;
    char* after = nullptr;
    const double v = std::strtod(p, &after);
    if (after == p || !std::isfinite(v)) numeric = false;
    p = after == p ? p : after;
    while (p < end && (*p == ' ' || *p == '\t')) ++p;
    if (p < end && *p != ',') numeric = false;
    if (!numeric) return false;
    values.push_back(v);
    if (p == end) return true;
    ++p;  // the comma
  }
}

/// Cell `index` of `line`, as written (for error messages).
inline std::string csv_cell(const std::string& line, std::size_t index) {
  std::size_t start = 0;
  for (std::size_t i = 0; i < index && start != std::string::npos; ++i) {
    start = line.find(',', start);
    if (start != std::string::npos) ++start;
  }
  if (start == std::string::npos) return {};
  const std::size_t comma = line.find(',', start);
  return line.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
}

/// "source:line: ", how each error about a row starts.
inline std::string csv_where(const std::string& source, std::int64_t line_number) {
  return source + ":" + std::to_string(line_number) + ": ";
}

/// Checks the `values` of a numeric row, `line` (number `line_number` of `source`), against the file's `columns`
/// and appends its features (as float32) to `features`; returns its label.
inline std::int64_t append_classification_row(const std::vector<double>& values, std::size_t columns,
                                              const std::string& line, const std::string& source,
                                              std::int64_t line_number, std::vector<float>& features) {
  const auto where = [&] { return csv_where(source, line_number); };
  if (values.size() < 2) throw FileFormatError(where() + "a row needs at least one feature and a label");
  if (values.size() != columns)
    throw FileFormatError(where() + "expected " + std::to_string(columns) + " columns, found " +
                          std::to_string(values.size()));
  for (std::size_t i = 0; i + 1 < values.size(); ++i)
    if (std::abs(values[i]) > std::numeric_limits<float>::max())
      throw FileFormatError(where() + "feature " + std::to_string(i + 1) + " (" + csv_cell(line, i) +
                            ") is too large for a 32-bit float; rescale the column");
  // Class indices above 2^53 cannot even be told apart as doubles, let alone be an output layer's size.
  const double label = values.back();
  if (label < 0 || label != std::floor(label) || label > 0x1p53)
    throw FileFormatError(where() + "the label (last column) must be a whole number from 0 to 2^53, found " +
                          csv_cell(line, values.size() - 1));
  for (std::size_t i = 0; i + 1 < values.size(); ++i) features.push_back(static_cast<float>(values[i]));
  return static_cast<std::int64_t>(label);
}

}  // namespace torchtrain::detail
