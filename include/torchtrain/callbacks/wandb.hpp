// SPDX-License-Identifier: MIT
// WandbCallback: a Weights & Biases offline run of the logs, as Hugging Face's report_to="wandb" records them,
// for `wandb sync` to upload.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/durable_file.hpp"
#include "torchtrain/detail/event_file_writer.hpp"
#include "torchtrain/detail/python_json.hpp"
#include "torchtrain/detail/tracker_config.hpp"
#include "torchtrain/detail/tracker_logs.hpp"
#include "torchtrain/detail/tracker_outbox.hpp"
#include "torchtrain/detail/wandb_records.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/integrations.hpp"
#include "torchtrain/trainer_callback.hpp"
#include "torchtrain/tracker_retry_policy.hpp"
#include "torchtrain/training_arguments.hpp"
#include "torchtrain/version.hpp"

namespace torchtrain {

namespace detail::wandb {
/// WANDB_MODE=disabled: wandb.init(mode="disabled") writes nothing.
inline bool disabled() { return environment_variable("WANDB_MODE").value_or("") == "disabled"; }
}  // namespace detail::wandb

/// Writes each train() as a W&B offline run, the folder `wandb sync` uploads (W&B has no C++ SDK):
/// <WANDB_DIR or the working directory>/wandb/offline-run-<YYYYMMDD_HHMMSS>-<run id>/run-<run id>.wandb (.wandb
/// instead of wandb when that folder exists), with files/config.yaml and, at the end, files/wandb-summary.json.
/// The run is in WANDB_PROJECT (default "huggingface") of WANDB_ENTITY, named by args.run_name or WANDB_NAME,
/// grouped by WANDB_RUN_GROUP, with the id WANDB_RUN_ID (default 8 random characters of [a-z0-9]); a
/// hyper-parameter trial is a run of its own, named after state.trial_name and grouped by the search's
/// output_dir, as Hugging Face's WandbCallback does. WANDB_MODE=disabled turns the callback off.
///
/// As Hugging Face: the config is the arguments (args.to_json()) and model/num_parameters; train/global_step is
/// the x-axis of every metric; each log is one history row of its values under train/ eval/ test/ keys plus
/// train/global_step, except train()'s closing values (train_runtime, train_loss, ...), which go to the summary.
/// Unlike Hugging Face, train()'s end (or an exception, exit code 1) closes the run with its summary and exit
/// record, so that the uploaded run is marked finished; a later evaluate() or predict() still logs into that run
/// (its closing records are written again after the row), and the next train() starts a new run.
///
/// A resumed train() continues the checkpoint's run in the same file: what the interrupted process wrote after
/// the checkpoint is cut off, so each step appears once. When that file is gone, the run continues in a new
/// folder under the same id, marked as resumed. Records are written as they happen; one that cannot be written
/// is kept and tried again (warned once), and train()'s end says what was not delivered. Only the world process
/// zero writes. `retry` sets how long an undelivered record waits before the next attempt.
class WandbCallback : public TrainerCallback {
 public:
  explicit WandbCallback(TrackerRetryPolicy retry = {}) : outbox_("WandbCallback", retry, false) {}
  WandbCallback(const WandbCallback&) = delete;
  WandbCallback& operator=(const WandbCallback&) = delete;
  ~WandbCallback() override {
    try {
      if (open_) finish_run(0);  // a run that evaluate() started before any train()
      outbox_.finish();
    } catch (...) {
    }
  }

  /// The folder of the current (or last) run; empty before the first.
  std::filesystem::path run_dir() const { return run_ ? run_->folder : std::filesystem::path(); }
  /// The current (or last) run's id; empty before the first.
  std::string run_id() const { return run_ ? run_->id : std::string(); }

  void on_train_begin(const Args& args, const State& state, Control&, const Context& context) override {
    auto resume = std::move(resume_);
    resume_.reset();
    if (disabled() || !state.is_world_process_zero) return;
    if (resume && state.global_step > 0) {
      if (open_) finish_run(0);
      resume_run(args, context.model, *resume);
      return;
    }
    const bool trial = state.trial_name.has_value();
    if (open_ && !trial) return;  // a run that evaluate() started: train() logs into it, as Hugging Face
    if (open_) finish_run(0);
    start_run(args, state, context.model, nullptr);
  }

  void on_log(const Args& args, const State& state, Control&, const Context& context) override {
    if (disabled() || !state.is_world_process_zero || !context.logs) return;
    if (!open_) continue_run(args, state, context.model);
    LogEntry summary = LogEntry::object(), values = LogEntry::object();
    for (const auto& [key, value] : context.logs->items())
      (detail::is_single_value_scalar(key) ? summary : values)[key] = value;
    LogEntry row = detail::rewrite_logs(values);
    row["train/global_step"] = state.global_step;
    if (!summary.empty()) send_summary(std::move(summary));
    send_history(std::move(row));
    if (!open_) finish_run(run_->exit_code);
  }

  void on_predict(const Args& args, const State& state, Control&, const Context& context) override {
    if (disabled() || !state.is_world_process_zero || !context.metrics) return;
    if (!open_) continue_run(args, state, context.model);
    send_history(detail::rewrite_logs(*context.metrics));
    if (!open_) finish_run(run_->exit_code);
  }

  void on_train_end(const Args&, const State& state, Control&, const Context&) override {
    if (!state.is_world_process_zero) return;
    if (open_) finish_run(0);
    outbox_.finish();
  }

  void on_exception(const Args&, const State& state, Control&, const Context&) override {
    if (!state.is_world_process_zero) return;
    if (open_) finish_run(1);
    outbox_.finish();
  }

  /// The run a checkpoint belongs to: its id and folder, the size of its .wandb file, the history rows, record
  /// numbers, run time and summary written so far.
  std::optional<nlohmann::json> state() const override {
    nlohmann::json attributes = nlohmann::json::object();
    if (run_ && open_) {
      nlohmann::json defined = nlohmann::json::array();
      for (const auto& name : run_->defined) defined.push_back(name);
      attributes = {{"run_id", run_->id},
                    {"run_dir", run_->folder.string()},
                    {"file_size", run_->log.is_open() ? run_->log.size() : 0},
                    {"history_step", run_->steps},
                    {"record_num", run_->records},
                    {"start_time", run_->start_time},
                    {"runtime", runtime(*run_)},
                    {"defined_metrics", std::move(defined)},
                    {"summary", nlohmann::json(run_->summary)}};
    }
    return nlohmann::json{{"args", nlohmann::json::object()}, {"attributes", std::move(attributes)}};
  }

  void restore_state(const nlohmann::json& saved) override {
    static const char* const kExpected =
        "WandbCallback: the saved state must be {\"attributes\": {}} or {\"attributes\": {\"run_id\": string, "
        "\"run_dir\": string, \"file_size\": unsigned, \"history_step\": integer, \"record_num\": integer, "
        "\"start_time\": number, \"runtime\": number, \"defined_metrics\": [string...], \"summary\": object}}";
    const auto malformed = [](const std::string& what) { return FileFormatError(std::string(kExpected) + "; " + what); };
    if (!saved.is_object() || !saved.contains("attributes") || !saved["attributes"].is_object())
      throw malformed("it has no \"attributes\" object");
    const nlohmann::json& a = saved["attributes"];
    if (!a.contains("run_id")) {
      resume_.reset();
      return;
    }
    Saved s;
    try {
      s.run_id = a.at("run_id").get<std::string>();
      s.run_dir = a.at("run_dir").get<std::string>();
      s.file_size = a.at("file_size").get<std::uint64_t>();
      s.history_step = a.at("history_step").get<std::int64_t>();
      s.record_num = a.at("record_num").get<std::int64_t>();
      s.start_time = a.at("start_time").get<double>();
      s.runtime = a.at("runtime").get<double>();
      if (!a.at("defined_metrics").is_array()) throw malformed("\"defined_metrics\" is not a list");
      for (const auto& name : a.at("defined_metrics")) s.defined.insert(name.get<std::string>());
      s.summary = a.at("summary");
    } catch (const nlohmann::json::exception& e) {
      throw malformed(e.what());
    }
    if (!s.summary.is_object()) throw malformed("\"summary\" is not an object");
    resume_ = std::move(s);
  }

 private:
  static constexpr const char* kStepMetric = "train/global_step";

  // One run: its file, and what has been written to it. Deliveries hold it, so that a retried one writes to
  // its own run even after the next run started.
  struct Run {
    std::string id;
    std::filesystem::path folder;
    double start_time = 0;       // Unix seconds
    double runtime_before = 0;   // seconds of the run before this process resumed it
    std::chrono::steady_clock::time_point clock_start = std::chrono::steady_clock::now();
    std::int64_t steps = 0;      // history rows written: the next _step
    std::int64_t records = 0;    // records written: the last Record.num
    LogEntry summary = LogEntry::object();
    std::set<std::string> defined;  // metrics with a definition in the file
    detail::wandb::TransactionLog log;
    // Where the closing records (summary, exit, final, footer) begin, once written, and the run's exit code.
    std::optional<std::pair<std::uint64_t, std::int64_t>> closing;  // file size and record count before them
    std::int32_t exit_code = 0;

    std::filesystem::path file() const { return folder / ("run-" + id + ".wandb"); }
    void write(detail::wandb::RecordField field, const detail::ProtobufWriter& body) {
      log.append(detail::wandb::record(records + 1, field, body));
      ++records;
    }
  };

  struct Saved {
    std::string run_id, run_dir;
    std::uint64_t file_size = 0;
    std::int64_t history_step = 0, record_num = 0;
    double start_time = 0, runtime = 0;
    std::set<std::string> defined;
    LogEntry summary = LogEntry::object();
  };

  static bool disabled() { return detail::wandb::disabled(); }

  static double runtime(const Run& run) {
    return run.runtime_before +
           std::chrono::duration<double>(std::chrono::steady_clock::now() - run.clock_start).count();
  }

  // Hugging Face's WANDB_LOG_MODEL and WANDB_WATCH, which need W&B's Python SDK.
  void warn_unsupported_settings() {
    if (warned_settings_) return;
    warned_settings_ = true;
    if (auto log_model = detail::environment_variable("WANDB_LOG_MODEL"); log_model && *log_model != "false") {
      if (*log_model == "end" || *log_model == "checkpoint")
        detail::warn("WandbCallback: WANDB_LOG_MODEL=" + *log_model +
                     " asks for model artifacts, which the offline run written by torchtrain cannot hold; the run "
                     "is logged without them. Unset WANDB_LOG_MODEL (or set it to false) to silence this");
      else
        detail::warn("WandbCallback: received unrecognized WANDB_LOG_MODEL setting value=" + *log_model +
                     "; so disabling WANDB_LOG_MODEL (use end, checkpoint or false)");
    }
    const auto watch = detail::environment_variable("WANDB_WATCH").value_or("false");
    if (watch == "gradients" || watch == "parameters" || watch == "all")
      detail::warn("WandbCallback: WANDB_WATCH=" + watch +
                   " (gradient and parameter histograms) is not supported by torchtrain's offline run; unset "
                   "WANDB_WATCH to silence this");
  }

  // `keep`: Keep::always for what sets the run up or closes it, which a full outbox must not drop.
  using Keep = detail::TrackerOutbox::Keep;
  void deliver(std::function<void()> delivery, Keep keep = Keep::droppable) {
    outbox_.send(std::move(delivery), keep);
  }

  void send_record(detail::wandb::RecordField field, detail::ProtobufWriter body, Keep keep = Keep::droppable) {
    deliver([run = run_, field, body = std::move(body)] { run->write(field, body); }, keep);
  }

  static std::vector<detail::wandb::Item> items_of(const LogEntry& values) {
    std::vector<detail::wandb::Item> items;
    for (const auto& [key, value] : values.items()) items.emplace_back(key, detail::wandb::to_json(value));
    return items;
  }

  // ConfigRecord of every key, and files/config.yaml.
  void send_config(const Args& args, const torch::nn::Module* model) {
    const LogEntry config = detail::tracker_config(args, model);
    send_record(detail::wandb::kConfig, detail::wandb::items_message(1, items_of(config)), Keep::always);
    deliver([run = run_, yaml = detail::wandb::config_yaml(config)] {
      std::filesystem::create_directories(run->folder / "files");
      detail::write_file_atomically(run->folder / "files" / "config.yaml", yaml);
    });
  }

  // `saved`: the checkpoint's run, which goes on in this new folder.
  void start_run(const Args& args, const State& state, const torch::nn::Module* model, const Saved* saved) {
    warn_unsupported_settings();
    auto run = std::make_shared<Run>();
    run->id = saved ? saved->run_id
                    : detail::environment_variable("WANDB_RUN_ID")
                          .value_or(detail::random_id(8, "abcdefghijklmnopqrstuvwxyz0123456789"));
    std::filesystem::path root = detail::environment_variable("WANDB_DIR").value_or("");
    if (root.empty()) {
      std::error_code ec;
      root = std::filesystem::current_path(ec);
      if (ec) root = ".";
    }
    std::error_code ec;
    const auto base = std::filesystem::is_directory(root / ".wandb", ec) ? root / ".wandb" : root / "wandb";
    run->folder = base / ("offline-run-" + detail::time_stamp("%Y%m%d_%H%M%S") + "-" + run->id);
    run->start_time = saved ? saved->start_time : detail::unix_seconds();
    if (saved) {
      run->runtime_before = saved->runtime;
      run->steps = saved->history_step;
      run->summary = saved->summary;
    }
    run_ = run;
    open_ = true;

    detail::wandb::RunFields fields;
    fields.run_id = run->id;
    fields.project = detail::environment_variable("WANDB_PROJECT").value_or("huggingface");
    fields.entity = detail::environment_variable("WANDB_ENTITY").value_or("");
    fields.job_type = detail::environment_variable("WANDB_JOB_TYPE").value_or("");
    fields.notes = detail::environment_variable("WANDB_NOTES").value_or("");
    if (auto tags = detail::environment_variable("WANDB_TAGS")) {
      for (std::size_t start = 0; start <= tags->size();) {
        const std::size_t end = std::min(tags->find(',', start), tags->size());
        if (end > start) fields.tags.push_back(tags->substr(start, end - start));
        start = end + 1;
      }
    }
    if (state.trial_name) {
      fields.display_name = *state.trial_name;
      // Hugging Face groups the trials by output_dir; here a trial's output_dir is the search's plus the trial.
      std::filesystem::path group = args.output_dir;
      if (group.filename() == *state.trial_name) group = group.parent_path();
      fields.run_group = group.string();
    } else {
      fields.display_name =
          !args.run_name.empty() ? args.run_name : detail::environment_variable("WANDB_NAME").value_or("");
      fields.run_group = detail::environment_variable("WANDB_RUN_GROUP").value_or("");
    }
    fields.host = detail::host_name();
    fields.start_time = run->start_time;
    if (saved) {
      fields.resumed = true;
      fields.starting_step = saved->history_step;
      fields.runtime = static_cast<std::int32_t>(saved->runtime);
    }

    deliver([run] { run->log.create(run->file()); }, Keep::always);
    send_record(detail::wandb::kHeader, detail::wandb::header_body("torchtrain " TORCHTRAIN_VERSION), Keep::always);
    send_record(detail::wandb::kRun, detail::wandb::run_body(fields), Keep::always);
    send_config(args, model);
    send_metric_definitions();
    detail::inform("WandbCallback: writing the W&B offline run " + run->folder.string() +
                   "; upload it with: wandb sync " + run->folder.string());
  }

  // Hugging Face's define_metric("train/global_step") and define_metric("*", step_metric=..., step_sync=True).
  void send_metric_definitions() {
    deliver([run = run_] {
      if (run->defined.count(kStepMetric)) return;
      run->write(detail::wandb::kMetric, detail::wandb::metric_body(kStepMetric, "", false, false));
      run->defined.insert(kStepMetric);
    }, Keep::always);
    deliver([run = run_] {
      if (run->defined.count("*")) return;
      run->write(detail::wandb::kMetric, detail::wandb::metric_body("*", kStepMetric, true, false));
      run->defined.insert("*");
    }, Keep::always);
  }

  // A log after train() (an evaluation, a prediction) goes into that train()'s run, as with Hugging Face, whose
  // run stays open: the closing records are cut off, and written again after the log. Without a run, one starts.
  void continue_run(const Args& args, const State& state, const torch::nn::Module* model) {
    if (!run_) {
      start_run(args, state, model, nullptr);
      return;
    }
    deliver([run = run_] {
      if (!run->closing) return;
      run->log.reopen(run->file(), run->closing->first);
      run->records = run->closing->second;
      run->closing.reset();
    }, Keep::always);
  }

  void resume_run(const Args& args, const torch::nn::Module* model, const Saved& saved) {
    const std::filesystem::path file = std::filesystem::path(saved.run_dir) / ("run-" + saved.run_id + ".wandb");
    std::error_code ec;
    const std::uintmax_t size = std::filesystem::file_size(file, ec);
    if (ec || saved.file_size < detail::wandb::kFileHeader.size() || size < saved.file_size) {
      const std::string what =
          ec ? file.string() + " is missing (" + ec.message() + ")"
             : saved.file_size < detail::wandb::kFileHeader.size()
                   ? file.string() + " had not been written at the checkpoint"
                   : file.string() + " has " + std::to_string(size) + " bytes, fewer than the " +
                         std::to_string(saved.file_size) + " it had at the checkpoint";
      State state;  // the name and group of a resumed run come from the environment and args
      start_run(args, state, model, &saved);
      detail::warn("WandbCallback: " + what + "; the W&B run " + saved.run_id +
                   " goes on in a new offline folder, marked as resumed: " + run_->folder.string() +
                   ". Sync both folders, the old one first");
      return;
    }
    warn_unsupported_settings();
    auto run = std::make_shared<Run>();
    run->id = saved.run_id;
    run->folder = saved.run_dir;
    run->start_time = saved.start_time;
    run->runtime_before = saved.runtime;
    run->steps = saved.history_step;
    run->records = saved.record_num;
    run->summary = saved.summary;
    run->defined = saved.defined;
    run_ = run;
    open_ = true;
    deliver([run, file, size = saved.file_size] { run->log.reopen(file, size); }, Keep::always);
    send_config(args, model);  // the resumed train()'s arguments
    send_metric_definitions();
  }

  void send_summary(LogEntry values) {
    deliver([run = run_, values = std::move(values)] {
      run->write(detail::wandb::kSummary, detail::wandb::items_message(1, items_of(values)));
      for (const auto& [key, value] : values.items()) run->summary[key] = value;
    });
  }

  // A history row, with the _step, _runtime and _timestamp of the moment it was logged; a key that no
  // definition names yet gets the one the "*" glob gives it, as wandb-core expands it.
  void send_history(LogEntry row) {
    deliver([run = run_, row = std::move(row), timestamp = detail::unix_seconds(), seconds = runtime(*run_)] {
      for (const auto& [key, value] : row.items()) {
        if (key.rfind('_', 0) == 0 || run->defined.count(key)) continue;
        run->write(detail::wandb::kMetric, detail::wandb::metric_body(key, kStepMetric, true, true));
        run->defined.insert(key);
      }
      LogEntry full = row;
      full["_step"] = run->steps;
      full["_runtime"] = seconds;
      full["_timestamp"] = timestamp;
      run->write(detail::wandb::kHistory, detail::wandb::history_body(items_of(full), run->steps));
      for (const auto& [key, value] : full.items()) run->summary[key] = value;
      ++run->steps;
    });
  }

  // The summary (every key's latest value and train()'s closing values), the exit record, final and footer:
  // what `wandb sync` needs to mark the run finished (exit code 0) or failed; then files/wandb-summary.json.
  void finish_run(std::int32_t exit_code) {
    open_ = false;
    run_->exit_code = exit_code;
    const double seconds = runtime(*run_);
    deliver([run = run_, seconds] {
      if (!run->closing) run->closing.emplace(run->log.size(), run->records);
      LogEntry summary = run->summary;
      summary["_wandb"] = {{"runtime", static_cast<std::int64_t>(seconds)}};
      run->write(detail::wandb::kSummary, detail::wandb::items_message(1, items_of(summary)));
    }, Keep::always);
    send_record(detail::wandb::kExit, detail::wandb::exit_body(exit_code, static_cast<std::int32_t>(seconds)),
                Keep::always);
    send_record(detail::wandb::kFinal, detail::ProtobufWriter(), Keep::always);
    send_record(detail::wandb::kFooter, detail::ProtobufWriter(), Keep::always);
    deliver([run = run_, seconds] {
      LogEntry summary = run->summary;
      summary["_wandb"] = {{"runtime", static_cast<std::int64_t>(seconds)}};
      std::filesystem::create_directories(run->folder / "files");
      detail::write_file_atomically(run->folder / "files" / "wandb-summary.json", detail::wandb::to_json(summary));
    });
  }

  std::shared_ptr<Run> run_;
  bool open_ = false;  // run_ is between its start and its exit record
  std::optional<Saved> resume_;
  bool warned_settings_ = false;
  detail::TrackerOutbox outbox_;
};

namespace detail {
// report_to = all takes W&B when WANDB_PROJECT says which project the runs belong to.
inline const bool kWandbRegistered = register_reporting_integration(
    {"wandb", [] { return std::make_shared<WandbCallback>(); },
     [] { return environment_variable("WANDB_PROJECT").has_value() && !wandb::disabled(); }});
}  // namespace detail

}  // namespace torchtrain
