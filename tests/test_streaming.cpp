// Stream datasets: training over passes that end with the stream, evaluation and prediction from streams, resume
// from a saved position (exact, nothing replayed) or by replaying a stream without one, a background reader, and
// CsvStream's reading, shuffling and checks.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torchtrain/torchtrain.hpp>

#include "datasets.hpp"
#include "support.hpp"

namespace tt = torchtrain;
namespace fs = std::filesystem;

namespace {

using Examples = std::vector<torch::data::Example<>>;

// Blobs' examples 0..length-1 in order, each with its index as a fifth feature; counts the examples it produced.
// No save() and load(): a resume has to replay it.
struct StatelessIdStream {
  std::shared_ptr<tt_test::Blobs> blobs;
  std::int64_t length, next = 0;
  std::shared_ptr<std::int64_t> produced = std::make_shared<std::int64_t>(0);

  explicit StatelessIdStream(std::int64_t length) : blobs(std::make_shared<tt_test::Blobs>(64, 7)), length(length) {}
  torch::optional<Examples> get_batch(std::size_t n) {
    if (next >= length) return torch::nullopt;
    Examples out;
    for (std::size_t i = 0; i < n && next < length; ++i, ++next) {
      const auto x = torch::cat({blobs->x[next], torch::tensor({static_cast<float>(next)})});
      out.push_back({x, blobs->y[next]});
    }
    *produced += static_cast<std::int64_t>(out.size());
    return out;
  }
  void reset() { next = 0; }
};

// The same stream, with a position a checkpoint saves.
struct IdStream : StatelessIdStream {
  using StatelessIdStream::StatelessIdStream;
  void save(torch::serialize::OutputArchive& archive) const { archive.write("next", torch::tensor(next)); }
  void load(torch::serialize::InputArchive& archive) {
    torch::Tensor t;
    archive.read("next", t);
    next = t.item<std::int64_t>();
  }
};

// Tt_test's MLP on the first four features; records the fifth (the example's index) of every training batch.
struct IdMlpImpl : torch::nn::Module {
  tt_test::Mlp mlp;
  std::shared_ptr<std::vector<std::int64_t>> seen = std::make_shared<std::vector<std::int64_t>>();
  IdMlpImpl() : mlp(register_module("mlp", tt_test::Mlp())) {}
  torch::Tensor forward(torch::Tensor x) {
    if (is_training()) {
      const auto ids = x.select(1, 4).to(torch::kLong);
      seen->insert(seen->end(), ids.data_ptr<std::int64_t>(), ids.data_ptr<std::int64_t>() + ids.numel());
    }
    return mlp(x.narrow(1, 0, 4));
  }
};
TORCH_MODULE(IdMlp);

tt::TrainingArguments stream_args(const std::string& dir) {
  tt::TrainingArguments a;
  a.output_dir = dir;
  a.disable_tqdm = true;
  a.report_to = {"none"};
  a.per_device_train_batch_size = 8;
  a.gradient_accumulation_steps = 2;
  a.max_steps = 10;
  a.learning_rate = 1e-2;
  a.save_strategy = tt::SaveStrategy::steps;
  a.save_steps = 3;
  return a;
}

std::vector<std::int64_t> range(std::int64_t begin, std::int64_t end) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(end - begin));
  std::iota(out.begin(), out.end(), begin);
  return out;
}

std::vector<std::int64_t> concat(std::vector<std::vector<std::int64_t>> parts) {
  std::vector<std::int64_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

void require_same_weights(torch::nn::Module& a, torch::nn::Module& b) {
  const auto pa = a.parameters(), pb = b.parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) CHECK(torch::equal(pa[i], pb[i]));
}

// The logged training losses, by step.
std::vector<std::pair<std::int64_t, double>> losses_of(const std::vector<tt::LogEntry>& history) {
  std::vector<std::pair<std::int64_t, double>> out;
  for (const auto& entry : history)
    if (entry.contains("loss")) out.emplace_back(entry["step"].get<std::int64_t>(), entry["loss"].get<double>());
  return out;
}

class EventCounter : public tt::TrainerCallback {
 public:
  int epoch_begins = 0, epoch_ends = 0, step_begins = 0;
  void on_epoch_begin(const tt::TrainingArguments&, const tt::TrainerState&, tt::TrainerControl&,
                      const tt::CallbackContext&) override {
    ++epoch_begins;
  }
  void on_epoch_end(const tt::TrainingArguments&, const tt::TrainerState&, tt::TrainerControl&,
                    const tt::CallbackContext&) override {
    ++epoch_ends;
  }
  void on_step_begin(const tt::TrainingArguments&, const tt::TrainerState&, tt::TrainerControl&,
                     const tt::CallbackContext&) override {
    ++step_begins;
  }
};

// 50 examples in batches of 8 make 7 micro-batches a pass, the last of 2 examples, and with 2 accumulated, 4
// updates a pass, the last of one micro-batch.
constexpr std::int64_t kStreamLength = 50;

}  // namespace

TEST_CASE("A stream trains for max_steps over passes that end with the stream, and evaluation and prediction read streams") {
  tt_test::TempDir dir("stream-train");
  auto args = stream_args(dir.str());
  args.save_strategy = tt::SaveStrategy::no;
  args.eval_strategy = tt::IntervalStrategy::steps;
  args.eval_steps = 5;
  tt::Trainer trainer(IdMlp(), args, IdStream(kStreamLength), IdStream(30));
  trainer.compute_metrics = tt::metrics::accuracy;
  const auto events = trainer.add_callback<EventCounter>();
  const auto result = trainer.train();

  // Two whole passes, then 4 micro-batches of the third: 32 examples.
  CHECK(result.global_step == 10);
  CHECK(*trainer.model->seen == concat({range(0, 50), range(0, 50), range(0, 32)}));
  CHECK(events->epoch_begins == 3);
  CHECK(events->epoch_ends == 3);
  CHECK(events->step_begins == 10);
  // As Hugging Face: an epoch is max_steps x gradient_accumulation_steps micro-batches long, and there are
  // sys.maxsize of them.
  CHECK(trainer.state.epoch.value() == Approx(2.2));
  CHECK(trainer.state.num_train_epochs == std::numeric_limits<std::int64_t>::max());
  CHECK(nlohmann::json::parse(trainer.state.to_json_string())["num_train_epochs"] == 9223372036854775807LL);

  // The evaluations covered the 30 examples of the evaluation stream.
  const auto& history = trainer.state.log_history;
  int evaluations = 0;
  for (const auto& entry : history)
    if (entry.contains("eval_accuracy")) ++evaluations;
  CHECK(evaluations == 2);
  const auto prediction = trainer.predict(IdStream(30));
  REQUIRE(prediction.predictions.defined());
  CHECK(prediction.predictions.size(0) == 30);
  CHECK(torch::equal(prediction.label_ids, tt_test::Blobs(64, 7).y.narrow(0, 0, 30)));
  CHECK(prediction.metrics.contains("test_accuracy"));
}

TEST_CASE("A stream needs max_steps, with Hugging Face's messages") {
  tt_test::TempDir dir("stream-max-steps");
  auto args = stream_args(dir.str());
  args.max_steps = -1;
  CHECK_THROWS_WITH((tt::Trainer(IdMlp(), args, IdStream(10))),
                    Catch::Contains("The train_dataset does not implement __len__, max_steps has to be specified"));
  args.max_steps = 4;
  tt::Trainer trainer(IdMlp(), args, IdStream(10));
  trainer.args.max_steps = -1;
  CHECK_THROWS_WITH(trainer.train(),
                    "args.max_steps must be set to a positive value if dataloader does not have a length, was -1");
}

TEST_CASE("An empty stream stops training with Hugging Face's warning") {
  tt_test::TempDir dir("stream-empty");
  tt_test::WarningCapture warnings;
  tt::Trainer trainer(IdMlp(), stream_args(dir.str()), IdStream(0));
  const auto result = trainer.train();
  CHECK(result.global_step == 0);
  CHECK(warnings.contains("There seems not to be a single sample in your epoch_iterator, stopping training at step 0!"));
}

TEST_CASE("A resume continues a stream from its saved position: the same examples, the same weights, nothing replayed") {
  tt_test::TempDir dir("stream-resume");
  torch::manual_seed(5);
  tt::Trainer full(IdMlp(), stream_args((dir / "full").string()), IdStream(kStreamLength));
  full.train();

  // Checkpoint 6: the whole first pass (4 updates), then 2 updates (4 micro-batches) of the second.
  const auto checkpoint = dir / "full" / "checkpoint-6";
  const auto loop = nlohmann::json::parse(tt_test::read_file(checkpoint / "loop_state.json"));
  CHECK(loop["stream_position"] == nlohmann::json{{"epoch", 1}, {"batches", 4}});
  CHECK(tt::CheckpointManifest::read(checkpoint / "manifest.json").find("data_state.pt"));

  for (int workers : {0, 2}) {
    DYNAMIC_SECTION("dataloader_num_workers " << workers) {
      auto args = stream_args((dir / "resumed").string());
      args.dataloader_num_workers = workers;
      torch::manual_seed(99);  // overwritten by the checkpoint's model
      IdStream stream(kStreamLength);
      const auto produced = stream.produced;
      tt::Trainer resumed(IdMlp(), args, std::move(stream));
      resumed.train(tt::ResumeFrom(checkpoint.string()));
      CHECK(*resumed.model->seen ==
            std::vector<std::int64_t>(full.model->seen->begin() + 50 + 32, full.model->seen->end()));
      // Nothing before the checkpoint was read again; a background reader reads at most a few batches ahead.
      if (workers == 0) CHECK(*produced == static_cast<std::int64_t>(resumed.model->seen->size()));
      CHECK(*produced <= static_cast<std::int64_t>(resumed.model->seen->size()) + 4 * 8);
      require_same_weights(*full.model, *resumed.model);
      CHECK(losses_of(resumed.state.log_history) == losses_of(full.state.log_history));
    }
  }
}

TEST_CASE("A background reader gives a stream's batches in order, and checkpoints the position of the batches taken") {
  tt_test::TempDir dir("stream-workers");
  torch::manual_seed(5);
  tt::Trainer plain(IdMlp(), stream_args((dir / "plain").string()), IdStream(kStreamLength));
  plain.train();
  auto args = stream_args((dir / "read-ahead").string());
  args.dataloader_num_workers = 3;
  torch::manual_seed(5);
  tt::Trainer read_ahead(IdMlp(), args, IdStream(kStreamLength));
  read_ahead.train();
  CHECK(*read_ahead.model->seen == *plain.model->seen);
  require_same_weights(*plain.model, *read_ahead.model);
  for (const char* name : {"checkpoint-3", "checkpoint-6", "checkpoint-9"})
    CHECK(tt_test::read_file(dir / "read-ahead" / name / "data_state.pt") ==
          tt_test::read_file(dir / "plain" / name / "data_state.pt"));
}

TEST_CASE("A stream without a saved position is replayed, with a warning; ignore_data_skip starts its epoch again") {
  tt_test::TempDir dir("stream-replay");
  torch::manual_seed(5);
  tt::Trainer full(IdMlp(), stream_args((dir / "full").string()), StatelessIdStream(kStreamLength));
  full.train();
  const auto checkpoint = dir / "full" / "checkpoint-6";
  CHECK_FALSE(fs::exists(checkpoint / "data_state.pt"));

  tt_test::WarningCapture warnings;
  torch::manual_seed(99);
  StatelessIdStream stream(kStreamLength);
  const auto produced = stream.produced;
  tt::Trainer replayed(IdMlp(), stream_args((dir / "replayed").string()), std::move(stream));
  replayed.train(tt::ResumeFrom(checkpoint.string()));
  CHECK(warnings.contains("resuming reads and drops its first 4 batches of epoch 1"));
  CHECK(*produced == 32 + static_cast<std::int64_t>(replayed.model->seen->size()));
  CHECK(*replayed.model->seen == std::vector<std::int64_t>(full.model->seen->begin() + 82, full.model->seen->end()));
  require_same_weights(*full.model, *replayed.model);

  auto args = stream_args((dir / "ignored").string());
  args.ignore_data_skip = true;
  tt::Trainer restarted(IdMlp(), args, StatelessIdStream(kStreamLength));
  restarted.train(tt::ResumeFrom(checkpoint.string()));
  // The 4 updates left are the whole second pass, read from its beginning.
  CHECK(*restarted.model->seen == range(0, 50));
}

namespace {

// A classification CSV with a header, a blank line and a '\r\n' line ending: 4 features, class = row % 2.
std::string classification_csv(int rows) {
  std::string text = "a,b,c,d,label\n";
  for (int i = 0; i < rows; ++i) {
    const int label = i % 2;
    for (int f = 0; f < 4; ++f) text += std::to_string(label * 2 + (i * 7 + f * 3) % 5 * 0.1) + ",";
    text += std::to_string(label) + (i == 3 ? "\r\n" : "\n");
    if (i == 5) text += "  \n";
  }
  return text;
}

std::vector<torch::data::Example<>> read_all(tt::data::CsvStream& stream, std::size_t batch) {
  std::vector<torch::data::Example<>> batches;
  while (auto b = stream.get_batch(batch)) batches.push_back(*b);
  return batches;
}

torch::Tensor labels_of(const std::vector<torch::data::Example<>>& batches) {
  std::vector<torch::Tensor> parts;
  for (const auto& b : batches) parts.push_back(b.target);
  return torch::cat(parts);
}

std::string position_of(const tt::data::CsvStream& stream) {
  torch::serialize::OutputArchive archive;
  stream.save(archive);
  std::ostringstream bytes;
  archive.save_to(bytes);
  return bytes.str();
}

void load_position(tt::data::CsvStream& stream, const std::string& bytes) {
  torch::serialize::InputArchive archive;
  archive.load_from(bytes.data(), bytes.size());
  stream.load(archive);
}

}  // namespace

TEST_CASE("CsvStream reads what TensorDataset::from_csv reads, in batches, and names the line of a bad row") {
  tt_test::TempDir dir("csv-stream");
  const auto path = (dir / "data.csv").string();
  tt_test::write_file(path, classification_csv(23));
  const auto all = tt::data::TensorDataset::from_csv(path);
  tt::data::CsvStream stream(path);
  CHECK(stream.num_features() == 4);
  const auto batches = read_all(stream, 5);
  REQUIRE(batches.size() == 5);
  CHECK(batches.back().data.size(0) == 3);
  std::vector<torch::Tensor> features;
  for (const auto& b : batches) features.push_back(b.data);
  CHECK(torch::equal(torch::cat(features), all.features()));
  CHECK(torch::equal(labels_of(batches), all.labels()));
  CHECK_FALSE(stream.get_batch(5));  // exhausted until reset()
  stream.reset();
  CHECK(torch::equal(labels_of(read_all(stream, 7)), all.labels()));

  tt_test::write_file(path, "1,2,0\n3,4,1\n5,x,1\n");
  tt::data::CsvStream bad(path);
  CHECK(bad.get_batch(2));
  CHECK_THROWS_WITH(bad.get_batch(2), path + ":3: a value is not a number: '5,x,1'");
  tt_test::write_file(path, "1,2,0\n3,1\n");
  tt::data::CsvStream ragged(path);
  CHECK_THROWS_WITH(ragged.get_batch(2), path + ":2: expected 3 columns, found 2");
  CHECK_THROWS_WITH(tt::data::CsvStream((dir / "missing.csv").string()), Catch::Contains("cannot open the file"));
}

TEST_CASE("CsvStream keeps one process's share itself: the rows a loader keeps of each global batch") {
  tt_test::TempDir dir("csv-shard");
  const auto path = (dir / "data.csv").string();
  tt_test::write_file(path, classification_csv(23));
  tt::data::CsvStream whole(path), shard(path);
  shard.set_shard(1, 2);
  int batches = 0;
  while (auto all = whole.get_batch(6)) {  // 6, 6, 6 and 5 rows: rank 1 keeps 3, 3, 3 and 2
    const auto mine = shard.get_batch(3);
    REQUIRE(mine);
    CHECK(torch::equal(mine->data, all->data.slice(0, 1, INT64_MAX, 2)));
    CHECK(torch::equal(mine->target, all->target.slice(0, 1, INT64_MAX, 2)));
    ++batches;
  }
  CHECK(batches == 4);
  CHECK_FALSE(shard.get_batch(3));
  CHECK_THROWS_AS(shard.set_shard(2, 2), tt::ArgumentError);

  // A loader of rank 1 of 2 tells the stream its share, and asks it for its own batch size.
  tt::data::CsvStream told(path);
  const tt::data::DefaultDataCollator collator;
  tt::data::StreamLoader<tt::data::CsvStream, tt::data::DefaultDataCollator> loader(told, collator, 3, 0, 1, 2);
  loader.start_epoch(0);
  const auto first = loader.next();
  REQUIRE(first);
  CHECK(first->examples == 3);
  CHECK(torch::equal(first->batch.data, tt::data::TensorDataset::from_csv(path).features().narrow(0, 0, 6).slice(0, 1, 6, 2)));
}

TEST_CASE("CsvStream's shuffle buffer draws every row once a pass, differently each epoch, and resumes its draws") {
  tt_test::TempDir dir("csv-shuffle");
  const auto path = (dir / "data.csv").string();
  tt_test::write_file(path, classification_csv(40));
  const auto in_order = tt::data::TensorDataset::from_csv(path).features();
  tt::data::TextLineStreamOptions options;
  options.shuffle_buffer = 8;
  options.seed = 3;
  tt::data::CsvStream stream(path, options);
  auto rows_of = [&](const std::vector<torch::data::Example<>>& batches) {
    std::vector<torch::Tensor> parts;
    for (const auto& b : batches) parts.push_back(b.data);
    return torch::cat(parts);
  };
  const auto epoch0 = rows_of(read_all(stream, 6));
  CHECK_FALSE(torch::equal(epoch0, in_order));
  // A permutation of the rows: sorted the same way, they are the same.
  auto sorted = [](const torch::Tensor& rows) {
    return rows.index_select(0, std::get<1>((rows.select(1, 0) * 1000 + rows.select(1, 1)).sort()));
  };
  CHECK(torch::equal(sorted(epoch0), sorted(in_order)));
  stream.reset();
  CHECK(torch::equal(rows_of(read_all(stream, 6)), epoch0));  // a pure function of the seed and the epoch
  stream.set_epoch(1);
  stream.reset();
  const auto epoch1 = rows_of(read_all(stream, 6));
  CHECK_FALSE(torch::equal(epoch1, epoch0));

  // Saved after 3 batches, a new stream continues the same draws.
  stream.reset();
  for (int b = 0; b < 3; ++b) REQUIRE(stream.get_batch(6));
  const auto position = position_of(stream);
  const auto rest = rows_of(read_all(stream, 6));
  tt::data::CsvStream continued(path, options);
  load_position(continued, position);
  CHECK(torch::equal(rows_of(read_all(continued, 6)), rest));
  CHECK(torch::equal(epoch1.narrow(0, 18, 22), rest));

  // The file changed since: the position does not fit it, and loading says so.
  tt_test::write_file(path, classification_csv(41));
  tt::data::CsvStream changed(path, options);
  CHECK_THROWS_WITH(load_position(changed, position),
                    Catch::Contains("the saved position does not fit the file") &&
                        Catch::Contains("was the file changed since the checkpoint?"));
}

TEST_CASE("A resume whose stream position does not fit its file fails with the reason and changes nothing") {
  tt_test::TempDir dir("csv-resume");
  const auto path = (dir / "data.csv").string();
  tt_test::write_file(path, classification_csv(40));
  auto args = stream_args((dir / "out").string());
  args.gradient_accumulation_steps = 1;
  args.max_steps = 8;
  args.save_steps = 4;
  tt::Trainer first(tt_test::Mlp(), args, tt::data::CsvStream(path), tt::data::CsvStream(path));
  first.train();
  const auto checkpoint = dir / "out" / "checkpoint-4";
  REQUIRE(fs::exists(checkpoint / "data_state.pt"));

  // Resumed from the unchanged file, it ends where the uninterrupted run did.
  torch::manual_seed(11);
  tt::Trainer resumed(tt_test::Mlp(), args, tt::data::CsvStream(path), tt::data::CsvStream(path));
  resumed.train(tt::ResumeFrom(checkpoint.string()));
  require_same_weights(*first.model, *resumed.model);

  tt_test::write_file(path, classification_csv(30));
  torch::manual_seed(12);
  tt::Trainer broken(tt_test::Mlp(), args, tt::data::CsvStream(path), tt::data::CsvStream(path));
  std::vector<torch::Tensor> before;
  for (const auto& p : broken.model->parameters()) before.push_back(p.detach().clone());
  CHECK_THROWS_AS(broken.train(tt::ResumeFrom(checkpoint.string())), tt::CheckpointError);
  CHECK_THROWS_WITH(broken.train(tt::ResumeFrom(checkpoint.string())),
                    Catch::Contains("data_state.pt: ") && Catch::Contains("was the file changed since the checkpoint?") &&
                        Catch::Contains("nothing was changed"));
  const auto after = broken.model->parameters();
  for (std::size_t i = 0; i < before.size(); ++i) CHECK(torch::equal(before[i], after[i]));
  CHECK_FALSE(tt::checkpoint::invalid_reason(checkpoint));  // the checkpoint itself is untouched
}

TEST_CASE("loop_state.json's stream_position round-trips, and a malformed one is a FileFormatError naming it") {
  tt::LoopState loop;
  CHECK_FALSE(loop.to_json().contains("stream_position"));
  loop.stream_position = tt::LoopState::StreamPosition{3, 17};
  const auto json = loop.to_json();
  CHECK(json["stream_position"] == nlohmann::json{{"epoch", 3}, {"batches", 17}});
  const auto back = tt::LoopState::from_json(nlohmann::json::parse(json.dump()));
  REQUIRE(back.stream_position);
  CHECK(back.stream_position->epoch == 3);
  CHECK(back.stream_position->batches == 17);
  for (const auto& bad : {nlohmann::json(5), nlohmann::json{{"epoch", 1}}, nlohmann::json{{"epoch", 1}, {"batches", -2}},
                          nlohmann::json{{"epoch", "one"}, {"batches", 2}}}) {
    auto j = json;
    j["stream_position"] = bad;
    INFO(j.dump());
    CHECK_THROWS_AS(tt::LoopState::from_json(j), tt::FileFormatError);
  }
  auto j = json;
  j["stream_position"] = {{"epoch", 1}, {"batches", -2}};
  CHECK_THROWS_WITH(tt::LoopState::from_json(j), Catch::Contains("'stream_position' must hold an epoch"));
}
