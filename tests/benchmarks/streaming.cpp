// Streams: CsvStream's throughput against reading and parsing the same file line by line by hand; the time of a
// resume at step 10 and at step 10^5, from a saved position and by replaying a stream without one; and the peak
// memory of training through a 100 MB and a 1 GB file (each in a process of its own). Prints a table and writes
// it as JSON.
// Usage: streaming [--repeats N] [--dir PATH] [--json PATH] [--skip-rss]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <sys/resource.h>

#include <torchtrain/torchtrain.hpp>

namespace tt = torchtrain;
namespace fs = std::filesystem;

namespace {

constexpr int kFeatures = 16;
constexpr std::size_t kBatch = 256;

double cpu_seconds() {
  std::timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double cpu_time_of(const std::function<void()>& f) {
  const double start = cpu_seconds();
  f();
  return cpu_seconds() - start;
}

// A classification CSV of `megabytes` MB: one block of rows written again and again (the content does not
// matter here, only the bytes).
void write_csv(const fs::path& path, std::size_t megabytes) {
  std::string block;
  for (int f = 0; f < kFeatures; ++f) block += "x" + std::to_string(f) + ",";
  block += "label\n";
  const std::string header = block;
  block.clear();
  std::uint64_t state = 1;
  while (block.size() < (1u << 20)) {
    for (int f = 0; f < kFeatures; ++f) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      char cell[32];
      std::snprintf(cell, sizeof cell, "%.4f,", static_cast<double>(state >> 40) / (1 << 22) - 2.0);
      block += cell;
    }
    block += std::to_string(state >> 62) + "\n";
  }
  std::ofstream out(path, std::ios::binary);
  out << header;
  for (std::size_t written = 0; written < megabytes * 1000000; written += block.size()) out << block;
}

// The hand-written reader the stream is measured against: getline, strtod per cell, one tensor pair per batch.
std::size_t read_by_hand(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::string line;
  std::getline(in, line);  // the header
  std::vector<float> features;
  std::vector<std::int64_t> labels;
  std::size_t rows = 0;
  auto flush = [&] {
    if (labels.empty()) return;
    const auto n = static_cast<std::int64_t>(labels.size());
    const auto x = torch::from_blob(features.data(), {n, kFeatures}).clone();
    const auto y = torch::from_blob(labels.data(), {n}, torch::kLong).clone();
    rows += static_cast<std::size_t>(x.size(0) == y.size(0) ? n : 0);
    features.clear();
    labels.clear();
  };
  while (std::getline(in, line)) {
    const char* p = line.c_str();
    char* end = nullptr;
    for (int f = 0; f < kFeatures; ++f, p = end + 1) features.push_back(std::strtof(p, &end));
    labels.push_back(std::strtoll(p, &end, 10));
    if (labels.size() == kBatch) flush();
  }
  flush();
  return rows;
}

std::size_t read_stream(const fs::path& path, std::size_t shuffle_buffer) {
  tt::data::TextLineStreamOptions options;
  options.shuffle_buffer = shuffle_buffer;
  tt::data::CsvStream stream(path.string(), options);
  std::size_t rows = 0;
  while (auto batch = stream.get_batch(kBatch)) rows += static_cast<std::size_t>(batch->target.size(0));
  return rows;
}

// An endless synthetic stream of 4-feature examples; with `Positioned`, it saves and loads its counter.
struct Synthetic {
  std::int64_t next = 0;
  torch::optional<torch::data::Example<>> get_batch(std::size_t n) {
    const auto rows = static_cast<std::int64_t>(n);
    auto x = torch::full({rows, 4}, static_cast<float>(next % 13) / 13.0f);
    auto y = torch::full({rows}, next % 2, torch::kLong);
    ++next;
    return torch::data::Example<>{x, y};
  }
  void reset() { next = 0; }
};
struct Positioned : Synthetic {
  void save(torch::serialize::OutputArchive& archive) const { archive.write("next", torch::tensor(next)); }
  void load(torch::serialize::InputArchive& archive) {
    torch::Tensor t;
    archive.read("next", t);
    next = t.item<std::int64_t>();
  }
};

tt::TrainingArguments quiet(const fs::path& dir, std::int64_t max_steps) {
  tt::TrainingArguments args;
  args.output_dir = dir.string();
  args.disable_tqdm = true;
  args.report_to = {"none"};
  args.per_device_train_batch_size = 1;
  args.max_steps = max_steps;
  args.logging_steps = 1000000;
  args.save_strategy = tt::SaveStrategy::no;
  return args;
}

// Writes a checkpoint at `step` (training `step` steps on the stream), then returns the median wall time of a
// train() that resumes from it and takes one more step.
template <class Stream>
double resume_seconds(const fs::path& dir, std::int64_t step, int repeats) {
  const fs::path out = dir / ("resume-" + std::to_string(step));
  fs::remove_all(out);
  {
    auto args = quiet(out, step);
    args.save_strategy = tt::SaveStrategy::steps;
    args.save_steps = step;
    tt::Trainer trainer(torch::nn::Linear(4, 2), args, Stream());
    trainer.template remove_callback<tt::PrinterCallback>();
    trainer.train();
  }
  const auto checkpoint = out / ("checkpoint-" + std::to_string(step));
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    tt::Trainer trainer(torch::nn::Linear(4, 2), quiet(dir / "resumed", step + 1), Stream());
    trainer.template remove_callback<tt::PrinterCallback>();
    const auto start = std::chrono::steady_clock::now();
    trainer.train(tt::ResumeFrom(checkpoint.string()));
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return median(times);
}

struct MlpImpl : torch::nn::Module {
  torch::nn::Linear hidden{kFeatures, 32}, output{32, 4};
  MlpImpl() {
    register_module("hidden", hidden);
    register_module("output", output);
  }
  torch::Tensor forward(const torch::Tensor& x) { return output(torch::relu(hidden(x))); }
};
TORCH_MODULE(Mlp);

class StopAtEpochEnd : public tt::TrainerCallback {
 public:
  void on_epoch_end(const tt::TrainingArguments&, const tt::TrainerState&, tt::TrainerControl& control,
                    const tt::CallbackContext&) override {
    control.should_training_stop = true;
  }
};

// Child mode: trains a small MLP through the whole file in batches of 1024 and prints the peak resident memory.
int train_through(const fs::path& file) {
  tt::data::TextLineStreamOptions options;
  options.shuffle_buffer = 10000;
  tt::data::CsvStream stream(file.string(), options);
  auto args = quiet(file.parent_path() / "rss-run", 1 << 30);
  args.per_device_train_batch_size = 1024;
  tt::Trainer trainer(Mlp(), args, std::move(stream));
  trainer.add_callback<StopAtEpochEnd>();
  trainer.remove_callback<tt::PrinterCallback>();
  trainer.train();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("%ld %lld\n", usage.ru_maxrss, static_cast<long long>(trainer.state.global_step));
  return 0;
}

// The child's peak resident memory in MB and its steps.
std::pair<double, long long> peak_rss_of_training(const fs::path& file) {
  const std::string command =
      "'" + fs::read_symlink("/proc/self/exe").string() + "' --train-through '" + file.string() + "'";
  FILE* pipe = ::popen(command.c_str(), "r");
  long kb = 0;
  long long steps = 0;
  if (!pipe || std::fscanf(pipe, "%ld %lld", &kb, &steps) != 2) throw std::runtime_error("the child failed");
  ::pclose(pipe);
  return {static_cast<double>(kb) / 1024.0, steps};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && !std::strcmp(argv[1], "--train-through")) return train_through(argv[2]);
  int repeats = 5;
  bool rss = true;
  fs::path dir = "streaming.tmp";
  std::string json_path = "streaming.json";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--skip-rss")) rss = false;
    if (i + 1 >= argc) break;
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--dir")) dir = argv[i + 1];
    if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
  }
  torch::set_num_threads(1);
  tt::set_message_handler([](tt::MessageLevel, const std::string&) {});  // the resumes' warnings are expected
  fs::create_directories(dir);
  nlohmann::json report;

  const fs::path csv = dir / "throughput.csv";
  write_csv(csv, 100);
  const double megabytes = static_cast<double>(fs::file_size(csv)) / 1e6;
  std::vector<double> by_hand, stream, shuffled;
  std::size_t rows = 0;
  for (int r = 0; r < repeats; ++r) {
    by_hand.push_back(cpu_time_of([&] { rows = read_by_hand(csv); }));
    stream.push_back(cpu_time_of([&] {
      if (read_stream(csv, 0) != rows) throw std::runtime_error("the stream read another number of rows");
    }));
    shuffled.push_back(cpu_time_of([&] { read_stream(csv, 10000); }));
  }
  const double hand_s = median(by_hand), stream_s = median(stream), shuffled_s = median(shuffled);
  std::printf("CSV stream throughput, %.0f MB, %zu rows of %d features, batches of %zu (CPU s, median of %d)\n",
              megabytes, rows, kFeatures, kBatch, repeats);
  std::printf("  %-34s %8.3f s  %7.1f MB/s\n", "by hand (getline + strtof)", hand_s, megabytes / hand_s);
  std::printf("  %-34s %8.3f s  %7.1f MB/s  %.2fx\n", "CsvStream", stream_s, megabytes / stream_s, hand_s / stream_s);
  std::printf("  %-34s %8.3f s  %7.1f MB/s  %.2fx\n", "CsvStream, shuffle buffer 10000", shuffled_s,
              megabytes / shuffled_s, hand_s / shuffled_s);
  report["throughput"] = {{"megabytes", megabytes}, {"rows", rows}, {"by_hand_s", hand_s}, {"stream_s", stream_s},
                          {"shuffled_s", shuffled_s}, {"ratio", hand_s / stream_s},
                          {"ratio_shuffled", hand_s / shuffled_s}};
  fs::remove(csv);

  std::printf("\nResume (train() from the checkpoint, one step; wall s, median of %d)\n", repeats);
  std::printf("  %-34s %10s %10s\n", "", "step 10", "step 1e5");
  const double saved_10 = resume_seconds<Positioned>(dir, 10, repeats);
  const double saved_1e5 = resume_seconds<Positioned>(dir, 100000, repeats);
  const double replay_10 = resume_seconds<Synthetic>(dir, 10, repeats);
  const double replay_1e5 = resume_seconds<Synthetic>(dir, 100000, repeats);
  std::printf("  %-34s %10.4f %10.4f\n", "saved position (save/load)", saved_10, saved_1e5);
  std::printf("  %-34s %10.4f %10.4f\n", "replayed (no save/load)", replay_10, replay_1e5);
  report["resume"] = {{"saved_10_s", saved_10}, {"saved_100000_s", saved_1e5}, {"replayed_10_s", replay_10},
                      {"replayed_100000_s", replay_1e5}};

  if (rss) {
    std::printf("\nPeak resident memory training through the file once (batches of 1024, shuffle buffer 10000)\n");
    for (std::size_t mb : {100, 1000}) {
      const fs::path file = dir / ("rss-" + std::to_string(mb) + ".csv");
      write_csv(file, mb);
      const auto [peak, steps] = peak_rss_of_training(file);
      std::printf("  %5zu MB file: %8.1f MB peak, %lld steps\n", mb, peak, steps);
      report["peak_rss_mb"][std::to_string(mb)] = peak;
      fs::remove(file);
    }
  }
  std::ofstream(json_path) << report.dump(2) << "\n";
  fs::remove_all(dir);
  return 0;
}
