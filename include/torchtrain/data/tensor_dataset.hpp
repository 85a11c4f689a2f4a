// SPDX-License-Identifier: MIT
// TensorDataset: examples held in two tensors, features and labels, built in memory or read from a CSV file.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/data/datasets/base.h>
#include <torch/types.h>

#include "torchtrain/detail/csv_row.hpp"
#include "torchtrain/detail/device_transfer.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain::data {

/// Example i is (features[i], labels[i]).
class TensorDataset : public torch::data::datasets::Dataset<TensorDataset> {
 public:
  TensorDataset(torch::Tensor features, torch::Tensor labels) : features_(std::move(features)), labels_(std::move(labels)) {
    if (!features_.defined() || !labels_.defined() || features_.dim() < 1 || labels_.dim() < 1 ||
        features_.size(0) != labels_.size(0))
      throw ArgumentError("TensorDataset: features and labels need the same number of rows");
  }

  /// Reads a classification CSV: numeric feature columns, then an integer class label (>= 0) in the last
  /// column. A first row that is not numeric is a header; blank lines are skipped; anything else malformed
  /// is an error naming the file and the line.
  static TensorDataset from_csv(const std::string& path) { return from_csv_text(detail::read_text_file(path), path); }

  /// from_csv() on text already in memory; `source` names it in error messages (a path, or e.g. "<stdin>").
  static TensorDataset from_csv_text(const std::string& text, const std::string& source) {
    std::vector<float> features;
    std::vector<std::int64_t> labels;
    std::vector<double> values;
    std::size_t columns = 0, cells = 0, line_number = 0, pos = 0;
    while (pos < text.size()) {
      std::size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(pos, end - pos);
      pos = end + 1;
      ++line_number;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      const bool numeric = detail::parse_csv_numbers(line, values, cells);
      if (!numeric && columns == 0 && labels.empty()) {  // a header
        columns = cells;
        continue;
      }
      if (!numeric)
        throw FileFormatError(detail::csv_where(source, static_cast<std::int64_t>(line_number)) +
                              "a value is not a number: '" + line + "'");
      if (columns == 0) columns = cells;
      labels.push_back(detail::append_classification_row(values, columns, line, source,
                                                         static_cast<std::int64_t>(line_number), features));
    }
    if (labels.empty()) throw FileFormatError(source + ": the file has no data rows");
    const auto rows = static_cast<std::int64_t>(labels.size());
    return {torch::tensor(features).reshape({rows, static_cast<std::int64_t>(columns - 1)}), torch::tensor(labels)};
  }

  torch::data::Example<> get(std::size_t index) override {
    return {features_[static_cast<std::int64_t>(index)], labels_[static_cast<std::int64_t>(index)]};
  }
  torch::optional<std::size_t> size() const override { return static_cast<std::size_t>(labels_.size(0)); }

  /// The examples at `indices`, stacked: what DefaultDataCollator makes of get_batch, in one gather.
  torch::data::Example<> get_stacked_batch(c10::ArrayRef<std::size_t> indices) const {
    const auto rows = torch::from_blob(const_cast<std::size_t*>(indices.data()),
                                       {static_cast<std::int64_t>(indices.size())}, torch::kLong);
    static_assert(sizeof(std::size_t) == sizeof(std::int64_t), "indices are read as int64");
    return {features_.index_select(0, detail::to_device(rows, features_.device())),
            labels_.index_select(0, detail::to_device(rows, labels_.device()))};
  }

  const torch::Tensor& features() const { return features_; }
  const torch::Tensor& labels() const { return labels_; }
  std::int64_t num_features() const { return features_.dim() > 1 ? features_.size(1) : 1; }
  std::int64_t num_classes() const { return labels_.max().item<std::int64_t>() + 1; }

 private:
  torch::Tensor features_, labels_;
};

}  // namespace torchtrain::data
