// SPDX-License-Identifier: MIT
// FileStore: MLflow's file-store layout (a file: tracking URI, or MLflow's default ./mlruns), which `mlflow ui`
// and MLflow's own FileStore read.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "torchtrain/detail/durable_file.hpp"
#include "torchtrain/detail/mlflow_store.hpp"
#include "torchtrain/detail/python_repr.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/detail/tracker_logs.hpp"

namespace torchtrain::detail {

/// <root>/<experiment id>/meta.yaml; <root>/<experiment id>/<run id>/{meta.yaml, metrics/<key> ("<timestamp>
/// <value> <step>" lines), params/<key>, tags/<key>, artifacts/}. A new root gets the Default experiment 0.
class FileStore final : public MlflowStore {
 public:
  explicit FileStore(std::filesystem::path root) : root_(std::filesystem::absolute(std::move(root))) {}

  std::string location() const override { return root_.string(); }

  std::string experiment_id(const std::string& name) override {
    ensure_root();
    if (name.empty()) return "0";
    for (const auto& entry : std::filesystem::directory_iterator(root_)) {
      const auto meta = entry.path() / "meta.yaml";
      if (entry.is_directory() && std::filesystem::exists(meta) && yaml_value(read_text_file(meta), "name") == name)
        return entry.path().filename().string();
    }
    std::string id = random_id(1, "123456789") + random_id(17, "0123456789");  // MLflow's 18-digit ids
    create_experiment(id, name);
    return id;
  }

  std::string create_run(const std::string& experiment_id, const std::string& run_name, std::int64_t start_time,
                         const MlflowPairs& tags) override {
    const std::string run_id = random_id(32);
    const auto dir = root_ / experiment_id / run_id;
    for (const char* sub : {"metrics", "params", "tags", "artifacts"}) create_folders(dir / sub);
    RunMeta meta;
    meta.artifact_uri = file_uri(dir / "artifacts");
    meta.experiment_id = experiment_id;
    meta.run_id = run_id;
    meta.run_name = run_name;
    meta.start_time = start_time;
    meta.user_id = detail::user_name();
    write_run_meta(dir, meta);
    for (const auto& [key, value] : tags) write_value(dir, key_path(dir / "tags", key), value);
    return run_id;
  }

  std::map<std::string, std::int64_t> resume_run(const std::string& run_id) override {
    const auto dir = run_folder(run_id);
    RunMeta meta = read_run_meta(dir);
    meta.status = 1;
    meta.end_time.clear();
    write_run_meta(dir, meta);
    std::map<std::string, std::int64_t> latest;
    const auto metrics = dir / "metrics";
    for (const auto& entry : std::filesystem::recursive_directory_iterator(metrics)) {
      if (!entry.is_regular_file()) continue;
      std::istringstream lines(read_text_file(entry.path()));
      std::string timestamp, value;
      std::int64_t step = 0, last = -1;
      for (std::string line; std::getline(lines, line);) {
        std::istringstream fields(line);
        step = 0;
        if (fields >> timestamp >> value) fields >> step;
        last = std::max(last, step);
      }
      if (last >= 0) latest[entry.path().lexically_relative(metrics).generic_string()] = last;
    }
    return latest;
  }

  void log_batch(const std::string& run_id, const std::vector<MlflowMetric>& metrics, const MlflowPairs& params,
                 const MlflowPairs& tags) override {
    const auto dir = run_folder(run_id);
    for (const auto& [key, value] : params) {
      const auto path = key_path(dir / "params", key);
      if (std::filesystem::exists(path)) {
        const std::string old = read_text_file(path);
        if (old != value)  // MLflow's rule: a param never changes
          throw DeliveryRejected("param \"" + key + "\" of run " + run_id + " is already \"" + old +
                                 "\"; MLflow refuses to change it to \"" + value + "\"");
        continue;
      }
      write_value(dir, path, value);
    }
    for (const auto& [key, value] : tags) write_value(dir, key_path(dir / "tags", key), value);
    std::map<std::string, std::string> appended;  // one append per metric file
    for (const auto& m : metrics)
      appended[m.key] += std::to_string(m.timestamp) + " " + python_repr(m.value) + " " + std::to_string(m.step) + "\n";
    for (const auto& [key, lines] : appended) append_text_file(key_path(dir / "metrics", key).string(), lines);
  }

  void end_run(const std::string& run_id, MlflowRunStatus status, std::int64_t end_time) override {
    const auto dir = run_folder(run_id);
    RunMeta meta = read_run_meta(dir);
    meta.status = static_cast<int>(status);
    meta.end_time = std::to_string(end_time);
    write_run_meta(dir, meta);
  }

 private:
  struct RunMeta {
    std::string artifact_uri, end_time, experiment_id, run_id, run_name, user_id;
    std::int64_t start_time = 0;
    int status = 1;  // RUNNING
  };

  static std::string file_uri(const std::filesystem::path& path) { return "file://" + path.string(); }

  // YAML's plain scalars for what reads as a string; single quotes for what YAML 1.1 (PyYAML, which MLflow
  // reads with) would take as something else: a number, a boolean (yes, Off, TRUE, ...), null.
  static std::string yaml_string(const std::string& text) {
    static const std::set<std::string> words{"yes", "no", "true", "false", "on", "off", "null"};
    const bool plain = !text.empty() && std::isalpha(static_cast<unsigned char>(text[0])) &&
                       std::all_of(text.begin(), text.end(),
                                   [](unsigned char c) { return std::isalnum(c) || std::strchr("_-./", c); }) &&
                       !words.count(lower_case(text));
    if (plain) return text;
    std::string quoted = "'";
    for (char c : text) quoted += c == '\'' ? std::string("''") : std::string(1, c);
    return quoted + "'";
  }

  // The value of `key` in a flat YAML mapping as write_yaml writes it (plain or single-quoted scalars).
  static std::string yaml_value(const std::string& text, const std::string& key) {
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind(key + ":", 0) != 0) continue;
      std::string value = line.substr(key.size() + 1);
      value.erase(0, value.find_first_not_of(' '));
      if (value.size() >= 2 && value.front() == '\'' && value.back() == '\'') {
        std::string unquoted;
        for (std::size_t i = 1; i + 1 < value.size(); ++i) {
          unquoted += value[i];
          if (value[i] == '\'') ++i;
        }
        return unquoted;
      }
      return value == "null" ? "" : value;
    }
    return "";
  }

  void ensure_root() {
    if (std::filesystem::exists(root_ / "0" / "meta.yaml")) return;
    create_folders(root_ / ".trash");
    create_experiment("0", "Default");
  }

  void create_experiment(const std::string& id, const std::string& name) {
    const auto dir = root_ / id;
    create_folders(dir);
    const std::string now = std::to_string(unix_millis());
    write_file_atomically(dir / "meta.yaml", "artifact_location: " + file_uri(dir) + "\ncreation_time: " + now +
                                                 "\nexperiment_id: '" + id + "'\nlast_update_time: " + now +
                                                 "\nlifecycle_stage: active\nname: " + yaml_string(name) + "\n");
  }

  // Keys sorted, as MLflow's write_yaml.
  static void write_run_meta(const std::filesystem::path& dir, const RunMeta& m) {
    write_file_atomically(
        dir / "meta.yaml",
        "artifact_uri: " + m.artifact_uri + "\ndeleted_time: null\nend_time: " + (m.end_time.empty() ? "null" : m.end_time) +
            "\nentry_point_name: ''\nexperiment_id: '" + m.experiment_id + "'\nlifecycle_stage: active\nrun_id: " +
            m.run_id + "\nrun_name: " + yaml_string(m.run_name) + "\nrun_uuid: " + m.run_id +
            "\nsource_name: ''\nsource_type: 4\nsource_version: ''\nstart_time: " + std::to_string(m.start_time) +
            "\nstatus: " + std::to_string(m.status) + "\ntags: []\nuser_id: " + yaml_string(m.user_id) + "\n");
  }

  static RunMeta read_run_meta(const std::filesystem::path& dir) {
    const std::string text = read_text_file(dir / "meta.yaml");
    RunMeta m;
    m.artifact_uri = yaml_value(text, "artifact_uri");
    m.end_time = yaml_value(text, "end_time");
    m.experiment_id = yaml_value(text, "experiment_id");
    m.run_id = yaml_value(text, "run_id");
    m.run_name = yaml_value(text, "run_name");
    m.user_id = yaml_value(text, "user_id");
    m.start_time = std::stoll("0" + yaml_value(text, "start_time"));
    m.status = std::stoi("0" + yaml_value(text, "status"));
    return m;
  }

  std::filesystem::path run_folder(const std::string& run_id) const {
    if (std::filesystem::exists(root_))
      for (const auto& experiment : std::filesystem::directory_iterator(root_))
        if (std::filesystem::exists(experiment.path() / run_id / "meta.yaml")) return experiment.path() / run_id;
    throw DeliveryRejected("run " + run_id + " is not in " + root_.string() +
                           " (RESOURCE_DOES_NOT_EXIST); unset MLFLOW_RUN_ID or point MLFLOW_TRACKING_URI at its store");
  }

  // A key's file; '/' in a key makes sub-folders, as MLflow's. A key that is not a plain relative path would
  // leave the run's folder, and MLflow refuses it.
  static std::filesystem::path key_path(const std::filesystem::path& folder, const std::string& key) {
    const std::filesystem::path relative(key);
    const bool plain = !key.empty() && key.front() != '/' && key.find("//") == std::string::npos &&
                       std::none_of(relative.begin(), relative.end(), [](const auto& part) {
                         return part == "." || part == "..";
                       });
    if (!plain) throw DeliveryRejected("the key \"" + key + "\" is not a relative path of names; MLflow refuses it");
    const auto path = folder / relative;
    create_folders(path.parent_path());
    return path;
  }

  // A param or tag file appears whole: written beside the run's folders (where MLflow's reader looks for
  // nothing), then renamed into place.
  static void write_value(const std::filesystem::path& run_dir, const std::filesystem::path& path,
                          const std::string& value) {
    const auto staged = run_dir / ".tmp-value";
    write_text_file(staged.string(), value);
    std::error_code ec;
    std::filesystem::rename(staged, path, ec);
    if (ec) throw std::runtime_error(path.string() + ": cannot write the file: " + ec.message());
  }

  static void create_folders(const std::filesystem::path& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw std::runtime_error(dir.string() + ": cannot create the folder: " + ec.message());
  }

  std::filesystem::path root_;
};

}  // namespace torchtrain::detail
