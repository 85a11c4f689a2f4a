// Checkpoints: CRC32C, the atomic file writer, the manifest, resuming past corrupt checkpoints, a resume that
// reads each byte once, loads that fail without changing anything, a disk that fills up during a save, and
// save_total_limit rotation.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <torchtrain/torchtrain.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "datasets.hpp"
#include "support.hpp"

namespace tt = torchtrain;
namespace fs = std::filesystem;
using tt_test::Blobs;
using tt_test::Mlp;
using tt_test::TempDir;

namespace {

// A stateful callback that counts steps and rejects a saved count of 999, as a corrupt state would be.
struct StepCounter : tt::TrainerCallback {
  int64_t steps = 0;
  void on_step_end(const Args&, const State&, Control&, const Context&) override { ++steps; }
  std::optional<nlohmann::json> state() const override {
    return nlohmann::json{{"args", nlohmann::json::object()}, {"attributes", {{"steps", steps}}}};
  }
  void restore_state(const nlohmann::json& saved) override {
    const auto value = saved.at("attributes").at("steps").get<int64_t>();
    if (value == 999) throw tt::ArgumentError("StepCounter: steps 999 is not a count this callback saves");
    steps = value;
  }
};

// The global step a (resumed) run starts from.
struct StartStep : tt::TrainerCallback {
  int64_t step = -1;
  void on_train_begin(const Args&, const State& s, Control&, const Context&) override { step = s.global_step; }
};

tt::TrainingArguments checkpointing_args(const std::string& dir) {
  tt::TrainingArguments a;
  a.output_dir = dir;
  a.disable_tqdm = true;
  a.report_to = {"none"};
  a.save_strategy = tt::SaveStrategy::steps;
  a.save_steps = 2;
  a.logging_steps = 2;
  a.per_device_train_batch_size = 4;
  a.max_steps = 6;
  return a;
}

// Trains 6 steps into `dir`: checkpoint-2, -4 and -6.
std::vector<torch::Tensor> train_three_checkpoints(const std::string& dir) {
  tt::Trainer trainer(Mlp(), checkpointing_args(dir), Blobs(16, 1));
  trainer.pop_callback<tt::PrinterCallback>();
  trainer.train();
  std::vector<torch::Tensor> weights;
  for (const auto& p : trainer.model->parameters()) weights.push_back(p.detach().clone());
  return weights;
}

// What a test does to a checkpoint after the fact: the manifest then describes the files as they are now.
void rewrite_manifest(const fs::path& folder) {
  auto manifest = tt::CheckpointManifest::read(folder / "manifest.json");
  manifest.files.clear();
  for (const auto& entry : fs::directory_iterator(folder))
    if (entry.path().filename() != "manifest.json")
      manifest.add(entry.path().filename().string(), tt::detail::crc32c_of_file(entry.path().string()));
  manifest.write(folder);
}

template <class E, class F>
std::string thrown(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "<nothing was thrown>";
}

// Runs `f` (which builds a model, say) and then puts the global CPU generator back as it was.
template <class F>
void without_using_the_rng(F&& f) {
  auto generator = at::globalContext().defaultGenerator(at::kCPU);
  const auto state = generator.get_state();
  f();
  generator.set_state(state);
}

std::vector<std::string> names(const std::vector<fs::path>& folders) {
  std::vector<std::string> out;
  for (const auto& f : folders) out.push_back(f.filename().string());
  return out;
}

}  // namespace

TEST_CASE("CRC32C gives the Castagnoli check values in hardware and in software") {
  using tt::detail::crc32c;
  CHECK(crc32c("123456789", 9) == 0xE3069283u);
  const std::string zeros(32, '\0'), ones(32, '\xff');
  CHECK(crc32c(zeros.data(), zeros.size()) == 0x8A9136AAu);  // RFC 3720 B.4
  CHECK(crc32c(ones.data(), ones.size()) == 0x62A8AB43u);
  CHECK(crc32c(nullptr, 0) == 0u);
  CHECK(tt::detail::masked_crc32c(0) == 0xA282EAD8u);
  CHECK(tt::detail::masked_crc32c(0xE3069283u) == (((0xE3069283u >> 15) | (0xE3069283u << 17)) + 0xA282EAD8u));

  std::mt19937 gen(3);
  std::vector<unsigned char> bytes(100000);
  for (auto& b : bytes) b = static_cast<unsigned char>(gen());
  // 24576 bytes and more go through the hardware's three interleaved streams, 3 x 8192 bytes at a time.
  for (std::size_t offset : {0, 1, 5, 7})
    for (std::size_t size : {0, 1, 7, 8, 9, 63, 64, 65, 4000, 24575, 24576, 24577, 49160, 99000}) {
      const unsigned char* p = bytes.data() + offset;
      const auto whole = crc32c(p, size);
      CHECK(whole == ~tt::detail::crc32c_impl::software(~0u, p, size));
      CHECK(whole == crc32c(p + size / 3, size - size / 3, crc32c(p, size / 3)));
    }

  TempDir dir("crc");
  tt_test::write_file(dir / "data", std::string(bytes.begin(), bytes.end()));
  const auto sum = tt::detail::crc32c_of_file((dir / "data").string());
  CHECK(sum.size == bytes.size());
  CHECK(sum.crc32c == crc32c(bytes.data(), bytes.size()));
  CHECK_THROWS_AS(tt::detail::crc32c_of_file((dir / "missing").string()), tt::FileFormatError);
}

TEST_CASE("write_file_atomically replaces a file whole and names the path when it cannot") {
  TempDir dir("atomic");
  const fs::path path = dir / "results.json";
  tt::detail::write_file_atomically(path, "first");
  tt::detail::write_file_atomically(path, "second, longer");
  CHECK(tt_test::read_file(path) == "second, longer");
  std::set<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir.path())) left.insert(entry.path().filename().string());
  CHECK(left == std::set<std::string>{"results.json"});  // no staging sibling left behind

  const fs::path missing = dir / "no-such-folder" / "results.json";
  CHECK_THAT(thrown<tt::Error>([&] { tt::detail::write_file_atomically(missing, "x"); }),
             Catch::Contains((dir / "no-such-folder" / ".tmp-results.json").string()) &&
                 Catch::Contains("cannot create the file"));
  fs::create_directories(dir / "a-folder");
  CHECK_THAT(thrown<tt::Error>([&] { tt::detail::write_file_atomically(dir / "a-folder", "x"); }),
             Catch::Contains((dir / "a-folder").string()) && Catch::Contains("cannot replace the file"));
  CHECK_FALSE(fs::exists(dir / ".tmp-a-folder"));
}

TEST_CASE("every checkpoint has a manifest listing each file with its size and CRC32C") {
  TempDir dir("manifest");
  train_three_checkpoints(dir.str());
  const fs::path folder = dir / "checkpoint-4";
  const auto manifest = tt::CheckpointManifest::read(folder / "manifest.json");
  CHECK(manifest.format_version == 1);
  CHECK(manifest.global_step == 4);
  CHECK(manifest.torchtrain_version == TORCHTRAIN_VERSION);
  CHECK(manifest.torch_version == TORCH_VERSION);
  std::set<std::string> listed;
  for (const auto& f : manifest.files) {
    listed.insert(f.name);
    const auto sum = tt::detail::crc32c_of_file((folder / f.name).string());
    CHECK(f.size == sum.size);
    CHECK(f.crc32c == sum.crc32c);
  }
  CHECK(listed == std::set<std::string>{"loop_state.json", "model.pt", "optimizer.pt", "rng_state.pt",
                                        "scheduler.json", "trainer_state.json", "training_args.json"});
  CHECK_FALSE(manifest.verify(folder).has_value());
  CHECK_FALSE(tt::checkpoint::invalid_reason(folder).has_value());
  // The RNG file holds the CPU generator's state and one per CUDA device.
  std::vector<torch::Tensor> rng;
  torch::load(rng, (folder / "rng_state.pt").string());
  CHECK(rng.size() == 1 + torch::cuda::device_count());
  // Nothing is left of the staging folders.
  for (const auto& entry : fs::directory_iterator(dir.path()))
    CHECK(entry.path().filename().string().rfind(".tmp-", 0) == std::string::npos);
}

TEST_CASE("a malformed manifest is a FileFormatError naming the file and the problem") {
  TempDir dir("badmanifest");
  const auto path = dir / "manifest.json";
  const std::string good_files = R"({"model.pt": {"size": 3, "crc32c": "0a0b0c0d"}})";
  auto manifest_with = [&](const std::string& format, const std::string& files) {
    return R"({"format_version": )" + format +
           R"(, "torchtrain_version": "0.1.0", "torch_version": "1.13.1", "global_step": 2, "files": )" + files + "}";
  };
  const std::vector<std::pair<std::string, std::string>> cases{
      {"{\"format_version\": 1, ", "not valid JSON"},
      {"[1, 2]", "expected a JSON object"},
      {manifest_with("2", good_files), "format_version 2"},
      {manifest_with("\"1\"", good_files), "format_version must be an integer"},
      {R"({"format_version": 1, "torch_version": "1", "torchtrain_version": "1", "files": {}})", "'global_step' is missing"},
      {manifest_with("1", "[]"), "files must be an object"},
      {manifest_with("1", R"({"../model.pt": {"size": 3, "crc32c": "0a0b0c0d"}})"), "not a file name"},
      {manifest_with("1", R"({"manifest.json": {"size": 3, "crc32c": "0a0b0c0d"}})"), "not a file name"},
      {manifest_with("1", R"({"model.pt": {"size": -3, "crc32c": "0a0b0c0d"}})"), "size must be an integer >= 0"},
      {manifest_with("1", R"({"model.pt": {"size": 3, "crc32c": "0a0b0c0g"}})"), "8 hex digits"},
      {manifest_with("1", R"({"model.pt": {"size": 3, "crc32c": 168496141}})"), "8 hex digits"},
      {manifest_with("1", R"({"model.pt": 3})"), "expected {\"size\""},
  };
  for (const auto& [text, problem] : cases) {
    INFO(text);
    tt_test::write_file(path, text);
    const auto message = thrown<tt::FileFormatError>([&] { tt::CheckpointManifest::read(path); });
    CHECK_THAT(message, Catch::Contains(path.string()) && Catch::Contains(problem));
  }
  tt_test::write_file(path, manifest_with("1", good_files));
  CHECK(tt::CheckpointManifest::read(path).files.at(0).crc32c == 0x0a0b0c0du);
}

TEST_CASE("resume skips a corrupt newest checkpoint, names it and says why") {
  TempDir golden("golden");
  const auto uninterrupted = train_three_checkpoints(golden.str());

  struct Corruption {
    const char* name;
    std::function<void(const fs::path&)> apply;
    const char* reason;
  };
  const std::vector<Corruption> corruptions{
      {"truncated model.pt",
       [](const fs::path& c) { fs::resize_file(c / "model.pt", fs::file_size(c / "model.pt") / 2); },
       "model.pt is "},
      {"flipped byte in optimizer.pt",
       [](const fs::path& c) {
         auto bytes = tt_test::read_file(c / "optimizer.pt");
         bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x10);
         tt_test::write_file(c / "optimizer.pt", bytes);
       },
       "optimizer.pt has CRC32C"},
      {"missing manifest", [](const fs::path& c) { fs::remove(c / "manifest.json"); }, "has no manifest.json"},
      {"garbage trainer_state.json", [](const fs::path& c) { tt_test::write_file(c / "trainer_state.json", "{\"glob"); },
       "trainer_state.json is 6 bytes, the manifest says"},
      {"garbage trainer_state.json, manifest recomputed",
       [](const fs::path& c) {
         tt_test::write_file(c / "trainer_state.json", "{\"glob");
         rewrite_manifest(c);
       },
       "trainer_state.json cannot be read"},
      {"extra file", [](const fs::path& c) { tt_test::write_file(c / "notes.txt", "hi"); },
       "it holds notes.txt, which its manifest does not list"},
      {"missing file", [](const fs::path& c) { fs::remove(c / "scheduler.json"); }, "scheduler.json is missing"},
      {"garbage manifest", [](const fs::path& c) { tt_test::write_file(c / "manifest.json", "{"); },
       "its manifest is malformed"},
  };
  for (const auto& corruption : corruptions) {
    SECTION(corruption.name) {
      TempDir dir("corrupt");
      fs::copy(golden.path(), dir.path(), fs::copy_options::recursive | fs::copy_options::overwrite_existing);
      corruption.apply(dir / "checkpoint-6");
      const auto why = tt::checkpoint::invalid_reason(dir / "checkpoint-6");
      REQUIRE(why.has_value());
      CHECK_THAT(*why, Catch::Contains(corruption.reason));

      tt_test::WarningCapture warnings;
      tt::Trainer resumed(Mlp(), checkpointing_args(dir.str()), Blobs(16, 1));
      resumed.pop_callback<tt::PrinterCallback>();
      auto start = resumed.add_callback<StartStep>();
      resumed.train(true);
      CHECK(start->step == 4);
      CHECK(warnings.contains("Skipping checkpoint " + (dir / "checkpoint-6").string() + " because " + *why));
      auto weights = resumed.model->parameters();
      REQUIRE(weights.size() == uninterrupted.size());
      for (std::size_t i = 0; i < weights.size(); ++i) CHECK(torch::equal(weights[i], uninterrupted[i]));
      // The new run's own save replaced the corrupt checkpoint with a valid one.
      CHECK_FALSE(tt::checkpoint::invalid_reason(dir / "checkpoint-6").has_value());
    }
  }
}

TEST_CASE("resuming from an explicit invalid checkpoint is a CheckpointError with the reason") {
  TempDir dir("explicit");
  train_three_checkpoints(dir.str());
  auto bytes = tt_test::read_file(dir / "checkpoint-4/model.pt");
  bytes[bytes.size() - 100] = static_cast<char>(bytes[bytes.size() - 100] ^ 1);
  tt_test::write_file(dir / "checkpoint-4/model.pt", bytes);
  tt::Trainer trainer(Mlp(), checkpointing_args(dir.str()), Blobs(16, 1));
  const auto message = thrown<tt::CheckpointError>([&] { trainer.train((dir / "checkpoint-4").string()); });
  CHECK_THAT(message, Catch::Contains("checkpoint-4") && Catch::Contains("model.pt has CRC32C") &&
                          Catch::Contains("the manifest says"));
}

namespace {

// The bytes this process has read so far through read(2) and its kin: /proc/self/io's rchar. (read_bytes
// would count only what came from the disk, and a second read of a checkpoint comes from the page cache.)
std::uint64_t bytes_read_so_far() {
  std::ifstream io("/proc/self/io");
  std::string key;
  std::uint64_t value = 0;
  while (io >> key >> value)
    if (key == "rchar:") return value;
  FAIL("/proc/self/io has no rchar line");
  return 0;
}

std::uint64_t folder_bytes(const fs::path& folder) {
  std::uint64_t total = 0;
  for (const auto& entry : fs::directory_iterator(folder)) total += entry.file_size();
  return total;
}

}  // namespace

TEST_CASE("a resume reads each byte of its checkpoint once") {
  TempDir dir("readonce");
  train_three_checkpoints(dir.str());
  const fs::path folder = dir / "checkpoint-6";
  for (const auto& entry : fs::directory_iterator(folder))  // read(), which rchar counts, not mapped
    REQUIRE(entry.file_size() < tt::detail::FileBytes::kMapFrom);
  const std::uint64_t size = folder_bytes(folder);
  const std::uint64_t allowed = size + size / 10 + 2048;  // /proc/self/io itself is a few hundred bytes

  SECTION("train(true): the newest valid checkpoint found, checked and loaded") {
    tt::Trainer resumed(Mlp(), checkpointing_args(dir.str()), Blobs(16, 1));
    resumed.pop_callback<tt::PrinterCallback>();
    auto start = resumed.add_callback<StartStep>();
    const auto before = bytes_read_so_far();
    resumed.train(true);
    const auto read = bytes_read_so_far() - before;
    REQUIRE(start->step == 6);
    INFO("checkpoint " << size << " bytes, resume read " << read);
    CHECK(read >= size);  // every byte checked
    CHECK(read <= allowed);
  }
  SECTION("resolve, then load of the validated checkpoint") {
    Mlp model;
    const auto before = bytes_read_so_far();
    auto valid = tt::checkpoint::resolve(true, std::nullopt, dir.str());
    CHECK(valid.folder == folder);
    CHECK(valid.state.global_step == 6);
    tt::checkpoint::load(std::move(valid), *model, nullptr, nullptr);
    const auto read = bytes_read_so_far() - before;
    INFO("checkpoint " << size << " bytes, resolve and load read " << read);
    CHECK(read >= size);
    CHECK(read <= allowed);
  }
  SECTION("a corrupt newest checkpoint is read once too, and the next one once") {
    auto bytes = tt_test::read_file(folder / "optimizer.pt");
    bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x10);
    tt_test::write_file(folder / "optimizer.pt", bytes);
    const std::uint64_t both = size + folder_bytes(dir / "checkpoint-4");
    Mlp model;
    tt_test::WarningCapture warnings;
    const auto before = bytes_read_so_far();
    tt::checkpoint::load(tt::checkpoint::resolve(true, std::nullopt, dir.str()), *model, nullptr, nullptr);
    const auto read = bytes_read_so_far() - before;
    CHECK(warnings.contains("Skipping checkpoint " + folder.string() + " because optimizer.pt has CRC32C"));
    INFO("checkpoints " << both << " bytes, resolve and load read " << read);
    CHECK(read <= both + both / 10 + 2048);
  }
}

TEST_CASE("files of a megabyte and more are mapped, checked and loaded the same way") {
  TempDir dir("mapped");
  torch::manual_seed(1);
  Mlp model(1 << 16);  // fc1.weight alone is 1 MiB
  torch::optim::AdamW optimizer(model->parameters());
  for (auto& p : model->parameters()) p.mutable_grad() = torch::randn_like(p);
  optimizer.step();
  tt::TrainerState state;
  state.global_step = 1;
  const fs::path folder = dir / "checkpoint-1";
  tt::checkpoint::save(folder, tt::TrainingArguments(), state, *model, &optimizer, nullptr, nullptr);
  REQUIRE(fs::file_size(folder / "model.pt") >= tt::detail::FileBytes::kMapFrom);
  REQUIRE(fs::file_size(folder / "optimizer.pt") >= tt::detail::FileBytes::kMapFrom);

  Mlp other(1 << 16);
  torch::optim::AdamW other_optimizer(other->parameters());
  auto checked = tt::checkpoint::validate(folder);
  REQUIRE(checked.checkpoint);
  tt::checkpoint::load(std::move(*checked.checkpoint), *other, &other_optimizer, nullptr);
  const auto saved = model->parameters(), loaded = other->parameters();
  for (std::size_t i = 0; i < saved.size(); ++i) {
    CHECK(torch::equal(saved[i], loaded[i]));
    const auto key = c10::guts::to_string(loaded[i].unsafeGetTensorImpl());
    const auto& s = static_cast<torch::optim::AdamWParamState&>(*other_optimizer.state().at(key));
    const auto& original =
        static_cast<torch::optim::AdamWParamState&>(*optimizer.state().at(c10::guts::to_string(saved[i].unsafeGetTensorImpl())));
    CHECK(torch::equal(s.exp_avg_sq(), original.exp_avg_sq()));
  }

  // A checkpoint validated for a check alone holds none of its files, and load() says so.
  auto check_only = tt::checkpoint::validate(folder, tt::checkpoint::Contents::checksums);
  REQUIRE(check_only.checkpoint);
  CHECK_FALSE(check_only.checkpoint->contents("model.pt"));
  CHECK_THAT(thrown<tt::ArgumentError>([&] { tt::checkpoint::load(std::move(*check_only.checkpoint), *other, nullptr, nullptr); }),
             Catch::Contains("Contents::kept"));

  auto bytes = tt_test::read_file(folder / "optimizer.pt");
  bytes[bytes.size() / 3] = static_cast<char>(bytes[bytes.size() / 3] ^ 0x01);
  tt_test::write_file(folder / "optimizer.pt", bytes);
  const auto why = tt::checkpoint::validate(folder).reason;
  CHECK_THAT(why, Catch::Contains("optimizer.pt has CRC32C") && Catch::Contains("the manifest says"));
  CHECK(tt::checkpoint::invalid_reason(folder) == why);
}

namespace {

// Everything a load may change, copied so that a failed load can be compared with it bit for bit.
struct TrainingObjects {
  std::vector<torch::Tensor> parameters, optimizer_state;
  std::vector<double> learning_rates;
  nlohmann::json scheduler;
  torch::Tensor rng;

  template <class T>
  static TrainingObjects of(T& trainer) {
    TrainingObjects o;
    for (const auto& p : trainer.model->parameters()) o.parameters.push_back(p.detach().clone());
    for (auto& group : trainer.optimizer->param_groups()) {
      o.learning_rates.push_back(group.options().get_lr());
      for (const auto& p : group.params()) {
        const auto key = c10::guts::to_string(p.unsafeGetTensorImpl());
        const auto& s = static_cast<torch::optim::AdamWParamState&>(*trainer.optimizer->state().at(key));
        o.optimizer_state.push_back(s.exp_avg().clone());
        o.optimizer_state.push_back(s.exp_avg_sq().clone());
        o.optimizer_state.push_back(torch::tensor(s.step()));
      }
    }
    o.scheduler = trainer.lr_scheduler->state_dict();
    o.rng = at::globalContext().defaultGenerator(at::kCPU).get_state();
    return o;
  }

  void check_equal(const TrainingObjects& other) const {
    REQUIRE(parameters.size() == other.parameters.size());
    for (std::size_t i = 0; i < parameters.size(); ++i) CHECK(torch::equal(parameters[i], other.parameters[i]));
    REQUIRE(optimizer_state.size() == other.optimizer_state.size());
    for (std::size_t i = 0; i < optimizer_state.size(); ++i)
      CHECK(torch::equal(optimizer_state[i], other.optimizer_state[i]));
    CHECK(learning_rates == other.learning_rates);
    CHECK(scheduler == other.scheduler);
    CHECK(torch::equal(rng, other.rng));
  }
};

}  // namespace

TEST_CASE("a failed load leaves the model, optimizer, scheduler, RNG and callbacks exactly as they were") {
  TempDir dir("failedload");
  train_three_checkpoints(dir.str());
  const fs::path folder = dir / "checkpoint-4";

  // A trainer in the middle of its own run: trained weights, optimizer moments, a scheduler past step 0.
  TempDir other("other");
  auto args = checkpointing_args(other.str());
  args.save_strategy = tt::SaveStrategy::no;
  args.max_steps = 3;
  torch::manual_seed(5);
  tt::Trainer trainer(Mlp(), args, Blobs(16, 3));
  trainer.pop_callback<tt::PrinterCallback>();
  auto counter = trainer.add_callback<StepCounter>();
  trainer.train();
  REQUIRE(counter->steps == 3);
  const auto before = TrainingObjects::of(trainer);
  without_using_the_rng([&] {  // a load that stuck would show
    Mlp saved;
    torch::load(saved, (folder / "model.pt").string());
    REQUIRE_FALSE(torch::equal(saved->fc1->weight, trainer.model->fc1->weight));
  });
  auto load = [&] {
    return tt::checkpoint::load(folder, *trainer.model, trainer.optimizer.get(), trainer.lr_scheduler.get());
  };

  SECTION("model.pt of another architecture, caught before anything changes") {
    without_using_the_rng([&] { torch::save(Mlp(8), (folder / "model.pt").string()); });
    rewrite_manifest(folder);
    CHECK_THAT(thrown<tt::CheckpointError>(load),
               Catch::Contains("model.pt") && Catch::Contains("fc1.weight is Float[8, 4] in the file and Float[16, 4]"));
  }
  SECTION("scheduler.json that is not JSON") {
    tt_test::write_file(folder / "scheduler.json", "{\"type\": ");
    rewrite_manifest(folder);
    CHECK_THAT(thrown<tt::CheckpointError>(load), Catch::Contains("scheduler.json"));
  }
  SECTION("scheduler.json of another schedule, found after the model and optimizer were loaded") {
    auto state = nlohmann::json::parse(tt_test::read_file(folder / "scheduler.json"));
    state["type"] = "cosine";
    tt_test::write_file(folder / "scheduler.json", state.dump());
    rewrite_manifest(folder);
    CHECK_THAT(thrown<tt::CheckpointError>(load),
               Catch::Contains("scheduler.json") && Catch::Contains("are as they were"));
  }
  SECTION("optimizer.pt of an optimizer with other parameter groups, found after the model was loaded") {
    without_using_the_rng([&] {
      auto model = Mlp();
      torch::optim::AdamW single(model->parameters());
      torch::save(single, (folder / "optimizer.pt").string());
    });
    rewrite_manifest(folder);
    CHECK_THAT(thrown<tt::CheckpointError>(load),
               Catch::Contains("optimizer.pt") && Catch::Contains("parameter groups"));
  }
  SECTION("an RNG state of the wrong size, found last") {
    torch::save(std::vector<torch::Tensor>{torch::zeros({3}, torch::kByte)}, (folder / "rng_state.pt").string());
    rewrite_manifest(folder);
    CHECK_THAT(thrown<tt::CheckpointError>(load), Catch::Contains("rng_state.pt"));
  }
  SECTION("a callback that rejects its saved state, through train()") {
    auto saved = nlohmann::json::parse(tt_test::read_file(folder / "trainer_state.json"));
    saved["stateful_callbacks"]["StepCounter"] = {{"args", nlohmann::json::object()},
                                                  {"attributes", {{"steps", 999}}}};
    saved["stateful_callbacks"]["TrainerControl"]["args"]["should_training_stop"] = true;
    trainer.args.restore_callback_states_from_checkpoint = true;
    tt_test::write_file(folder / "trainer_state.json", saved.dump(2));
    rewrite_manifest(folder);
    const auto control_before = trainer.control;
    const auto rng_before = at::globalContext().defaultGenerator(at::kCPU).get_state();
    CHECK_THAT(thrown<tt::CheckpointError>([&] { trainer.train(folder.string()); }),
               Catch::Contains("steps 999") && Catch::Contains("callback states"));
    CHECK(counter->steps == 3);
    CHECK(trainer.control == control_before);
    // train() seeds the RNG and builds the new run's schedule before it resumes; the failed load put back that
    // seeded state and that fresh schedule, at its initial rates.
    auto after = TrainingObjects::of(trainer);
    CHECK(torch::equal(after.rng, at::globalContext().defaultGenerator(at::kCPU).get_state()));
    CHECK(after.scheduler["last_epoch"] == 0);
    CHECK(after.scheduler["last_lr"] == after.scheduler["base_lrs"]);
    CHECK(after.learning_rates == after.scheduler["base_lrs"].get<std::vector<double>>());
    after.rng = before.rng;
    after.scheduler = before.scheduler;
    after.learning_rates = before.learning_rates;
    before.check_equal(after);
    return;
  }
  CHECK(counter->steps == 3);
  TrainingObjects::of(trainer).check_equal(before);
  // The same trainer then loads a valid checkpoint without trouble.
  CHECK_NOTHROW(tt::checkpoint::load(dir / "checkpoint-6", *trainer.model, trainer.optimizer.get(),
                                     trainer.lr_scheduler.get()));
}

TEST_CASE("an RNG file for another number of CUDA devices loads with a warning") {
  TempDir dir("cudarng");
  train_three_checkpoints(dir.str());
  const fs::path folder = dir / "checkpoint-4";
  std::vector<torch::Tensor> rng;
  torch::load(rng, (folder / "rng_state.pt").string());
  const auto cpu_state = rng.front().clone();
  for (std::size_t i = rng.size(); i < 3 + torch::cuda::device_count(); ++i) rng.push_back(rng.front().clone());
  torch::save(rng, (folder / "rng_state.pt").string());
  rewrite_manifest(folder);
  Mlp model;
  tt_test::WarningCapture warnings;
  tt::checkpoint::load(folder, *model, nullptr, nullptr);
  CHECK(warnings.contains("holds the random state of " + std::to_string(rng.size() - 1) + " CUDA device(s)"));
  CHECK(torch::equal(at::globalContext().defaultGenerator(at::kCPU).get_state(), cpu_state));
}

namespace {

// After the first checkpoint, files may grow to 100 bytes at most: the next save runs out of room.
struct FillDiskAfterFirstSave : tt::TrainerCallback {
  void on_save(const Args&, const State&, Control&, const Context&) override {
    const rlimit limit{100, 100};
    ::setrlimit(RLIMIT_FSIZE, &limit);
  }
};

}  // namespace

namespace {

// `async`: with save_async, the failure of the background write surfaces at the next step as the same error.
void check_disk_fills_up(bool async) {
  TempDir dir("fulldisk");
  tt_test::write_file(dir / "notes.txt", "the user's own file");
  fs::create_directories(dir / "data");
  tt_test::write_file(dir / "data/train.csv", "1,0\n");
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // the child trains and reports what train() threw through the pipe and its exit code
    ::close(pipe_fds[0]);
    ::alarm(120);  // a hung child fails the test instead of hanging it
    std::signal(SIGXFSZ, SIG_IGN);  // a write past the limit then fails with EFBIG instead of killing us
    torch::set_num_threads(1);
    std::string report = "train() returned";
    int code = 3;
    try {
      auto args = checkpointing_args(dir.str());
      args.save_async = async;
      tt::Trainer trainer(Mlp(), args, Blobs(16, 1));
      trainer.pop_callback<tt::PrinterCallback>();
      trainer.add_callback<FillDiskAfterFirstSave>();
      trainer.train();
    } catch (const tt::CheckpointError& e) {
      report = e.what();
      code = 0;
    } catch (const std::exception& e) {
      report = std::string("not a CheckpointError: ") + e.what();
      code = 2;
    }
    const ssize_t written = ::write(pipe_fds[1], report.data(), report.size());
    ::_exit(written == static_cast<ssize_t>(report.size()) ? code : 4);
  }
  ::close(pipe_fds[1]);
  std::string report;
  char buffer[4096];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;) report.append(buffer, static_cast<std::size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  INFO(report);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_THAT(report, Catch::Contains("cannot save checkpoint " + (dir / "checkpoint-4").string()) &&
                         Catch::Contains("model.pt: cannot write the file: File too large") &&
                         Catch::Contains("raise the file size limit"));

  CHECK_FALSE(tt::checkpoint::invalid_reason(dir / "checkpoint-2").has_value());
  CHECK_FALSE(fs::exists(dir / "checkpoint-4"));
  CHECK_FALSE(fs::exists(dir / ".tmp-checkpoint-4"));
  std::set<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir.path())) left.insert(entry.path().filename().string());
  CHECK(left == std::set<std::string>{"checkpoint-2", "data", "notes.txt"});
  CHECK(tt_test::read_file(dir / "notes.txt") == "the user's own file");
  CHECK(tt_test::read_file(dir / "data/train.csv") == "1,0\n");
}

}  // namespace

TEST_CASE("a save that runs out of disk names the file and leaves the earlier checkpoints and user files") {
  check_disk_fills_up(false);
}

TEST_CASE("save_async: a background write that runs out of disk is the same error, and nothing earlier is lost") {
  check_disk_fills_up(true);
}

TEST_CASE("rotation deletes the oldest checkpoints by step number, whatever their modification times") {
  TempDir dir("rotate");
  auto args = checkpointing_args(dir.str());
  args.max_steps = 4;
  args.save_total_limit = 2;
  {
    tt::Trainer first(Mlp(), args, Blobs(16, 1));
    first.pop_callback<tt::PrinterCallback>();
    first.train();
  }
  REQUIRE(names(tt::checkpoint::sorted_checkpoints(dir.path())) == std::vector<std::string>{"checkpoint-2", "checkpoint-4"});
  // checkpoint-2 now looks newer than checkpoint-4; REF's mtime order would delete checkpoint-4.
  const auto now = fs::file_time_type::clock::now();
  fs::last_write_time(dir / "checkpoint-2", now + std::chrono::hours(1));
  fs::last_write_time(dir / "checkpoint-4", now - std::chrono::hours(1));
  tt_test::write_file(dir / "checkpoint-notes", "not a checkpoint");
  args.max_steps = 6;
  tt::Trainer resumed(Mlp(), args, Blobs(16, 1));
  resumed.pop_callback<tt::PrinterCallback>();
  resumed.train(true);
  CHECK(names(tt::checkpoint::sorted_checkpoints(dir.path())) == std::vector<std::string>{"checkpoint-4", "checkpoint-6"});
  CHECK(fs::exists(dir / "checkpoint-notes"));
}

TEST_CASE("only folders named checkpoint-<digits> count as checkpoints") {
  TempDir dir("names");
  for (const char* name : {"checkpoint-3", "checkpoint-12", "checkpoint-", "checkpoint-1a", "checkpoint--1",
                           "checkpoint-99999999999999999999999", "xcheckpoint-5", "Checkpoint-7"})
    fs::create_directories(dir / name);
  CHECK(names(tt::checkpoint::sorted_checkpoints(dir.path())) == std::vector<std::string>{"checkpoint-3", "checkpoint-12"});
}

TEST_CASE("rotation keeps the best checkpoint in addition to the newest ones (REF 8.3 bubble rule)") {
  auto rotated = [](int64_t limit, std::optional<int> best, std::vector<int> steps) {
    TempDir dir("bubble");
    for (int s : steps) fs::create_directories(dir / ("checkpoint-" + std::to_string(s)));
    std::optional<std::string> best_path;
    if (best) best_path = (dir / ("checkpoint-" + std::to_string(*best))).string();
    tt::checkpoint::rotate(dir.path(), limit, best_path);
    return names(tt::checkpoint::sorted_checkpoints(dir.path()));
  };
  using V = std::vector<std::string>;
  CHECK(rotated(2, std::nullopt, {2, 10, 4, 8}) == V{"checkpoint-8", "checkpoint-10"});
  CHECK(rotated(2, 2, {2, 4, 6, 8}) == V{"checkpoint-2", "checkpoint-8"});
  CHECK(rotated(3, 4, {2, 4, 6, 8, 10}) == V{"checkpoint-4", "checkpoint-8", "checkpoint-10"});
  CHECK(rotated(2, 8, {2, 4, 6, 8}) == V{"checkpoint-6", "checkpoint-8"});  // the best is the newest
  CHECK(rotated(2, 6, {2, 4, 6, 8}) == V{"checkpoint-6", "checkpoint-8"});
  CHECK(rotated(1, 4, {2, 4, 6}) == V{"checkpoint-4", "checkpoint-6"});  // limit 1 keeps best and last
  CHECK(rotated(1, 6, {2, 4, 6}) == V{"checkpoint-6"});
  CHECK(rotated(0, std::nullopt, {2, 4, 6}) == V{"checkpoint-2", "checkpoint-4", "checkpoint-6"});
}

namespace {

// While alive, each file a checkpoint writes takes `delay` longer: a background write then spans several steps.
class SlowCheckpointFiles {
 public:
  explicit SlowCheckpointFiles(std::chrono::milliseconds delay) {
    tt::checkpoint::set_after_file_written_hook([delay](const fs::path&) { std::this_thread::sleep_for(delay); });
  }
  ~SlowCheckpointFiles() { tt::checkpoint::set_after_file_written_hook(nullptr); }
};

void check_limit_one_keeps_best_and_last(bool async) {
  TempDir dir("limit1");
  auto args = checkpointing_args(dir.str());
  args.save_async = async;
  SlowCheckpointFiles slow(std::chrono::milliseconds(async ? 5 : 0));
  args.max_steps = 4;
  args.save_steps = 1;
  args.eval_strategy = tt::IntervalStrategy::steps;
  args.eval_steps = 1;
  args.save_total_limit = 1;
  args.load_best_model_at_end = true;
  args.metric_for_best_model = "score";
  args.greater_is_better = true;

  struct Folders : tt::TrainerCallback {
    fs::path dir;
    std::vector<std::vector<std::string>> after_each_save;
    void on_save(const Args&, const State&, Control&, const Context&) override {
      after_each_save.push_back(names(tt::checkpoint::sorted_checkpoints(dir)));
    }
  };
  tt::Trainer trainer(Mlp(), args, Blobs(16, 1), Blobs(8, 2));
  trainer.pop_callback<tt::PrinterCallback>();
  const std::vector<double> scores{0.5, 0.9, 0.7, 0.6};  // the best is step 2
  std::size_t evaluation = 0;
  trainer.compute_metrics = [&](const tt::EvalPrediction&) {
    tt::Metrics m;
    m["score"] = scores.at(evaluation++);
    return m;
  };
  auto folders = trainer.add_callback<Folders>();
  folders->dir = dir.path();
  trainer.train();
  using V = std::vector<std::string>;
  REQUIRE(folders->after_each_save.size() == 4);
  CHECK(folders->after_each_save[0] == V{"checkpoint-1"});
  CHECK(folders->after_each_save[1] == V{"checkpoint-2"});
  CHECK(folders->after_each_save[2] == V{"checkpoint-2", "checkpoint-3"});
  CHECK(folders->after_each_save[3] == V{"checkpoint-2", "checkpoint-4"});
  CHECK(names(tt::checkpoint::sorted_checkpoints(dir.path())) == V{"checkpoint-2"});
  CHECK(trainer.state.best_model_checkpoint == (dir / "checkpoint-2").string());
  Mlp best;
  tt::checkpoint::load_module(*best, dir / "checkpoint-2/model.pt");
  CHECK(torch::equal(best->fc1->weight, trainer.model->fc1->weight));
}

}  // namespace

TEST_CASE("save_total_limit 1 with load_best_model_at_end keeps best and last while training, then only best") {
  check_limit_one_keeps_best_and_last(false);
}

TEST_CASE("save_async: rotation and the best checkpoint follow the synchronous order") {
  check_limit_one_keeps_best_and_last(true);
}

namespace {

// Events as (name, global_step); at each on_save, whether checkpoint-<global_step> is whole on disk then.
struct EventRecorder : tt::TrainerCallback {
  fs::path dir;
  std::vector<std::pair<std::string, std::int64_t>> events;
  std::vector<std::string> saves_not_on_disk;
#define RECORD(event) \
  void event(const Args&, const State& s, Control&, const Context&) override { events.emplace_back(#event, s.global_step); }
  RECORD(on_train_begin)
  RECORD(on_epoch_begin)
  RECORD(on_step_begin)
  RECORD(on_step_end)
  RECORD(on_epoch_end)
  RECORD(on_evaluate)
  RECORD(on_log)
  RECORD(on_train_end)
#undef RECORD
  void on_save(const Args&, const State& s, Control&, const Context&) override {
    events.emplace_back("on_save", s.global_step);
    const auto folder = dir / ("checkpoint-" + std::to_string(s.global_step));
    if (tt::checkpoint::invalid_reason(folder) || fs::exists(tt::detail::staging_sibling(folder)))
      saves_not_on_disk.push_back(folder.filename().string());
  }
};

struct AsyncRun {
  std::vector<std::pair<std::string, std::int64_t>> events;
  std::vector<std::string> saves_not_on_disk, checkpoints, messages;
  std::optional<std::string> best_model_checkpoint;
  std::vector<torch::Tensor> weights;
};

AsyncRun run_saving(const TempDir& dir, bool async) {
  auto args = checkpointing_args(dir.str());
  args.max_steps = 12;
  args.save_steps = 2;
  args.eval_strategy = tt::IntervalStrategy::steps;
  args.eval_steps = 2;
  args.save_total_limit = 2;
  args.load_best_model_at_end = true;
  args.save_async = async;
  AsyncRun run;
  // A slow disk: each write is still in flight at the next save point, two steps on.
  SlowCheckpointFiles slow(std::chrono::milliseconds(async ? 15 : 0));
  const auto previous = tt::set_message_handler(
      [&run](tt::MessageLevel, const std::string& message) { run.messages.push_back(message); });
  {
    torch::manual_seed(3);
    tt::Trainer trainer(Mlp(), args, Blobs(32, 1), Blobs(8, 2));
    trainer.pop_callback<tt::PrinterCallback>();
    auto recorder = trainer.add_callback<EventRecorder>();
    recorder->dir = dir.path();
    trainer.train();
    run.events = recorder->events;
    run.saves_not_on_disk = recorder->saves_not_on_disk;
    run.best_model_checkpoint = trainer.state.best_model_checkpoint;
    for (const auto& p : trainer.model->parameters()) run.weights.push_back(p.detach().clone());
  }
  tt::set_message_handler(previous);
  run.checkpoints = names(tt::checkpoint::sorted_checkpoints(dir.path()));
  return run;
}

std::vector<std::pair<std::string, std::int64_t>> without_on_save(std::vector<std::pair<std::string, std::int64_t>> events) {
  events.erase(std::remove_if(events.begin(), events.end(), [](const auto& e) { return e.first == "on_save"; }),
               events.end());
  return events;
}

}  // namespace

TEST_CASE("save_async: the same checkpoints and events as synchronous saves, each on_save once its checkpoint is on disk") {
  TempDir sync_dir("sync-saves"), async_dir("async-saves");
  const auto sync = run_saving(sync_dir, false);
  const auto async = run_saving(async_dir, true);

  CHECK(async.saves_not_on_disk.empty());
  CHECK(sync.saves_not_on_disk.empty());
  CHECK(without_on_save(async.events) == without_on_save(sync.events));
  // The on_saves of both, in order, each after its step's on_step_end and before on_train_end.
  std::vector<std::int64_t> sync_saves, async_saves;
  for (const auto& [event, step] : sync.events)
    if (event == "on_save") sync_saves.push_back(step);
  std::int64_t last_step_end = 0;
  bool ended = false;
  for (const auto& [event, step] : async.events) {
    if (event == "on_step_end") last_step_end = step;
    if (event == "on_train_end") ended = true;
    if (event != "on_save") continue;
    async_saves.push_back(step);
    CHECK(step <= last_step_end);
    CHECK_FALSE(ended);
  }
  CHECK(async_saves == sync_saves);
  CHECK(sync_saves == std::vector<std::int64_t>{2, 4, 6, 8, 10, 12});
  // At least one on_save came after later steps: the writes really ran while training went on.
  CHECK(async.events != sync.events);
  // Every save point waited: said once, then counted at the end.
  auto said = [&](const std::string& text) {
    return std::count_if(async.messages.begin(), async.messages.end(),
                         [&](const std::string& m) { return m.find(text) != std::string::npos; });
  };
  CHECK(said("waiting for checkpoint-2 to be written before saving checkpoint-4; save less often") == 1);
  CHECK(said("waiting for") == 1);
  CHECK(said("5 save points waited for the previous checkpoint to be written; save less often") == 1);

  CHECK(async.checkpoints == sync.checkpoints);
  REQUIRE(sync.best_model_checkpoint);
  CHECK(fs::path(*async.best_model_checkpoint).filename() == fs::path(*sync.best_model_checkpoint).filename());
  REQUIRE(async.weights.size() == sync.weights.size());
  for (std::size_t i = 0; i < sync.weights.size(); ++i) CHECK(torch::equal(async.weights[i], sync.weights[i]));
  // The files hold the same state; optimizer.pt's keys are parameter addresses, which differ between two models.
  for (const auto& folder : sync.checkpoints)
    for (const char* file : {"model.pt", "rng_state.pt", "scheduler.json", "loop_state.json", "trainer_state.json"}) {
      INFO(folder << "/" << file);
      auto text = [&](const TempDir& dir) {
        auto bytes = tt_test::read_file(dir / folder / file);
        if (std::string(file) != "trainer_state.json") return bytes;
        auto json = tt::detail::parse_python_json(bytes, file);
        json["best_model_checkpoint"] = fs::path(json["best_model_checkpoint"].get<std::string>()).filename().string();
        for (auto& entry : json["log_history"])  // wall-clock figures differ between any two runs
          for (const char* timing : {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second"})
            entry.erase(timing);
        return json.dump();
      };
      CHECK(text(async_dir) == text(sync_dir));
    }
}

namespace {

// An optimizer of a type StateSnapshot does not know: SGD's update and state, saved by its own save().
class PlainSgd : public torch::optim::Optimizer {
 public:
  explicit PlainSgd(std::vector<torch::Tensor> params)
      : Optimizer({torch::optim::OptimizerParamGroup(std::move(params))},
                  std::make_unique<torch::optim::SGDOptions>(0.1)) {}
  torch::Tensor step(LossClosure = nullptr) override {
    torch::NoGradGuard no_grad;
    for (auto& p : param_groups().front().params()) {
      auto& state = state_[c10::guts::to_string(p.unsafeGetTensorImpl())];
      if (!state) state = std::make_unique<torch::optim::SGDParamState>();
      auto& sgd = static_cast<torch::optim::SGDParamState&>(*state);
      sgd.momentum_buffer(sgd.momentum_buffer().defined() ? sgd.momentum_buffer() * 0.9 + p.grad() : p.grad().clone());
      p.sub_(sgd.momentum_buffer() * 0.1);
    }
    return {};
  }
  void save(torch::serialize::OutputArchive& archive) const override {
    torch::optim::serialize<torch::optim::SGDParamState, torch::optim::SGDOptions>(archive, *this);
  }
};

std::string written(const tt::checkpoint::FileContents& contents, const fs::path& path) {
  {
    tt::detail::DurableFile file(path);
    contents(file);
    file.commit();
  }
  return tt_test::read_file(path);
}

}  // namespace

TEST_CASE("StateSnapshot writes the files the live objects' save() writes, keeps them through later steps, and reuses its buffers") {
  TempDir dir("snapshot");
  using Factory = std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<torch::Tensor>)>;
  namespace o = torch::optim;
  struct Case {
    std::string name;
    Factory make;
    int copies_per_parameter;  // the state's tensors per parameter; the last type's state is serialized instead
  };
  const std::vector<Case> optimizers{
      {"AdamW", [](auto p) { return std::make_unique<o::AdamW>(p, o::AdamWOptions(1e-2)); }, 2},
      {"Adam amsgrad", [](auto p) { return std::make_unique<o::Adam>(p, o::AdamOptions(1e-2).amsgrad(true)); }, 3},
      {"SGD momentum", [](auto p) { return std::make_unique<o::SGD>(p, o::SGDOptions(1e-2).momentum(0.9)); }, 1},
      {"Adagrad", [](auto p) { return std::make_unique<o::Adagrad>(p, o::AdagradOptions(1e-2)); }, 1},
      {"RMSprop centered with momentum",
       [](auto p) { return std::make_unique<o::RMSprop>(p, o::RMSpropOptions(1e-2).centered(true).momentum(0.5)); }, 3},
      {"another type, serialized at capture", [](auto p) { return std::make_unique<PlainSgd>(p); }, 0},
  };
  for (const auto& [name, make, copies_per_parameter] : optimizers) {
    SECTION(name) {
      torch::manual_seed(0);
      Mlp model;
      auto optimizer = make(model->parameters());
      auto step = [&] {
        optimizer->zero_grad();
        model->forward(torch::randn({8, 4})).pow(2).sum().backward();
        optimizer->step();
      };
      tt::checkpoint::StateSnapshot snapshot;
      std::vector<const void*> buffers;
      for (int save = 0; save < 3; ++save) {
        step();
        snapshot.capture(*model, optimizer.get());
        const auto live_model = written(tt::checkpoint::archive_contents([&](auto& a) { model->save(a); }), dir / "live-model.pt");
        const auto live_optimizer = written(tt::checkpoint::archive_contents([&](auto& a) { optimizer->save(a); }), dir / "live-optimizer.pt");
        step();  // training goes on: the snapshot keeps the state of its capture
        CHECK(written(snapshot.model_contents(), dir / "model.pt") == live_model);
        CHECK(written(snapshot.optimizer_contents(), dir / "optimizer.pt") == live_optimizer);
        // One copy of the state, in the same buffers at every capture.
        std::vector<const void*> now;
        std::int64_t bytes = 0;
        for (const auto& t : snapshot.tensors()) {
          now.push_back(t.data_ptr());
          bytes += t.nbytes();
        }
        std::int64_t live_bytes = 0;
        for (const auto& p : model->parameters()) live_bytes += p.nbytes();
        CHECK(bytes == live_bytes * (1 + copies_per_parameter));
        if (save == 0) buffers = now;
        CHECK(now == buffers);
      }
    }
  }
}
