// DVCLiveCallback: DVCLive's files read back by a reader of their own (TSV rows, metrics.json, params.yaml as
// block-style YAML, dvc.yaml) against the run's log_history, a SIGKILLed and resumed run against an
// uninterrupted one, report_to=all inside and outside a DVC repository, and a folder that cannot be written.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <torchtrain/torchtrain.hpp>
#include <torchtrain/callbacks/dvclive.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <regex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "datasets.hpp"
#include "processes.hpp"
#include "support.hpp"

namespace tt = torchtrain;
namespace fs = std::filesystem;

namespace dvclive_tests {

using Row = std::pair<std::int64_t, std::string>;  // (step, value as written)

// The environment variables DVCLiveCallback reads, cleared so that a developer's own cannot change a result.
struct ClearedEnvironment {
  tt_test::ScopedEnv resume{"DVCLIVE_RESUME", nullptr}, root{"DVC_ROOT", nullptr},
      baseline{"DVC_EXP_BASELINE_REV", nullptr}, name{"DVC_EXP_NAME", nullptr},
      log_model{"HF_DVCLIVE_LOG_MODEL", nullptr};
};

// DVCLive's Hugging Face names: every "train_" -> "train/", then every "eval_" -> "eval/".
std::string dvclive_name(std::string key) {
  for (const std::string split : {"train", "eval"}) {
    std::string::size_type pos = 0;
    while ((pos = key.find(split + "_", pos)) != std::string::npos) key.replace(pos, split.size() + 1, split + "/"), pos += split.size() + 1;
  }
  return key;
}

// Metrics that measure time, which differ between two runs of the same training.
bool measures_time(const std::string& name) {
  return name.size() >= 7 && (name.compare(name.size() - 7, 7, "runtime") == 0 || name.find("_per_second") != std::string::npos);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::string::size_type start = 0;
  while (start < text.size()) {
    const auto end = text.find('\n', start);
    REQUIRE(end != std::string::npos);  // every line ends with its newline
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

// Every plots/metrics/**.tsv: metric name (path without .tsv) -> rows. Checks the header: step<TAB><last segment>.
std::map<std::string, std::vector<Row>> read_plots(const fs::path& dir) {
  std::map<std::string, std::vector<Row>> plots;
  const fs::path root = dir / "plots" / "metrics";
  if (!fs::exists(root)) return plots;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file()) continue;
    REQUIRE(entry.path().extension() == ".tsv");
    std::string name = fs::relative(entry.path(), root).generic_string();
    name.resize(name.size() - 4);
    const auto lines = lines_of(tt_test::read_file(entry.path()));
    REQUIRE(!lines.empty());
    CHECK(lines[0] == "step\t" + entry.path().stem().string());
    for (std::size_t i = 1; i < lines.size(); ++i) {
      const auto tab = lines[i].find('\t');
      REQUIRE(tab != std::string::npos);
      plots[name].emplace_back(std::stoll(lines[i].substr(0, tab)), lines[i].substr(tab + 1));
    }
  }
  return plots;
}

// A JSON number against the text Python's str() gave it: the same double.
bool same_number(const nlohmann::json& value, const std::string& text) {
  if (value.is_boolean()) return text == (value.get<bool>() ? "True" : "False");
  if (value.is_number_integer()) return text == value.dump();
  return std::strtod(text.c_str(), nullptr) == value.get<double>() && text.find_first_of("eE.") != std::string::npos;
}

// A reader of the block-style YAML that ruamel.yaml dumps: mappings indented by 2, list dashes at their key's
// column, one-line plain, single- and double-quoted scalars resolved as YAML 1.2's core schema does.
class BlockYaml {
 public:
  static nlohmann::json parse(const std::string& text) {
    BlockYaml reader{lines_of(text)};
    REQUIRE(!reader.lines_.empty());
    nlohmann::json value = reader.block(0);
    CHECK(reader.next_ == reader.lines_.size());  // every line read
    return value;
  }

 private:
  explicit BlockYaml(std::vector<std::string> lines) : lines_(std::move(lines)) {}

  static std::size_t column(const std::string& line) { return line.find_first_not_of(' '); }
  bool item_at(std::size_t col) const {
    return next_ < lines_.size() && column(lines_[next_]) == col && lines_[next_].compare(col, 1, "-") == 0;
  }

  nlohmann::json block(std::size_t col) { return item_at(col) ? sequence(col) : mapping(col); }

  // What follows "key:" or "-" with nothing after it: a nested block, or null.
  nlohmann::json nested(std::size_t col, bool key) {
    if (next_ < lines_.size() && (column(lines_[next_]) > col || (key && item_at(col)))) return block(column(lines_[next_]));
    return nullptr;
  }

  nlohmann::json mapping(std::size_t col) {
    nlohmann::json object = nlohmann::json::object();
    while (next_ < lines_.size() && column(lines_[next_]) == col && !item_at(col)) {
      const std::string line = lines_[next_++].substr(col);
      const auto colon = line.find(':');
      REQUIRE(colon != std::string::npos);
      const std::string key = line.substr(0, colon), rest = line.substr(colon + 1);
      REQUIRE(object.count(key) == 0);
      if (rest.empty()) {
        object[key] = nested(col, true);
      } else {
        REQUIRE(rest[0] == ' ');
        object[key] = scalar(rest.substr(1));
      }
    }
    return object;
  }

  nlohmann::json sequence(std::size_t col) {
    nlohmann::json array = nlohmann::json::array();
    while (item_at(col)) {
      std::string& line = lines_[next_];
      if (line.size() == col + 1) {
        ++next_;
        array.push_back(nested(col, false));
        continue;
      }
      REQUIRE(line[col + 1] == ' ');
      const std::string rest = line.substr(col + 2);
      const bool quoted = rest[0] == '\'' || rest[0] == '"';
      if (!quoted && (rest.find(": ") != std::string::npos || rest.back() == ':')) {
        line.replace(col, 1, " ");  // "- key: value" starts a mapping at col + 2
        array.push_back(mapping(col + 2));
      } else {
        ++next_;
        array.push_back(scalar(rest));
      }
    }
    return array;
  }

  static nlohmann::json scalar(const std::string& text) {
    REQUIRE(!text.empty());
    if (text.front() == '\'') {
      REQUIRE(text.size() >= 2);
      REQUIRE(text.back() == '\'');
      std::string s;
      for (std::size_t i = 1; i + 1 < text.size(); ++i) {
        s += text[i];
        if (text[i] == '\'') ++i;  // '' stands for '
      }
      return s;
    }
    if (text.front() == '"') {
      REQUIRE(text.size() >= 2);
      REQUIRE(text.back() == '"');
      std::string s;
      for (std::size_t i = 1; i + 1 < text.size(); ++i) {
        if (text[i] != '\\') {
          s += text[i];
          continue;
        }
        const char c = text[++i];
        s += c == 'n' ? '\n' : c == 't' ? '\t' : c;  // \\ and \" give themselves
      }
      return s;
    }
    static const std::regex integer("[-+]?[0-9]+"), real("[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?");
    if (text == "true" || text == "false") return text == "true";
    if (text == "null" || text == "~") return nullptr;
    if (text == "{}") return nlohmann::json::object();
    if (text == "[]") return nlohmann::json::array();
    if (text == ".nan") return std::numeric_limits<double>::quiet_NaN();
    if (text == ".inf" || text == "-.inf") return (text[0] == '-' ? -1 : 1) * std::numeric_limits<double>::infinity();
    if (std::regex_match(text, integer)) return std::stoll(text);
    if (std::regex_match(text, real)) return std::strtod(text.c_str(), nullptr);
    return text;
  }

  std::vector<std::string> lines_;
  std::size_t next_ = 0;
};

// Whether the YAML read back stands for `expected`: the same types and values (NaN for NaN), in any key order.
bool same_value(const nlohmann::json& read, const nlohmann::json& expected) {
  if (expected.is_number_float()) {
    if (!read.is_number_float()) return false;
    const double a = read.get<double>(), b = expected.get<double>();
    return a == b || (std::isnan(a) && std::isnan(b));
  }
  if (expected.is_number_integer()) return read.is_number_integer() && read.get<std::int64_t>() == expected.get<std::int64_t>();
  if (expected.is_array()) {
    if (!read.is_array() || read.size() != expected.size()) return false;
    for (std::size_t i = 0; i < expected.size(); ++i)
      if (!same_value(read[i], expected[i])) return false;
    return true;
  }
  if (expected.is_object()) {
    if (!read.is_object() || read.size() != expected.size()) return false;
    for (const auto& [key, value] : expected.items())
      if (!read.contains(key) || !same_value(read[key], value)) return false;
    return true;
  }
  return read == expected;
}

// params.yaml against the arguments: every one, nested values included, and its keys in the file's order.
void check_params(const fs::path& file, const tt::TrainingArguments& args) {
  const auto read = BlockYaml::parse(tt_test::read_file(file));
  const auto fields = args.to_json();
  REQUIRE(read.size() == fields.size());
  for (const auto& [key, value] : fields.items()) {
    INFO(key << " in " << file << ": " << read.value(key, nlohmann::json()).dump() << " for " << value.dump());
    REQUIRE(read.contains(key));
    CHECK(same_value(read.at(key), value));
  }
}

tt::TrainingArguments small_args(const tt_test::TempDir& dir) {
  tt::TrainingArguments a;
  a.output_dir = (dir / "out").string();
  a.run_name = "true";  // a string YAML must quote
  a.disable_tqdm = true;
  a.report_to = {"none"};
  a.per_device_train_batch_size = 4;
  a.max_steps = 8;
  a.logging_steps = 2;
  a.eval_strategy = tt::IntervalStrategy::steps;
  a.eval_steps = 4;
  a.save_strategy = tt::SaveStrategy::no;
  return a;
}

std::vector<tt::LogEntry> train(const tt::TrainingArguments& args, std::shared_ptr<tt::TrainerCallback> callback,
                                std::shared_ptr<tt::TrainerCallback> other = nullptr) {
  torch::manual_seed(0);
  tt::Trainer<tt_test::Mlp, tt_test::Blobs> trainer(tt_test::Mlp(), args, tt_test::Blobs(32, 1), tt_test::Blobs(8, 2));
  trainer.pop_callback<tt::PrinterCallback>();
  if (callback) trainer.add_callback(std::move(callback));
  if (other) trainer.add_callback(std::move(other));
  trainer.train();
  return trainer.state.log_history;
}

// Training that fails at step 3.
struct FailAtStep3 : tt::TrainerCallback {
  void on_step_end(const Args&, const State& state, Control&, const Context&) override {
    if (state.global_step == 3) throw std::runtime_error("the training failed at step 3");
  }
};

std::string worker(const fs::path& dir, const std::string& flags) {
  return "cd '" + dir.string() +
         "' && env -u DVCLIVE_RESUME -u DVC_ROOT -u DVC_EXP_BASELINE_REV -u DVC_EXP_NAME -u HF_DVCLIVE_LOG_MODEL " +
         TORCHTRAIN_TRACKER_WORKER + " --output_dir out " + flags;
}

// metrics.json flattened to its leaves ("/train/loss" -> value), without the values that measure time.
nlohmann::json untimed_metrics(const fs::path& file) {
  nlohmann::json flat = nlohmann::json::parse(tt_test::read_file(file)).flatten();
  for (auto it = flat.begin(); it != flat.end();) it = measures_time(it.key()) ? flat.erase(it) : std::next(it);
  return flat;
}

const char* const kFreshDvcYaml =
    "params:\n- dvclive/params.yaml\nmetrics:\n- dvclive/metrics.json\nplots:\n- dvclive/plots/metrics:\n    x: step\n";

TEST_CASE("dvclive files hold the run's log_history, its arguments and the DVC configuration", "[trackers][dvclive]") {
  ClearedEnvironment environment;
  tt_test::TempDir dir("dvclive");
  const fs::path live = dir / "dvclive";
  // What an earlier run left, which a fresh run deletes, and a dvc.yaml of the user's, which is edited in place.
  fs::create_directories(live / "plots" / "metrics");
  tt_test::write_file(live / "plots" / "metrics" / "stale.tsv", "step\tstale\n0\t1\n");
  tt_test::write_file(live / "metrics.json", "{\"stale\": 1}\n");
  tt_test::write_file(dir / "dvc.yaml",
                      "stages:\n  train:\n    cmd: python train.py\nplots:\n- other.csv\n- dvclive/plots/old:\n    x: step\n");

  const auto args = small_args(dir);
  const auto history = train(args, std::make_shared<tt::DVCLiveCallback>(tt::DVCLiveOptions{live, false, dir / "dvc.yaml"}));
  REQUIRE(history.size() == 7);  // losses at 2, 4, 6, 8, evaluations at 4 and 8, train()'s summary

  // One row per logged value, at DVCLive's step: the index of the log event.
  std::map<std::string, std::vector<std::pair<std::int64_t, nlohmann::json>>> expected;
  for (std::size_t i = 0; i < history.size(); ++i)
    for (const auto& [key, value] : history[i].items())
      if (key != "step") expected[dvclive_name(key)].emplace_back(static_cast<std::int64_t>(i), value);
  CHECK(expected.count("loss") == 1);
  CHECK(expected.count("eval/loss") == 1);
  CHECK(expected.count("train/runtime") == 1);
  const auto plots = read_plots(live);
  CHECK(plots.count("stale") == 0);
  REQUIRE(plots.size() == expected.size());
  for (const auto& [name, rows] : expected) {
    INFO(name);
    REQUIRE(plots.count(name) == 1);
    const auto& written = plots.at(name);
    REQUIRE(written.size() == rows.size());
    for (std::size_t r = 0; r < rows.size(); ++r) {
      CHECK(written[r].first == rows[r].first);
      CHECK(same_number(rows[r].second, written[r].second));
    }
  }

  // metrics.json: json.dump(indent=4) of the latest values nested by '/', and the last step.
  const std::string metrics_text = tt_test::read_file(live / "metrics.json");
  CHECK(metrics_text.rfind("{\n    \"", 0) == 0);
  CHECK(metrics_text.substr(metrics_text.size() - 2) == "}\n");
  const auto metrics = nlohmann::json::parse(metrics_text);
  CHECK(metrics.at("step") == static_cast<std::int64_t>(history.size() - 1));
  CHECK(!metrics.contains("stale"));
  std::size_t leaves = 1;
  for (const auto& [name, rows] : expected) {
    nlohmann::json node = metrics;
    std::string::size_type start = 0, slash;
    while ((slash = name.find('/', start)) != std::string::npos) node = node.at(name.substr(start, slash - start)), start = slash + 1;
    CHECK(node.at(name.substr(start)) == rows.back().second);
    ++leaves;
  }
  CHECK(metrics.flatten().size() == leaves);

  // params.yaml: every argument, as YAML reads it back.
  check_params(live / "params.yaml", args);
  CHECK(tt_test::read_file(live / "params.yaml").find("\nrun_name: 'true'\n") != std::string::npos);

  // dvc.yaml: the user's stage and plot kept, DVCLive's stale entry replaced, its lists added.
  CHECK(tt_test::read_file(dir / "dvc.yaml") ==
        "stages:\n  train:\n    cmd: python train.py\nplots:\n- other.csv\n- dvclive/plots/metrics:\n    x: step\n"
        "params:\n- dvclive/params.yaml\nmetrics:\n- dvclive/metrics.json\n");

  // Values that are not finite, strings, booleans, and values DVCLive cannot log, fed to the callback directly;
  // nested arguments, one of them NaN.
  tt::DVCLiveCallback direct(tt::DVCLiveOptions{dir / "direct", false, dir / "direct.yaml"});
  tt::TrainingArguments plain;
  plain.lr_scheduler_kwargs = {{"eps", std::numeric_limits<double>::quiet_NaN()},
                               {"phases", {{"warm up", {1, 2.5, "- x", "it's"}}, {"none", nlohmann::json::object()}}},
                               {"on", true}};
  plain.include_for_metrics = {"inputs", "loss"};
  tt::TrainerState state;
  tt::TrainerControl control;
  tt::CallbackContext context;
  direct.on_train_begin(plain, state, control, context);
  tt::LogEntry logs;
  logs["eval_x"] = std::numeric_limits<double>::quiet_NaN();
  logs["train_y"] = -std::numeric_limits<double>::infinity();
  logs["note"] = "a\tb";
  logs["flag"] = true;
  logs["list"] = nlohmann::json::array({1, 2});
  context.logs = &logs;
  tt_test::WarningCapture warnings;
  direct.on_log(plain, state, control, context);
  direct.on_train_end(plain, state, control, context);
  CHECK(tt_test::read_file(dir / "direct" / "plots" / "metrics" / "eval" / "x.tsv") == "step\tx\n0\tnan\n");
  CHECK(tt_test::read_file(dir / "direct" / "plots" / "metrics" / "train" / "y.tsv") == "step\ty\n0\t-inf\n");
  CHECK(tt_test::read_file(dir / "direct" / "plots" / "metrics" / "note.tsv") == "step\tnote\n0\t\"a\tb\"\n");
  CHECK(tt_test::read_file(dir / "direct" / "plots" / "metrics" / "flag.tsv") == "step\tflag\n0\tTrue\n");
  CHECK(!fs::exists(dir / "direct" / "plots" / "metrics" / "list.tsv"));
  CHECK(warnings.contains("\"list\""));
  CHECK(tt_test::read_file(dir / "direct" / "metrics.json") ==
        "{\n    \"eval\": {\n        \"x\": \"nan\"\n    },\n    \"train\": {\n        \"y\": \"-inf\"\n    },\n"
        "    \"note\": \"a\\tb\",\n    \"flag\": true,\n    \"step\": 0\n}\n");
  check_params(dir / "direct" / "params.yaml", plain);
  CHECK(tt_test::read_file(dir / "direct" / "params.yaml").find("\n  eps: .nan\n") != std::string::npos);

  // The checkpointed state restores as it was saved; a state of another shape is refused, naming the callback.
  tt::DVCLiveCallback restored;
  restored.restore_state(*direct.state());
  CHECK(*restored.state() == *direct.state());
  CHECK(restored.step() == direct.step());
  CHECK_THROWS_AS(restored.restore_state({{"attributes", {{"step", 3}}}}), tt::FileFormatError);
  CHECK_THROWS_WITH(restored.restore_state({{"attributes", {{"step", -1}, {"summary", nlohmann::json::array()}}}}),
                    Catch::Contains("DVCLiveCallback") && Catch::Contains("\"step\""));
  CHECK_THROWS_WITH(
      restored.restore_state({{"attributes", {{"step", 1}, {"summary", nlohmann::json::array({nlohmann::json::array({"x", 1})})}}}}),
      Catch::Contains("DVCLiveCallback") && Catch::Contains("summary entry"));
  CHECK_THROWS_AS(restored.restore_state(nlohmann::json::array()), tt::FileFormatError);
}

TEST_CASE("dvclive files of a run killed and resumed equal an uninterrupted run's", "[trackers][dvclive]") {
  tt_test::TempDir whole("dvclive-whole"), resumed("dvclive-resumed");
  auto outcome = tt_test::run_command(worker(whole.path(), "--report_to dvclive"));
  REQUIRE(outcome.status == 0);
  outcome = tt_test::run_command(worker(resumed.path(), "--report_to dvclive --kill_after_log_at 7"));
  REQUIRE(outcome.status == 137);  // SIGKILL
  // The killed run got past its checkpoint (step 5, DVCLive step 6): rows that a resume must drop.
  const auto killed = read_plots(resumed / "dvclive");
  REQUIRE(!killed.at("loss").empty());
  CHECK(killed.at("loss").back().first == 7);
  outcome = tt_test::run_command(worker(resumed.path(), "--report_to dvclive --resume_from_checkpoint true"));
  INFO(outcome.output);
  REQUIRE(outcome.status == 0);

  // The same rows, steps and values as the uninterrupted run (the two processes train identically), except
  // for the values that measure time.
  const auto expected = read_plots(whole / "dvclive");
  const auto got = read_plots(resumed / "dvclive");
  REQUIRE(expected.count("loss") == 1);
  CHECK(expected.at("loss").size() == 12);
  CHECK(expected.count("eval/loss") == 1);
  REQUIRE(got.size() == expected.size());
  for (const auto& [name, rows] : expected) {
    INFO(name);
    REQUIRE(got.count(name) == 1);
    const auto& written = got.at(name);
    REQUIRE(written.size() == rows.size());
    for (std::size_t r = 0; r < rows.size(); ++r) {
      CHECK(written[r].first == rows[r].first);
      if (!measures_time(name)) CHECK(written[r].second == rows[r].second);
    }
  }
  CHECK(untimed_metrics(resumed / "dvclive" / "metrics.json") == untimed_metrics(whole / "dvclive" / "metrics.json"));
  CHECK(tt_test::read_file(resumed / "dvclive" / "params.yaml") == tt_test::read_file(whole / "dvclive" / "params.yaml"));
  CHECK(tt_test::read_file(whole / "dvc.yaml") == kFreshDvcYaml);
  CHECK(tt_test::read_file(resumed / "dvc.yaml") == kFreshDvcYaml);
}

TEST_CASE("dvclive joins report_to=all only inside a DVC repository", "[trackers][dvclive]") {
  tt_test::TempDir dir("dvclive-all");
  auto outcome = tt_test::run_command(worker(dir.path(), "--report_to all --max_steps 2"));
  REQUIRE(outcome.status == 0);
  CHECK(!fs::exists(dir / "dvclive"));
  CHECK(!fs::exists(dir / "dvc.yaml"));
  fs::create_directories(dir / ".dvc");
  fs::create_directories(dir / "sub");
  outcome = tt_test::run_command(worker(dir / "sub", "--report_to all --max_steps 2"));
  REQUIRE(outcome.status == 0);
  CHECK(fs::exists(dir / "sub" / "dvclive" / "metrics.json"));
  CHECK(tt_test::read_file(dir / "sub" / "dvc.yaml") == kFreshDvcYaml);
}

TEST_CASE("dvclive keeps training going when its folder cannot be written", "[trackers][dvclive]") {
  ClearedEnvironment environment;
  tt_test::TempDir dir("dvclive-fail");
  tt_test::write_file(dir / "file", "a regular file, not a folder\n");
  const auto args = small_args(dir);
  const tt::DVCLiveOptions unwritable{dir / "file" / "dvclive", false, dir / "file" / "dvc.yaml"};
  const auto tracker_warnings = [](const tt_test::WarningCapture& warnings) {
    std::size_t count = 0;
    for (const auto& message : warnings.messages)
      if (message.find("DVCLiveCallback") != std::string::npos) ++count;
    return count;
  };
  {
    const auto reference = train(args, nullptr);
    std::vector<tt::LogEntry> history;
    tt_test::WarningCapture warnings;
    REQUIRE_NOTHROW(history = train(args, std::make_shared<tt::DVCLiveCallback>(unwritable)));
    REQUIRE(history.size() == reference.size());
    for (std::size_t i = 0; i < history.size(); ++i)
      if (history[i].contains("loss")) CHECK(history[i]["loss"] == reference[i]["loss"]);
    CHECK(tracker_warnings(warnings) == 2);  // the first failure, and what was not delivered at the end
    CHECK(warnings.contains("Not a directory"));
    CHECK(warnings.contains("deliveries were not made"));
  }
  {  // a training that fails: what was not delivered is reported all the same
    tt_test::WarningCapture warnings;
    CHECK_THROWS_WITH(train(args, std::make_shared<tt::DVCLiveCallback>(unwritable), std::make_shared<FailAtStep3>()),
                      Catch::Contains("failed at step 3"));
    CHECK(tracker_warnings(warnings) == 2);
    CHECK(warnings.contains("deliveries were not made"));
  }
}

}  // namespace dvclive_tests
