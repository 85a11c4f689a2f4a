// MLflowCallback: against a loopback MLflow tracking server of the test's own that checks each request against
// MLflow's REST documentation (the real server is not installable here) and fails or stalls on demand; the
// file store read back by a reader written from MLflow's file_store documentation; a SIGKILLed run resumed.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <torchtrain/callbacks/mlflow.hpp>
#include <torchtrain/torchtrain.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "datasets.hpp"
#include "processes.hpp"
#include "support.hpp"

namespace tt = torchtrain;
namespace fs = std::filesystem;

namespace mlflow_tests {

using nlohmann::json;

using tt_test::ScopedEnv;

/// The MLflow variables a developer may have set, cleared so that they cannot change a test (or its workers).
struct NoMlflowEnvironment {
  ScopedEnv uri{"MLFLOW_TRACKING_URI", nullptr}, experiment{"MLFLOW_EXPERIMENT_NAME", nullptr},
      run{"MLFLOW_RUN_ID", nullptr}, nested{"MLFLOW_NESTED_RUN", nullptr}, tags{"MLFLOW_TAGS", nullptr},
      flatten{"MLFLOW_FLATTEN_PARAMS", nullptr}, max_params{"MLFLOW_MAX_LOG_PARAMS", nullptr},
      user{"MLFLOW_TRACKING_USERNAME", nullptr}, password{"MLFLOW_TRACKING_PASSWORD", nullptr},
      token{"MLFLOW_TRACKING_TOKEN", nullptr}, timeout{"MLFLOW_HTTP_REQUEST_TIMEOUT", nullptr},
      artifacts{"HF_MLFLOW_LOG_ARTIFACTS", nullptr}, disabled{"DISABLE_MLFLOW_INTEGRATION", nullptr};
};

struct Metric {
  double value;
  std::int64_t timestamp, step;
};

struct Run {
  std::string experiment_id, name, status = "RUNNING";
  std::int64_t start_time = 0, end_time = 0;
  std::map<std::string, std::string> params, tags;
  std::map<std::string, std::vector<Metric>> metrics;  // in the order received
};

struct Request {
  std::string method, endpoint, authorization;
  json body;  // the JSON body, or the query parameters of a GET
};

/// An MLflow tracking server on 127.0.0.1 holding experiments and runs in memory. Every request is checked
/// against MLflow's REST API reference (endpoints, methods, required fields, types, batch and length limits,
/// key characters); a request that breaks a rule is answered 400 INVALID_PARAMETER_VALUE and listed in
/// violations(). fail_next() and stall_next() make it answer errors or nothing on demand.
class FakeMlflowServer {
 public:
  FakeMlflowServer() {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(listener_ >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(listener_, 16) == 0);
    socklen_t length = sizeof address;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    experiments_["Default"] = "0";
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeMlflowServer() {
    stopping_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    thread_.join();
  }

  std::string uri() const { return "http://127.0.0.1:" + std::to_string(port_); }

  /// The next `count` requests are answered `status` with MLflow's error body.
  void fail_next(int count, int status = 503, std::string code = "TEMPORARILY_UNAVAILABLE") {
    std::lock_guard<std::mutex> lock(mutex_);
    fail_count_ = count;
    fail_status_ = status;
    fail_code_ = std::move(code);
  }
  /// The next `count` requests get no answer for `delay`.
  void stall_next(int count, std::chrono::milliseconds delay) {
    std::lock_guard<std::mutex> lock(mutex_);
    stall_count_ = count;
    stall_ = delay;
  }
  /// log-batch requests carrying a metric named `key` are refused with 400 INVALID_PARAMETER_VALUE.
  void refuse_metric(std::string key) {
    std::lock_guard<std::mutex> lock(mutex_);
    refused_metric_ = std::move(key);
  }

  std::map<std::string, Run> runs() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return runs_;
  }
  std::map<std::string, std::string> experiments() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return experiments_;
  }
  std::vector<Request> requests() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }
  std::vector<std::string> violations() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return violations_;
  }

 private:
  void serve() {
    std::vector<std::thread> connections;
    while (!stopping_) {
      const int client = ::accept(listener_, nullptr, nullptr);
      if (client < 0) break;
      connections.emplace_back([this, client] { converse(client); });
    }
    for (auto& c : connections) c.join();
  }

  // One kept-alive connection: requests until the client closes it.
  void converse(int client) {
    timeval timeout{0, 200000};
    ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    std::string buffer;
    while (!stopping_) {
      std::size_t head_end;
      while ((head_end = buffer.find("\r\n\r\n")) == std::string::npos) {
        if (!receive(client, buffer)) return ::close(client), void();
      }
      const std::string head = buffer.substr(0, head_end);
      std::size_t content_length = 0;
      std::string authorization;
      std::istringstream lines(head);
      std::string request_line, line;
      std::getline(lines, request_line);
      while (std::getline(lines, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        const auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string name = line.substr(0, colon), value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(' '));
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (name == "content-length") content_length = std::stoul(value);
        if (name == "authorization") authorization = value;
      }
      while (buffer.size() < head_end + 4 + content_length)
        if (!receive(client, buffer)) return ::close(client), void();
      const std::string body = buffer.substr(head_end + 4, content_length);
      buffer.erase(0, head_end + 4 + content_length);
      std::istringstream parts(request_line);
      std::string method, target;
      parts >> method >> target;
      auto [status, answer] = handle(method, target, body, authorization);
      if (status == 0) continue;  // stalled: the client timed out and will reconnect
      const std::string response = "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: application/json\r\n"
                                   "Content-Length: " + std::to_string(answer.size()) + "\r\n\r\n" + answer;
      if (::send(client, response.data(), response.size(), MSG_NOSIGNAL) < 0) break;
    }
    ::close(client);
  }

  bool receive(int client, std::string& buffer) {
    char chunk[65536];
    while (!stopping_) {
      const ssize_t n = ::recv(client, chunk, sizeof chunk, 0);
      if (n > 0) {
        buffer.append(chunk, static_cast<std::size_t>(n));
        return true;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return false;
    }
    return false;
  }

  static std::string url_decode(const std::string& text) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '%' && i + 2 < text.size()) {
        out += static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        out += text[i] == '+' ? ' ' : text[i];
      }
    }
    return out;
  }

  static std::pair<int, std::string> error(int status, const std::string& code, const std::string& message) {
    return {status, json{{"error_code", code}, {"message", message}}.dump()};
  }

  std::pair<int, std::string> handle(const std::string& method, const std::string& target, const std::string& body,
                                     const std::string& authorization) {
    std::unique_lock<std::mutex> lock(mutex_);
    const std::string prefix = "/api/2.0/mlflow/";
    std::string path = target, query;
    if (const auto q = target.find('?'); q != std::string::npos) {
      path = target.substr(0, q);
      query = target.substr(q + 1);
    }
    Request request{method, path.rfind(prefix, 0) == 0 ? path.substr(prefix.size()) : path, authorization, nullptr};
    if (method == "GET") {
      request.body = json::object();
      std::istringstream pairs(query);
      for (std::string pair; std::getline(pairs, pair, '&');) {
        const auto eq = pair.find('=');
        request.body[url_decode(pair.substr(0, eq))] = url_decode(pair.substr(eq + 1));
      }
    } else {
      request.body = json::parse(body, nullptr, false);
    }
    requests_.push_back(request);
    if (stall_count_ > 0) {
      --stall_count_;
      const auto delay = stall_;
      lock.unlock();
      std::this_thread::sleep_for(delay);
      return {0, ""};
    }
    if (fail_count_ > 0) {
      --fail_count_;
      return error(fail_status_, fail_code_, "the test asked for this failure");
    }
    const auto bad = [&](const std::string& why) {
      violations_.push_back(method + " " + request.endpoint + ": " + why);
      return error(400, "INVALID_PARAMETER_VALUE", why);
    };
    const json& b = request.body;
    if (b.is_discarded() || !b.is_object()) return bad("the body is not a JSON object");
    const auto expect_method = [&](const char* m) { return method == m; };

    if (request.endpoint == "experiments/get-by-name") {
      if (!expect_method("GET")) return bad("experiments/get-by-name is a GET");
      if (!b.contains("experiment_name")) return bad("experiment_name is required");
      const auto found = experiments_.find(b["experiment_name"].get<std::string>());
      if (found == experiments_.end()) return error(404, "RESOURCE_DOES_NOT_EXIST", "no such experiment");
      return {200, json{{"experiment", {{"experiment_id", found->second}, {"name", found->first},
                                        {"lifecycle_stage", "active"}}}}.dump()};
    }
    if (request.endpoint == "experiments/create") {
      if (!expect_method("POST")) return bad("experiments/create is a POST");
      if (!b.contains("name") || !b["name"].is_string() || b["name"].get<std::string>().empty())
        return bad("name is required");
      if (b["name"].get<std::string>().size() > 500) return bad("an experiment name has at most 500 characters");
      if (experiments_.count(b["name"])) return error(400, "RESOURCE_ALREADY_EXISTS", "the experiment exists");
      const std::string id = std::to_string(100 + experiments_.size());
      experiments_[b["name"]] = id;
      return {200, json{{"experiment_id", id}}.dump()};
    }
    if (request.endpoint == "runs/create") {
      if (!expect_method("POST")) return bad("runs/create is a POST");
      if (!b.contains("experiment_id") || !b["experiment_id"].is_string()) return bad("experiment_id is a string");
      if (b.contains("start_time") && !b["start_time"].is_number_integer()) return bad("start_time is an int64");
      if (const auto problem = check_pairs(b, "tags", 5000)) return bad(*problem);
      Run run;
      run.experiment_id = b["experiment_id"];
      run.name = b.value("run_name", "");
      run.start_time = b.value("start_time", std::int64_t{0});
      for (const auto& tag : b.value("tags", json::array())) run.tags[tag["key"]] = tag["value"];
      const std::string id = "run" + std::to_string(runs_.size());
      runs_[id] = run;
      return {200, json{{"run", {{"info", {{"run_id", id}, {"run_uuid", id}, {"experiment_id", run.experiment_id},
                                           {"status", "RUNNING"}, {"run_name", run.name}}}}}}.dump()};
    }
    if (request.endpoint == "runs/get") {
      if (!expect_method("GET")) return bad("runs/get is a GET");
      const auto run = runs_.find(b.value("run_id", ""));
      if (run == runs_.end()) return error(404, "RESOURCE_DOES_NOT_EXIST", "no such run");
      json metrics = json::array();
      for (const auto& [key, series] : run->second.metrics) {
        const Metric* latest = &series.front();  // MLflow's latest: the highest step, then the newest
        for (const auto& m : series)
          if (m.step > latest->step || (m.step == latest->step && m.timestamp >= latest->timestamp)) latest = &m;
        metrics.push_back({{"key", key}, {"value", latest->value}, {"timestamp", latest->timestamp},
                           {"step", latest->step}});
      }
      return {200, json{{"run", {{"info", {{"run_id", run->first}, {"status", run->second.status}}},
                                 {"data", {{"metrics", metrics}}}}}}.dump()};
    }
    if (request.endpoint == "runs/update") {
      if (!expect_method("POST")) return bad("runs/update is a POST");
      const auto run = runs_.find(b.value("run_id", ""));
      if (run == runs_.end()) return error(404, "RESOURCE_DOES_NOT_EXIST", "no such run");
      static const std::set<std::string> statuses{"RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"};
      if (b.contains("status") && !statuses.count(b["status"].get<std::string>())) return bad("unknown status");
      if (b.contains("end_time") && !b["end_time"].is_number_integer()) return bad("end_time is an int64");
      if (b.contains("status")) run->second.status = b["status"];
      if (b.contains("end_time")) run->second.end_time = b["end_time"];
      return {200, json{{"run_info", {{"run_id", run->first}, {"status", run->second.status}}}}.dump()};
    }
    if (request.endpoint == "runs/log-batch") {
      if (!expect_method("POST")) return bad("runs/log-batch is a POST");
      const auto run = runs_.find(b.value("run_id", ""));
      if (run == runs_.end()) return error(404, "RESOURCE_DOES_NOT_EXIST", "no such run");
      const json metrics = b.value("metrics", json::array()), params = b.value("params", json::array()),
                 tags = b.value("tags", json::array());
      if (metrics.size() > 1000) return bad("at most 1000 metrics per batch");
      if (params.size() > 100) return bad("at most 100 params per batch");
      if (tags.size() > 100) return bad("at most 100 tags per batch");
      if (metrics.size() + params.size() + tags.size() > 1000) return bad("at most 1000 entities per batch");
      if (body.size() > 1000000) return bad("the request is over 1 MB");
      if (const auto problem = check_pairs(b, "params", 6000)) return bad(*problem);
      if (const auto problem = check_pairs(b, "tags", 5000)) return bad(*problem);
      for (const auto& m : metrics) {
        if (!m.contains("key") || !m["key"].is_string()) return bad("a metric needs a string key");
        if (const auto problem = key_problem(m["key"])) return bad(*problem);
        const json& v = m.value("value", json());
        const bool non_finite = v.is_string() && (v == "NaN" || v == "Infinity" || v == "-Infinity");
        if (!(v.is_number() || non_finite) || v.is_boolean()) return bad("a metric value is a double");
        if (!m.value("timestamp", json()).is_number_integer() || m["timestamp"].get<std::int64_t>() < 0)
          return bad("a metric timestamp is a non-negative int64");
        if (m.contains("step") && !m["step"].is_number_integer()) return bad("a metric step is an int64");
        if (m["key"] == refused_metric_) return error(400, "INVALID_PARAMETER_VALUE", "the test refuses this metric");
      }
      for (const auto& p : params) {
        const auto old = run->second.params.find(p["key"]);
        if (old != run->second.params.end() && old->second != p["value"])
          return bad("param " + p["key"].get<std::string>() + " changed its value");
      }
      for (const auto& m : metrics) {
        const json& v = m["value"];
        const double value = v.is_string() ? (v == "NaN" ? std::nan("") : v == "Infinity" ? HUGE_VAL : -HUGE_VAL)
                                           : v.get<double>();
        run->second.metrics[m["key"]].push_back({value, m["timestamp"], m.value("step", std::int64_t{0})});
      }
      for (const auto& p : params) run->second.params[p["key"]] = p["value"];
      for (const auto& t : tags) run->second.tags[t["key"]] = t["value"];
      return {200, "{}"};
    }
    return error(404, "ENDPOINT_NOT_FOUND", method + " " + path + " is not an MLflow endpoint");
  }

  // MLflow's key rules: at most 250 characters of [/\w.\- :], a normalised relative path.
  static std::optional<std::string> key_problem(const std::string& key) {
    static const std::regex allowed(R"(^[/\w.\- :]*$)");
    if (key.empty() || key.size() > 250) return "a key has 1 to 250 characters: " + key;
    if (!std::regex_match(key, allowed)) return "a key has only alphanumerics, _ - . space : /: " + key;
    if (key.front() == '/' || key == "." || key.find("..") != std::string::npos || key.find("//") != std::string::npos)
      return "a key is a normalised relative path: " + key;
    return std::nullopt;
  }

  static std::optional<std::string> check_pairs(const json& body, const char* field, std::size_t max_value) {
    for (const auto& pair : body.value(field, json::array())) {
      if (!pair.contains("key") || !pair["key"].is_string() || !pair.contains("value") || !pair["value"].is_string())
        return std::string(field) + " are {key, value} strings";
      if (const auto problem = key_problem(pair["key"])) return problem;
      if (pair["value"].get<std::string>().size() > max_value)
        return std::string(field) + " values have at most " + std::to_string(max_value) + " characters";
    }
    return std::nullopt;
  }

  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  std::map<std::string, std::string> experiments_;
  std::map<std::string, Run> runs_;
  std::vector<Request> requests_;
  std::vector<std::string> violations_;
  int fail_count_ = 0, fail_status_ = 503, stall_count_ = 0;
  std::string fail_code_, refused_metric_ = "\n";
  std::chrono::milliseconds stall_{0};
  std::thread thread_;
};

// The shell reports a child killed by SIGKILL as 128 + 9.
bool killed_by_signal(const tt_test::Outcome& outcome) { return outcome.status == 128 + SIGKILL; }

// 8 steps of 4 examples, a log every 2 steps, an evaluation every 4, no checkpoints.
tt::TrainingArguments run_args(const tt_test::TempDir& dir) {
  tt::TrainingArguments a;
  a.output_dir = dir.str();
  a.disable_tqdm = true;
  a.report_to = {"mlflow"};
  a.per_device_train_batch_size = 4;
  a.max_steps = 8;
  a.learning_rate = 1e-2;
  a.logging_steps = 2;
  a.eval_strategy = tt::IntervalStrategy::steps;
  a.eval_steps = 4;
  a.save_strategy = tt::SaveStrategy::no;
  a.run_name = "blobs";
  return a;
}

using Trainer = tt::Trainer<tt_test::Mlp, tt_test::Blobs>;

std::unique_ptr<Trainer> make_trainer(const tt::TrainingArguments& args) {
  torch::manual_seed(0);  // the same initial weights for every trainer of a test
  return std::make_unique<Trainer>(tt_test::Mlp(), args, tt_test::Blobs(32, 1), tt_test::Blobs(16, 2));
}

// What MLflow should hold for a log history: each numeric value at its entry's step.
std::map<std::string, std::vector<std::pair<std::int64_t, double>>> expected_metrics(
    const std::vector<tt::LogEntry>& history) {
  std::map<std::string, std::vector<std::pair<std::int64_t, double>>> series;
  for (const auto& entry : history)
    for (const auto& [key, value] : entry.items())
      if (key != "step" && value.is_number()) series[key].emplace_back(entry["step"].get<std::int64_t>(), value.get<double>());
  return series;
}

// A log history without the values that measure time, which differ from run to run.
std::vector<tt::LogEntry> untimed(std::vector<tt::LogEntry> history) {
  for (auto& entry : history)
    for (auto it = entry.begin(); it != entry.end();) {
      const std::string& key = it.key();
      const bool timing = key.find("_runtime") != std::string::npos || key.find("_per_second") != std::string::npos;
      it = timing ? entry.erase(it) : std::next(it);
    }
  return history;
}

std::map<std::string, std::vector<std::pair<std::int64_t, double>>> held_metrics(const Run& run) {
  std::map<std::string, std::vector<std::pair<std::int64_t, double>>> series;
  for (const auto& [key, values] : run.metrics)
    for (const auto& m : values) series[key].emplace_back(m.step, m.value);
  return series;
}

TEST_CASE("MLflow: a run sends its arguments once and every log value at its step, as MLflow's REST API documents",
          "[trackers][mlflow]") {
  NoMlflowEnvironment clean;
  FakeMlflowServer server;
  tt_test::TempDir dir("mlflow-rest");
  ScopedEnv uri("MLFLOW_TRACKING_URI", server.uri());
  ScopedEnv experiment("MLFLOW_EXPERIMENT_NAME", "blobs experiment");
  ScopedEnv tags("MLFLOW_TAGS", R"({"team": "nlp", "release": 2})");
  ScopedEnv token("MLFLOW_TRACKING_TOKEN", "secret");
  auto trainer = make_trainer(run_args(dir));
  trainer->train();

  CHECK(server.violations().empty());
  const auto runs = server.runs();
  REQUIRE(runs.size() == 1);
  const Run& run = runs.begin()->second;
  CHECK(server.experiments().at("blobs experiment") == run.experiment_id);
  CHECK(run.name == "blobs");
  CHECK(run.tags.at("mlflow.runName") == "blobs");
  CHECK(run.tags.at("team") == "nlp");
  CHECK(run.tags.at("release") == "2");
  CHECK(run.status == "FINISHED");
  CHECK(run.end_time >= run.start_time);
  CHECK(run.start_time > 0);

  // Params: every argument, as Python's str() writes it.
  const auto args = trainer->args.to_json();
  CHECK(run.params.size() == args.size());
  CHECK(run.params.at("learning_rate") == "0.01");
  CHECK(run.params.at("max_steps") == "8");
  CHECK(run.params.at("disable_tqdm") == "True");
  CHECK(run.params.at("report_to") == "['mlflow']");
  CHECK(run.params.at("run_name") == "blobs");
  CHECK(run.params.at("metric_for_best_model") == "None");

  CHECK(held_metrics(run) == expected_metrics(trainer->state.log_history));
  CHECK(run.metrics.count("train_runtime") == 1);

  // The request sequence of MLflow's fluent client, authenticated with the token.
  const auto requests = server.requests();
  std::vector<std::string> endpoints;
  for (const auto& r : requests) {
    CHECK(r.authorization == "Bearer secret");
    if (endpoints.empty() || endpoints.back() != r.endpoint) endpoints.push_back(r.endpoint);
  }
  CHECK(endpoints == std::vector<std::string>{"experiments/get-by-name", "experiments/create", "runs/create",
                                              "runs/log-batch", "runs/update"});
  CHECK(requests.back().body.at("status") == "FINISHED");
}

TEST_CASE("MLflow: errors, silence and refusals from the server cost the training nothing", "[trackers][mlflow]") {
  NoMlflowEnvironment clean;
  tt_test::TempDir dir("mlflow-failures");
  auto args = run_args(dir);
  args.report_to = {"none"};
  auto plain = make_trainer(args);
  plain->train();
  const tt::TrackerRetryPolicy quick{std::chrono::milliseconds(20), std::chrono::milliseconds(100), 10000,
                                     std::chrono::seconds(30)};

  SECTION("a server that answers 503, then nothing for longer than the timeout, then recovers gets everything") {
    FakeMlflowServer server;
    ScopedEnv uri("MLFLOW_TRACKING_URI", server.uri());
    ScopedEnv timeout("MLFLOW_HTTP_REQUEST_TIMEOUT", "1");
    server.fail_next(3);
    tt_test::WarningCapture warnings;
    auto trainer = make_trainer(args);
    trainer->add_callback<tt::MLflowCallback>(quick);
    trainer->train();
    CHECK(untimed(trainer->state.log_history) == untimed(plain->state.log_history));
    CHECK(server.violations().empty());
    const auto runs = server.runs();
    REQUIRE(runs.size() == 1);
    CHECK(runs.begin()->second.status == "FINISHED");
    CHECK(held_metrics(runs.begin()->second) == expected_metrics(trainer->state.log_history));
    std::size_t said = 0;
    for (const auto& m : warnings.messages) said += m.find("TEMPORARILY_UNAVAILABLE") != std::string::npos;
    CHECK(said == 1);  // warned once, not once per attempt
    CHECK_FALSE(warnings.contains("were not made"));
  }

  SECTION("a request that times out is sent again") {
    FakeMlflowServer server;
    ScopedEnv uri("MLFLOW_TRACKING_URI", server.uri());
    ScopedEnv timeout("MLFLOW_HTTP_REQUEST_TIMEOUT", "1");
    server.stall_next(1, std::chrono::milliseconds(1500));
    tt_test::WarningCapture warnings;
    auto trainer = make_trainer(args);
    trainer->add_callback<tt::MLflowCallback>(quick);
    trainer->train();
    CHECK(untimed(trainer->state.log_history) == untimed(plain->state.log_history));
    CHECK(warnings.contains("MLflowCallback"));
    CHECK(warnings.contains("timed out"));
    const auto runs = server.runs();
    REQUIRE(runs.size() == 1);
    CHECK(held_metrics(runs.begin()->second) == expected_metrics(trainer->state.log_history));
  }

  SECTION("a refused request is dropped with a warning and the others go on") {
    FakeMlflowServer server;
    ScopedEnv uri("MLFLOW_TRACKING_URI", server.uri());
    server.refuse_metric("eval_loss");
    tt_test::WarningCapture warnings;
    auto trainer = make_trainer(args);
    trainer->add_callback<tt::MLflowCallback>(quick);
    trainer->train();
    const auto runs = server.runs();
    REQUIRE(runs.size() == 1);
    std::vector<tt::LogEntry> delivered;  // all but the entries sent together with eval_loss
    for (const auto& entry : trainer->state.log_history)
      if (!entry.contains("eval_loss")) delivered.push_back(entry);
    CHECK(held_metrics(runs.begin()->second) == expected_metrics(delivered));
    CHECK(warnings.contains("the test refuses this metric"));
    CHECK(warnings.contains("2 were refused"));
  }

  SECTION("no server at all: the run completes and says what was not delivered") {
    int port;
    {
      FakeMlflowServer gone;
      port = std::stoi(gone.uri().substr(gone.uri().rfind(':') + 1));
    }
    ScopedEnv uri("MLFLOW_TRACKING_URI", "http://127.0.0.1:" + std::to_string(port));
    tt_test::WarningCapture warnings;
    auto trainer = make_trainer(args);
    tt::TrackerRetryPolicy brief = quick;
    brief.patience = std::chrono::milliseconds(500);  // the end of training stops trying after it
    trainer->add_callback<tt::MLflowCallback>(brief);
    trainer->train();
    CHECK(untimed(trainer->state.log_history) == untimed(plain->state.log_history));
    CHECK(warnings.contains("deliveries were not made"));
  }
}

// A reader of MLflow's file store, from its documented layout: meta.yaml files of `key: value` lines,
// metrics/<key> lines of "timestamp value step", params/<key> and tags/<key> files of raw values.
std::map<std::string, std::string> read_yaml(const fs::path& path) {
  std::map<std::string, std::string> values;
  std::istringstream lines(tt_test::read_file(path));
  for (std::string line; std::getline(lines, line);) {
    const auto colon = line.find(": ");
    REQUIRE(colon != std::string::npos);
    std::string value = line.substr(colon + 2);
    if (value.size() >= 2 && value.front() == '\'') value = value.substr(1, value.size() - 2);
    values[line.substr(0, colon)] = value;
  }
  return values;
}

Run read_file_store_run(const fs::path& run_dir) {
  Run run;
  const auto meta = read_yaml(run_dir / "meta.yaml");
  run.experiment_id = meta.at("experiment_id");
  run.name = meta.at("run_name");
  run.status = meta.at("status");
  run.start_time = std::stoll(meta.at("start_time"));
  run.end_time = meta.at("end_time") == "null" ? 0 : std::stoll(meta.at("end_time"));
  for (const auto& entry : fs::recursive_directory_iterator(run_dir / "metrics")) {
    if (!entry.is_regular_file()) continue;
    std::istringstream lines(tt_test::read_file(entry.path()));
    for (std::string line; std::getline(lines, line);) {
      std::istringstream fields(line);
      std::string value;
      Metric m{};
      fields >> m.timestamp >> value >> m.step;
      m.value = value == "nan" ? std::nan("") : std::stod(value);
      run.metrics[entry.path().lexically_relative(run_dir / "metrics").generic_string()].push_back(m);
    }
  }
  for (const char* kind : {"params", "tags"})
    for (const auto& entry : fs::directory_iterator(run_dir / kind))
      (std::string(kind) == "params" ? run.params : run.tags)[entry.path().filename().string()] =
          tt_test::read_file(entry.path());
  return run;
}

// The run folders of a file store, in every experiment.
std::vector<fs::path> run_folders(const fs::path& root) {
  std::vector<fs::path> runs;
  for (const auto& experiment : fs::directory_iterator(root))
    if (experiment.is_directory() && experiment.path().filename() != ".trash")
      for (const auto& run : fs::directory_iterator(experiment.path()))
        if (run.is_directory() && fs::exists(run.path() / "meta.yaml")) runs.push_back(run.path());
  return runs;
}

TEST_CASE("MLflow: a file: tracking URI writes MLflow's file-store layout", "[trackers][mlflow]") {
  NoMlflowEnvironment clean;
  tt_test::TempDir dir("mlflow-files");
  const fs::path root = dir / "mlruns";
  ScopedEnv uri("MLFLOW_TRACKING_URI", "file://" + root.string());
  ScopedEnv experiment("MLFLOW_EXPERIMENT_NAME", "blobs");
  auto args = run_args(dir);
  args.run_name = "Off";  // YAML 1.1 reads it as false unless it is quoted
  auto trainer = make_trainer(args);
  trainer->train();

  const auto default_meta = read_yaml(root / "0" / "meta.yaml");
  CHECK(default_meta.at("name") == "Default");
  CHECK(default_meta.at("experiment_id") == "0");
  CHECK(default_meta.at("lifecycle_stage") == "active");
  CHECK(fs::is_directory(root / ".trash"));
  const auto runs = run_folders(root);
  REQUIRE(runs.size() == 1);
  const fs::path run_dir = runs.front();
  const auto experiment_meta = read_yaml(run_dir.parent_path() / "meta.yaml");
  CHECK(experiment_meta.at("name") == "blobs");
  CHECK(std::regex_match(experiment_meta.at("experiment_id"), std::regex("[1-9][0-9]{17}")));
  CHECK(experiment_meta.at("artifact_location") == "file://" + run_dir.parent_path().string());
  const auto meta = read_yaml(run_dir / "meta.yaml");
  CHECK(std::regex_match(meta.at("run_id"), std::regex("[0-9a-f]{32}")));
  CHECK(meta.at("run_uuid") == meta.at("run_id"));
  CHECK(run_dir.filename() == meta.at("run_id"));
  CHECK(meta.at("artifact_uri") == "file://" + (run_dir / "artifacts").string());
  CHECK(meta.at("source_type") == "4");
  CHECK(fs::is_directory(run_dir / "artifacts"));

  CHECK(tt_test::read_file(run_dir / "meta.yaml").find("\nrun_name: 'Off'\n") != std::string::npos);
  const Run run = read_file_store_run(run_dir);
  CHECK(run.status == "3");  // FINISHED
  CHECK(run.end_time >= run.start_time);
  CHECK(run.name == "Off");
  CHECK(run.tags.at("mlflow.runName") == "Off");
  CHECK(run.params.at("learning_rate") == "0.01");
  CHECK(run.params.size() == trainer->args.to_json().size());
  CHECK(held_metrics(run) == expected_metrics(trainer->state.log_history));
}

TEST_CASE("MLflow: a training killed with SIGKILL and resumed continues its run with each step once",
          "[trackers][mlflow]") {
  NoMlflowEnvironment clean;
  const auto worker = [](const std::string& env, const fs::path& out, const std::string& extra) {
    const auto outcome = tt_test::run_command(env + " " TORCHTRAIN_TRACKER_WORKER " --report_to mlflow --output_dir " +
                                              out.string() + " " + extra);
    return outcome;
  };
  const auto check_resumed = [](const Run& whole, const Run& resumed) {
    const auto untimed_series = [](const Run& run) {
      auto series = held_metrics(run);
      for (auto it = series.begin(); it != series.end();)
        it = it->first.find("_runtime") != std::string::npos || it->first.find("_per_second") != std::string::npos
                 ? series.erase(it)
                 : std::next(it);
      return series;
    };
    const auto series = untimed_series(resumed);
    CHECK(series == untimed_series(whole));
    CHECK(series.at("loss").size() == 12);  // each step once
    CHECK(resumed.status == whole.status);
    auto params = resumed.params;
    params.at("output_dir") = whole.params.at("output_dir");  // the one argument the two runs differ in
    CHECK(params == whole.params);
  };

  SECTION("a tracking server") {
    FakeMlflowServer server;
    tt_test::TempDir dir("mlflow-kill-rest");
    const std::string env = "MLFLOW_TRACKING_URI=" + server.uri();
    REQUIRE(worker(env, dir / "whole", "").status == 0);
    const auto killed = worker(env, dir / "killed", "--kill_after_log_at 7");
    REQUIRE(killed_by_signal(killed));
    REQUIRE(worker(env, dir / "killed", "--resume_from_checkpoint true").status == 0);
    CHECK(server.violations().empty());
    const auto runs = server.runs();
    REQUIRE(runs.size() == 2);  // one per training, the resumed one continued
    check_resumed(runs.at("run0"), runs.at("run1"));
    CHECK(runs.at("run1").status == "FINISHED");
  }

  SECTION("the file store") {
    tt_test::TempDir dir("mlflow-kill-files");
    const std::string whole_env = "MLFLOW_TRACKING_URI=file:" + (dir / "whole-runs").string();
    const std::string killed_env = "MLFLOW_TRACKING_URI=file:" + (dir / "killed-runs").string();
    REQUIRE(worker(whole_env, dir / "whole", "").status == 0);
    REQUIRE(killed_by_signal(worker(killed_env, dir / "killed", "--kill_after_log_at 7")));
    REQUIRE(worker(killed_env, dir / "killed", "--resume_from_checkpoint true").status == 0);
    const auto whole = run_folders(dir / "whole-runs"), resumed = run_folders(dir / "killed-runs");
    REQUIRE(whole.size() == 1);
    REQUIRE(resumed.size() == 1);
    check_resumed(read_file_store_run(whole.front()), read_file_store_run(resumed.front()));
  }
}

TEST_CASE("MLflow: report_to all takes it only with a tracking URI; azure_ml and dagshub only by name",
          "[trackers][mlflow]") {
  NoMlflowEnvironment clean;
  const auto names = [](const std::vector<std::string>& report_to) {
    std::vector<std::string> mlflow;
    for (const auto& cb : tt::get_reporting_integration_callbacks(report_to))
      if (cb->name() == "MLflowCallback") mlflow.push_back(cb->name());
    return mlflow.size();
  };
  CHECK(names({"all"}) == 0);
  CHECK(names({"mlflow"}) == 1);
  CHECK(names({"azure_ml"}) == 1);
  CHECK(names({"dagshub"}) == 1);
  ScopedEnv uri("MLFLOW_TRACKING_URI", "http://127.0.0.1:1");
  CHECK(names({"all"}) == 1);  // mlflow; azure_ml and dagshub would report the same run twice
  ScopedEnv disabled("DISABLE_MLFLOW_INTEGRATION", "TRUE");
  CHECK(names({"all"}) == 0);
}

TEST_CASE("MLflow: a resumed training whose run is gone from the store reports to a new run, with a warning",
          "[trackers][mlflow]") {
  NoMlflowEnvironment clean;
  tt_test::TempDir dir("mlflow-gone");
  ScopedEnv uri("MLFLOW_TRACKING_URI", "file:" + (dir / "first").string());
  auto args = run_args(dir);
  args.save_strategy = tt::SaveStrategy::steps;
  args.save_steps = 4;
  make_trainer(args)->train();
  ScopedEnv other("MLFLOW_TRACKING_URI", "file:" + (dir / "second").string());
  tt_test::WarningCapture warnings;
  auto resumed = make_trainer(args);
  resumed->train((dir / "checkpoint-4").string());
  CHECK(warnings.contains("reporting to a new run instead"));
  const auto runs = run_folders(dir / "second");
  REQUIRE(runs.size() == 1);
  const Run run = read_file_store_run(runs.front());
  CHECK(run.status == "3");
  CHECK(run.metrics.at("loss").back().step == 8);
}

}  // namespace mlflow_tests
