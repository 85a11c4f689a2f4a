// SPDX-License-Identifier: MIT
// MlflowStore: the tracking operations MLflowCallback needs, and RestStore, which performs them through MLflow's
// REST API (/api/2.0/mlflow/..., as MLflow's own client sends them).
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/http_client.hpp"
#include "torchtrain/detail/python_json.hpp"
#include "torchtrain/detail/tracker_outbox.hpp"

namespace torchtrain::detail {

struct MlflowMetric {
  std::string key;
  double value;
  std::int64_t timestamp;  // milliseconds since the Unix epoch
  std::int64_t step;
};

using MlflowPairs = std::vector<std::pair<std::string, std::string>>;  // params or tags, in order

/// The RunStatus values a training sets: its name in the REST API, its number in the file store.
enum class MlflowRunStatus { running = 1, finished = 3, failed = 4 };

inline const char* mlflow_status_name(MlflowRunStatus status) {
  switch (status) {
    case MlflowRunStatus::running: return "RUNNING";
    case MlflowRunStatus::finished: return "FINISHED";
    case MlflowRunStatus::failed: return "FAILED";
  }
  return "RUNNING";
}

/// A tracking store. Each operation throws DeliveryRejected when the store refused the request for good and
/// any other exception when it could not be reached or failed for the moment (the caller retries).
class MlflowStore {
 public:
  virtual ~MlflowStore() = default;
  /// Where the store is, for messages.
  virtual std::string location() const = 0;
  /// The id of the experiment `name` (created when missing); the Default experiment "0" for an empty name.
  virtual std::string experiment_id(const std::string& name) = 0;
  /// A new run; returns its id.
  virtual std::string create_run(const std::string& experiment_id, const std::string& run_name,
                                 std::int64_t start_time, const MlflowPairs& tags) = 0;
  /// Marks an existing run RUNNING again; returns the step of each metric's latest value.
  virtual std::map<std::string, std::int64_t> resume_run(const std::string& run_id) = 0;
  /// At most 1000 metrics and 100 params and tags together (MLflow's batch limits).
  virtual void log_batch(const std::string& run_id, const std::vector<MlflowMetric>& metrics,
                         const MlflowPairs& params, const MlflowPairs& tags) = 0;
  virtual void end_run(const std::string& run_id, MlflowRunStatus status, std::int64_t end_time) = 0;
  /// Ends the operation in progress at once (from any thread): the tracker is shutting down.
  virtual void cancel() {}
};

/// MLflow's REST API at a tracking server (http:// or https://, DagsHub's and Azure ML's MLflow endpoints too).
class RestStore final : public MlflowStore {
 public:
  RestStore(std::string base_url, HttpSettings settings) : base_(std::move(base_url)), http_(std::move(settings)) {
    while (!base_.empty() && base_.back() == '/') base_.pop_back();
  }

  std::string location() const override { return base_; }
  void cancel() override { http_.cancel(); }

  std::string experiment_id(const std::string& name) override {
    if (name.empty()) return "0";
    for (int attempt = 0;; ++attempt) {
      const auto found = call("GET", "experiments/get-by-name?experiment_name=" + http_.escape(name), nullptr,
                              {"RESOURCE_DOES_NOT_EXIST"});
      if (!found.is_null()) return found.at("experiment").at("experiment_id").get<std::string>();
      // Another process may create it between the two requests: then look it up again.
      const auto created = call("POST", "experiments/create", {{"name", name}}, {"RESOURCE_ALREADY_EXISTS"});
      if (!created.is_null()) return created.at("experiment_id").get<std::string>();
      if (attempt > 0) throw std::runtime_error("experiment \"" + name + "\" is neither found nor creatable");
    }
  }

  std::string create_run(const std::string& experiment_id, const std::string& run_name, std::int64_t start_time,
                         const MlflowPairs& tags) override {
    nlohmann::json body{{"experiment_id", experiment_id}, {"start_time", start_time}, {"tags", pairs_json(tags)}};
    if (!run_name.empty()) body["run_name"] = run_name;
    return call("POST", "runs/create", body).at("run").at("info").at("run_id").get<std::string>();
  }

  std::map<std::string, std::int64_t> resume_run(const std::string& run_id) override {
    const auto run = call("GET", "runs/get?run_id=" + http_.escape(run_id), nullptr).at("run");
    call("POST", "runs/update", {{"run_id", run_id}, {"status", "RUNNING"}});
    std::map<std::string, std::int64_t> latest;
    if (run.contains("data") && run.at("data").contains("metrics"))
      for (const auto& metric : run.at("data").at("metrics"))
        latest[metric.at("key").get<std::string>()] = json_int(metric.value("step", nlohmann::json(0)));
    return latest;
  }

  void log_batch(const std::string& run_id, const std::vector<MlflowMetric>& metrics, const MlflowPairs& params,
                 const MlflowPairs& tags) override {
    nlohmann::json body{{"run_id", run_id}};
    auto& list = body["metrics"] = nlohmann::json::array();
    for (const auto& m : metrics) {
      // Protobuf's JSON mapping spells the non-finite doubles as strings; MLflow's own client sends them so.
      const char* non_finite = non_finite_token(m.value);
      const nlohmann::json value = non_finite ? nlohmann::json(non_finite) : nlohmann::json(m.value);
      list.push_back({{"key", m.key}, {"value", value}, {"timestamp", m.timestamp}, {"step", m.step}});
    }
    body["params"] = pairs_json(params);
    body["tags"] = pairs_json(tags);
    call("POST", "runs/log-batch", body);
  }

  void end_run(const std::string& run_id, MlflowRunStatus status, std::int64_t end_time) override {
    call("POST", "runs/update", {{"run_id", run_id}, {"status", mlflow_status_name(status)}, {"end_time", end_time}});
  }

 private:
  static nlohmann::json pairs_json(const MlflowPairs& pairs) {
    auto list = nlohmann::json::array();
    for (const auto& [key, value] : pairs) list.push_back({{"key", key}, {"value", value}});
    return list;
  }

  // int64 fields may come as JSON numbers or, per protobuf's JSON mapping, as strings.
  static std::int64_t json_int(const nlohmann::json& value) {
    return value.is_string() ? std::stoll(value.get<std::string>()) : value.get<std::int64_t>();
  }

  // The response's JSON, or null when it is an error whose code is in `expected`. Throws DeliveryRejected for
  // a request the server refuses for good (4xx but 408 and 429) and runtime_error for the rest.
  nlohmann::json call(const std::string& method, const std::string& endpoint, const nlohmann::json& body,
                      const std::vector<std::string>& expected = {}) {
    const std::string url = base_ + "/api/2.0/mlflow/" + endpoint;
    const HttpResponse response = http_.request(method, url, body.is_null() ? "" : body.dump());
    const auto parsed = nlohmann::json::parse(response.body, nullptr, /*allow_exceptions=*/false);
    if (response.status >= 200 && response.status < 300) {
      if (parsed.is_discarded())
        throw std::runtime_error(method + " " + url + " answered " + std::to_string(response.status) +
                                 " with a body that is not JSON: " + response.body.substr(0, 200));
      return parsed;
    }
    const std::string code = parsed.is_object() ? parsed.value("error_code", "") : "";
    if (std::find(expected.begin(), expected.end(), code) != expected.end()) return nullptr;
    std::string what = method + " " + url + " answered HTTP " + std::to_string(response.status);
    if (!code.empty()) what += " " + code;
    const std::string message = parsed.is_object() ? parsed.value("message", "") : response.body.substr(0, 200);
    if (!message.empty()) what += ": " + message;
    if (response.status >= 400 && response.status < 500 && response.status != 408 && response.status != 429)
      throw DeliveryRejected(what);
    throw std::runtime_error(what);
  }

  std::string base_;
  HttpClient http_;
};

}  // namespace torchtrain::detail
