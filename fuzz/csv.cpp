// SPDX-License-Identifier: MIT
// The CSV reader of data::TensorDataset (from_csv reads the file, then from_csv_text parses it). A data set
// that reads must hold finite features, whole labels >= 0, and one label per feature row.
#include <optional>
#include <string>

#include <torch/types.h>
#include <torchtrain/data/tensor_dataset.hpp>

#include "fuzz_target.hpp"

TORCHTRAIN_FUZZ_TARGET(csv) {
  using namespace torchtrain;
  fuzz::quiet_warnings();
  const std::string text(fuzz::as_text(data, size));

  std::optional<data::TensorDataset> dataset;
  fuzz::expect_only_torchtrain_errors([&] { dataset = data::TensorDataset::from_csv_text(text, "data.csv"); });
  if (!dataset) return 0;

  const torch::Tensor& features = dataset->features();
  const torch::Tensor& labels = dataset->labels();
  fuzz::check(features.dim() == 2 && labels.dim() == 1 && features.size(0) == labels.size(0) && labels.size(0) > 0,
              "features and labels do not line up");
  fuzz::check(features.size(1) >= 1, "a data set without features");
  fuzz::check(torch::isfinite(features).all().item<bool>(), "a feature is not finite: " +
                                                                 std::to_string(features.abs().max().item<double>()));
  fuzz::check(labels.min().item<std::int64_t>() >= 0, "a negative label");
  fuzz::check(dataset->num_classes() >= 1, "no classes");
  return 0;
}
