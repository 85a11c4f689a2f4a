// A child process for the distributed tests: one rank of a data-parallel run (or a single process when RANK and
// WORLD_SIZE are unset) training a small classifier, with every TrainingArguments flag plus:
//
//   --dump_dir D            write D/params_<rank>.pt (final weights), D/result_<rank>.json (global_step, final
//                           evaluation metrics) and D/files_<rank>.txt (every checkpoint file this process wrote)
//   --stop_at_step N        a callback on rank 0 only stops training at step N
//   --kill_at_step N        SIGKILL this process at the end of step N (on the ranks listed by --kill_ranks)
//   --kill_ranks R          ranks that --kill_at_step applies to: "all" or one rank number
//   --resume                continue from the newest valid checkpoint in output_dir
//   --sequences             tag the tokens of variable-length sequences (padded batches, labels padded with -100)
//                           instead of classifying blobs
//   --stream                read the blobs as stream datasets (needs --max_steps); --stream_examples_rank1 N
//                           gives rank 1 a training stream of only the first N examples
//
// Errors print "distributed_worker: error: ..." and exit with status 2.
#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>

#include <torchtrain/torchtrain.hpp>

namespace tt = torchtrain;

namespace {

struct NetImpl : torch::nn::Module {
  torch::nn::Linear hidden{nullptr}, output{nullptr};
  NetImpl() : hidden(register_module("hidden", torch::nn::Linear(8, 16))), output(register_module("output", torch::nn::Linear(16, 3))) {}
  torch::Tensor forward(torch::Tensor x) { return output(torch::relu(hidden(x))); }
};
TORCH_MODULE(Net);

tt::data::TensorDataset blobs(std::int64_t n, std::uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const auto labels = torch::randint(0, 3, {n}, gen);
  const auto centres = torch::eye(3, 8) * 2.0;
  return {centres.index_select(0, labels) + torch::randn({n, 8}, gen), labels};
}

// Token sequences of 3 to 12 tokens from a vocabulary of 20, each token labelled with its id modulo 3.
struct TokenSequences : torch::data::datasets::Dataset<TokenSequences> {
  std::vector<torch::Tensor> tokens;
  TokenSequences(std::int64_t n, std::uint64_t seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    for (std::int64_t i = 0; i < n; ++i)
      tokens.push_back(torch::randint(0, 20, {torch::randint(3, 13, {1}, gen).item<std::int64_t>()}, gen));
  }
  torch::data::Example<> get(std::size_t i) override { return {tokens[i], tokens[i].remainder(3)}; }
  torch::optional<std::size_t> size() const override { return tokens.size(); }
};

// The examples of a TensorDataset in order, as a stream that can save its position.
struct BlobStream : torch::data::datasets::StatefulDataset<BlobStream, torch::data::Example<>> {
  tt::data::TensorDataset examples;
  std::int64_t length, next = 0;
  BlobStream(tt::data::TensorDataset examples, std::int64_t length)
      : examples(std::move(examples)), length(length) {}
  torch::optional<torch::data::Example<>> get_batch(std::size_t n) override {
    const auto count = std::min(static_cast<std::int64_t>(n), length - next);
    if (count <= 0) return torch::nullopt;
    torch::data::Example<> batch{examples.features().narrow(0, next, count), examples.labels().narrow(0, next, count)};
    next += count;
    return batch;
  }
  torch::optional<std::size_t> size() const override { return torch::nullopt; }
  void reset() override { next = 0; }
  void save(torch::serialize::OutputArchive& archive) const override { archive.write("next", torch::tensor(next)); }
  void load(torch::serialize::InputArchive& archive) override {
    torch::Tensor t;
    archive.read("next", t);
    next = t.item<std::int64_t>();
  }
};

struct TaggerImpl : torch::nn::Module {
  torch::nn::Embedding embed{nullptr};
  torch::nn::Linear head{nullptr};
  TaggerImpl() : embed(register_module("embed", torch::nn::Embedding(20, 8))), head(register_module("head", torch::nn::Linear(8, 3))) {}
  torch::Tensor forward(torch::Tensor ids) { return head(embed(ids)); }
};
TORCH_MODULE(Tagger);

// Stops training at a given step; added on rank 0 only, so the other ranks stop only if the decision is shared.
class StopAt : public tt::TrainerCallback {
 public:
  explicit StopAt(std::int64_t step) : step_(step) {}
  void on_step_end(const tt::TrainingArguments&, const tt::TrainerState& state, tt::TrainerControl& control,
                   const tt::CallbackContext&) override {
    if (state.global_step == step_) control.should_training_stop = true;
  }

 private:
  std::int64_t step_;
};

class KillAt : public tt::TrainerCallback {
 public:
  explicit KillAt(std::int64_t step) : step_(step) {}
  void on_step_end(const tt::TrainingArguments&, const tt::TrainerState& state, tt::TrainerControl&,
                   const tt::CallbackContext&) override {
    if (state.global_step == step_) std::raise(SIGKILL);
  }

 private:
  std::int64_t step_;
};

struct WorkerOptions {
  std::string dump_dir, kill_ranks;
  std::optional<std::int64_t> stop_at_step, kill_at_step;
  bool resume = false;
  int rank = 0;
};

template <class Trainer>
int train_and_dump(Trainer&& trainer, const WorkerOptions& o) {
  trainer.compute_metrics = tt::metrics::accuracy;
  if (o.stop_at_step && o.rank == 0) trainer.template add_callback<StopAt>(*o.stop_at_step);
  if (o.kill_at_step && (o.kill_ranks == "all" || o.kill_ranks == std::to_string(o.rank)))
    trainer.template add_callback<KillAt>(*o.kill_at_step);

  const auto result = trainer.train(o.resume ? tt::ResumeFrom(true) : tt::ResumeFrom());
  trainer.save_model();
  trainer.save_state();
  trainer.save_metrics("train", result.metrics);
  const auto metrics = trainer.evaluate();
  if (!o.dump_dir.empty()) {
    tt::checkpoint::save_module(*trainer.model, std::filesystem::path(o.dump_dir) / ("params_" + std::to_string(o.rank) + ".pt"));
    nlohmann::json out = {{"global_step", result.global_step},
                          {"training_loss", result.training_loss},
                          {"eval_loss", metrics["eval_loss"]},
                          {"eval_accuracy", metrics["eval_accuracy"]},
                          {"is_world_process_zero", trainer.state.is_world_process_zero},
                          {"log_history", trainer.state.log_history}};
    std::ofstream(std::filesystem::path(o.dump_dir) / ("result_" + std::to_string(o.rank) + ".json")) << out.dump(2);
  }
  return 0;
}

int run(int argc, char** argv) {
  std::string dump_dir, kill_ranks = "all";
  std::optional<std::int64_t> stop_at_step, kill_at_step;
  bool resume = false, sequences = false, stream = false;
  std::int64_t train_samples = 96, eval_samples = 37;
  std::optional<std::int64_t> stream_examples_rank1;
  tt::TrainingArguments defaults;
  defaults.disable_tqdm = true;
  defaults.learning_rate = 1e-2;
  defaults.logging_steps = 2;
  defaults.eval_strategy = tt::IntervalStrategy::epoch;
  defaults.save_strategy = tt::SaveStrategy::steps;
  defaults.save_steps = 4;
  tt::ArgumentParser parser("One rank of a distributed torchtrain test run.", defaults);
  parser.add_argument("dump_dir", dump_dir, "where each rank writes its weights, metrics and written files")
      .add_argument("stop_at_step", stop_at_step, "rank 0 alone decides to stop at this step")
      .add_argument("kill_at_step", kill_at_step, "SIGKILL at the end of this step")
      .add_argument("kill_ranks", kill_ranks, "ranks that --kill_at_step applies to: all or a rank")
      .add_argument("resume", resume, "resume from the newest valid checkpoint")
      .add_argument("sequences", sequences, "tag variable-length token sequences instead of classifying blobs")
      .add_argument("stream", stream, "read the blobs as streams")
      .add_argument("stream_examples_rank1", stream_examples_rank1, "rank 1's training stream ends after this many")
      .add_argument("train_samples", train_samples, "training examples")
      .add_argument("eval_samples", eval_samples, "evaluation examples");
  auto parsed = parser.parse(argc, argv);
  if (parsed.help_requested) return 0;

  const char* rank_text = std::getenv("RANK");
  const int rank = rank_text ? std::atoi(rank_text) : 0;
  const WorkerOptions options{dump_dir, kill_ranks, stop_at_step, kill_at_step, resume, rank};
  std::ofstream written;
  if (!dump_dir.empty()) {
    written.open(std::filesystem::path(dump_dir) / ("files_" + std::to_string(rank) + ".txt"), std::ios::app);
    tt::checkpoint::set_after_file_written_hook(
        [&written](const std::filesystem::path& file) { written << file.filename().string() << std::endl; });
  }

  torch::manual_seed(3);
  if (sequences)
    return train_and_dump(tt::Trainer<Tagger, TokenSequences, TokenSequences, tt::data::PaddingCollator>(
                              Tagger(), parsed.args, TokenSequences(train_samples, 5), TokenSequences(eval_samples, 6)),
                          options);
  if (stream) {
    const auto train_length = rank == 1 && stream_examples_rank1 ? *stream_examples_rank1 : train_samples;
    return train_and_dump(tt::Trainer(Net(), parsed.args, BlobStream(blobs(train_samples, 5), train_length),
                                      BlobStream(blobs(eval_samples, 6), eval_samples)),
                          options);
  }
  return train_and_dump(tt::Trainer(Net(), parsed.args, blobs(train_samples, 5), blobs(eval_samples, 6)), options);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "distributed_worker: error: " << e.what() << std::endl;
    return 2;
  }
}
