// SPDX-License-Identifier: MIT
// CsvStream: a classification CSV of any size as a stream dataset of stacked batches.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <torch/data/example.h>
#include <torch/types.h>

#include "torchtrain/data/text_line_stream.hpp"
#include "torchtrain/detail/csv_row.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain::data {

/// TensorDataset::from_csv's layout (numeric features, then an integer class label; a first row that is not
/// numeric is a header; blank lines skipped) read as a stream: each batch is a torch::data::Example of stacked
/// features [n, num_features()] (float32) and labels [n] (int64), parsed straight into them. A malformed row
/// is a FileFormatError naming the file and the line when its batch is read.
class CsvStream : public TextLineStream<torch::data::Example<>> {
 public:
  explicit CsvStream(const std::string& path, TextLineStreamOptions options = {})
      : CsvStream(path, options, layout_of(path)) {}

  std::int64_t num_features() const { return static_cast<std::int64_t>(layout_->columns) - 1; }

 private:
  struct Layout {
    std::string path;
    std::size_t columns = 0;
    bool header = false;
  };

  CsvStream(const std::string& path, TextLineStreamOptions options, std::shared_ptr<const Layout> layout)
      : TextLineStream(path, batch_maker(layout), with_header(options, *layout)), layout_(std::move(layout)) {}

  static TextLineStreamOptions with_header(TextLineStreamOptions options, const Layout& layout) {
    options.skip_blank_lines = true;
    options.header_lines = layout.header ? 1 : 0;
    return options;
  }

  // The first row that is not blank decides: a header when it is not numeric; its cells are the columns.
  static std::shared_ptr<const Layout> layout_of(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw FileFormatError(path + ": cannot open the file: " + detail::errno_text());
    auto layout = std::make_shared<Layout>();
    layout->path = path;
    std::vector<double> values;
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      layout->header = !detail::parse_csv_numbers(line, values, layout->columns);
      return layout;
    }
    throw FileFormatError(path + ": the file has no data rows");
  }

  static MakeBatch batch_maker(std::shared_ptr<const Layout> layout) {
    return [layout](const std::vector<TextLine>& lines) {
      std::vector<double> values;
      std::vector<float> features;
      features.reserve(lines.size() * (layout->columns - 1));
      auto labels = torch::empty({static_cast<std::int64_t>(lines.size())}, torch::kLong);
      auto* label = labels.data_ptr<std::int64_t>();
      std::size_t cells = 0;
      for (const auto& line : lines) {
        if (!detail::parse_csv_numbers(line.text, values, cells))
          throw FileFormatError(detail::csv_where(layout->path, line.number) + "a value is not a number: '" +
                                line.text + "'");
        *label++ = detail::append_classification_row(values, layout->columns, line.text, layout->path, line.number,
                                                     features);
      }
      const auto rows = static_cast<std::int64_t>(lines.size());
      auto data = torch::from_blob(features.data(), {rows, static_cast<std::int64_t>(layout->columns) - 1}).clone();
      return torch::data::Example<>{std::move(data), std::move(labels)};
    };
  }

  std::shared_ptr<const Layout> layout_;
};

}  // namespace torchtrain::data
