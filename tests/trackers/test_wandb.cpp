// W&B: the offline run folder that `wandb sync` uploads, read back with a reader of its own written from wandb's
// sources (wandb/sdk/internal/datastore.py, core/pkg/leveldb, wandb/proto/wandb_internal.proto): the header,
// 32 KiB blocks, CRC-32 of each chunk, records split over blocks, and the Record messages.
#include <torch/torch.h>
#include <catch2/catch.hpp>
#include <torchtrain/torchtrain.hpp>
#include <torchtrain/callbacks/wandb.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "datasets.hpp"
#include "processes.hpp"
#include "support.hpp"

namespace tt = torchtrain;
namespace fs = std::filesystem;

namespace wandb_tests {

using json = nlohmann::json;

// Every variable WandbCallback reads.
std::vector<const char*> wandb_variables() {
  return {"WANDB_DIR",      "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP", "WANDB_RUN_ID", "WANDB_NAME",
          "WANDB_MODE",     "WANDB_JOB_TYPE", "WANDB_NOTES", "WANDB_TAGS",      "WANDB_LOG_MODEL", "WANDB_WATCH"};
}

// Sets `values` and clears the other W&B variables for a scope, so that a developer's own settings cannot change
// a test.
using Environment = std::vector<std::unique_ptr<tt_test::ScopedEnv>>;
Environment wandb_environment(const std::map<std::string, std::string>& values) {
  Environment env;
  for (const char* name : wandb_variables()) {
    const auto value = values.find(name);
    env.push_back(std::make_unique<tt_test::ScopedEnv>(name, value == values.end() ? nullptr : value->second.c_str()));
  }
  return env;
}

// ---- the reader: zlib's CRC-32 bit by bit, the LevelDB log with W&B's header, a protobuf field parser ----------

std::uint32_t crc32_bitwise(const std::string& bytes) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : bytes) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 1u) ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
  }
  return ~crc;
}

struct Chunk {
  int type;
  std::size_t offset, length;
};

struct LogFile {
  std::vector<std::string> records;  // the payloads, reassembled
  std::vector<Chunk> chunks;
};

LogFile read_log_bytes(const std::string& bytes) {
  constexpr std::size_t kBlock = 32768;
  REQUIRE(bytes.size() >= 7);
  CHECK(bytes.substr(0, 4) == ":W&B");
  CHECK(static_cast<unsigned char>(bytes[4]) == 0xE1);  // magic 0xBEE1, little-endian
  CHECK(static_cast<unsigned char>(bytes[5]) == 0xBE);
  CHECK(bytes[6] == 0);  // version
  LogFile log;
  std::string pending;
  bool in_record = false;
  std::size_t pos = 7;
  const auto byte = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])); };
  while (pos < bytes.size()) {
    const std::size_t left = kBlock - pos % kBlock;
    if (left < 7) {  // a block's tail too short for a chunk header is zeros
      REQUIRE(pos + left <= bytes.size());
      for (std::size_t i = pos; i < pos + left; ++i) CHECK(bytes[i] == 0);
      pos += left;
      continue;
    }
    REQUIRE(pos + 7 <= bytes.size());
    const std::uint32_t crc = byte(pos) | byte(pos + 1) << 8 | byte(pos + 2) << 16 | byte(pos + 3) << 24;
    const std::size_t length = byte(pos + 4) | byte(pos + 5) << 8;
    const int type = static_cast<int>(byte(pos + 6));
    REQUIRE(7 + length <= left);  // no chunk crosses a block boundary
    REQUIRE(pos + 7 + length <= bytes.size());
    const std::string data = bytes.substr(pos + 7, length);
    CHECK(crc == crc32_bitwise(std::string(1, static_cast<char>(type)) + data));
    log.chunks.push_back({type, pos, length});
    switch (type) {
      case 1: REQUIRE(!in_record); log.records.push_back(data); break;
      case 2: REQUIRE(!in_record); pending = data; in_record = true; break;
      case 3: REQUIRE(in_record); pending += data; break;
      case 4: REQUIRE(in_record); log.records.push_back(pending + data); in_record = false; break;
      default: FAIL("chunk type " << type << " at offset " << pos);
    }
    pos += 7 + length;
  }
  CHECK(!in_record);
  return log;
}

struct Field {
  int number = 0, wire = 0;
  std::uint64_t varint = 0;
  std::string bytes;
};
using Message = std::vector<Field>;

Message decode(const std::string& m) {
  Message fields;
  std::size_t pos = 0;
  const auto varint = [&] {
    std::uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      REQUIRE(pos < m.size());
      const auto b = static_cast<unsigned char>(m[pos++]);
      v |= std::uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (pos < m.size()) {
    const std::uint64_t key = varint();
    Field f;
    f.number = static_cast<int>(key >> 3);
    f.wire = static_cast<int>(key & 7);
    if (f.wire == 0) {
      f.varint = varint();
    } else if (f.wire == 2) {
      const std::size_t n = varint();
      REQUIRE(pos + n <= m.size());
      f.bytes = m.substr(pos, n);
      pos += n;
    } else if (f.wire == 1 || f.wire == 5) {
      const std::size_t n = f.wire == 1 ? 8 : 4;
      REQUIRE(pos + n <= m.size());
      f.bytes = m.substr(pos, n);
      pos += n;
    } else {
      FAIL("wire type " << f.wire);
    }
    fields.push_back(f);
  }
  return fields;
}

std::vector<const Field*> all(const Message& m, int number) {
  std::vector<const Field*> out;
  for (const auto& f : m)
    if (f.number == number) out.push_back(&f);
  return out;
}
std::string text(const Message& m, int number) {
  const auto fs = all(m, number);
  return fs.empty() ? "" : fs.back()->bytes;
}
std::uint64_t number(const Message& m, int number) {
  const auto fs = all(m, number);
  return fs.empty() ? 0 : fs.back()->varint;
}
Message sub(const Message& m, int number) { return decode(text(m, number)); }

// Record: num = 1; the record type is the one oneof field (2..27); body is its message.
struct Record {
  std::int64_t num = 0;
  int type = 0;
  Message body;
};

// Record types by field number: history 2, summary 3, config 5, metric 12, run 17, exit 18, final 20, header 21,
// footer 22.
enum Type { kHistory = 2, kSummary = 3, kConfig = 5, kMetric = 12, kRun = 17, kExit = 18, kFinal = 20, kHeader = 21, kFooter = 22 };

std::vector<Record> records_of(const LogFile& log) {
  std::vector<Record> out;
  for (const auto& payload : log.records) {
    Record r;
    for (const auto& f : decode(payload)) {
      if (f.number == 1) {
        r.num = static_cast<std::int64_t>(f.varint);
      } else if (f.number >= 2 && f.number <= 27 && f.number != 16 && f.number != 19) {
        CHECK(r.type == 0);
        r.type = f.number;
        r.body = decode(f.bytes);
      }
    }
    CHECK(r.type != 0);
    out.push_back(std::move(r));
  }
  return out;
}

// ConfigItem / HistoryItem / SummaryItem {key = 1, value_json = 16}, parsed.
std::map<std::string, json> items(const Message& m, int field = 1) {
  std::map<std::string, json> out;
  for (const Field* f : all(m, field)) {
    const Message item = decode(f->bytes);
    out[text(item, 1)] = json::parse(text(item, 16));
  }
  return out;
}

struct Run {
  fs::path folder;
  LogFile log;
  std::vector<Record> records;
  std::vector<std::map<std::string, json>> history;  // each row's items
  std::vector<std::int64_t> history_steps;            // HistoryRecord.step.num
};

Run read_run(const fs::path& folder) {
  Run run;
  run.folder = folder;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(folder))
    if (e.path().extension() == ".wandb") files.push_back(e.path());
  REQUIRE(files.size() == 1);  // legacy `wandb sync` wants exactly one
  run.log = read_log_bytes(tt_test::read_file(files[0]));
  run.records = records_of(run.log);
  for (const auto& r : run.records)
    if (r.type == kHistory) {
      run.history.push_back(items(r.body));
      run.history_steps.push_back(static_cast<std::int64_t>(number(sub(r.body, 2), 1)));
    }
  return run;
}

std::vector<fs::path> run_folders(const fs::path& wandb_dir) {
  std::vector<fs::path> out;
  if (!fs::exists(wandb_dir)) return out;
  for (const auto& e : fs::directory_iterator(wandb_dir)) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

const Record& only(const Run& run, int type) {
  const Record* found = nullptr;
  for (const auto& r : run.records)
    if (r.type == type) {
      REQUIRE(found == nullptr);
      found = &r;
    }
  REQUIRE(found != nullptr);
  return *found;
}

// Hugging Face's row for a log_history entry: its values under train/ eval/ test/ keys but train()'s closing
// values, plus train/global_step.
std::map<std::string, json> expected_row(const tt::LogEntry& entry) {
  static const std::vector<std::string> summary_only{"train_runtime", "train_samples_per_second",
                                                     "train_steps_per_second", "train_loss", "total_flos"};
  std::map<std::string, json> row;
  for (const auto& [key, value] : entry.items()) {
    if (key == "step" || std::count(summary_only.begin(), summary_only.end(), key)) continue;
    const std::string name = key.rfind("eval_", 0) == 0   ? "eval/" + key.substr(5)
                             : key.rfind("test_", 0) == 0 ? "test/" + key.substr(5)
                                                          : "train/" + key;
    row[name] = json(value);
  }
  row["train/global_step"] = entry.at("step");
  return row;
}

// A row's logged values, without W&B's own _step, _runtime and _timestamp.
std::map<std::string, json> values(std::map<std::string, json> row) {
  for (const char* internal : {"_step", "_runtime", "_timestamp"}) row.erase(internal);
  return row;
}

// A row without the values that measure time (_runtime, eval/runtime, eval/samples_per_second, _timestamp...),
// which differ between two runs of the same training.
std::map<std::string, json> untimed(std::map<std::string, json> row) {
  const auto ends_with = [](const std::string& key, const std::string& tail) {
    return key.size() >= tail.size() && key.compare(key.size() - tail.size(), tail.size(), tail) == 0;
  };
  for (auto it = row.begin(); it != row.end();)
    if (ends_with(it->first, "runtime") || ends_with(it->first, "_per_second") || ends_with(it->first, "timestamp"))
      it = row.erase(it);
    else
      ++it;
  return row;
}

using Trainer = tt::Trainer<tt_test::Mlp, tt_test::Blobs>;

tt::TrainingArguments small_args(const fs::path& output_dir, std::int64_t steps = 8) {
  tt::TrainingArguments a;
  a.output_dir = output_dir.string();
  a.disable_tqdm = true;
  a.report_to = {"wandb"};
  a.per_device_train_batch_size = 4;
  a.max_steps = steps;
  a.logging_steps = 2;
  a.eval_strategy = tt::IntervalStrategy::steps;
  a.eval_steps = 4;
  a.save_strategy = tt::SaveStrategy::no;
  return a;
}

std::unique_ptr<Trainer> make_trainer(const tt::TrainingArguments& args) {
  torch::manual_seed(0);
  auto trainer = std::make_unique<Trainer>(tt_test::Mlp(), args, tt_test::Blobs(32, 1), tt_test::Blobs(16, 2));
  trainer->pop_callback<tt::PrinterCallback>();
  return trainer;
}

std::string worker(const fs::path& dir, const std::string& flags) {
  std::string command = "env";
  for (const char* name : wandb_variables()) command += std::string(" -u ") + name;
  return command + " WANDB_DIR='" + (dir / "w").string() + "' WANDB_PROJECT=resume-test " TORCHTRAIN_TRACKER_WORKER
                   " --output_dir '" + (dir / "out").string() + "' --report_to wandb " + flags;
}

TEST_CASE("wandb: the offline run holds the run, config, metric axis, history, summary and exit as HF logs them",
          "[trackers][wandb]") {
  tt_test::TempDir dir("wandb-run");
  const auto env = wandb_environment({{"WANDB_DIR", (dir / "w").string()}, {"WANDB_PROJECT", "tt-project"},
                                      {"WANDB_ENTITY", "me"}, {"WANDB_RUN_GROUP", "group-a"}, {"WANDB_NAME", "not-this"}});
  auto args = small_args(dir / "out");
  args.run_name = "my-run";
  auto trainer = make_trainer(args);
  trainer->train();
  const auto& history = trainer->state.log_history;

  const auto folders = run_folders(dir / "w" / "wandb");
  REQUIRE(folders.size() == 1);
  std::smatch m;
  const std::string name = folders[0].filename().string();
  REQUIRE(std::regex_match(name, m, std::regex(R"(offline-run-(\d{8}_\d{6})-([a-z0-9]{8}))")));
  const std::string id = m[2];
  CHECK(fs::exists(folders[0] / ("run-" + id + ".wandb")));
  const Run run = read_run(folders[0]);

  // header, run, config, the two definitions first; summary, exit, final, footer last; nums 1, 2, ...
  REQUIRE(run.records.size() >= 9);
  const std::vector<int> first{kHeader, kRun, kConfig, kMetric, kMetric};
  for (std::size_t i = 0; i < first.size(); ++i) CHECK(run.records[i].type == first[i]);
  const std::vector<int> last{kSummary, kExit, kFinal, kFooter};
  for (std::size_t i = 0; i < last.size(); ++i) CHECK(run.records[run.records.size() - 4 + i].type == last[i]);
  for (std::size_t i = 0; i < run.records.size(); ++i) CHECK(run.records[i].num == static_cast<std::int64_t>(i + 1));
  CHECK(number(only(run, kExit).body, 1) == 0);  // exit_code 0: finished

  const Message& r = only(run, kRun).body;
  CHECK(text(r, 1) == id);
  CHECK(text(r, 2) == "me");
  CHECK(text(r, 3) == "tt-project");
  CHECK(text(r, 6) == "group-a");
  CHECK(text(r, 8) == "my-run");  // args.run_name before WANDB_NAME, as wandb.init(name=...)
  CHECK(number(r, 18) == 0);      // not resumed
  const auto start = static_cast<double>(number(sub(r, 17), 1));
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  CHECK((start > now - 3600 && start <= now));

  // config: every argument, and the model's parameter count (4*16+16 + 16*2+2 for Mlp's default width)
  const auto config = items(only(run, kConfig).body);
  std::int64_t parameters = 0;
  for (const auto& p : tt_test::Mlp()->parameters()) parameters += p.numel();
  CHECK(config.at("model/num_parameters") == parameters);
  const json expected_config = trainer->args.to_json();
  for (const auto& [key, value] : expected_config.items()) CHECK(config.at(key) == value);
  CHECK(config.size() == expected_config.size() + 1);

  // define_metric("train/global_step"); define_metric("*", step_metric="train/global_step", step_sync=True)
  const Message& axis = run.records[3].body;
  CHECK(text(axis, 1) == "train/global_step");
  CHECK(number(sub(axis, 6), 3) == 1);  // options.defined
  const Message& glob = run.records[4].body;
  CHECK(text(glob, 2) == "*");
  CHECK(text(glob, 4) == "train/global_step");
  CHECK(number(sub(glob, 6), 1) == 1);  // options.step_sync

  // One row per log_history entry, in order, with _step 0, 1, ... and step.num the same
  REQUIRE(run.history.size() == history.size());
  for (std::size_t i = 0; i < history.size(); ++i) {
    auto row = run.history[i];
    CHECK(row.at("_step") == static_cast<std::int64_t>(i));
    CHECK(run.history_steps[i] == static_cast<std::int64_t>(i));
    CHECK(row.at("_timestamp").get<double>() == Approx(now).margin(3600));
    CHECK(row.at("_runtime").get<double>() >= 0);
    for (const char* internal : {"_step", "_runtime", "_timestamp"}) row.erase(internal);
    CHECK(row == expected_row(history[i]));
  }
  CHECK(run.history[0].count("train/loss") == 1);
  CHECK(run.history.back().size() == 5);  // the closing log keeps only train/epoch and train/global_step

  // The summary: train()'s closing values under their own keys, and every key's last value
  const auto summary = items(run.records[run.records.size() - 4].body);
  for (const char* key : {"train_runtime", "train_loss", "total_flos", "train_samples_per_second"})
    CHECK(summary.at(key) == json(history.back().at(key)));
  CHECK(summary.at("_step") == static_cast<std::int64_t>(history.size() - 1));
  CHECK(summary.at("eval/loss") == json(history[history.size() - 2].at("eval_loss")));
  const json summary_file = json::parse(tt_test::read_file(folders[0] / "files" / "wandb-summary.json"));
  CHECK(summary_file.at("train_loss") == json(history.back().at("train_loss")));
  const std::string yaml = tt_test::read_file(folders[0] / "files" / "config.yaml");
  CHECK(yaml.rfind("wandb_version: 1\n", 0) == 0);
  CHECK(yaml.find("\"model/num_parameters\":\n  desc: null\n  value: " + std::to_string(parameters) + "\n") !=
        std::string::npos);

  // An evaluate() after train() goes into the same run, which still ends with one set of closing records.
  trainer->evaluate();
  const Run after = read_run(folders[0]);
  REQUIRE(after.history.size() == trainer->state.log_history.size());
  only(after, kExit);
  CHECK(after.records.back().type == kFooter);
  auto evaluated = after.history.back();
  CHECK(evaluated.at("_step") == static_cast<std::int64_t>(history.size() - 1));
  for (const char* internal : {"_step", "_runtime", "_timestamp"}) evaluated.erase(internal);
  CHECK(evaluated == expected_row(trainer->state.log_history.back()));

  SECTION("report_to all takes W&B only when WANDB_PROJECT is set and WANDB_MODE is not disabled") {
    const auto has_wandb = [] {
      const auto callbacks = tt::get_reporting_integration_callbacks({"all"});
      return std::any_of(callbacks.begin(), callbacks.end(),
                         [](const auto& c) { return std::dynamic_pointer_cast<tt::WandbCallback>(c) != nullptr; });
    };
    CHECK(has_wandb());
    {
      tt_test::ScopedEnv off("WANDB_MODE", "disabled");
      CHECK(!has_wandb());
    }
    tt_test::ScopedEnv unset("WANDB_PROJECT", nullptr);
    CHECK(!has_wandb());
  }
  SECTION("WANDB_MODE=disabled writes nothing") {
    tt_test::ScopedEnv off("WANDB_MODE", "disabled"), off_dir("WANDB_DIR", (dir / "off").string());
    make_trainer(small_args(dir / "out-off", 2))->train();
    CHECK(!fs::exists(dir / "off"));
  }
}

TEST_CASE("wandb: records larger than a block are split into FIRST, MIDDLE and LAST chunks", "[trackers][wandb]") {
  SECTION("a run name of 70000 characters, in the run record and the config") {
    tt_test::TempDir dir("wandb-big");
    const auto env =
        wandb_environment({{"WANDB_DIR", dir.str()}, {"WANDB_PROJECT", "big"}, {"WANDB_RUN_ID", "bigrun01"}});
    auto args = small_args(dir / "out", 2);
    args.run_name = std::string(70000, 'x') + "\xc3\xa9";  // and a non-ASCII character, written as \u00e9
    auto trainer = make_trainer(args);
    trainer->train();
    const auto folders = run_folders(dir / "wandb");
    REQUIRE(folders.size() == 1);
    const Run run = read_run(folders[0]);
    std::vector<int> types;
    for (const auto& c : run.log.chunks) types.push_back(c.type);
    CHECK(std::count(types.begin(), types.end(), 2) == 2);  // the run record and the config record
    CHECK(std::count(types.begin(), types.end(), 3) >= 2);
    CHECK(std::count(types.begin(), types.end(), 4) == 2);
    CHECK(text(only(run, kRun).body, 8) == args.run_name);
    CHECK(items(only(run, kConfig).body).at("run_name") == args.run_name);
    CHECK(run.history.size() == trainer->state.log_history.size());
    CHECK(run.records.back().type == kFooter);
  }
  SECTION("a block tail shorter than a chunk header is padded; one of exactly 7 bytes gets an empty FIRST") {
    namespace w = tt::detail::wandb;
    for (const std::size_t tail : {3, 7}) {
      const std::string filler(32768 - 7 - 7 - tail, 'a');
      std::string bytes(w::kFileHeader);
      bytes += w::frame_record(bytes.size(), filler);
      REQUIRE(bytes.size() == 32768 - tail);
      bytes += w::frame_record(bytes.size(), "abc");
      const LogFile log = read_log_bytes(bytes);
      CHECK(log.records == std::vector<std::string>{filler, "abc"});
      REQUIRE(log.chunks.size() == (tail == 3 ? 2u : 3u));
      if (tail == 7) {
        CHECK(log.chunks[1].type == 2);
        CHECK(log.chunks[1].length == 0);
        CHECK(log.chunks[2].type == 4);
      }
    }
  }
}

TEST_CASE("wandb: a run killed after its checkpoint and resumed has the uninterrupted run's history",
          "[trackers][wandb]") {
  // A checkpoint whose W&B state is damaged is refused with what the state must look like.
  tt::WandbCallback callback;
  const auto refused = [&](const json& saved) {
    try {
      callback.restore_state(saved);
    } catch (const tt::FileFormatError& e) {
      return std::string(e.what()).find("WandbCallback: the saved state must be") != std::string::npos;
    }
    return false;
  };
  CHECK(refused(json::array()));
  CHECK(refused({{"attributes", {{"run_id", "abc"}}}}));
  CHECK(refused({{"attributes", {{"run_id", "abc"}, {"run_dir", "d"}, {"file_size", -1}}}}));
  CHECK_NOTHROW(callback.restore_state({{"attributes", json::object()}}));

  tt_test::TempDir whole("wandb-whole"), resumed("wandb-resumed");
  auto outcome = tt_test::run_command(worker(whole.path(), ""));
  REQUIRE(outcome.status == 0);
  const auto whole_folders = run_folders(whole / "w" / "wandb");
  REQUIRE(whole_folders.size() == 1);
  const Run reference = read_run(whole_folders[0]);
  REQUIRE(reference.history.size() == 16);  // 12 losses, 3 evaluations, the closing log

  // Killed right after step 7's loss: the file holds rows of steps 6 and 7 that the checkpoint of step 5 does not.
  outcome = tt_test::run_command(worker(resumed.path(), "--kill_after_log_at 7"));
  INFO(outcome.output);
  REQUIRE(outcome.status == 137);  // the shell's status for a child killed by SIGKILL
  const auto folders = run_folders(resumed / "w" / "wandb");
  REQUIRE(folders.size() == 1);
  CHECK(read_run(folders[0]).history.size() == 8);  // steps 1-7 and the evaluation of step 4

  SECTION("the same file continues from the checkpoint") {
    outcome = tt_test::run_command(worker(resumed.path(), "--resume_from_checkpoint true"));
    INFO(outcome.output);
    REQUIRE(outcome.status == 0);
    REQUIRE(run_folders(resumed / "w" / "wandb") == folders);
    const Run run = read_run(folders[0]);
    only(run, kRun);
    only(run, kExit);
    CHECK(run.records.back().type == kFooter);
    for (std::size_t i = 0; i < run.records.size(); ++i) CHECK(run.records[i].num == static_cast<std::int64_t>(i + 1));
    REQUIRE(run.history.size() == reference.history.size());
    for (std::size_t i = 0; i < run.history.size(); ++i) {
      CHECK(untimed(run.history[i]) == untimed(reference.history[i]));
      CHECK(run.history_steps[i] == static_cast<std::int64_t>(i));
    }
  }
  SECTION("without its file, the run goes on in a new folder, marked as resumed") {
    for (const auto& e : fs::directory_iterator(folders[0]))
      if (e.path().extension() == ".wandb") fs::remove(e.path());
    outcome = tt_test::run_command(worker(resumed.path(), "--resume_from_checkpoint true"));
    INFO(outcome.output);
    REQUIRE(outcome.status == 0);
    CHECK(outcome.output.find("marked as resumed") != std::string::npos);
    // The new folder: another one, unless the resume started within the same second as the killed run
    std::vector<fs::path> with_file;
    for (const auto& folder : run_folders(resumed / "w" / "wandb"))
      for (const auto& e : fs::directory_iterator(folder))
        if (e.path().extension() == ".wandb") with_file.push_back(folder);
    REQUIRE(with_file.size() == 1);
    const fs::path fresh = with_file[0];
    const Run run = read_run(fresh);
    const Message& r = only(run, kRun).body;
    CHECK(text(r, 1) == fresh.string().substr(fresh.string().size() - 8));
    CHECK(folders[0].string().substr(folders[0].string().size() - 8) == text(r, 1));  // the same run id
    CHECK(number(r, 18) == 1);  // resumed
    CHECK(number(r, 14) == 6);  // starting_step: the rows before the checkpoint
    only(run, kExit);
    REQUIRE(run.history.size() == reference.history.size() - 6);
    for (std::size_t i = 0; i < run.history.size(); ++i)
      CHECK(untimed(run.history[i]) == untimed(reference.history[i + 6]));
  }
}

TEST_CASE("wandb: an unwritable WANDB_DIR costs the training nothing, warns once and reports at the end",
          "[trackers][wandb]") {
  tt_test::TempDir dir("wandb-fail");
  tt_test::write_file(dir / "a-file", "not a folder");
  std::vector<double> plain_losses, losses;
  {
    auto args = small_args(dir / "plain");
    args.report_to = {"none"};
    auto trainer = make_trainer(args);
    trainer->train();
    for (const auto& e : trainer->state.log_history)
      if (e.contains("loss")) plain_losses.push_back(e["loss"].get<double>());
  }
  const auto env = wandb_environment({{"WANDB_DIR", (dir / "a-file" / "sub").string()}, {"WANDB_PROJECT", "p"}});
  tt_test::WarningCapture warnings;
  auto trainer = make_trainer(small_args(dir / "out"));
  trainer->train();
  CHECK(trainer->state.global_step == 8);
  for (const auto& e : trainer->state.log_history)
    if (e.contains("loss")) losses.push_back(e["loss"].get<double>());
  CHECK(losses == plain_losses);
  std::vector<std::string> ours;
  for (const auto& message : warnings.messages)
    if (message.find("WandbCallback") != std::string::npos) ours.push_back(message);
  REQUIRE(ours.size() == 2);
  CHECK(ours[0].find("a-file") != std::string::npos);
  CHECK(ours[0].find("Not a directory") != std::string::npos);
  CHECK(ours[0].find("WANDB_DIR") != std::string::npos);
  CHECK(ours[1].find("deliveries were not made") != std::string::npos);
}

TEST_CASE("wandb: each trial of a hyperparameter search is a run of its own, named after the trial",
          "[trackers][wandb]") {
  tt_test::TempDir dir("wandb-search");
  const auto env = wandb_environment({{"WANDB_DIR", dir.str()}, {"WANDB_PROJECT", "search"}});
  auto args = small_args(dir / "out", 2);
  args.eval_strategy = tt::IntervalStrategy::no;
  auto trainer = make_trainer(args);
  trainer->model_init = [] { return tt_test::Mlp(); };
  const tt::SearchSpace space{{"learning_rate", tt::Categorical{{1e-3, 1e-2}}}};
  trainer->hyperparameter_search(space, 2, tt::Direction::minimize, tt::Sampler::grid());
  const auto folders = run_folders(dir / "wandb");
  REQUIRE(folders.size() == 2);
  std::set<std::string> names, ids;
  for (const auto& folder : folders) {
    const Run run = read_run(folder);
    const Message& r = only(run, kRun).body;
    const std::string trial = text(r, 8);
    names.insert(trial);
    ids.insert(text(r, 1));
    CHECK(text(r, 6) == (dir / "out").string());  // grouped by the search's output_dir
    CHECK(number(only(run, kExit).body, 1) == 0);
    CHECK(run.records.back().type == kFooter);
    // The trial's log, with the evaluation the search runs after its train()
    const json saved = json::parse(tt_test::read_file(dir / "out" / trial / "trainer_state.json"));
    const auto& logged = saved.at("log_history");
    REQUIRE(run.history.size() == logged.size());
    for (std::size_t i = 0; i < logged.size(); ++i) CHECK(values(run.history[i]) == expected_row(logged[i]));
    CHECK(run.history.back().count("eval/loss") == 1);
  }
  CHECK(names == std::set<std::string>{"run-0", "run-1"});
  CHECK(ids.size() == 2);
}

}  // namespace wandb_tests
