// SPDX-License-Identifier: MIT
// TrackioCallback: the logs in a Trackio project database, as Hugging Face's report_to="trackio" writes them
// through a local trackio.Run. Needs libsqlite3 (CMake: torchtrain::trackio).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/trackio_storage.hpp"
#include "torchtrain/detail/tracker_config.hpp"
#include "torchtrain/detail/tracker_logs.hpp"
#include "torchtrain/detail/tracker_outbox.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/integrations.hpp"
#include "torchtrain/tracker_retry_policy.hpp"
#include "torchtrain/trainer_callback.hpp"
#include "torchtrain/training_arguments.hpp"

namespace torchtrain {

/// Writes the run into Trackio's SQLite database of the project args.project: <dir>/<project>.db, where <dir>
/// is TRACKIO_DIR, else $HF_HOME/trackio, else ~/.cache/huggingface/trackio, and <project> keeps only the
/// ASCII letters, digits, "-" and "_" of the name ("default" when none). `trackio show` (or the Python API)
/// reads it as a run it logged itself: tables and indexes as trackio creates them, WAL journal, trackio's
/// <project>.lock taken around each write, one transaction per write.
///
/// The run is named args.run_name; a run of that name already in the project is continued, as
/// trackio.init(resume="allow") does (looked up when training begins, waiting at most 2 s for a busy database,
/// else a new run of that name is logged). An empty run_name gives a new run "trackio-run-<8 hex digits>". Each log
/// event becomes one metrics row: Hugging Face's keys (eval_x -> eval/x, test_x -> test/x, else train/x)
/// plus train/global_step, without train()'s closing summary values (train_runtime, train_loss, ...), at
/// Trackio's own step, which counts the rows of the run from 0. The first row also writes the run's config:
/// every training argument, model/num_parameters and Trackio's _Username, _Created and _Group.
///
/// A resumed run continues the same Trackio run: the run id, name and next step are saved in each checkpoint,
/// and the rows the interrupted run wrote after its checkpoint are deleted before the first new one.
/// A write that fails (database locked beyond 30 s, full disk, a folder that cannot be created) never stops
/// training: it warns once, is kept and retried in order as `retry` says, and what was never written is reported
/// when training ends. A file that is not a SQLite database, or one from a trackio before run ids, is not retried:
/// each write to it is dropped, with one warning. Only the world process zero writes.
class TrackioCallback : public TrainerCallback {
 public:
  explicit TrackioCallback(TrackerRetryPolicy retry = {})
      : outbox_(std::make_unique<detail::TrackerOutbox>("TrackioCallback", retry, false)) {}

  /// The project database of the current (or last) run; empty before the first event.
  const std::filesystem::path& database() const { return database_; }
  /// Trackio's id of the run (32 hex digits) and its name; empty before the first event.
  const std::string& run_id() const { return run_id_; }
  const std::string& run_name() const { return run_name_; }

  void on_train_begin(const Args& args, const State& state, Control&, const Context& context) override {
    setup(args, state, context);  // every train() is a run of its own, or the resumed one
  }

  void on_log(const Args& args, const State& state, Control&, const Context& context) override {
    if (!initialized_) setup(args, state, context);
    if (!state.is_world_process_zero || !context.logs) return;
    LogEntry kept = LogEntry::object();
    for (const auto& [key, value] : context.logs->items())
      if (!detail::is_single_value_scalar(key)) kept[key] = value;
    LogEntry metrics = detail::rewrite_logs(kept);
    metrics["train/global_step"] = state.global_step;
    log(metrics);
  }

  void on_predict(const Args& args, const State& state, Control&, const Context& context) override {
    if (!initialized_) setup(args, state, context);
    if (!state.is_world_process_zero || !context.metrics) return;
    log(detail::rewrite_logs(*context.metrics));
  }

  /// trackio.finish(): a last attempt at what is still waiting, and a warning naming what was not written.
  void on_train_end(const Args&, const State& state, Control&, const Context&) override {
    if (state.is_world_process_zero && initialized_) outbox_->finish();
  }

  /// When train() throws: the same last attempt, so that what was not written is reported. Trackio keeps no run
  /// status to mark as failed.
  void on_exception(const Args&, const State& state, Control&, const Context&) override {
    if (state.is_world_process_zero && initialized_) outbox_->finish();
  }

  std::optional<nlohmann::json> state() const override {
    return nlohmann::json{{"args", nlohmann::json::object()},
                          {"attributes",
                           {{"run_id", run_id_}, {"run_name", run_name_}, {"next_step", next_step_},
                            {"created", created_}}}};
  }

  void restore_state(const nlohmann::json& saved) override {
    const auto field = [&](const char* key) -> const nlohmann::json* {
      if (!saved.is_object() || !saved.contains("attributes")) return nullptr;
      const auto& attributes = saved["attributes"];
      return attributes.is_object() && attributes.contains(key) ? &attributes[key] : nullptr;
    };
    const auto *run_id = field("run_id"), *run_name = field("run_name"), *next_step = field("next_step"),
               *created = field("created");
    if (!run_id || !run_id->is_string() || !run_name || !run_name->is_string() || !created || !created->is_string() ||
        !next_step || !next_step->is_number_integer() || next_step->get<std::int64_t>() < 0)
      throw FileFormatError(
          "TrackioCallback: the saved state in the checkpoint's trainer_state.json must be {\"attributes\": "
          "{\"run_id\": \"<id>\", \"run_name\": \"<name>\", \"next_step\": <integer >= 0>, \"created\": \"<time>\"}}");
    Identity identity{run_id->get<std::string>(), run_name->get<std::string>(), next_step->get<std::int64_t>(),
                      created->get<std::string>()};
    if (identity.run_id.empty()) {  // a state saved before any run began
      restored_.reset();
      return;
    }
    restored_ = std::move(identity);
  }

 private:
  struct Identity {
    std::string run_id, run_name;
    std::int64_t next_step = 0;
    std::string created;
  };
  struct Target {
    std::filesystem::path dir, database, lock;
  };

  void setup(const Args& args, const State& state, const Context& context) {
    initialized_ = true;
    if (!state.is_world_process_zero) return;
    const std::filesystem::path dir = detail::trackio::trackio_dir();
    const std::string project = detail::trackio::canonical_project_name(args.project);
    target_ = {dir, dir / (project + ".db"), dir / (project + ".lock")};
    database_ = target_.database;
    if (restored_) {
      run_id_ = restored_->run_id;
      run_name_ = restored_->run_name;
      next_step_ = restored_->next_step;
      created_ = restored_->created;
      restored_.reset();
      // What the interrupted run logged after its checkpoint is logged again from here on.
      outbox_->send([target = target_, run_id = run_id_, from = next_step_] {
        write(target, [&](detail::trackio::Database& db) {
          detail::trackio::Statement(db, "DELETE FROM metrics WHERE run_id = ? AND step >= ?")
              .text(1, run_id)
              .integer(2, from)
              .step();
        });
      }, detail::TrackerOutbox::Keep::always);
    } else {
      run_name_ = !args.run_name.empty() ? args.run_name : "trackio-run-" + detail::uuid4_hex().substr(0, 8);
      run_id_ = detail::uuid4_hex();
      next_step_ = 0;
      created_ = detail::utc_isoformat();
      if (!args.run_name.empty()) continue_named_run();
    }
    config_ = run_config(args, context, created_);
  }

  // trackio.init(name=..., resume="allow"): the latest run of that name takes the new rows after its last step.
  // This read runs on the training thread, so it waits for a busy database 2 s rather than trackio's 30 s.
  void continue_named_run() {
    std::error_code ec;
    if (!std::filesystem::exists(target_.database, ec)) return;
    try {
      detail::trackio::Database db(target_.database, false, std::chrono::seconds(2));
      if (!db.has_column("metrics", "run_id")) return;
      detail::trackio::Statement latest(db,
                                        "SELECT run_id, MIN(timestamp) AS created_at FROM metrics WHERE run_name = ? "
                                        "GROUP BY run_id, run_name ORDER BY created_at DESC LIMIT 1");
      if (!latest.text(1, run_name_).step()) return;
      const std::string run_id = latest.text_at(0);
      detail::trackio::Statement last(db, "SELECT MAX(step) FROM metrics WHERE run_id = ?");
      if (last.text(1, run_id).step() && !last.is_null(0)) next_step_ = last.integer_at(0) + 1;
      run_id_ = run_id;
    } catch (const std::exception& e) {
      detail::warn("TrackioCallback: could not look for the run \"" + run_name_ + "\" in " +
                   target_.database.string() + " (" + e.what() + "); logging a new run of that name");
    }
  }

  // HF: the arguments, then model/num_parameters; trackio.Run puts its own keys first.
  static nlohmann::ordered_json run_config(const Args& args, const Context& context, const std::string& created) {
    nlohmann::ordered_json config = nlohmann::ordered_json::object();
    config["_Username"] = nullptr;  // trackio asks the Hub who is logged in; nobody is, offline
    config["_Created"] = created;
    config["_Group"] = nullptr;
    const LogEntry hf_config = detail::tracker_config(args, context.model);
    for (const auto& [key, value] : hf_config.items()) config[key] = value;
    return config;
  }

  void log(const LogEntry& metrics) {
    // trackio.Run.log: keys it uses itself get a "__" prefix.
    LogEntry renamed = LogEntry::object();
    for (const auto& [key, value] : metrics.items()) {
      const bool reserved = key == "project" || key == "run" || key == "timestamp" || key == "step" ||
                            key == "time" || key == "metrics" || key.rfind("__", 0) == 0;
      if (reserved && !warned_reserved_) {
        detail::warn("TrackioCallback: the log key \"" + key + "\" is reserved by Trackio; it is logged as \"__" +
                     key + "\"");
        warned_reserved_ = true;
      }
      renamed[reserved ? "__" + key : key] = value;
    }
    std::optional<std::string> config;  // the run's record: its row is never dropped
    if (config_) {
      config = detail::trackio::compact_json(*config_);
      config_.reset();
    }
    const auto keep = config ? detail::TrackerOutbox::Keep::always : detail::TrackerOutbox::Keep::droppable;
    outbox_->send([target = target_, run_id = run_id_, run_name = run_name_, step = next_step_++,
                   row = detail::trackio::compact_json(renamed), log_id = detail::uuid4_hex(),
                   timestamp = detail::utc_isoformat(), config = std::move(config)] {
      write(target, [&](detail::trackio::Database& db) {
        detail::trackio::Statement(db,
                                   "INSERT OR IGNORE INTO metrics (timestamp, run_id, run_name, step, metrics, "
                                   "log_id, space_id) VALUES (?, ?, ?, ?, ?, ?, NULL)")
            .text(1, timestamp)
            .text(2, run_id)
            .text(3, run_name)
            .integer(4, step)
            .blob(5, row)
            .text(6, log_id)
            .step();
        if (config)
          detail::trackio::Statement(
              db, "INSERT OR REPLACE INTO configs (run_id, run_name, config, created_at) VALUES (?, ?, ?, ?)")
              .text(1, run_id)
              .text(2, run_name)
              .blob(3, *config)
              .text(4, detail::utc_isoformat())
              .step();
      });
    }, keep);
  }

  // One write: the folder, trackio's process lock, its schema, then `work` in a transaction of its own.
  template <typename Work>
  static void write(const Target& target, Work&& work) {
    std::error_code ec;
    std::filesystem::create_directories(target.dir, ec);
    if (ec)
      throw std::runtime_error("cannot create the Trackio folder " + target.dir.string() + ": " + ec.message() +
                               "; set TRACKIO_DIR to a writable folder");
    detail::trackio::ProcessLock lock(target.lock);
    detail::trackio::Database db(target.database, true);
    db.init_schema();
    if (!db.has_column("metrics", "run_id"))
      throw detail::DeliveryRejected("the metrics table of the Trackio database " + target.database.string() +
                                     " has no run_id column (a trackio from before run ids made it); log to "
                                     "another project or TRACKIO_DIR");
    db.exec("BEGIN IMMEDIATE");
    work(db);
    db.exec("COMMIT");
  }

  std::unique_ptr<detail::TrackerOutbox> outbox_;
  bool initialized_ = false, warned_reserved_ = false;
  Target target_;
  std::filesystem::path database_;
  std::string run_id_, run_name_, created_;
  std::int64_t next_step_ = 0;
  std::optional<nlohmann::ordered_json> config_;  // written with the next row
  std::optional<Identity> restored_;
};

namespace detail {
// report_to = "all" takes Trackio only when TRACKIO_DIR says where its databases go.
inline const bool kTrackioRegistered = register_reporting_integration(
    {"trackio", [] { return std::make_shared<TrackioCallback>(); },
     [] { return environment_variable("TRACKIO_DIR").has_value(); }});
}  // namespace detail

}  // namespace torchtrain
