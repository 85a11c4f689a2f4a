// TrackioCallback: the project database read back with SQLite and the queries of trackio's dashboard
// (sqlite_storage.py: get_projects, get_run_records, get_logs, get_run_config), its schema against trackio's
// init_db, a killed and resumed run against an uninterrupted one, a database folder that cannot be made, and a
// file that is not a database.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <torchtrain/callbacks/trackio.hpp>
#include <torchtrain/torchtrain.hpp>

#include <cmath>
#include <limits>
#include <optional>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <sqlite3.h>

#include "datasets.hpp"
#include "processes.hpp"
#include "support.hpp"

namespace tt = torchtrain;
namespace fs = std::filesystem;

namespace trackio_tests {

using Row = std::vector<std::optional<std::string>>;

// Every row of `sql` on the database at `path`, columns as text (NULL as nothing).
std::vector<Row> query(const fs::path& path, const std::string& sql, const std::vector<std::string>& binds = {}) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  INFO(sql);
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK);
  for (std::size_t i = 0; i < binds.size(); ++i)
    sqlite3_bind_text(stmt, static_cast<int>(i + 1), binds[i].c_str(), -1, SQLITE_TRANSIENT);
  std::vector<Row> rows;
  int rc = 0;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    Row row;
    for (int c = 0; c < sqlite3_column_count(stmt); ++c) {
      const auto* text = sqlite3_column_text(stmt, c);
      if (text == nullptr)
        row.emplace_back();
      else
        row.emplace_back(std::string(reinterpret_cast<const char*>(text),
                                     static_cast<std::size_t>(sqlite3_column_bytes(stmt, c))));
    }
    rows.push_back(std::move(row));
  }
  CHECK(rc == SQLITE_DONE);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return rows;
}

// A row as one line, for comparing and printing.
std::string joined(const Row& row) {
  std::string out;
  for (const auto& cell : row) out += (out.empty() ? "" : " | ") + cell.value_or("NULL");
  return out;
}

// get_run_records: the (run_id, run_name) pairs of metrics, by their first time stamp.
std::vector<Row> runs(const fs::path& db) {
  return query(db,
               "SELECT run_id, run_name, MIN(timestamp) AS created_at FROM metrics GROUP BY run_id, run_name "
               "ORDER BY created_at ASC");
}

// get_logs of one run, with the step and what SQLite holds the JSON as.
std::vector<Row> logs(const fs::path& db, const std::string& run_id) {
  return query(db, "SELECT step, metrics, timestamp, log_id, typeof(metrics) FROM metrics WHERE run_id = ? "
                   "ORDER BY timestamp, id",
               {run_id});
}

// What HF's TrackioCallback logs for a log_history entry: summary values dropped, train/ eval/ test/ prefixes,
// train/global_step; trackio stores NaN and the infinities as strings.
nlohmann::json expected_row(const nlohmann::ordered_json& entry) {
  static const std::set<std::string> summary{"train_runtime", "train_samples_per_second", "train_steps_per_second",
                                             "train_loss", "total_flos"};
  nlohmann::json row = nlohmann::json::object();
  for (const auto& [key, value] : entry.items()) {
    if (key == "step" || summary.count(key)) continue;
    std::string name = key.rfind("eval_", 0) == 0   ? "eval/" + key.substr(5)
                       : key.rfind("test_", 0) == 0 ? "test/" + key.substr(5)
                                                    : "train/" + key;
    nlohmann::json v = value;
    if (value.is_number_float() && !std::isfinite(value.get<double>()))
      v = std::isnan(value.get<double>()) ? "NaN" : value.get<double>() > 0 ? "Infinity" : "-Infinity";
    row[name] = v;
  }
  row["train/global_step"] = entry.at("step");
  return row;
}

// The variables the tracker reads that a test does not set, cleared so that the developer's own cannot change
// the result; tracker_worker runs inherit the cleared environment.
struct CleanEnvironment {
  tt_test::ScopedEnv journal{"TRACKIO_SQLITE_JOURNAL_MODE", nullptr}, synchronous{"TRACKIO_SQLITE_SYNCHRONOUS", nullptr},
      temp_store{"TRACKIO_SQLITE_TEMP_STORE", nullptr}, mmap{"TRACKIO_SQLITE_MMAP_SIZE", nullptr},
      locking{"TRACKIO_SQLITE_LOCKING_MODE", nullptr};
};

// A row without the values that measure time (eval/runtime, eval/samples_per_second, ...).
nlohmann::json without_timing(nlohmann::json row) {
  for (auto it = row.begin(); it != row.end();) {
    const std::string& key = it.key();
    const bool timing = (key.size() >= 7 && key.compare(key.size() - 7, 7, "runtime") == 0) ||
                        (key.size() >= 10 && key.compare(key.size() - 10, 10, "per_second") == 0);
    it = timing ? row.erase(it) : std::next(it);
  }
  return row;
}

// Throws out of train() once `step` steps are done.
struct ThrowAtStep : tt::TrainerCallback {
  explicit ThrowAtStep(std::int64_t step) : step(step) {}
  void on_step_end(const Args&, const State& state, Control&, const Context&) override {
    if (state.global_step == step) throw std::runtime_error("stopped by the test");
  }
  std::int64_t step;
};

tt::TrainingArguments args_in(const tt_test::TempDir& dir) {
  tt::TrainingArguments a;
  a.output_dir = (dir / "out").string();
  a.disable_tqdm = true;
  a.report_to = {"trackio"};
  a.per_device_train_batch_size = 4;
  a.max_steps = 10;
  a.logging_steps = 2;
  a.eval_strategy = tt::IntervalStrategy::steps;
  a.eval_steps = 4;
  a.save_strategy = tt::SaveStrategy::no;
  return a;
}

using Trainer = tt::Trainer<tt_test::Mlp, tt_test::Blobs>;

std::unique_ptr<Trainer> make_trainer(const tt::TrainingArguments& args) {
  torch::manual_seed(0);
  auto trainer = std::make_unique<Trainer>(tt_test::Mlp(), args, tt_test::Blobs(40, 1), tt_test::Blobs(16, 2));
  trainer->pop_callback<tt::PrinterCallback>();
  return trainer;
}

const std::regex kHex32("[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}");
const std::regex kUtcIso(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00)");

TEST_CASE("trackio: a run reads back through the dashboard's queries as log_history", "[trackers][trackio]") {
  tt_test::TempDir dir("trackio");
  const CleanEnvironment clean;
  const tt_test::ScopedEnv env("TRACKIO_DIR", (dir / "tracking").string());  // created by the first write
  auto args = args_in(dir);
  args.project = "my.project!";
  auto trainer = make_trainer(args);
  trainer->train();
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  trainer->log({{"eval_odd", nan}, {"eval_big", inf}, {"eval_small", -inf}});  // after train(): the same run

  // get_projects: the *.db files of TRACKIO_DIR; trackio's lock file beside it.
  std::vector<std::string> projects;
  for (const auto& file : fs::directory_iterator(dir / "tracking"))
    if (file.path().extension() == ".db") projects.push_back(file.path().stem().string());
  REQUIRE(projects == std::vector<std::string>{"myproject"});
  CHECK(fs::exists(dir / "tracking" / "myproject.lock"));
  const fs::path db = dir / "tracking" / "myproject.db";
  CHECK(query(db, "PRAGMA journal_mode")[0][0] == "wal");

  const auto all_runs = runs(db);
  REQUIRE(all_runs.size() == 1);
  const std::string run_id = *all_runs[0][0];
  CHECK(std::regex_match(run_id, kHex32));
  CHECK(std::regex_match(*all_runs[0][1], std::regex("trackio-run-[0-9a-f]{8}")));

  const auto& history = trainer->state.log_history;
  const auto rows = logs(db, run_id);
  REQUIRE(rows.size() == history.size());
  std::set<std::string> log_ids;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    INFO("row " << i << ": " << *rows[i][1]);
    CHECK(*rows[i][0] == std::to_string(i));  // trackio's own step: 0, 1, 2, ...
    CHECK(nlohmann::json::parse(*rows[i][1]) == expected_row(history[i]));
    CHECK(std::regex_match(*rows[i][2], kUtcIso));
    CHECK(std::regex_match(*rows[i][3], kHex32));
    CHECK(*rows[i][4] == "blob");  // as orjson's bytes are stored
    log_ids.insert(*rows[i][3]);
  }
  CHECK(log_ids.size() == rows.size());
  CHECK(rows.back()[1]->find(R"("eval/odd":"NaN","eval/big":"Infinity","eval/small":"-Infinity")") !=
        std::string::npos);

  // get_run_config: by run_id, one row.
  const auto configs = query(db, "SELECT config, run_name, created_at FROM configs WHERE run_id = ?", {run_id});
  REQUIRE(configs.size() == 1);
  CHECK(configs[0][1] == all_runs[0][1]);
  CHECK(std::regex_match(*configs[0][2], kUtcIso));
  const auto config = nlohmann::json::parse(*configs[0][0]);
  CHECK(config.at("_Username").is_null());
  CHECK(config.at("_Group").is_null());
  CHECK(std::regex_match(config.at("_Created").get<std::string>(), kUtcIso));
  CHECK(config.at("model/num_parameters") == 4 * 16 + 16 + 16 * 2 + 2);
  const nlohmann::json arguments = args.to_json();
  for (const auto& [key, value] : arguments.items()) {
    INFO(key);
    CHECK(config.at(key) == value);
  }
  CHECK(config.at("project") == "my.project!");
}

TEST_CASE("trackio: tables and indexes are trackio's, and a named run is continued", "[trackers][trackio]") {
  tt_test::TempDir dir("trackio");
  const CleanEnvironment clean;
  const tt_test::ScopedEnv env("TRACKIO_DIR", dir.str());
  auto args = args_in(dir);
  args.run_name = "fixed";
  args.max_steps = 4;
  auto first = make_trainer(args);
  first->train();
  auto second = make_trainer(args);  // trackio.init(name="fixed", resume="allow") continues it
  second->train();
  const fs::path db = dir / "huggingface.db";

  // trackio/sqlite_storage.py init_db, with the columns its ALTER TABLE statements add.
  // Each column as "name type notnull default pk".
  const auto columns = [&](const std::string& table) {
    std::vector<std::string> out;
    for (const auto& r : query(db, "PRAGMA table_info(" + table + ")"))
      out.push_back(*r[1] + " " + *r[2] + " " + *r[3] + " " + r[4].value_or("-") + " " + *r[5]);
    return out;
  };
  CHECK(columns("metrics") == std::vector<std::string>{"id INTEGER 0 - 1", "run_id TEXT 1 - 0", "timestamp TEXT 1 - 0",
                                                       "run_name TEXT 1 - 0", "step INTEGER 1 - 0",
                                                       "metrics TEXT 1 - 0", "log_id TEXT 0 - 0",
                                                       "space_id TEXT 0 - 0"});
  CHECK(columns("configs") == std::vector<std::string>{"id INTEGER 0 - 1", "run_id TEXT 1 - 0", "run_name TEXT 1 - 0",
                                                       "config TEXT 1 - 0", "created_at TEXT 1 - 0"});
  CHECK(columns("pending_uploads") ==
        std::vector<std::string>{"id INTEGER 0 - 1", "space_id TEXT 1 - 0", "run_id TEXT 0 - 0", "run_name TEXT 0 - 0",
                                 "step INTEGER 0 - 0", "file_path TEXT 1 - 0", "relative_path TEXT 0 - 0",
                                 "created_at TEXT 1 - 0", "kind TEXT 1 'media' 0", "digest TEXT 0 - 0"});
  CHECK(columns("alerts")[6] == "level TEXT 1 'warn' 0");
  std::set<std::string> tables, indexes;
  for (const auto& r : query(db, "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
    (*r[0] == "table" ? tables : indexes).insert(*r[1]);
  CHECK(tables == std::set<std::string>{"metrics", "configs", "system_metrics", "traces", "project_metadata",
                                        "pending_uploads", "alerts", "artifacts", "artifact_versions",
                                        "artifact_aliases", "run_artifact_links"});
  CHECK(indexes == std::set<std::string>{
                       "idx_run_artifact_links_run", "idx_run_artifact_links_name", "idx_run_artifact_links_version",
                       "idx_run_artifact_links_unique", "idx_pending_uploads_kind", "idx_metrics_run_step",
                       "idx_metrics_run_timestamp", "idx_configs_run_name", "idx_system_metrics_run_timestamp",
                       "idx_traces_run_step", "idx_traces_run_timestamp", "idx_traces_search", "idx_alerts_run",
                       "idx_alerts_timestamp", "idx_alerts_alert_id", "idx_metrics_log_id", "idx_metrics_pending",
                       "idx_system_metrics_log_id", "idx_system_metrics_pending"});
  CHECK(query(db, "SELECT sql FROM sqlite_master WHERE name = 'idx_metrics_log_id'")[0][0]->find(
            "WHERE log_id IS NOT NULL") != std::string::npos);

  // One run "fixed": the second train()'s rows follow the first's.
  const auto all_runs = runs(db);
  REQUIRE(all_runs.size() == 1);
  CHECK(all_runs[0][1] == "fixed");
  const auto rows = logs(db, *all_runs[0][0]);
  const auto& h1 = first->state.log_history;
  const auto& h2 = second->state.log_history;
  REQUIRE(rows.size() == h1.size() + h2.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    CHECK(*rows[i][0] == std::to_string(i));
    CHECK(nlohmann::json::parse(*rows[i][1]) == expected_row(i < h1.size() ? h1[i] : h2[i - h1.size()]));
  }
  CHECK(query(db, "SELECT COUNT(*) FROM configs")[0][0] == "1");
}

TEST_CASE("trackio: a killed and resumed run holds each step once, as the uninterrupted run", "[trackers][trackio]") {
  tt_test::TempDir dir("trackio");
  const CleanEnvironment clean;
  const auto worker = [&](const std::string& name, const std::string& extra) {
    return tt_test::run_command("TRACKIO_DIR=" + (dir / name / "tracking").string() + " " TORCHTRAIN_TRACKER_WORKER
                                " --report_to trackio --output_dir " + (dir / name / "out").string() + " " + extra);
  };
  const auto rows_of = [&](const std::string& name) {
    const fs::path db = dir / name / "tracking" / "huggingface.db";
    const auto all_runs = runs(db);
    REQUIRE(all_runs.size() == 1);
    CHECK(query(db, "SELECT COUNT(*) FROM configs WHERE run_id = ?", {*all_runs[0][0]})[0][0] == "1");
    return logs(db, *all_runs[0][0]);
  };
  // The log_history of a checkpoint the run saved after its resume point.
  const auto history_of = [&](const std::string& name) {
    const fs::path file = dir / name / "out" / "checkpoint-10" / "trainer_state.json";
    const auto saved = nlohmann::json::parse(tt_test::read_file(file));
    return saved.at("log_history");
  };
  REQUIRE(worker("straight", "").status == 0);
  REQUIRE(worker("resumed", "--kill_after_log_at 7").status == 137);  // the shell's report of SIGKILL
  // Steps 1-5 and the evaluation of step 4 are rows 0-5 (checkpoint-5); the killed run went on to row 7.
  const auto killed = rows_of("resumed");
  REQUIRE(killed.size() == 8);
  const auto resumed_run = worker("resumed", "--resume_from_checkpoint true");
  INFO(resumed_run.output);
  REQUIRE(resumed_run.status == 0);

  const auto expected = rows_of("straight"), got = rows_of("resumed");
  REQUIRE(expected.size() == 12 + 3 + 1);  // a loss per step, 3 evaluations, the closing epoch
  REQUIRE(got.size() == expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("row " << i << ": " << *got[i][1]);
    CHECK(*got[i][0] == std::to_string(i));
    // The workers train identically (seeded), so every value but the timings is the uninterrupted run's.
    const auto g = nlohmann::json::parse(*got[i][1]), e = nlohmann::json::parse(*expected[i][1]);
    std::set<std::string> g_keys, e_keys;
    for (const auto& item : g.items()) g_keys.insert(item.key());
    for (const auto& item : e.items()) e_keys.insert(item.key());
    CHECK(g_keys == e_keys);
    CHECK(without_timing(g) == without_timing(e));
    // Rows before the checkpoint stay as the killed run wrote them; those after it are written again.
    if (i < 6) CHECK(joined(got[i]) == joined(killed[i]));
    if (i >= 6 && i < killed.size()) CHECK(*got[i][3] != *killed[i][3]);
  }
  // The values of each run are those its training logged: the checkpoints' log_history.
  for (const std::string name : {"straight", "resumed"}) {
    INFO(name);
    const auto history = history_of(name);
    const auto rows = name == "straight" ? expected : got;
    REQUIRE(history.size() == 10 + 2);  // steps 1-10, evaluations at 4 and 8
    for (std::size_t i = 0; i < history.size(); ++i)
      CHECK(nlohmann::json::parse(*rows[i][1]) == expected_row(history[i]));
  }
}

TEST_CASE("trackio: a database folder that cannot be made costs nothing but a warning", "[trackers][trackio]") {
  tt_test::TempDir dir("trackio");
  tt_test::write_file(dir / "blocker", "a file where TRACKIO_DIR's parent folder should be");
  const CleanEnvironment clean;
  const tt_test::ScopedEnv env("TRACKIO_DIR", (dir / "blocker" / "trackio").string());
  auto args = args_in(dir);
  args.report_to = {"none"};
  auto plain = make_trainer(args);
  plain->train();

  auto trainer = make_trainer(args);
  auto callback = std::make_shared<tt::TrackioCallback>(
      tt::TrackerRetryPolicy{std::chrono::milliseconds(0), std::chrono::milliseconds(0)});
  trainer->add_callback(callback);
  tt_test::WarningCapture warnings;
  trainer->train();
  REQUIRE(trainer->state.global_step == args.max_steps);
  CHECK(trainer->state.log_history.size() == plain->state.log_history.size());
  CHECK(trainer->state.log_history[0].at("loss") == plain->state.log_history[0].at("loss"));
  CHECK(trainer->state.log_history.back().at("train_loss") == plain->state.log_history.back().at("train_loss"));
  std::vector<std::string> ours;
  for (const auto& m : warnings.messages)
    if (m.find("TrackioCallback") != std::string::npos) ours.push_back(m);
  INFO(::Catch::Detail::stringify(ours));
  REQUIRE(ours.size() == 2);  // the failure, once; what was not written, at the end
  CHECK(ours[0].find("cannot create the Trackio folder " + (dir / "blocker" / "trackio").string()) !=
        std::string::npos);
  CHECK(ours[0].find("set TRACKIO_DIR to a writable folder") != std::string::npos);
  CHECK(ours[1].find(std::to_string(trainer->state.log_history.size()) + " deliveries were not made") !=
        std::string::npos);

  // Once the folder can be made, what was kept is written, in order, as one run.
  fs::remove(dir / "blocker");
  trainer->log({{"eval_late", 1.0}});
  const fs::path db = dir / "blocker" / "trackio" / "huggingface.db";
  const auto all_runs = runs(db);
  REQUIRE(all_runs.size() == 1);
  const auto rows = logs(db, *all_runs[0][0]);
  const auto& history = trainer->state.log_history;
  REQUIRE(rows.size() == history.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    CHECK(*rows[i][0] == std::to_string(i));
    CHECK(nlohmann::json::parse(*rows[i][1]) == expected_row(history[i]));
  }
}

TEST_CASE("trackio: a file that is not a database is not retried, and a failed train() reports it",
          "[trackers][trackio]") {
  tt_test::TempDir dir("trackio");
  const CleanEnvironment clean;
  const tt_test::ScopedEnv env("TRACKIO_DIR", dir.str());
  const std::string text(2000, 'x');
  tt_test::write_file(dir / "huggingface.db", text);
  auto args = args_in(dir);
  args.logging_steps = 1;
  auto trainer = make_trainer(args);
  trainer->add_callback(std::make_shared<ThrowAtStep>(4));
  tt_test::WarningCapture warnings;
  CHECK_THROWS_WITH(trainer->train(), "stopped by the test");
  std::vector<std::string> ours;
  for (const auto& m : warnings.messages)
    if (m.find("TrackioCallback") != std::string::npos) ours.push_back(m);
  INFO(::Catch::Detail::stringify(ours));
  REQUIRE(ours.size() == 2);  // the refusal, once; at on_exception, what was not written
  CHECK(ours[0].find((dir / "huggingface.db").string() + " cannot be used: file is not a database") !=
        std::string::npos);
  CHECK(ours[0].find("this delivery is dropped") != std::string::npos);
  CHECK(ours[1].find("0 deliveries were not made, " + std::to_string(trainer->state.log_history.size()) +
                     " were refused") != std::string::npos);
  CHECK(tt_test::read_file(dir / "huggingface.db") == text);

  // A checkpoint's state that is not the callback's is refused with what it must look like.
  tt::TrackioCallback callback;
  const nlohmann::json good = *callback.state();
  callback.restore_state(good);
  for (const nlohmann::json& bad :
       {nlohmann::json::array(), nlohmann::json{{"attributes", 1}},
        nlohmann::json{{"attributes", {{"run_id", "a"}, {"run_name", "b"}, {"created", "c"}}}},
        nlohmann::json{{"attributes", {{"run_id", "a"}, {"run_name", "b"}, {"next_step", -1}, {"created", "c"}}}},
        nlohmann::json{{"attributes", {{"run_id", 7}, {"run_name", "b"}, {"next_step", 1}, {"created", "c"}}}}}) {
    INFO(bad.dump());
    CHECK_THROWS_AS(callback.restore_state(bad), tt::FileFormatError);
    CHECK_THROWS_WITH(callback.restore_state(bad), Catch::Matchers::Contains("TrackioCallback: the saved state") &&
                                                       Catch::Matchers::Contains("\"next_step\": <integer >= 0>"));
  }
}

}  // namespace trackio_tests
