// Reporting: report_to, TensorBoard event files decoded by a reader of their own, CSV and JSON-lines logs
// across a resume, the results files of save_metrics, the SVG figure of plot_trainer_state, and the progress
// display.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <torchtrain/torchtrain.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <tuple>

#include <unistd.h>

#include "datasets.hpp"
#include "processes.hpp"
#include "support.hpp"

namespace tt = torchtrain;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using tt_test::Blobs;
using tt_test::TempDir;

namespace {

struct MlpImpl : torch::nn::Module {
  torch::nn::Linear fc1, fc2;
  MlpImpl() : fc1(register_module("fc1", torch::nn::Linear(4, 8))), fc2(register_module("fc2", torch::nn::Linear(8, 2))) {}
  torch::Tensor forward(torch::Tensor x) { return fc2(torch::relu(fc1(x))); }
};
TORCH_MODULE(Mlp);

// 8 steps of 4 examples, a log every 2 steps, an evaluation every 4.
tt::TrainingArguments run_args(const TempDir& dir, std::vector<std::string> report_to) {
  tt::TrainingArguments a;
  a.output_dir = dir.str();
  a.disable_tqdm = true;
  a.report_to = std::move(report_to);
  a.per_device_train_batch_size = 4;
  a.per_device_eval_batch_size = 8;
  a.max_steps = 8;
  a.learning_rate = 1e-2;
  a.warmup_steps = 2;
  a.logging_steps = 2;
  a.eval_strategy = tt::IntervalStrategy::steps;
  a.eval_steps = 4;
  a.save_strategy = tt::SaveStrategy::no;
  return a;
}

using Trainer = tt::Trainer<Mlp, Blobs>;

std::unique_ptr<Trainer> make_trainer(const tt::TrainingArguments& args) {
  torch::manual_seed(0);
  auto trainer = std::make_unique<Trainer>(Mlp(), args, Blobs(32, 1), Blobs(16, 2));
  trainer->compute_metrics = tt::metrics::accuracy;
  trainer->pop_callback<tt::PrinterCallback>();
  return trainer;
}

// ---- an event-file reader of its own: bitwise CRC32C, a protobuf field parser -------------------------------

std::uint32_t crc32c_bitwise(const std::string& bytes) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : bytes) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 1u) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  return ~crc;
}

std::uint32_t masked(std::uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

std::uint64_t little_endian(const std::string& bytes, std::size_t at, int width) {
  std::uint64_t value = 0;
  for (int i = width - 1; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(bytes[at + static_cast<std::size_t>(i)]);
  return value;
}

struct Field {
  int wire;
  std::uint64_t number = 0;  // varint, fixed64 or fixed32 bits
  std::string bytes;         // length-delimited
};
using Message = std::multimap<int, Field>;

Message parse_message(const std::string& data) {
  Message fields;
  std::size_t pos = 0;
  const auto varint = [&] {
    std::uint64_t value = 0;
    for (int shift = 0;; shift += 7) {
      REQUIRE(pos < data.size());
      REQUIRE(shift < 64);
      const auto byte = static_cast<unsigned char>(data[pos++]);
      value |= static_cast<std::uint64_t>(byte & 0x7F) << shift;
      if (!(byte & 0x80)) return value;
    }
  };
  while (pos < data.size()) {
    const std::uint64_t key = varint();
    Field field{static_cast<int>(key & 7)};
    if (field.wire == 0) {
      field.number = varint();
    } else if (field.wire == 1 || field.wire == 5) {
      const int width = field.wire == 1 ? 8 : 4;
      REQUIRE(pos + static_cast<std::size_t>(width) <= data.size());
      field.number = little_endian(data, pos, width);
      pos += static_cast<std::size_t>(width);
    } else {
      REQUIRE(field.wire == 2);
      const std::uint64_t length = varint();
      REQUIRE(pos + length <= data.size());
      field.bytes = data.substr(pos, length);
      pos += length;
    }
    fields.emplace(static_cast<int>(key >> 3), std::move(field));
  }
  return fields;
}

const Field* one(const Message& m, int number) {
  REQUIRE(m.count(number) <= 1);
  const auto it = m.find(number);
  return it == m.end() ? nullptr : &it->second;
}

struct Value {
  std::string tag;
  std::optional<float> simple_value;
  std::string plugin_name;
  std::uint64_t dtype = 0;
  std::vector<std::int64_t> dims;
  std::vector<std::string> string_val;
};

struct Event {
  double wall_time = 0;
  std::int64_t step = 0;
  std::optional<std::string> file_version;
  std::optional<std::uint64_t> session_status;
  std::vector<Value> values;
};

Event parse_event(const std::string& data) {
  const Message m = parse_message(data);
  Event e;
  if (const Field* f = one(m, 1)) {
    REQUIRE(f->wire == 1);
    std::memcpy(&e.wall_time, &f->number, 8);
  }
  if (const Field* f = one(m, 2)) e.step = static_cast<std::int64_t>(f->number);
  if (const Field* f = one(m, 3)) e.file_version = f->bytes;
  if (const Field* f = one(m, 7)) {
    const Message log = parse_message(f->bytes);
    e.session_status = one(log, 1) ? one(log, 1)->number : 0;
  }
  if (const Field* f = one(m, 5)) {
    const Message summary = parse_message(f->bytes);
    for (auto [it, end] = summary.equal_range(1); it != end; ++it) {
      const Message v = parse_message(it->second.bytes);
      Value value;
      value.tag = one(v, 1)->bytes;
      if (const Field* simple = one(v, 2)) {
        REQUIRE(simple->wire == 5);
        float x;
        const auto bits = static_cast<std::uint32_t>(simple->number);
        std::memcpy(&x, &bits, 4);
        value.simple_value = x;
      }
      if (const Field* metadata = one(v, 9)) {
        const Message plugin = parse_message(one(parse_message(metadata->bytes), 1)->bytes);
        value.plugin_name = one(plugin, 1)->bytes;
      }
      if (const Field* tensor = one(v, 8)) {
        const Message t = parse_message(tensor->bytes);
        value.dtype = one(t, 1)->number;
        const Message shape = parse_message(one(t, 2)->bytes);
        for (auto [d, dend] = shape.equal_range(2); d != dend; ++d)
          value.dims.push_back(static_cast<std::int64_t>(one(parse_message(d->second.bytes), 1)->number));
        for (auto [s, send] = t.equal_range(8); s != send; ++s) value.string_val.push_back(s->second.bytes);
      }
      e.values.push_back(std::move(value));
    }
  }
  return e;
}

// Every record of a TFRecord file, each length and data CRC checked, the file ending after the last one.
std::vector<Event> read_event_file(const fs::path& path) {
  const std::string bytes = tt_test::read_file(path);
  std::vector<Event> events;
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    REQUIRE(pos + 12 <= bytes.size());
    const std::uint64_t length = little_endian(bytes, pos, 8);
    REQUIRE(little_endian(bytes, pos + 8, 4) == masked(crc32c_bitwise(bytes.substr(pos, 8))));
    REQUIRE(pos + 12 + length + 4 <= bytes.size());
    const std::string data = bytes.substr(pos + 12, length);
    REQUIRE(little_endian(bytes, pos + 12 + length, 4) == masked(crc32c_bitwise(data)));
    events.push_back(parse_event(data));
    pos += 12 + length + 4;
  }
  return events;
}

std::vector<fs::path> event_files(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0) files.push_back(entry.path());
  std::sort(files.begin(), files.end());  // the order TensorBoard reads them in
  return files;
}

std::vector<fs::path> subfolders(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory()) out.push_back(entry.path());
  return out;
}

struct Scalar {
  std::int64_t step;
  std::string tag;
  float value;
  Scalar(std::int64_t s, std::string t, float v) : step(s), tag(std::move(t)), value(v) {}
  bool operator<(const Scalar& o) const { return std::tie(step, tag, value) < std::tie(o.step, o.tag, o.value); }
  bool operator==(const Scalar& o) const { return step == o.step && tag == o.tag && value == o.value; }
};
std::ostream& operator<<(std::ostream& out, const Scalar& s) {
  return out << "{" << s.step << ", " << s.tag << ", " << s.value << "}";
}

std::string hf_tag(const std::string& key) {
  if (key.rfind("eval_", 0) == 0) return "eval/" + key.substr(5);
  if (key.rfind("test_", 0) == 0) return "test/" + key.substr(5);
  return "train/" + key;
}

std::vector<Scalar> expected_scalars(const std::vector<tt::LogEntry>& history) {
  std::vector<Scalar> out;
  for (const auto& entry : history)
    for (const auto& [key, value] : entry.items())
      if (key != "step" && value.is_number())
        out.emplace_back(entry["step"].get<std::int64_t>(), hf_tag(key), static_cast<float>(value.get<double>()));
  std::sort(out.begin(), out.end());
  return out;
}

// The scalars TensorBoard shows for a run folder: files in name order, and a session_log START at step s drops
// every scalar read before it whose step is s or later.
std::vector<Scalar> shown_scalars(const fs::path& run_dir, std::vector<std::int64_t>* starts = nullptr) {
  std::vector<Scalar> shown;
  for (const auto& file : event_files(run_dir)) {
    const auto events = read_event_file(file);
    REQUIRE(!events.empty());
    CHECK(events.front().file_version == std::optional<std::string>("brain.Event:2"));
    for (const auto& e : events) {
      if (e.session_status == std::optional<std::uint64_t>(1)) {
        if (starts) starts->push_back(e.step);
        shown.erase(std::remove_if(shown.begin(), shown.end(), [&](const Scalar& s) { return s.step >= e.step; }),
                    shown.end());
      }
      for (const auto& v : e.values)
        if (v.simple_value) shown.emplace_back(e.step, v.tag, *v.simple_value);
    }
  }
  std::sort(shown.begin(), shown.end());
  return shown;
}

std::string strip_code_block(const std::string& markdown) {
  std::string out;
  std::istringstream lines(markdown);
  for (std::string line; std::getline(lines, line);) {
    REQUIRE(line.rfind("    ", 0) == 0);
    out += line.substr(4) + "\n";
  }
  return out;
}

// ---- CSV ---------------------------------------------------------------------------------------------------

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> split_cells(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  for (char c : line) {
    if (c == ',') {
      cells.push_back(cell);
      cell.clear();
    } else {
      cell += c;
    }
  }
  cells.push_back(cell);
  return cells;
}

// Every row of a numeric CSV log against log_history: same count, same steps, every value read back exactly.
void check_csv_matches(const std::string& csv, const std::vector<tt::LogEntry>& history) {
  const auto lines = split_lines(csv);
  REQUIRE(lines.size() == history.size() + 1);
  const auto header = split_cells(lines[0]);
  REQUIRE(header.size() >= 2);
  CHECK(header[0] == "step");
  CHECK(header[1] == "epoch");
  std::set<std::string> every_key;
  for (std::size_t i = 0; i < history.size(); ++i) {
    const auto cells = split_cells(lines[i + 1]);
    REQUIRE(cells.size() == header.size());
    for (std::size_t c = 0; c < header.size(); ++c) {
      INFO("row " << i + 1 << " column " << header[c]);
      const auto& entry = history[i];
      if (!entry.contains(header[c])) {
        CHECK(cells[c].empty());
        continue;
      }
      every_key.insert(header[c]);
      REQUIRE_FALSE(cells[c].empty());
      CHECK(std::stod(cells[c]) == entry[header[c]].get<double>());
    }
    for (const auto& [key, value] : history[i].items())
      CHECK(std::find(header.begin(), header.end(), key) != header.end());
  }
}

std::size_t count(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

}  // namespace

// ---- report_to -------------------------------------------------------------------------------------------------

TEST_CASE("report_to puts its reporters after DefaultFlowCallback and before the user's callbacks", "[reporting]") {
  TempDir dir("report-to");
  struct Mine : tt::TrainerCallback {};
  const auto list = [&](std::vector<std::string> report_to, bool disable_tqdm = false) {
    auto args = run_args(dir, std::move(report_to));
    args.disable_tqdm = disable_tqdm;
    Trainer trainer(Mlp(), args, Blobs(8, 1), Blobs(8, 2), {}, {std::make_shared<Mine>()});
    return trainer.callback_handler().callback_list();
  };
  CHECK(list({"all"}) ==
        "DefaultFlowCallback\nTensorBoardCallback\nCSVLogger\nJSONLinesLogger\nMine\nProgressCallback");
  CHECK(list({"none"}) == "DefaultFlowCallback\nMine\nProgressCallback");
  CHECK(list({}) == "DefaultFlowCallback\nMine\nProgressCallback");
  CHECK(list({"jsonl", "tensorboard"}) == "DefaultFlowCallback\nTensorBoardCallback\nJSONLinesLogger\nMine\nProgressCallback");
  CHECK(list({"csv"}, true) == "DefaultFlowCallback\nCSVLogger\nMine\nPrinterCallback");
  CHECK(tt::TrainingArguments().report_to == std::vector<std::string>{"all"});

  tt::TrainingArguments a;
  a.report_to = {"tensorboard", "neptune"};
  CHECK_THROWS_MATCHES(a.validate(), tt::ArgumentError,
                       Catch::Matchers::Message(
                           "TrainingArguments.report_to = tensorboard,neptune: \"neptune\" is not an available "
                           "integration; choose from all, none, tensorboard, csv, jsonl, mlflow, azure_ml, dagshub, "
                           "wandb, trackio, dvclive, codecarbon"));
  a.report_to = {"tensorbord"};
  CHECK_THROWS_WITH(a.validate(), Contains("(did you mean tensorboard?)") && Contains("choose from all, none"));
  a.report_to = {"wandb", "mlflow", "trackio", "dvclive", "codecarbon", "azure_ml", "dagshub"};
  CHECK_NOTHROW(a.validate());
  const std::array<const char*, 5> argv{"prog", "--output_dir", "x", "--report_to", "csv,comet_ml"};
  CHECK_THROWS_WITH(tt::ArgumentParser().parse(static_cast<int>(argv.size()), argv.data()),
                    Contains("\"comet_ml\" is not an available integration"));
}

// ---- TensorBoard -----------------------------------------------------------------------------------------------

TEST_CASE("TensorBoard: the event file of a run decodes to exactly the logged values", "[reporting][tensorboard]") {
  TempDir dir("tb-run");
  auto trainer = make_trainer(run_args(dir, {"tensorboard"}));
  trainer->train();
  const auto& history = trainer->state.log_history;

  // output_dir/runs/<Mon><DD>_<HH>-<MM>-<SS>_<host>/events.out.tfevents.<time>.<host>.<pid>.<n>
  const std::string host = tt::detail::host_name();
  const auto runs = subfolders(dir / "runs");
  REQUIRE(runs.size() == 1);
  CHECK(std::regex_match(runs[0].filename().string(),
                         std::regex("(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[0-3][0-9]_[0-2][0-9]-[0-5][0-9]-[0-6][0-9]_" +
                                    host)));
  const auto files = event_files(runs[0]);
  REQUIRE(files.size() == 1);
  CHECK(std::regex_match(files[0].filename().string(),
                         std::regex(R"(events\.out\.tfevents\.\d{10}\.)" + host + "\\." + std::to_string(::getpid()) +
                                    R"(\.\d+)")));

  const auto events = read_event_file(files[0]);
  REQUIRE(events.size() >= 3);
  CHECK(events[0].file_version == std::optional<std::string>("brain.Event:2"));
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  for (const auto& e : events) CHECK((e.wall_time > now - 3600 && e.wall_time <= now + 1));

  // The arguments: a text-plugin string tensor of shape [1], at step 0, a Markdown code block of the JSON.
  std::vector<const Value*> args_values;
  for (const auto& e : events)
    for (const auto& v : e.values)
      if (v.tag == "args") {
        CHECK(e.step == 0);
        args_values.push_back(&v);
      }
  REQUIRE(args_values.size() == 1);
  const Value& text = *args_values[0];
  CHECK(text.plugin_name == "text");
  CHECK(text.dtype == 7);  // DT_STRING
  CHECK(text.dims == std::vector<std::int64_t>{1});
  REQUIRE(text.string_val.size() == 1);
  CHECK(nlohmann::json::parse(strip_code_block(text.string_val[0])) == trainer->args.to_json());

  // Every numeric log value, at its step, under HF's tag, as float32; nothing else.
  const auto scalars = shown_scalars(runs[0]);
  CHECK(scalars == expected_scalars(history));
  std::set<std::string> tags;
  for (const auto& s : scalars) tags.insert(s.tag);
  for (const char* tag : {"train/loss", "train/learning_rate", "train/grad_norm", "train/epoch", "eval/loss",
                          "eval/accuracy", "eval/runtime", "train/train_loss", "train/train_runtime", "train/total_flos"})
    CHECK(tags.count(tag) == 1);
  CHECK(std::count_if(scalars.begin(), scalars.end(), [](const Scalar& s) { return s.tag == "train/loss"; }) == 4);
  CHECK(std::count_if(scalars.begin(), scalars.end(), [](const Scalar& s) { return s.tag == "eval/accuracy"; }) == 2);

  // An evaluate() after train() goes to a new file in the same run folder.
  trainer->evaluate();
  REQUIRE(event_files(runs[0]).size() == 2);
  CHECK(shown_scalars(runs[0]) == expected_scalars(trainer->state.log_history));
}

TEST_CASE("TensorBoard: a resumed run continues the folder and TensorBoard drops the orphaned steps",
          "[reporting][tensorboard]") {
  TempDir dir("tb-resume");
  auto args = run_args(dir, {"tensorboard"});
  args.save_strategy = tt::SaveStrategy::steps;
  args.save_steps = 4;
  // The "crashed" run went on to step 8 and its end; the resume starts again from checkpoint-4.
  make_trainer(args)->train();
  auto resumed = make_trainer(args);
  resumed->train((dir / "checkpoint-4").string());

  const auto runs = subfolders(dir / "runs");
  REQUIRE(runs.size() == 1);
  const auto files = event_files(runs[0]);
  REQUIRE(files.size() == 2);
  const auto second = read_event_file(files[1]);
  REQUIRE(second.size() >= 2);
  CHECK(second[0].file_version == std::optional<std::string>("brain.Event:2"));
  CHECK(second[1].session_status == std::optional<std::uint64_t>(1));  // START, before any scalar
  CHECK(second[1].step == 4);

  std::vector<std::int64_t> starts;
  const auto shown = shown_scalars(runs[0], &starts);
  CHECK(starts == std::vector<std::int64_t>{4});
  CHECK(shown == expected_scalars(resumed->state.log_history));
  // Each (step, tag) once: the steps 4..8 of the first run are gone, those of the resumed run are there. (The
  // epoch is in every entry, so a step with a log and an evaluation has it twice, as in Hugging Face.)
  std::set<std::pair<std::int64_t, std::string>> keys;
  for (const auto& s : shown)
    if (s.tag != "train/epoch") CHECK(keys.insert({s.step, s.tag}).second);
  CHECK(keys.count({4, "eval/loss"}) == 1);
  CHECK(keys.count({8, "train/loss"}) == 1);

  // An explicit logging_dir is used as it is, by both runs.
  TempDir other("tb-logdir");
  args.output_dir = other.str();
  args.logging_dir = (other / "tb").string();
  make_trainer(args)->train();
  auto again = make_trainer(args);
  again->train(true);  // from checkpoint-8, the end: the resume writes START at 8
  CHECK_FALSE(fs::exists(other / "runs"));
  std::vector<std::int64_t> explicit_starts;
  CHECK(shown_scalars(other / "tb", &explicit_starts) == expected_scalars(again->state.log_history));
  CHECK(explicit_starts == std::vector<std::int64_t>{8});
}

TEST_CASE("TensorBoard: tags, text values, trials, and only the world process zero writes", "[reporting][tensorboard]") {
  TempDir dir("tb-unit");
  tt::TrainingArguments args;
  args.output_dir = dir.str();
  tt::TrainerState state;
  tt::TrainerControl control;
  tt::TensorBoardCallback tb;
  state.trial_name = "trial-7";
  state.global_step = 0;
  tb.on_train_begin(args, state, control, {});
  CHECK(tb.log_dir().filename() == "trial-7");
  CHECK(tb.log_dir().parent_path().parent_path() == dir / "runs");
  state.global_step = 3;
  const tt::LogEntry logs{{"test_loss", 0.5}, {"eval_f1", 1}, {"flag", true}, {"note", "warm start"}, {"loss", 2.5}};
  tt::CallbackContext ctx;
  ctx.logs = &logs;
  tb.on_log(args, state, control, ctx);
  tb.on_train_end(args, state, control, {});
  CHECK(tb.event_file().empty());
  const auto events = read_event_file(event_files(tb.log_dir()).at(0));
  std::vector<Scalar> scalars;
  std::vector<std::string> texts;
  for (const auto& e : events)
    for (const auto& v : e.values) {
      if (v.simple_value) scalars.emplace_back(e.step, v.tag, *v.simple_value);
      if (v.tag == "train/note") texts.push_back(v.string_val.at(0));
    }
  CHECK(scalars == std::vector<Scalar>{{3, "test/loss", 0.5f}, {3, "eval/f1", 1.0f}, {3, "train/flag", 1.0f}, {3, "train/loss", 2.5f}});
  CHECK(texts == std::vector<std::string>{"warm start"});

  TempDir quiet("tb-rank1");
  args.output_dir = quiet.str();
  tt::TensorBoardCallback other_rank;
  state.is_world_process_zero = false;
  other_rank.on_train_begin(args, state, control, {});
  other_rank.on_log(args, state, control, ctx);
  other_rank.on_train_end(args, state, control, {});
  CHECK(fs::is_empty(quiet.path()));
}

// ---- CSV and JSON lines ----------------------------------------------------------------------------------------

TEST_CASE("CSV and JSON-lines logs: one row per log, a widened header keeps the rows, a resume neither "
          "duplicates nor loses a step",
          "[reporting][csv]") {
  TempDir dir("csv");
  auto args = run_args(dir, {"csv", "jsonl"});
  args.max_steps = 12;
  args.eval_steps = 6;
  args.save_strategy = tt::SaveStrategy::steps;
  args.save_steps = 4;
  auto first = make_trainer(args);
  // What the file holds just after the first evaluation's row: its columns widened the header.
  std::string after_first_eval;
  struct Peek : tt::TrainerCallback {
    std::string* out;
    fs::path path;
    Peek(std::string* o, fs::path p) : out(o), path(std::move(p)) {}
    void on_evaluate(const Args&, const State&, Control&, const Context&) override {
      if (out->empty()) *out = tt_test::read_file(path);
    }
  };
  first->add_callback<Peek>(&after_first_eval, dir / "log_history.csv");
  first->train();
  const std::string run1 = tt_test::read_file(dir / "log_history.csv");
  check_csv_matches(run1, first->state.log_history);
  CHECK(split_lines(run1)[0] ==
        "step,epoch,loss,grad_norm,learning_rate,eval_loss,eval_accuracy,eval_runtime,eval_samples_per_second,"
        "eval_steps_per_second,train_runtime,train_samples_per_second,train_steps_per_second,total_flos,train_loss");
  const auto peeked = split_lines(after_first_eval);
  REQUIRE(peeked.size() == 5);  // header, steps 2, 4, 6, the evaluation at 6
  CHECK(peeked[0] ==
        "step,epoch,loss,grad_norm,learning_rate,eval_loss,eval_accuracy,eval_runtime,eval_samples_per_second,"
        "eval_steps_per_second");
  CHECK(peeked[1].rfind("2,0.25,", 0) == 0);
  CHECK(peeked[1].substr(peeked[1].size() - 5) == ",,,,,");  // no evaluation at step 2
  CHECK(split_lines(run1)[1] == peeked[1] + "," + std::string(4, ','));

  // Resume from checkpoint-8: the rows after step 8 of the first run go, the rest stay as they were.
  auto resumed = make_trainer(args);
  resumed->train((dir / "checkpoint-8").string());
  const std::string run2 = tt_test::read_file(dir / "log_history.csv");
  check_csv_matches(run2, resumed->state.log_history);
  const auto lines1 = split_lines(run1), lines2 = split_lines(run2);
  std::size_t kept = 1;
  while (kept < lines1.size() && std::stoll(split_cells(lines1[kept])[0]) <= 8) ++kept;
  CHECK(kept == 6);  // header, 2, 4, 6, eval 6, 8
  REQUIRE(lines2.size() == lines1.size());
  for (std::size_t i = 0; i < kept; ++i) CHECK(lines2[i] == lines1[i]);
  std::vector<std::int64_t> steps;
  for (std::size_t i = 1; i < lines2.size(); ++i) steps.push_back(std::stoll(split_cells(lines2[i])[0]));
  CHECK(steps == std::vector<std::int64_t>{2, 4, 6, 6, 8, 10, 12, 12, 12});

  // JSON lines: every line is the log_history entry.
  const auto jsonl = split_lines(tt_test::read_file(dir / "log_history.jsonl"));
  REQUIRE(jsonl.size() == resumed->state.log_history.size());
  for (std::size_t i = 0; i < jsonl.size(); ++i) {
    CHECK(tt::detail::parse_python_json(jsonl[i], "line") == nlohmann::json(resumed->state.log_history[i]));
    CHECK(jsonl[i].rfind("{\"step\": ", 0) == 0);
  }

  // A key first logged after training widens the header once more and keeps every row.
  resumed->log({{"note", "a, \"quoted\" word"}, {"ratio", std::nan("")}});
  const auto lines3 = split_lines(tt_test::read_file(dir / "log_history.csv"));
  REQUIRE(lines3.size() == lines2.size() + 1);
  CHECK(lines3[0] == lines2[0] + ",note,ratio");
  for (std::size_t i = 1; i < lines2.size(); ++i) CHECK(lines3[i] == lines2[i] + ",,");
  CHECK(lines3.back() == "12,1.5," + std::string(13, ',') + "\"a, \"\"quoted\"\" word\",nan");
  CHECK(split_lines(tt_test::read_file(dir / "log_history.jsonl")).back() ==
        "{\"step\": 12, \"epoch\": 1.5, \"note\": \"a, \\\"quoted\\\" word\", \"ratio\": NaN}");
  for (const auto& entry : fs::directory_iterator(dir.path()))
    CHECK(entry.path().filename().string().rfind(".tmp-", 0) != 0);

  // A file that does not begin with the checkpoint's rows (here: gone) is written anew from log_history.
  fs::remove(dir / "log_history.csv");
  auto rebuilt = make_trainer(args);
  rebuilt->train((dir / "checkpoint-8").string());
  check_csv_matches(tt_test::read_file(dir / "log_history.csv"), rebuilt->state.log_history);
}

TEST_CASE("CSV and JSON-lines logs: paths come from the arguments of each train()", "[reporting][csv]") {
  TempDir dir("csv-paths"), trial_dir("csv-trial");
  auto trainer = make_trainer(run_args(dir, {"all"}));
  trainer->train();
  CHECK(fs::exists(dir / "log_history.csv"));
  CHECK(fs::exists(dir / "log_history.jsonl"));
  CHECK(subfolders(dir / "runs").size() == 1);
  // A trial with another output_dir writes there, from scratch.
  trainer->train({}, tt::Trial{{"output_dir", trial_dir.str()}, {"max_steps", 4}});
  check_csv_matches(tt_test::read_file(trial_dir / "log_history.csv"), trainer->state.log_history);
  CHECK(split_lines(tt_test::read_file(trial_dir / "log_history.jsonl")).size() == trainer->state.log_history.size());
  CHECK(subfolders(trial_dir / "runs").size() == 1);
  CHECK(split_lines(tt_test::read_file(dir / "log_history.jsonl")).size() == 7);  // the first run's file is untouched

  // A trial name tags the file; an explicit path is used as given; other processes write nothing.
  tt::TrainingArguments args;
  args.output_dir = dir.str();
  tt::TrainerState state;
  tt::TrainerControl control;
  state.trial_name = "t3";
  tt::CSVLogger named;
  named.on_train_begin(args, state, control, {});
  CHECK(fs::path(named.path()) == dir / "log_history-t3.csv");
  CHECK(tt_test::read_file(named.path()) == "step,epoch\n");
  tt::JSONLinesLogger explicit_path((dir / "logs" / "mine.jsonl").string());
  state.trial_name.reset();
  explicit_path.on_train_begin(args, state, control, {});
  CHECK(fs::exists(dir / "logs" / "mine.jsonl"));
  TempDir quiet("csv-rank1");
  args.output_dir = quiet.str();
  state.is_world_process_zero = false;
  tt::CSVLogger rank1;
  rank1.on_train_begin(args, state, control, {});
  const tt::LogEntry logs{{"loss", 1.0}};
  tt::CallbackContext ctx;
  ctx.logs = &logs;
  rank1.on_log(args, state, control, ctx);
  CHECK(fs::is_empty(quiet.path()));
}

// ---- plot_trainer_state ----------------------------------------------------------------------------------------

TEST_CASE("save_metrics writes <split>_results.json and merges every split into all_results.json as HF does",
          "[reporting][results]") {
  TempDir dir("results");
  tt::Metrics train_metrics, eval_metrics;
  train_metrics["train_loss"] = 0.5;
  train_metrics["epoch"] = 2.0;
  eval_metrics["eval_loss"] = 0.25;
  eval_metrics["epoch"] = 3.0;
  tt::save_metrics(dir / "out", "train", train_metrics);
  tt::save_metrics(dir / "out", "eval", eval_metrics);
  CHECK(tt_test::read_file(dir / "out/train_results.json") == "{\n    \"epoch\": 2.0,\n    \"train_loss\": 0.5\n}\n");
  CHECK(tt_test::read_file(dir / "out/all_results.json") ==
        "{\n    \"epoch\": 3.0,\n    \"eval_loss\": 0.25,\n    \"train_loss\": 0.5\n}\n");
  tt::save_metrics(dir / "out", "test", eval_metrics, /*combined=*/false);
  CHECK(fs::exists(dir / "out/test_results.json"));
  CHECK(nlohmann::json::parse(tt_test::read_file(dir / "out/all_results.json")).size() == 3);
  tt_test::write_file(dir / "out/all_results.json", "not JSON");  // an unreadable one is started afresh
  tt::save_metrics(dir / "out", "eval", eval_metrics);
  CHECK(nlohmann::json::parse(tt_test::read_file(dir / "out/all_results.json")) ==
        nlohmann::json::parse(tt_test::read_file(dir / "out/eval_results.json")));
}

TEST_CASE("plot_trainer_state draws a well-formed SVG with one path per series", "[reporting][plot]") {
  TempDir dir("plot");
  auto args = run_args(dir, {"none"});
  args.max_steps = 16;
  auto trainer = make_trainer(args);
  trainer->train();
  trainer->save_state();
  const std::string plot = TORCHTRAIN_PLOT_TRAINER_STATE;
  const auto svg_path = dir / "curves.svg";
  const auto made = tt_test::run_command(plot + " " + (dir / "trainer_state.json").string() + " " + svg_path.string());
  INFO(made.output);
  REQUIRE(made.status == 0);
  const auto lint = tt_test::run_command("xmllint --noout " + svg_path.string());
  INFO(lint.output);
  CHECK(lint.status == 0);
  const std::string svg = tt_test::read_file(svg_path);
  CHECK(count(svg, "<path ") == 4);
  for (const char* series : {"loss", "eval_loss", "learning_rate", "eval_accuracy"})
    CHECK(count(svg, "<path data-series=\"" + std::string(series) + "\"") == 1);
  CHECK(count(svg, "<circle ") == 8);  // the 4 evaluations of eval_loss and of eval_accuracy
  CHECK_THAT(svg, Contains(">global step</text>") && Contains(">eval accuracy</text>") && Contains(">learning rate</text>"));
  // The train loss path has a point per logged loss.
  const std::regex train_path("<path data-series=\"loss\" d=\"([^\"]*)\"");
  std::smatch m;
  REQUIRE(std::regex_search(svg, m, train_path));
  CHECK(count(m[1].str(), "L") == 7);

  const auto missing = tt_test::run_command(plot + " " + (dir / "nope.json").string() + " " + svg_path.string());
  CHECK(missing.status == 2);
  CHECK_THAT(missing.output, Contains("plot_trainer_state: error: ") && Contains("nope.json: cannot open the file"));
  tt_test::write_file(dir / "bad.json", "{\"log_history\": [");
  const auto malformed = tt_test::run_command(plot + " " + (dir / "bad.json").string() + " " + svg_path.string());
  CHECK(malformed.status == 2);
  CHECK_THAT(malformed.output, Contains("bad.json"));
  CHECK(tt_test::run_command(plot).status == 2);
}

// ---- progress display ------------------------------------------------------------------------------------------

TEST_CASE("ProgressCallback: redraws are rate limited, a standalone evaluation bar stays", "[reporting][progress]") {
  std::ostringstream out;
  tt::ProgressCallback progress(100, out, true);
  progress.redraw_interval = std::chrono::hours(1);
  tt::TrainingArguments args;
  tt::TrainerState state;
  tt::TrainerControl control;
  state.max_steps = 50;
  progress.on_train_begin(args, state, control, {});
  const auto redraws = [&] { return count(out.str(), "\r"); };
  CHECK(redraws() == 1);
  for (state.global_step = 1; state.global_step < 50; ++state.global_step) progress.on_step_end(args, state, control, {});
  CHECK(redraws() == 1);  // within the interval nothing is redrawn...
  progress.on_step_end(args, state, control, {});
  CHECK(redraws() == 2);  // ...but the last step always is
  CHECK_THAT(out.str(), Contains("50/50"));
  progress.on_train_end(args, state, control, {});

  // evaluate() outside training: the finished evaluation bar stays on its own line.
  out.str("");
  tt::DataLoaderInfo loader{3, 24, 8};
  tt::CallbackContext ctx;
  ctx.eval_dataloader = &loader;
  for (int i = 0; i < 3; ++i) progress.on_prediction_step(args, state, control, ctx);
  progress.on_evaluate(args, state, control, {});
  const std::string shown = out.str();
  REQUIRE_FALSE(shown.empty());
  CHECK(shown.back() == '\n');
  CHECK_THAT(shown.substr(shown.rfind('\r')), Contains("Evaluating: 100%|") && Contains("3/3"));

  // Over a stream, whose length is unknown, the bar counts the batches, as tqdm does without a total.
  out.str("");
  tt::DataLoaderInfo stream{0, 0, 8};
  ctx.eval_dataloader = &stream;
  for (int i = 0; i < 5; ++i) progress.on_prediction_step(args, state, control, ctx);
  progress.on_evaluate(args, state, control, {});
  const std::string counted = out.str();
  REQUIRE(counted.rfind('\r') != std::string::npos);
  const std::string last = counted.substr(counted.rfind('\r'));
  CHECK_THAT(last, Contains("Evaluating: 5it [") && Contains("it/s]"));
  CHECK_THAT(last, !Contains("%|"));
}

TEST_CASE("A real run with every reporter prints plain log lines when the output is not a terminal",
          "[reporting][progress]") {
  TempDir dir("progress-run");
  auto args = run_args(dir, {"all"});
  args.disable_tqdm = false;
  torch::manual_seed(0);
  Trainer trainer(Mlp(), args, Blobs(32, 1), Blobs(16, 2));
  std::ostringstream out;
  trainer.pop_callback<tt::ProgressCallback>();
  trainer.add_callback<tt::ProgressCallback>(100, out, false);
  trainer.train();
  const auto lines = split_lines(out.str());
  REQUIRE(lines.size() == trainer.state.log_history.size());  // not a terminal: one plain line per log
  CHECK(lines[0].rfind("{'loss': ", 0) == 0);
  CHECK(out.str().find('\r') == std::string::npos);
}
