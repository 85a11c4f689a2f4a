// SPDX-License-Identifier: MIT
// CodeCarbon's configuration (~/.codecarbon.config, ./.codecarbon.config, CODECARBON_* variables) and its
// emissions.csv: the columns of its EmissionsData, in their order, with its units and number formats.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "torchtrain/detail/codecarbon_power.hpp"
#include "torchtrain/detail/python_repr.hpp"
#include "torchtrain/detail/python_json.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/detail/tracker_logs.hpp"
#include "torchtrain/errors.hpp"

extern char** environ;

namespace torchtrain {

/// One row of CodeCarbon's emissions.csv (its EmissionsData). Energies in kWh, emissions in kg CO2eq, powers
/// in W, durations in seconds, water in litres, memory in GB. A string left empty and an absent number are
/// written as empty cells, as CodeCarbon writes what it does not know.
struct CodeCarbonEmissions {
  std::string timestamp;  // local time, %Y-%m-%dT%H:%M:%S
  std::string project_name;
  std::string run_id;
  std::string experiment_id;
  double duration = 0;
  double emissions = 0;
  double emissions_rate = 0;  // kg/s
  double cpu_power = 0, gpu_power = 0, ram_power = 0;
  double cpu_energy = 0, gpu_energy = 0, ram_energy = 0, energy_consumed = 0, water_consumed = 0;
  std::string country_name, country_iso_code, region, cloud_provider, cloud_region;
  std::string os, python_version, codecarbon_version;
  int cpu_count = 0;
  std::string cpu_model;
  int gpu_count = 0;
  std::string gpu_model;
  std::optional<double> longitude, latitude;
  double ram_total_size = 0;
  std::string tracking_mode;
  std::optional<double> cpu_utilization_percent, gpu_utilization_percent, ram_utilization_percent, ram_used_gb;
  std::string on_cloud = "N";
  double pue = 1, wue = 0;
};

namespace detail {

/// The columns of emissions.csv: the fields of CodeCarbon's EmissionsData, in their order.
inline constexpr std::array<std::string_view, 38> kCodeCarbonColumns{
    "timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions", "emissions_rate",
    "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed",
    "water_consumed", "country_name", "country_iso_code", "region", "cloud_provider", "cloud_region", "os",
    "python_version", "codecarbon_version", "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude",
    "latitude", "ram_total_size", "tracking_mode", "cpu_utilization_percent", "gpu_utilization_percent",
    "ram_utilization_percent", "ram_used_gb", "on_cloud", "pue", "wue"};

inline constexpr const char* kCodeCarbonVersion = "3.3.0";  // the CodeCarbon whose files and models these are
inline constexpr const char* kCodeCarbonDefaultExperimentId = "5b0fa12a-3dd7-45bb-9766-cc326314d9f1";
inline constexpr double kCodeCarbonWorldAverageIntensity = 475;  // g CO2eq/kWh, carbon_intensity_per_source.json

// ---- Configuration (codecarbon/core/config.py get_hierarchical_config) --------------------------------------

/// A configuration value and where it was found, for messages.
struct CodeCarbonSetting {
  std::string value;
  std::string source;  // "CODECARBON_PROJECT_NAME" or "/home/me/.codecarbon.config"
};

inline std::filesystem::path codecarbon_home_config() {
  return std::filesystem::path(home_directory()) / ".codecarbon.config";
}

inline std::filesystem::path codecarbon_local_config() {
  std::error_code ec;
  return std::filesystem::current_path(ec) / ".codecarbon.config";
}

/// Whether CodeCarbon is configured here: a CODECARBON_* environment variable (any case) is set, or a
/// .codecarbon.config file is in the working directory or the home directory.
inline bool codecarbon_configured() {
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry)
    if (lower_case(std::string(*entry).substr(0, 11)) == "codecarbon_") return true;
  std::error_code ec;
  return std::filesystem::exists(codecarbon_local_config(), ec) || std::filesystem::exists(codecarbon_home_config(), ec);
}

/// The options of section [codecarbon] of an INI file as Python's configparser reads it: `key = value` or
/// `key: value`, keys lower-cased, whole-line # and ; comments, indented continuation lines, [DEFAULT] values
/// as defaults. A file that cannot be read adds nothing, as configparser.read skips it.
inline void read_codecarbon_ini(const std::filesystem::path& path, std::map<std::string, CodeCarbonSetting>& into) {
  const auto text = read_small_file(path);
  if (!text) return;
  std::map<std::string, std::map<std::string, std::string>> sections;
  std::string section, key;
  std::size_t key_indent = 0;
  std::size_t start = 0;
  while (start <= text->size()) {
    const std::size_t end = std::min(text->find('\n', start), text->size());
    const std::string line = text->substr(start, end - start);
    start = end + 1;
    const std::string value = trimmed(line);
    const std::size_t indent = line.find_first_not_of(" \t");
    if (value.empty() || value[0] == '#' || value[0] == ';') continue;
    if (!key.empty() && indent > key_indent) {  // a continuation of the previous value
      sections[section][key] += "\n" + value;
      continue;
    }
    if (value.front() == '[' && value.back() == ']') {
      section = value.substr(1, value.size() - 2);
      key.clear();
      continue;
    }
    const std::size_t separator = value.find_first_of("=:");
    if (separator == std::string::npos || section.empty()) continue;
    key = lower_case(trimmed(value.substr(0, separator)));
    key_indent = indent;
    sections[section][key] = trimmed(value.substr(separator + 1));
  }
  for (const char* name : {"DEFAULT", "codecarbon"})
    for (auto& [option, setting] : sections[name]) {
      std::string plain;  // configparser's interpolation turns %% into %
      for (std::size_t i = 0; i < setting.size(); ++i) {
        plain += setting[i];
        if (setting[i] == '%' && i + 1 < setting.size() && setting[i + 1] == '%') ++i;
      }
      into[option] = {plain, path.string()};
    }
}

/// CodeCarbon's configuration: ~/.codecarbon.config, then ./.codecarbon.config, then CODECARBON_<KEY>
/// environment variables (any case), each overriding the one before; keys lower-case without the prefix.
inline std::map<std::string, CodeCarbonSetting> codecarbon_config() {
  std::map<std::string, CodeCarbonSetting> settings;
  read_codecarbon_ini(codecarbon_home_config(), settings);
  read_codecarbon_ini(codecarbon_local_config(), settings);
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string text = *entry;
    const std::size_t equals = text.find('=');
    const std::string name = text.substr(0, equals);
    if (equals == std::string::npos || lower_case(name.substr(0, 11)) != "codecarbon_") continue;
    settings[lower_case(name.substr(11))] = {text.substr(equals + 1), name};
  }
  return settings;
}

// ---- emissions.csv (codecarbon/output_methods/file.py FileOutput) ---------------------------------------------

/// The cells of `data` by column name, as pandas writes them: floats as Python's repr, ints as ints, unknown
/// values empty, an average of no samples as CodeCarbon's integer 0.
inline std::map<std::string, std::string> codecarbon_cells(const CodeCarbonEmissions& d) {
  const auto number = [](double v) { return python_float_repr(v); };
  const auto maybe = [&](const std::optional<double>& v) { return v ? number(*v) : std::string(); };
  const auto average = [&](const std::optional<double>& v) { return v ? number(*v) : std::string("0"); };
  return {{"timestamp", d.timestamp},
          {"project_name", d.project_name},
          {"run_id", d.run_id},
          {"experiment_id", d.experiment_id},
          {"duration", number(d.duration)},
          {"emissions", number(d.emissions)},
          {"emissions_rate", number(d.emissions_rate)},
          {"cpu_power", number(d.cpu_power)},
          {"gpu_power", number(d.gpu_power)},
          {"ram_power", number(d.ram_power)},
          {"cpu_energy", number(d.cpu_energy)},
          {"gpu_energy", number(d.gpu_energy)},
          {"ram_energy", number(d.ram_energy)},
          {"energy_consumed", number(d.energy_consumed)},
          {"water_consumed", number(d.water_consumed)},
          {"country_name", d.country_name},
          {"country_iso_code", d.country_iso_code},
          {"region", d.region},
          {"cloud_provider", d.cloud_provider},
          {"cloud_region", d.cloud_region},
          {"os", d.os},
          {"python_version", d.python_version},
          {"codecarbon_version", d.codecarbon_version},
          {"cpu_count", std::to_string(d.cpu_count)},
          {"cpu_model", d.cpu_model},
          {"gpu_count", std::to_string(d.gpu_count)},
          {"gpu_model", d.gpu_model},
          {"longitude", maybe(d.longitude)},
          {"latitude", maybe(d.latitude)},
          {"ram_total_size", number(d.ram_total_size)},
          {"tracking_mode", d.tracking_mode},
          {"cpu_utilization_percent", average(d.cpu_utilization_percent)},
          {"gpu_utilization_percent", average(d.gpu_utilization_percent)},
          {"ram_utilization_percent", average(d.ram_utilization_percent)},
          {"ram_used_gb", average(d.ram_used_gb)},
          {"on_cloud", d.on_cloud},
          {"pue", number(d.pue)},
          {"wue", number(d.wue)}};
}

// The cells of a CSV file's first record (its header), quotes undone.
inline std::vector<std::string> csv_header_cells(const std::string& text) {
  std::vector<std::string> cells(1);
  bool quoted = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        cells.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cells.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      cells.emplace_back();
    } else if (c == '\n' || c == '\r') {
      break;
    } else {
      cells.back() += c;
    }
  }
  return cells;
}

/// Appends `data` to the emissions file `path` as CodeCarbon's FileOutput does in append mode: a new (or
/// empty, or not regular) file gets the header first; a file whose header holds other columns (compared as
/// sets) is renamed to <name>.bak (or <name>_0.bak, <name>_1.bak, ... when that exists) and a new one started.
/// A header with the same columns in another order gets the row in its order. The folder is created when
/// missing, as Hugging Face's Trainer creates output_dir. Throws Error naming the file on failure.
inline void append_codecarbon_row(const std::filesystem::path& path, const CodeCarbonEmissions& data) {
  const std::string where = path.string();
  const std::string fix = "; make the folder writable (with free space) or point output_dir elsewhere";
  std::error_code ec;
  if (!path.parent_path().empty()) {
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) throw Error(where + ": cannot create the folder " + path.parent_path().string() + ": " + ec.message() + fix);
  }
  std::vector<std::string> columns(kCodeCarbonColumns.begin(), kCodeCarbonColumns.end());
  bool fresh = !std::filesystem::is_regular_file(path, ec) || std::filesystem::file_size(path, ec) == 0;
  if (!fresh) {
    int error = 0;
    const auto text = read_small_file(path, &error);
    if (!text) throw Error(where + ": cannot read the file: " + std::generic_category().message(error) + fix);
    std::vector<std::string> header = csv_header_cells(*text), sorted_header = header, sorted_columns = columns;
    std::sort(sorted_header.begin(), sorted_header.end());
    std::sort(sorted_columns.begin(), sorted_columns.end());
    if (sorted_header == sorted_columns) {
      columns = header;
    } else {
      std::filesystem::path backup = path.string() + ".bak";
      for (int i = 0; std::filesystem::exists(backup, ec); ++i)
        backup = path.string() + "_" + std::to_string(i) + ".bak";
      std::filesystem::rename(path, backup, ec);
      if (ec) throw Error(where + ": its columns are not CodeCarbon's and it cannot be moved to " + backup.string() +
                          ": " + ec.message() + fix);
      fresh = true;
    }
  }
  const auto cells = codecarbon_cells(data);
  std::string text;
  if (fresh) {
    for (std::size_t i = 0; i < columns.size(); ++i) text += (i ? "," : "") + python_csv_field(columns[i]);
    text += "\n";
  }
  for (std::size_t i = 0; i < columns.size(); ++i) text += (i ? "," : "") + python_csv_field(cells.at(columns[i]));
  text += "\n";
  try {
    // A new file is an empty one (or one that does not exist yet, or a device) too, so appending fits every
    // case, and a failed append is cut back off: a retry never finds half a header or row.
    append_text_file(where, text);
  } catch (const Error& e) {
    throw Error(e.what() + fix);
  }
}

}  // namespace detail
}  // namespace torchtrain
