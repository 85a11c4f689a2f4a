// SPDX-License-Identifier: MIT
// MLflowCallback: the run's arguments and logs in MLflow, as Hugging Face's report_to="mlflow" sends them;
// also report_to "azure_ml" and "dagshub", whose tracking servers speak MLflow's REST API. Needs libcurl: link
// torchtrain::mlflow.
#pragma once

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/http_client.hpp"
#include "torchtrain/detail/mlflow_file_store.hpp"
#include "torchtrain/detail/mlflow_store.hpp"
#include "torchtrain/detail/python_repr.hpp"
#include "torchtrain/detail/tracker_logs.hpp"
#include "torchtrain/detail/tracker_outbox.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/integrations.hpp"
#include "torchtrain/messages.hpp"
#include "torchtrain/tracker_retry_policy.hpp"
#include "torchtrain/trainer_callback.hpp"
#include "torchtrain/training_arguments.hpp"

namespace torchtrain {

/// Sends the arguments as params once and every numeric log value as a metric at state.global_step (keys as
/// logged; characters MLflow refuses become "_"); strings are left out with one warning. Configured as HF's
/// callback and MLflow's client: MLFLOW_TRACKING_URI (http(s):// a tracking server; file:<path> or a path the
/// file store; unset ./mlruns), MLFLOW_EXPERIMENT_NAME (unset: the Default experiment), MLFLOW_RUN_ID (continue
/// that run), MLFLOW_TAGS (a JSON object of tags), MLFLOW_NESTED_RUN (a child run of MLFLOW_RUN_ID),
/// MLFLOW_FLATTEN_PARAMS, MLFLOW_MAX_LOG_PARAMS, MLFLOW_TRACKING_USERNAME / _PASSWORD (basic authentication) or
/// MLFLOW_TRACKING_TOKEN (bearer), MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_SERVER_CERT_PATH,
/// MLFLOW_HTTP_REQUEST_TIMEOUT (seconds, default 120).
///
/// Requests go out from a thread of their own, so a slow or unreachable server never holds the training: what
/// cannot be sent is kept (up to 10000 requests) and sent again with backoff, and train() says at its end what
/// was not delivered. The run id is part of the callback's checkpointed state: a resumed training continues
/// the same run and leaves out the values the run already holds for a step (those the interrupted process sent
/// after its checkpoint), so each metric has each step once. The run ends FINISHED with train(), FAILED when
/// train() throws. Only the world process zero reports.
class MLflowCallback : public TrainerCallback {
 public:
  /// `retry` times the attempts to send again what failed.
  explicit MLflowCallback(TrackerRetryPolicy retry = {}) : retry_(retry) {}
  /// What an evaluate() after train() logged may still be on its way: it gets its chance to go out.
  ~MLflowCallback() override {
    try {
      shut_down();
    } catch (...) {  // a message handler that throws; nothing is left to tell
    }
  }

  /// The run being reported to; empty until the store created or found it.
  std::string run_id() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return run_id_;
  }
  /// Requests waiting to be sent (for tests and progress messages).
  std::size_t pending() const { return outbox_ ? outbox_->pending() : 0; }

  void on_train_begin(const Args& args, const State& state, Control&, const Context&) override {
    if (!state.is_world_process_zero) return;
    resuming_ = state.global_step > 0;
    if (!outbox_ || ended_) setup(args);  // a later train() (a new trial, say) reports to a run of its own
  }

  void on_log(const Args& args, const State& state, Control&, const Context& context) override {
    if (!state.is_world_process_zero || !context.logs) return;
    if (!outbox_) setup(args);
    std::vector<detail::MlflowMetric> metrics;
    const std::int64_t now = detail::unix_millis();
    for (const auto& [key, value] : context.logs->items()) {
      if (value.is_number() || value.is_boolean()) {
        const double number = value.is_boolean() ? double(value.get<bool>()) : value.get<double>();
        metrics.push_back({metric_key(key), number, now, state.global_step});
      } else if (skipped_keys_.insert(key).second) {
        detail::warn("MLflowCallback: the log value of \"" + key + "\" is a " + value.type_name() +
                     "; MLflow's metrics are numbers, so it is left out");
      }
    }
    if (metrics.empty()) return;
    outbox_->send([this, metrics = std::move(metrics)] { log_metrics(metrics); });
    sent_since_finish_ = true;
  }

  void on_train_end(const Args&, const State& state, Control&, const Context&) override {
    if (state.is_world_process_zero) end(detail::MlflowRunStatus::finished);
  }

  void on_exception(const Args&, const State& state, Control&, const Context&) override {
    if (state.is_world_process_zero) end(detail::MlflowRunStatus::failed);
  }

  /// The run id (empty before there is a run), so that a resume continues the run. A checkpoint first waits
  /// (at most 10 s, and not while the store fails) until what was logged before it is delivered: a process
  /// killed after the checkpoint loses only what came later, which the resumed run sends again.
  std::optional<nlohmann::json> state() const override {
    if (outbox_ && !ended_) outbox_->wait_delivered(std::chrono::seconds(10));
    return nlohmann::json{{"args", nlohmann::json::object()}, {"attributes", {{"run_id", run_id()}}}};
  }

  void restore_state(const nlohmann::json& saved) override {
    const auto* id = saved.is_object() && saved.contains("attributes") && saved["attributes"].is_object() &&
                             saved["attributes"].contains("run_id")
                         ? &saved["attributes"]["run_id"]
                         : nullptr;
    if (id == nullptr || !id->is_string())
      throw FileFormatError("MLflowCallback: the saved state must be {\"attributes\": {\"run_id\": \"<id>\"}}");
    restored_run_id_ = id->get<std::string>();
  }

 private:
  // What the store has to do to start reporting, decided once on the training thread.
  struct Opening {
    std::string continue_run;  // a run to continue; else a new one in `experiment`
    std::string experiment, run_name;
    std::int64_t start_time = 0;
    detail::MlflowPairs tags;
    bool skip_logged_steps = false;  // leave out the steps the continued run already holds
  };

  // Everything is read and checked before anything changes: a bad setting leaves the callback as it was.
  void setup(const Args& args) {
    auto store = make_store(detail::environment_variable("MLFLOW_TRACKING_URI").value_or(""));
    Opening opening;
    const auto run_from_environment = detail::environment_variable("MLFLOW_RUN_ID");
    const bool nested = detail::environment_flag("MLFLOW_NESTED_RUN");
    opening.run_name = args.run_name.empty() ? args.output_dir : args.run_name;
    opening.start_time = detail::unix_millis();
    if (!restored_run_id_.empty()) {
      opening.continue_run = std::exchange(restored_run_id_, "");
      opening.skip_logged_steps = resuming_;
    } else if (run_from_environment && !nested) {
      opening.continue_run = *run_from_environment;
      opening.skip_logged_steps = resuming_;
    } else {
      opening.experiment = detail::environment_variable("MLFLOW_EXPERIMENT_NAME").value_or("");
      opening.tags = {{"mlflow.runName", opening.run_name},
                      {"mlflow.user", detail::user_name()},
                      {"mlflow.source.type", "LOCAL"},
                      {"mlflow.source.name", program_name()}};
      if (nested && run_from_environment) opening.tags.emplace_back("mlflow.parentRunId", *run_from_environment);
    }
    for (auto& tag : tags_from_environment()) opening.tags.push_back(std::move(tag));
    const auto params = param_chunks(args);
    if (detail::environment_flag("HF_MLFLOW_LOG_ARTIFACTS"))
      detail::warn("MLflowCallback: HF_MLFLOW_LOG_ARTIFACTS is set, but checkpoints are not uploaded as MLflow "
                   "artifacts; they stay in output_dir");

    shut_down();  // the previous train()'s sender, if any, ends before its store goes
    ended_ = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      run_id_.clear();
    }
    logged_steps_.clear();
    store_ = std::move(store);
    outbox_ = std::make_unique<detail::TrackerOutbox>("MLflowCallback (" + store_->location() + ")", retry_,
                                                      /*background=*/true);
    const auto keep = detail::TrackerOutbox::Keep::always;
    outbox_->send([this, opening] { open(opening); }, keep);
    if (opening.continue_run.empty())  // a continued run has its params: MLflow never changes one
      for (const auto& chunk : params)
        outbox_->send([this, chunk] { store_->log_batch(open_run(), {}, chunk, {}); }, keep);
  }

  // Gives what waits its chance to go out, then stops the sender, cutting short a request that still hangs.
  void shut_down() {
    if (!outbox_) return;
    if (sent_since_finish_) outbox_->finish();
    sent_since_finish_ = false;
    store_->cancel();
    outbox_.reset();
  }

  static std::unique_ptr<detail::MlflowStore> make_store(const std::string& uri) {
    if (uri.rfind("http://", 0) == 0 || uri.rfind("https://", 0) == 0) {
      detail::HttpSettings http;
      http.username = detail::environment_variable("MLFLOW_TRACKING_USERNAME").value_or("");
      http.password = detail::environment_variable("MLFLOW_TRACKING_PASSWORD").value_or("");
      http.bearer_token = detail::environment_variable("MLFLOW_TRACKING_TOKEN").value_or("");
      http.verify_tls = !detail::environment_flag("MLFLOW_TRACKING_INSECURE_TLS");
      http.ca_bundle = detail::environment_variable("MLFLOW_TRACKING_SERVER_CERT_PATH").value_or("");
      if (const auto timeout = detail::environment_variable("MLFLOW_HTTP_REQUEST_TIMEOUT")) {
        try {
          http.timeout_seconds = std::stol(*timeout);
        } catch (const std::exception&) {
          throw ArgumentError("MLFLOW_HTTP_REQUEST_TIMEOUT = \"" + *timeout + "\": must be a number of seconds");
        }
      }
      return std::make_unique<detail::RestStore>(uri, std::move(http));
    }
    if (uri.empty()) return std::make_unique<detail::FileStore>("mlruns");  // MLflow's default
    if (uri.rfind("file://", 0) == 0) return std::make_unique<detail::FileStore>(uri.substr(7));
    if (uri.rfind("file:", 0) == 0) return std::make_unique<detail::FileStore>(uri.substr(5));
    const auto colon = uri.find(':');
    if (colon != std::string::npos && colon > 1 && uri.find('/') > colon)  // a scheme other than file: or http(s):
      throw ArgumentError("MLFLOW_TRACKING_URI = \"" + uri + "\": MLflowCallback speaks MLflow's REST API "
                          "(http:// or https://, e.g. Azure ML's or DagsHub's MLflow endpoint) and the file store "
                          "(file:<path> or a path)");
    return std::make_unique<detail::FileStore>(uri);
  }

  static detail::MlflowPairs tags_from_environment() {
    const auto text = detail::environment_variable("MLFLOW_TAGS");
    if (!text) return {};
    const auto parsed = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_object())
      throw ArgumentError("MLFLOW_TAGS = " + *text + ": must be a JSON object of tags, e.g. {\"team\": \"nlp\"}");
    detail::MlflowPairs tags;
    for (const auto& [key, value] : parsed.items()) tags.emplace_back(key, detail::python_str(value));
    return tags;
  }

  static std::string program_name() {
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    return ec ? std::string("torchtrain") : exe.string();
  }

  // HF's params: every argument as str() would write it, over-long values dropped (MLflow refuses them),
  // MLFLOW_FLATTEN_PARAMS and MLFLOW_MAX_LOG_PARAMS honoured, in requests of MLflow's 100.
  static std::vector<detail::MlflowPairs> param_chunks(const Args& args) {
    constexpr std::size_t kMaxValueLength = 6000, kPerBatch = 100;
    nlohmann::ordered_json all = nlohmann::ordered_json::object();
    const bool flatten = detail::environment_flag("MLFLOW_FLATTEN_PARAMS");
    const std::function<void(const std::string&, const nlohmann::ordered_json&)> add =
        [&](const std::string& key, const nlohmann::ordered_json& value) {
          if (flatten && value.is_object() && !value.empty())
            for (const auto& [sub, inner] : value.items()) add(key + "." + sub, inner);
          else
            all[key] = value;
        };
    const nlohmann::ordered_json arguments = args.to_json();
    for (const auto& [key, value] : arguments.items()) add(key, value);
    detail::MlflowPairs params;
    std::string dropped;
    for (const auto& [key, value] : all.items()) {
      std::string text = detail::python_str(value);
      if (text.size() > kMaxValueLength)
        dropped += (dropped.empty() ? "" : ", ") + key;
      else
        params.emplace_back(key, std::move(text));
    }
    if (!dropped.empty())
      detail::warn("MLflowCallback: the params " + dropped + " are longer than MLflow's 6000 characters and are "
                   "left out; set MLFLOW_FLATTEN_PARAMS to log nested values one by one");
    if (const auto limit = detail::environment_variable("MLFLOW_MAX_LOG_PARAMS");
        limit && limit->size() < 10 && std::all_of(limit->begin(), limit->end(), [](unsigned char c) { return std::isdigit(c); }))
      params.resize(std::min(params.size(), static_cast<std::size_t>(std::stoul(*limit))));
    std::vector<detail::MlflowPairs> chunks;
    for (std::size_t i = 0; i < params.size(); i += kPerBatch)
      chunks.emplace_back(params.begin() + i, params.begin() + std::min(params.size(), i + kPerBatch));
    return chunks;
  }

  // HF v5: characters outside [0-9A-Za-z_-. :/] become "_".
  static std::string metric_key(std::string key) {
    for (char& c : key)
      if (!std::isalnum(static_cast<unsigned char>(c)) && std::string_view("_-. :/").find(c) == std::string_view::npos)
        c = '_';
    return key;
  }

  // ---- on the sending thread -------------------------------------------------------------------------------

  void open(const Opening& opening) {
    std::string id = opening.continue_run;
    if (id.empty()) {
      const std::string experiment = store_->experiment_id(opening.experiment);
      id = store_->create_run(experiment, opening.run_name, opening.start_time, opening.tags);
    } else {
      try {
        const auto latest = store_->resume_run(id);
        if (opening.skip_logged_steps) logged_steps_ = latest;
        if (!opening.tags.empty()) store_->log_batch(id, {}, {}, opening.tags);
      } catch (const detail::DeliveryRejected& e) {  // e.g. the tracking URI changed since the checkpoint
        outbox_->note(MessageLevel::warning, "MLflowCallback: cannot continue run " + id + " (" + e.what() +
                                                 "); reporting to a new run instead");
        const std::string experiment = store_->experiment_id(opening.experiment);
        id = store_->create_run(experiment, opening.run_name, opening.start_time,
                                {{"mlflow.runName", opening.run_name}});
      }
    }
    std::lock_guard<std::mutex> lock(mutex_);
    run_id_ = std::move(id);
  }

  std::string open_run() const {
    std::string id = run_id();
    if (id.empty()) throw detail::DeliveryRejected("no MLflow run to report to: it could not be created or found");
    return id;
  }

  void log_metrics(const std::vector<detail::MlflowMetric>& metrics) {
    constexpr std::size_t kPerBatch = 1000;
    std::vector<detail::MlflowMetric> fresh;
    for (const auto& m : metrics) {
      const auto logged = logged_steps_.find(m.key);
      if (logged == logged_steps_.end() || m.step > logged->second) fresh.push_back(m);
    }
    const std::string id = open_run();
    for (std::size_t i = 0; i < fresh.size(); i += kPerBatch)
      store_->log_batch(id, {fresh.begin() + i, fresh.begin() + std::min(fresh.size(), i + kPerBatch)}, {}, {});
  }

  void end(detail::MlflowRunStatus status) {
    if (!outbox_ || ended_) return;
    outbox_->send([this, status, now = detail::unix_millis()] { store_->end_run(open_run(), status, now); });
    outbox_->finish();
    ended_ = true;
    sent_since_finish_ = false;
  }

  TrackerRetryPolicy retry_;
  std::unique_ptr<detail::MlflowStore> store_;      // used by the sending thread only
  std::map<std::string, std::int64_t> logged_steps_;  // likewise
  mutable std::mutex mutex_;
  std::string run_id_;
  std::string restored_run_id_;
  bool resuming_ = false, ended_ = false, sent_since_finish_ = false;
  std::set<std::string> skipped_keys_;
  std::unique_ptr<detail::TrackerOutbox> outbox_;  // last: its thread stops before the members it uses go
};

namespace detail {

// report_to = all takes MLflow when a tracking URI is set, unless DISABLE_MLFLOW_INTEGRATION (HF's switch).
inline bool mlflow_configured() {
  return environment_variable("MLFLOW_TRACKING_URI").has_value() && !environment_flag("DISABLE_MLFLOW_INTEGRATION");
}

inline const bool kMlflowRegistered =
    register_reporting_integration({"mlflow", [] { return std::make_shared<MLflowCallback>(); }, mlflow_configured});
// Azure ML's and DagsHub's servers speak MLflow's API at the MLFLOW_TRACKING_URI they give; named only, as
// report_to = all would report the run twice.
inline const bool kAzureMlRegistered = register_reporting_integration(
    {"azure_ml", [] { return std::make_shared<MLflowCallback>(); }, [] { return false; }});
inline const bool kDagsHubRegistered = register_reporting_integration(
    {"dagshub", [] { return std::make_shared<MLflowCallback>(); }, [] { return false; }});

}  // namespace detail
}  // namespace torchtrain
