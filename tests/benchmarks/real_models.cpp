// Real models on real data: the Trainer against a hand-written LibTorch loop over the examples' own models and
// data sets, the character-level transformer on the Jargon File (jargon-text) and the CNN on Fashion-MNIST
// (dataset-fashion-mnist), in the same process. Prints a table of samples per second and writes it as JSON.
//
//   real_models [--repeats N] [--json PATH]
//
// Both sides do the same work per step: the batch of the same examples in the same order (the Trainer's
// shuffle, EpochSampler), built as LibTorch's own data path builds it (each example's get(), then
// torch::stack), the same forward, cross-entropy, gradient clipping, AdamW, linear schedule and a loss kept on
// the device between logs. LibTorch computes on one intra-op thread, so the DataLoader's two workers of the
// last row have the second core. Timed by the wall clock around the whole call (the Trainer's set-up included),
// the two sides alternating so drift hits both alike; each figure is the median over the repeats. The rows
// marked bf16/fp32 time the same Trainer with bf16 autocast against float32.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <torchtrain/torchtrain.hpp>

#include "char_transformer.hpp"
#include "fashion_cnn.hpp"

namespace tt = torchtrain;
namespace fs = std::filesystem;

namespace {

struct Silent : c10::WarningHandler {
  void process(const c10::SourceLocation&, const std::string&, bool) override {}
};

/// The batch of the examples `order[first, first + batch)`, as LibTorch's Stack transform makes it.
template <class Dataset>
std::pair<torch::Tensor, torch::Tensor> stacked_batch(Dataset& data, const std::vector<std::size_t>& order,
                                                      std::size_t first, std::int64_t batch) {
  std::vector<torch::Tensor> inputs, targets;
  for (std::size_t i = first; i < first + static_cast<std::size_t>(batch); ++i) {
    auto example = data.get(order[i]);
    inputs.push_back(std::move(example.data));
    targets.push_back(std::move(example.target));
  }
  return {torch::stack(inputs), torch::stack(targets)};
}

/// The loop a LibTorch user writes by hand, doing what the Trainer does per step. Returns the steps taken.
template <class Model, class Dataset>
std::int64_t hand_written(Model model, Dataset& data, std::int64_t steps, std::int64_t batch) {
  const tt::TrainingArguments args;  // the Trainer's defaults: AdamW at 5e-5, seed 42, clipping at 1.0
  const auto log_every = static_cast<std::int64_t>(args.logging_steps);
  auto optimizer = tt::create_optimizer(*model, args);
  const auto parameters = model->parameters();
  const auto order = tt::data::EpochSampler(*data.size(), args.seed).indices(0);
  auto running = torch::zeros({});
  for (std::int64_t step = 0; step < steps; ++step) {
    const auto [inputs, targets] = stacked_batch(data, order, static_cast<std::size_t>(step * batch), batch);
    const auto logits = model->forward(inputs);
    auto loss = torch::nn::functional::cross_entropy(logits.flatten(0, logits.dim() - 2), targets.flatten());
    loss.backward();
    tt::detail::clip_grad_norm(parameters, 1.0);
    optimizer->step();
    const double lr = args.learning_rate * static_cast<double>(steps - step - 1) / static_cast<double>(steps);
    for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
    model->zero_grad(/*set_to_none=*/true);
    running += loss.detach();
    if ((step + 1) % log_every == 0) {
      volatile double logged = running.item<double>() / static_cast<double>(log_every);
      (void)logged;
      running.zero_();
    }
  }
  return steps;
}

template <class Model, class Dataset>
std::int64_t with_trainer(Model model, const Dataset& data, std::int64_t steps, std::int64_t batch, int workers,
                          bool bf16 = false) {
  tt::TrainingArguments args;
  args.output_dir = "/tmp/torchtrain-bench";
  args.max_steps = steps;
  args.per_device_train_batch_size = batch;
  args.dataloader_num_workers = workers;
  args.save_strategy = tt::SaveStrategy::no;
  args.disable_tqdm = true;
  args.report_to = {"none"};
  args.bf16 = bf16;
  tt::Trainer trainer(std::move(model), args, data);
  trainer.template pop_callback<tt::PrinterCallback>();
  return trainer.train().global_step;
}

template <class F>
double samples_per_second(std::int64_t batch, F&& run) {
  const auto start = std::chrono::steady_clock::now();
  const auto steps = static_cast<double>(run());
  return steps * static_cast<double>(batch) /
         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class MakeModel, class Dataset>
void measure(const char* name, MakeModel make_model, Dataset& data, std::int64_t steps, std::int64_t batch,
             int workers, int repeats, nlohmann::ordered_json& rows) {
  std::vector<double> hand, trainer, ratios;
  for (int r = 0; r < repeats; ++r) {
    torch::manual_seed(0);
    const double h = samples_per_second(batch, [&] { return hand_written(make_model(), data, steps, batch); });
    torch::manual_seed(0);
    const double t = samples_per_second(batch, [&] { return with_trainer(make_model(), data, steps, batch, workers); });
    hand.push_back(h);
    trainer.push_back(t);
    ratios.push_back(t / h);
  }
  std::printf("%-44s %9d %14.1f %17.1f %7.3f\n", name, workers, median(hand), median(trainer), median(ratios));
  rows.push_back({{"model", name}, {"dataloader_num_workers", workers}, {"steps", steps}, {"batch", batch},
                  {"hand_written_samples_per_second", median(hand)},
                  {"trainer_samples_per_second", median(trainer)}, {"ratio", median(ratios)}});
}

// The same Trainer in bfloat16 autocast (args.bf16) against float32.
template <class MakeModel, class Dataset>
void measure_bf16(const char* name, MakeModel make_model, Dataset& data, std::int64_t steps, std::int64_t batch,
                  int repeats, nlohmann::ordered_json& rows) {
  std::vector<double> fp32, bf16, ratios;
  for (int r = 0; r < repeats; ++r) {
    torch::manual_seed(0);
    const double f = samples_per_second(batch, [&] { return with_trainer(make_model(), data, steps, batch, 0); });
    torch::manual_seed(0);
    const double b = samples_per_second(batch, [&] { return with_trainer(make_model(), data, steps, batch, 0, true); });
    fp32.push_back(f);
    bf16.push_back(b);
    ratios.push_back(b / f);
  }
  std::printf("%-44s %9s %14.1f %17.1f %7.3f\n", name, "bf16/fp32", median(fp32), median(bf16), median(ratios));
  rows.push_back({{"model", name}, {"comparison", "Trainer bf16 / fp32"}, {"steps", steps}, {"batch", batch},
                  {"fp32_samples_per_second", median(fp32)}, {"bf16_samples_per_second", median(bf16)},
                  {"ratio", median(ratios)}});
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  int repeats = 5;
  std::string json_path = "real_models.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
    else {
      std::fprintf(stderr, "real_models: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  torch::set_num_threads(1);
  Silent silent;
  c10::Warning::WarningHandlerGuard quiet(&silent);
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  std::printf("%-44s %9s %14s %17s %7s\n", "model", "workers", "hand samples/s", "trainer samples/s", "ratio");

  const fs::path jargon = "/usr/share/doc/jargon-text/jargon.txt.gz";
  if (fs::exists(jargon)) {
    const auto text = examples::text_of(jargon);
    const examples::Vocabulary vocabulary(text);
    examples::CharBlocks blocks(vocabulary.encode(text), 64);
    const auto vocabulary_size = vocabulary.size();
    measure("char LM (2 blocks, d_model 64, 64 characters)",
            [&] { return examples::CharTransformer(vocabulary_size, 64, 64, 4, 2); }, blocks, 40, 16, 0, repeats,
            rows);
    measure_bf16("char LM (2 blocks, d_model 64, 64 characters)",
                 [&] { return examples::CharTransformer(vocabulary_size, 64, 64, 4, 2); }, blocks, 40, 16, repeats, rows);
  } else {
    std::printf("skipped the char LM: %s is missing (apt-get install jargon-text)\n", jargon.c_str());
  }

  const fs::path fashion = "/usr/share/datasets/fashion-mnist";
  if (fs::exists(fashion)) {
    const auto root = examples::unpacked_data(fashion, "/tmp/torchtrain-bench/fashion-mnist-idx").string();
    torch::data::datasets::MNIST images(root, torch::data::datasets::MNIST::Mode::kTrain);
    for (const int workers : {0, 2})
      measure("Fashion-MNIST CNN (2 conv blocks, batch 32)", [] { return examples::Cnn(); }, images, 200, 32,
              workers, repeats, rows);
    measure_bf16("Fashion-MNIST CNN (2 conv blocks, batch 32)", [] { return examples::Cnn(); }, images, 200, 32,
                 repeats, rows);
  } else {
    std::printf("skipped the CNN: %s is missing (apt-get install dataset-fashion-mnist)\n", fashion.c_str());
  }
  std::ofstream(json_path) << rows.dump(2) << "\n";
  std::printf("written to %s\n", json_path.c_str());
}
