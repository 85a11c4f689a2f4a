// SPDX-License-Identifier: MIT
// DVCLiveCallback: DVCLive's files of the logs (params.yaml, metrics.json, plots/metrics/*.tsv, dvc.yaml), as
// Hugging Face's report_to="dvclive" has dvclive.Live write them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/durable_file.hpp"
#include "torchtrain/detail/dvclive_dvcyaml.hpp"
#include "torchtrain/detail/dvclive_files.hpp"
#include "torchtrain/detail/python_repr.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/detail/tracker_logs.hpp"
#include "torchtrain/detail/tracker_outbox.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/detail/yaml_writer.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/integrations.hpp"
#include "torchtrain/tracker_retry_policy.hpp"
#include "torchtrain/trainer_callback.hpp"
#include "torchtrain/training_arguments.hpp"

namespace torchtrain {

/// Where DVCLiveCallback writes (relative paths are taken from the working directory when training starts),
/// and whether it continues an earlier run's files.
struct DVCLiveOptions {
  std::filesystem::path dir = "dvclive";       // DVCLive's output folder, as Live(dir=...)
  bool resume = false;                         // continue the files of an earlier run, as Live(resume=True)
  std::filesystem::path dvcyaml = "dvc.yaml";  // where dvc.yaml goes, as Live(dvcyaml=...)
  TrackerRetryPolicy retry = {};
};

/// Writes what DVCLive's Live writes for Hugging Face's DVCLiveCallback, into DVCLiveOptions::dir (default:
/// dvclive): params.yaml (the arguments, ruamel.yaml's block style), metrics.json (the latest value of each
/// metric, nested by '/', and "step"), plots/metrics/<name>.tsv (a `step<TAB><name>` row per value; '/' in a
/// name makes folders), and dvc.yaml in the working directory (its params, metrics and plots lists, edited in
/// place when the file exists). Each log event logs its numeric and string values at DVCLive's own step under
/// DVCLive's names (every train_ -> train/, eval_ -> eval/; loss stays loss), then advances the step by one;
/// train() ends (or fails) with Live.end(): the step goes back to the last one logged and the files are written
/// once more.
///
/// A fresh run first deletes what an earlier run left in the folder (plot folders, metrics.json, params.yaml,
/// reports), as Live() does. A resumed training run (or DVCLIVE_RESUME, or DVCLiveOptions::resume) continues
/// the files instead: the step and the latest values are part of the checkpoint, and the TSV rows the
/// interrupted run wrote after its checkpoint are removed. metrics.json, params.yaml and dvc.yaml are replaced
/// atomically, TSV rows appended. A write that fails (full disk, unwritable folder) is warned about once and
/// retried; the training never stops for it. Only the world process zero writes.
class DVCLiveCallback : public TrainerCallback {
 public:
  explicit DVCLiveCallback(DVCLiveOptions options = {})
      : dir_(std::move(options.dir)), dvc_file_(std::move(options.dvcyaml)), resume_(options.resume),
        retry_(options.retry) {}

  // What a run that never reached on_train_end (evaluate() alone) could not deliver is still reported.
  ~DVCLiveCallback() override {
    try {
      if (open_ && outbox_) outbox_->finish();
    } catch (...) {
    }
  }

  /// The output folder (absolute once training started).
  const std::filesystem::path& dir() const { return dir_; }
  /// The step the next log event is written at.
  std::int64_t step() const { return step_; }

  void on_train_begin(const Args& args, const State& state, Control&, const Context&) override {
    if (!initialized_) setup(args, state);
  }

  void on_log(const Args& args, const State& state, Control&, const Context& context) override {
    if (!initialized_) setup(args, state);
    if (!state.is_world_process_zero || !context.logs || !outbox_) return;
    for (const auto& [key, value] : context.logs->items()) {
      if (value.is_number() || value.is_boolean() || value.is_string()) {
        log_metric(detail::dvclive::standardize_metric_name(key), value);
      } else if (unloggable_.insert(key).second) {
        detail::warn("DVCLiveCallback: the log value of \"" + key + "\" is " + value.type_name() +
                     ", not a number or a string, which DVCLive's log_metric() cannot take; it is left out");
      }
    }
    next_step();
    open_ = true;
  }

  void on_train_end(const Args&, const State& state, Control&, const Context&) override {
    if (initialized_ && state.is_world_process_zero && outbox_) end();
  }

  // As Live's context manager on an exception: what was logged is written once more, and what could not be
  // delivered is reported.
  void on_exception(const Args&, const State& state, Control&, const Context&) override {
    if (initialized_ && state.is_world_process_zero && outbox_) end();
  }

  std::optional<nlohmann::json> state() const override {
    nlohmann::json summary = nlohmann::json::array();
    std::vector<std::string> keys;
    detail::dvclive::flatten_summary(summary_, keys, summary);
    return nlohmann::json{{"args", nlohmann::json::object()},
                          {"attributes", {{"step", step_}, {"summary", std::move(summary)}}}};
  }

  void restore_state(const nlohmann::json& saved) override {
    const auto invalid = [](const std::string& what) {
      return FileFormatError("DVCLiveCallback: the saved state " + what +
                             "; it must be {\"attributes\": {\"step\": <integer >= 0>, \"summary\": "
                             "[[[\"<key>\", ...], <value>], ...]}}");
    };
    if (!saved.is_object() || !saved.contains("attributes") || !saved["attributes"].is_object())
      throw invalid("has no \"attributes\" object");
    const auto& attributes = saved["attributes"];
    if (!attributes.contains("step") || !attributes["step"].is_number_integer() ||
        attributes["step"].get<std::int64_t>() < 0)
      throw invalid("has no \"step\" that is an integer >= 0");
    if (!attributes.contains("summary") || !attributes["summary"].is_array())
      throw invalid("has no \"summary\" list");
    ojson summary = ojson::object();
    for (const auto& item : attributes["summary"]) {
      const bool named = item.is_array() && item.size() == 2 && item[0].is_array() && !item[0].empty() &&
                         std::all_of(item[0].begin(), item[0].end(), [](const nlohmann::json& k) { return k.is_string(); });
      if (!named) throw invalid("has a summary entry " + item.dump() + " that is not [[\"<key>\", ...], <value>]");
      detail::dvclive::set_in(summary, item[0].get<std::vector<std::string>>(), ojson(item[1]));
    }
    step_ = attributes["step"].get<std::int64_t>();
    summary_ = std::move(summary);
    restored_ = true;
  }

 private:
  using ojson = nlohmann::ordered_json;
  using Keep = detail::TrackerOutbox::Keep;

  void setup(const Args& args, const State& state) {
    initialized_ = true;
    if (!state.is_world_process_zero) return;
    if (const auto log_model = detail::environment_variable("HF_DVCLIVE_LOG_MODEL")) {
      if (detail::environment_flag("HF_DVCLIVE_LOG_MODEL") || detail::lower_case(*log_model) == "all")
        detail::warn("DVCLiveCallback: HF_DVCLIVE_LOG_MODEL=" + *log_model +
                     " asks for the model to be logged as a DVC artifact, which needs DVC itself (dvc add); "
                     "torchtrain logs no artifacts. Unset HF_DVCLIVE_LOG_MODEL and track output_dir with `dvc add`");
    }
    std::error_code ec;
    dir_ = std::filesystem::absolute(dir_, ec).lexically_normal();
    dvc_file_ = std::filesystem::absolute(dvc_file_, ec).lexically_normal();
    outbox_ = std::make_unique<detail::TrackerOutbox>("DVCLiveCallback", retry_, false);
    open_ = true;

    if (state.global_step > 0) {  // a resumed training run
      if (!restored_) replay(state.log_history);
      const std::int64_t step = step_;
      const auto plots = dir_ / "plots" / "metrics";
      outbox_->send([plots, step] { detail::dvclive::trim_plots(plots, step); }, Keep::always);
      if (!summary_.empty()) write_summary();
    } else if (resume_ || detail::dvclive::env_to_bool("DVCLIVE_RESUME")) {  // Live(resume=True)
      read_latest();
    } else {
      const auto dir = dir_;
      outbox_->send([dir] { detail::dvclive::clean_output(dir); }, Keep::always);
    }

    // Live.log_params(args.to_dict()), keys in the arguments' declaration order.
    const nlohmann::json fields = args.to_json();
    ojson params = ojson::object();
    for (const auto& field : detail::argument_fields<TrainingArguments>())
      if (fields.contains(std::string(field.name))) params[std::string(field.name)] = ojson(fields.at(std::string(field.name)));
    for (const auto& [key, value] : fields.items())
      if (!params.contains(key)) params[key] = ojson(value);
    has_params_ = true;
    const std::string text = detail::YamlWriter::document(params);
    const auto path = dir_ / "params.yaml";
    outbox_->send(
        [path, text] {
          std::filesystem::create_directories(path.parent_path());
          detail::write_file_atomically(path, text);
        },
        Keep::always);
  }

  // A resume without this callback's saved state: DVCLive's step and values as the log events of the run so
  // far (state.log_history, up to the checkpoint) left them.
  void replay(const std::vector<LogEntry>& history) {
    summary_ = ojson::object();
    step_ = 0;
    for (const LogEntry& entry : history) {
      for (const auto& [key, value] : entry.items())
        if (key != "step" && (value.is_number() || value.is_boolean() || value.is_string()))
          detail::dvclive::set_in(summary_, detail::dvclive::summary_keys(detail::dvclive::standardize_metric_name(key)),
                                  detail::dvclive::loggable(value));
      summary_["step"] = step_++;
    }
  }

  // Live._init_resume: the latest values and step from metrics.json; the step after it, except after step 0.
  void read_latest() {
    const auto path = dir_ / "metrics.json";
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return;
    try {
      ojson latest = ojson::parse(detail::read_text_file(path.string()));
      if (!latest.is_object()) throw FileFormatError(path.string() + ": not a JSON object");
      summary_ = std::move(latest);
      step_ = summary_.contains("step") && summary_["step"].is_number_integer() ? summary_["step"].get<std::int64_t>() : 0;
      if (step_ != 0) ++step_;
    } catch (const std::exception& e) {
      detail::warn(std::string("DVCLiveCallback: cannot resume from ") + path.string() + ": " + e.what() +
                   "; the run starts again at step 0 (delete the file or unset DVCLIVE_RESUME)");
    }
  }

  // Live.log_metric: a row in the metric's TSV and its latest value in the summary.
  void log_metric(const std::string& name, const LogEntry& value) {
    const ojson val = detail::dvclive::loggable(value);
    const std::size_t slash = name.rfind('/');
    const std::string column = slash == std::string::npos ? name : name.substr(slash + 1);
    const std::string header = "step\t" + detail::python_csv_field(column, '\t') + "\n";
    const std::string row = std::to_string(step_) + "\t" + detail::python_csv_field(detail::python_str(val), '\t') + "\n";
    const auto path = dir_ / "plots" / "metrics" / (name + ".tsv");
    outbox_->send([path, header, row] { detail::dvclive::append_tsv_row(path, header, row); });
    detail::dvclive::set_in(summary_, detail::dvclive::summary_keys(name), val);
  }

  void next_step() {
    sync();
    ++step_;
  }

  // Live.end: the step of the last log event, the files written once more, and what was not delivered said.
  void end() {
    if (summary_.contains("step") && summary_["step"].is_number_integer()) step_ = summary_["step"].get<std::int64_t>();
    sync();
    outbox_->finish();
    open_ = false;
  }

  // Live.sync: metrics.json with the current step, and dvc.yaml.
  void sync() {
    summary_["step"] = step_;
    write_summary();
    const auto dir = dir_, dvc_file = dvc_file_;
    const bool params = has_params_, metrics = !summary_.empty();
    outbox_->send([this, dir, dvc_file, params, metrics] {
      if (!detail::dvclive::write_dvcyaml(dir, dvc_file, params, metrics) && !dvcyaml_warned_) {
        dvcyaml_warned_ = true;
        detail::warn("DVCLiveCallback: " + dvc_file.string() +
                     " lists its params, metrics or plots in flow style ([...]), which this cannot edit; it is "
                     "left as it is. Write those lists in block style (one '- ' line per entry)");
      }
    });
  }

  void write_summary() {
    const std::string text = detail::dvclive::dump_json_indent4(summary_);
    const auto path = dir_ / "metrics.json";
    outbox_->send([path, text] {
      std::filesystem::create_directories(path.parent_path());
      detail::write_file_atomically(path, text);
    });
  }

  std::filesystem::path dir_, dvc_file_;
  bool resume_ = false;
  TrackerRetryPolicy retry_;
  bool initialized_ = false, restored_ = false, has_params_ = false, dvcyaml_warned_ = false;
  bool open_ = false;  // logged to since the last end()
  std::int64_t step_ = 0;
  ojson summary_ = ojson::object();
  std::set<std::string> unloggable_;
  std::unique_ptr<detail::TrackerOutbox> outbox_;
};

namespace detail {
inline const bool kDVCLiveRegistered = register_reporting_integration(
    {"dvclive", [] { return std::make_shared<DVCLiveCallback>(); }, [] { return dvclive::configured(); }});
}  // namespace detail

}  // namespace torchtrain
