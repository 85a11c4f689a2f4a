// SPDX-License-Identifier: MIT
// DVCLive's files other than dvc.yaml: metrics.json as Python's json.dump(indent=4), the metric TSVs as Python's
// csv module writes them, DVCLive's metric names, and what Live() does to the output folder when it starts.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/durable_file.hpp"
#include "torchtrain/detail/python_json.hpp"
#include "torchtrain/detail/python_repr.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/detail/tracker_logs.hpp"

namespace torchtrain::detail::dvclive {

// ---- where DVC says the run belongs ----

/// dvclive.utils.env2bool: the value contains 1, y or true, in any case.
inline bool env_to_bool(const char* name) {
  const auto value = environment_variable(name);
  if (!value) return false;
  const std::string lower = lower_case(*value);
  return lower.find('1') != std::string::npos || lower.find('y') != std::string::npos ||
         lower.find("true") != std::string::npos;
}

/// Whether the working directory or a folder above it (up to its file system's mount point, as dvclive's
/// _find_dvc_root) holds a `.dvc` entry: the working tree of a DVC repository.
inline bool inside_dvc_repository() {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path root = fs::canonical(fs::current_path(ec), ec);
  if (ec) return false;
  while (true) {
    if (fs::exists(root / ".dvc", ec)) return true;
    struct stat here {}, parent {};
    if (::stat(root.c_str(), &here) != 0 || ::stat((root / "..").c_str(), &parent) != 0) return false;
    if (here.st_dev != parent.st_dev || here.st_ino == parent.st_ino) return false;  // a mount point, or "/"
    root = root.parent_path();
  }
}

/// report_to = all takes DVCLive when DVC says where the run belongs: `dvc repro` / `dvc exp run` set DVC_ROOT
/// (and DVC_EXP_BASELINE_REV, DVC_EXP_NAME), or the working directory is inside a DVC repository.
inline bool configured() {
  return environment_variable("DVC_ROOT") || environment_variable("DVC_EXP_BASELINE_REV") ||
         environment_variable("DVC_EXP_NAME") || inside_dvc_repository();
}

/// Path `path` relative to folder `base`, with '/' separators (dvclive.utils.rel_path).
inline std::string rel_path(const std::filesystem::path& path, const std::filesystem::path& base) {
  return path.lexically_normal().lexically_relative(base.lexically_normal()).generic_string();
}

// ---- metrics.json: json.dump(indent=4) in insertion order, then a newline ----

inline std::string dump_json_indent4(const nlohmann::ordered_json& value) {
  return dump_python_json(value, {4, false});
}

// ---- metric names and TSV rows ----

/// dvclive.utils.standardize_metric_name(name, "dvclive.huggingface"): every "train_" becomes "train/", then
/// every "eval_" becomes "eval/".
inline std::string standardize_metric_name(std::string name) {
  for (const char* split : {"train", "eval"}) {
    const std::string from = std::string(split) + "_", to = std::string(split) + "/";
    for (std::size_t pos = 0; (pos = name.find(from, pos)) != std::string::npos; pos += to.size())
      name.replace(pos, from.size(), to);
  }
  return name;
}

/// os.path.normpath(name).split("/"): the keys that nest a metric in metrics.json.
inline std::vector<std::string> summary_keys(const std::string& name) {
  const bool absolute = !name.empty() && name.front() == '/';
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= name.size()) {
    const std::size_t end = std::min(name.find('/', start), name.size());
    const std::string part = name.substr(start, end - start);
    if (part == "..") {
      if (!parts.empty() && parts.back() != "..")
        parts.pop_back();
      else if (!absolute)
        parts.push_back(part);
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    start = end + 1;
  }
  if (absolute) parts.insert(parts.begin(), "");
  if (parts.empty()) parts.push_back(".");
  return parts;
}

/// funcy.set_in: sets summary[keys[0]][keys[1]]... = value, keeping the order in which keys first appeared.
inline void set_in(nlohmann::ordered_json& summary, const std::vector<std::string>& keys, const nlohmann::ordered_json& value) {
  nlohmann::ordered_json* node = &summary;
  for (std::size_t i = 0; i + 1 < keys.size(); ++i) {
    nlohmann::ordered_json& child = (*node)[keys[i]];
    if (!child.is_object()) child = nlohmann::ordered_json::object();
    node = &child;
  }
  (*node)[keys.back()] = value;
}

/// Live.log_metric's value: a number, a boolean or a string; floats that are not finite as the strings
/// DVCLive's summary holds for them.
inline nlohmann::ordered_json loggable(const nlohmann::ordered_json& value) {
  if (value.is_number_float()) {
    const double v = value.get<double>();
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  }
  return value;
}

/// Appends `row` to the metric TSV at `path`, with `header` first when the file is new or empty.
inline void append_tsv_row(const std::filesystem::path& path, const std::string& header, const std::string& row) {
  std::filesystem::create_directories(path.parent_path());
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  append_text_file(path.string(), ec || size == 0 ? header + row : row);
}

/// The beginning of a metric TSV: its header and the rows whose step is below `step`. A last line without its
/// newline (a write cut short) is dropped too; a file without a complete header gives "", one without a step
/// column is kept whole.
inline std::string tsv_rows_before(const std::string& text, std::int64_t step) {
  const std::size_t header_end = text.find('\n');
  if (header_end == std::string::npos) return "";
  std::size_t column = 0, index = 0;
  bool found = false;
  for (std::size_t start = 0; start <= header_end; ++index) {
    const std::size_t end = std::min(text.find('\t', start), header_end);
    if (text.compare(start, end - start, "step") == 0) {
      column = index;
      found = true;
      break;
    }
    start = end + 1;
  }
  if (!found) return text;
  std::size_t kept = header_end + 1;
  for (std::size_t line = kept; line < text.size();) {
    const std::size_t line_end = text.find('\n', line);
    if (line_end == std::string::npos) break;
    std::size_t field = line;
    for (std::size_t i = 0; i < column && field <= line_end; ++i) {
      const std::size_t tab = text.find('\t', field);
      field = tab < line_end ? tab + 1 : line_end + 1;
    }
    if (field > line_end) break;
    const std::size_t field_end = std::min(text.find('\t', field), line_end);
    std::int64_t row_step = 0;
    const auto parsed = std::from_chars(text.data() + field, text.data() + field_end, row_step);
    if (parsed.ec != std::errc() || parsed.ptr != text.data() + field_end || row_step >= step) break;
    kept = line_end + 1;
    line = kept;
  }
  return text.substr(0, kept);
}


/// Drops the rows at `step` and after (what an interrupted run wrote after its checkpoint) from every metric TSV
/// under `plots`; a file left without rows is removed, as the interrupted run had created it.
inline void trim_plots(const std::filesystem::path& plots, std::int64_t step) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(plots, ec)) return;
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(plots))
    if (entry.is_regular_file() && entry.path().extension() == ".tsv") files.push_back(entry.path());
  for (const auto& file : files) {
    const std::string text = read_text_file(file.string());
    const std::string kept = tsv_rows_before(text, step);
    if (kept.find('\n') + 1 >= kept.size())  // no row left (or not even a header)
      fs::remove(file);
    else if (kept != text)
      write_file_atomically(file, kept);
  }
}

/// Live._init_cleanup: what an earlier run left in `dir` (plots, metrics.json, params.yaml, reports, dvc.yaml
/// files) goes.
inline void clean_output(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  for (const char* sub : {"sklearn", "metrics", "images", "custom"}) fs::remove_all(dir / "plots" / sub);
  for (const char* file : {"metrics.json", "params.yaml", "report.html", "report.md"}) fs::remove(dir / file);
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.size() >= 8 && name.compare(name.size() - 8, 8, "dvc.yaml") == 0 && !entry.is_directory())
      fs::remove(entry.path());
  }
}

/// The summary's leaves as [[key, key, ...], value] pairs, the form a checkpoint keeps them in.
inline void flatten_summary(const nlohmann::ordered_json& node, std::vector<std::string>& keys, nlohmann::json& out) {
  for (const auto& [key, value] : node.items()) {
    keys.push_back(key);
    if (value.is_object() && !value.empty())
      flatten_summary(value, keys, out);
    else
      out.push_back(nlohmann::json::array({keys, nlohmann::json(value)}));
    keys.pop_back();
  }
}

}  // namespace torchtrain::detail::dvclive
