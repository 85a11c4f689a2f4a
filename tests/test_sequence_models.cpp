// Sequence models: padded batches, per-token losses and metrics, evaluation outputs of different lengths, and the
// token-count normalisation of the loss under gradient accumulation.
#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include <c10/core/CPUAllocator.h>
#include <catch2/catch.hpp>

#include <torchtrain/torchtrain.hpp>

#include "support.hpp"

namespace tt = torchtrain;
using tt_test::TempDir;

namespace {

/// Token sequences of 3 to 12 tokens from a vocabulary of 20; each token's label is its id modulo 3.
struct TokenSequences : torch::data::datasets::Dataset<TokenSequences> {
  std::vector<torch::Tensor> tokens;
  TokenSequences(std::int64_t n, std::uint64_t seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    for (std::int64_t i = 0; i < n; ++i) {
      const auto length = torch::randint(3, 13, {1}, gen).item<std::int64_t>();
      tokens.push_back(torch::randint(0, 20, {length}, gen));
    }
  }
  torch::data::Example<> get(std::size_t i) override { return {tokens[i], tokens[i].remainder(3)}; }
  torch::optional<std::size_t> size() const override { return tokens.size(); }
  std::int64_t total_tokens() const {
    std::int64_t total = 0;
    for (const auto& t : tokens) total += t.size(0);
    return total;
  }
};

/// Embedding, GRU and a per-token classifier: logits [batch, time, 3].
struct TaggerImpl : torch::nn::Module {
  torch::nn::Embedding embed{20, 16};
  torch::nn::GRU gru{torch::nn::GRUOptions(16, 16).batch_first(true)};
  torch::nn::Linear head{16, 3};
  TaggerImpl() {
    register_module("embed", embed);
    register_module("gru", gru);
    register_module("head", head);
  }
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& attention_mask) {
    auto hidden = std::get<0>(gru(embed(ids)));
    return head(hidden * attention_mask.unsqueeze(-1).to(hidden.scalar_type()));
  }
};
TORCH_MODULE(Tagger);

using TaggerTrainer = tt::Trainer<Tagger, TokenSequences, TokenSequences, tt::data::PaddingCollator>;

tt::TrainingArguments quiet_args(const TempDir& dir) {
  tt::TrainingArguments args;
  args.output_dir = dir.str();
  args.report_to = {"none"};
  args.disable_tqdm = true;
  args.save_strategy = tt::SaveStrategy::no;
  args.logging_steps = 1;
  args.learning_rate = 1e-2;
  return args;
}

std::vector<torch::Tensor> gradients(torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return out;
}

/// Keeps the gradients of the first optimizer step.
struct FirstGradients : tt::TrainerCallback {
  std::vector<torch::Tensor> grads;
  void on_pre_optimizer_step(const Args&, const State&, Control&, const Context& c) override {
    if (grads.empty()) grads = gradients(*c.model);
  }
};

/// LibTorch's CPU allocator, counting the bytes of the tensors alive (the same under a sanitizer's malloc).
class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* base) : base_(base) {}
  c10::DataPtr allocate(std::size_t n) const override {
    auto* block = new Block{base_->allocate(n), n, this};
    live_ += n;
    return {block->data.get(), block, &release, block->data.device()};
  }
  std::size_t live() const { return live_; }

 private:
  struct Block {
    c10::DataPtr data;
    std::size_t size;
    const CountingAllocator* owner;
  };
  static void release(void* context) {
    auto* block = static_cast<Block*>(context);
    block->owner->live_ -= block->size;
    delete block;
  }
  c10::Allocator* base_;
  mutable std::atomic<std::size_t> live_{0};
};

/// The most tensor memory alive at an evaluation step beyond what was alive at `baseline`.
struct TensorPeak : tt::TrainerCallback {
  explicit TensorPeak(const CountingAllocator& counter) : counter(counter), baseline(counter.live()) {}
  const CountingAllocator& counter;
  std::size_t baseline, peak = 0;
  void on_prediction_step(const Args&, const State&, Control&, const Context&) override {
    const auto now = counter.live();
    if (now > baseline) peak = std::max(peak, now - baseline);
  }
};

}  // namespace

TEST_CASE("the padding collator pads per-token labels with -100 and names what it cannot collate") {
  std::vector<torch::data::Example<>> examples{{torch::tensor({1, 2}), torch::tensor({0, 1})},
                                               {torch::tensor({3, 4, 5, 6}), torch::tensor({1, 0, 2, 1})}};
  const auto batch = tt::data::PaddingCollator{}(examples);
  CHECK(torch::equal(batch.data, torch::tensor({{1, 2, 0, 0}, {3, 4, 5, 6}})));
  CHECK(torch::equal(batch.attention_mask, torch::tensor({{1, 1, 0, 0}, {1, 1, 1, 1}})));
  CHECK(torch::equal(batch.target, torch::tensor({{0, 1, -100, -100}, {1, 0, 2, 1}})));

  tt::data::PaddingCollator custom;
  custom.label_padding_value = -1;
  CHECK(custom(examples).target[0][3].item<std::int64_t>() == -1);

  // One label per sequence is stacked as it is.
  std::vector<torch::data::Example<>> classified{{torch::ones({2}), torch::tensor(0)}, {torch::ones({5}), torch::tensor(1)}};
  CHECK(torch::equal(tt::data::PaddingCollator{}(classified).target, torch::tensor({0, 1})));

  std::vector<torch::data::Example<>> mismatched{{torch::ones({3, 2}), torch::tensor(0)},
                                                 {torch::ones({3, 5}), torch::tensor(1)}};
  CHECK_THROWS_WITH(tt::data::PaddingCollator{}(mismatched),
                    Catch::Contains("cannot pad the data of the batch: example 1 is [3, 5] Float where example 0 is "
                                    "[3, 2] Float; only the first dimension may differ"));
  std::vector<torch::data::Example<>> bad_labels{{torch::ones({2}), torch::ones({2, 3})},
                                                 {torch::ones({4}), torch::ones({4, 2})}};
  CHECK_THROWS_WITH(tt::data::PaddingCollator{}(bad_labels), Catch::Contains("cannot pad the target of the batch"));
}

TEST_CASE("the built-in loss flattens per-token logits, ignores -100 and smooths labels as Hugging Face does") {
  torch::manual_seed(0);
  const auto logits = torch::randn({2, 4, 5});
  const auto labels = torch::tensor({{1, 4, -100, -100}, {0, 2, 3, -100}});
  const auto valid = labels.ne(-100);
  const auto log_p = torch::log_softmax(logits, -1).index({valid});  // [5, classes]
  const auto targets = labels.index({valid});
  const auto nll = -log_p.gather(1, targets.unsqueeze(1)).squeeze(1);
  CHECK(tt::detail::builtin_loss(logits, labels).item<double>() == Approx(nll.mean().item<double>()));

  // Hugging Face's LabelSmoother: (1 - e) * mean nll + e * mean over positions of the mean of -log p.
  const double e = 0.1;
  const double smoothed = (1 - e) * nll.mean().item<double>() + e * (-log_p).mean(1).mean().item<double>();
  CHECK(tt::detail::builtin_loss(logits, labels, e).item<double>() == Approx(smoothed));

  // With a window's token count: this batch's sum over its 5 tokens divided by the count.
  CHECK(tt::detail::builtin_loss(logits, labels, 0.0, torch::tensor(20)).item<double>() ==
        Approx(nll.sum().item<double>() / 20));
  CHECK_THROWS_WITH(tt::detail::builtin_loss(torch::randn({2, 4, 5}), torch::zeros({2, 3}, torch::kLong)),
                    Catch::Contains("the built-in loss needs logits [..., classes] for labels [...]"));
}

TEST_CASE("accuracy counts only the positions whose label is not -100") {
  // Three real tokens, two right; the padding's predictions would all be wrong.
  const auto logits = torch::tensor({{{0.f, 1.f}, {1.f, 0.f}, {0.f, 1.f}, {0.f, 1.f}}});
  const auto labels = torch::tensor({{1, 1, 1, -100}});
  const auto metrics = tt::metrics::accuracy({logits, labels});
  CHECK(metrics["accuracy"].get<double>() == Approx(2.0 / 3.0));
  // Token ids, as preprocess_logits_for_metrics leaves them, are compared as they are.
  CHECK(tt::metrics::accuracy({torch::tensor({{1, 0, 1, -100}}), labels})["accuracy"].get<double>() ==
        Approx(2.0 / 3.0));
}

TEST_CASE("a token classifier trains, evaluates and predicts over batches of different lengths") {
  TempDir dir;
  auto args = quiet_args(dir);
  args.num_train_epochs = 6;  // from any initialisation: over 60 seeds, accuracy >= 0.97 and loss <= 0.15
  args.per_device_train_batch_size = 8;
  args.per_device_eval_batch_size = 5;
  args.eval_strategy = tt::IntervalStrategy::epoch;
  TokenSequences train(96, 1), eval(23, 2);
  TaggerTrainer trainer(Tagger(), args, train, eval);
  trainer.compute_metrics = tt::metrics::accuracy;
  trainer.train();
  const auto metrics = trainer.evaluate();
  CHECK(metrics.at("eval_accuracy").get<double>() > 0.9);
  CHECK(metrics.at("eval_loss").get<double>() < 0.5);

  const auto predicted = trainer.predict(eval);
  std::int64_t longest = 0;
  for (const auto& t : eval.tokens) longest = std::max(longest, t.size(0));
  REQUIRE((predicted.predictions.sizes() == torch::IntArrayRef({23, longest, 3})));
  REQUIRE((predicted.label_ids.sizes() == torch::IntArrayRef({23, longest})));
  for (std::size_t i = 0; i < eval.tokens.size(); ++i) {
    const auto length = eval.tokens[i].size(0);
    const auto row = static_cast<std::int64_t>(i);
    CHECK(torch::equal(predicted.label_ids[row].narrow(0, 0, length), eval.tokens[i].remainder(3)));
    if (length < longest) {
      CHECK(predicted.label_ids[row].narrow(0, length, longest - length).eq(-100).all().item<bool>());
    }
  }
  CHECK(predicted.metrics.at("test_accuracy").get<double>() == Approx(metrics.at("eval_accuracy").get<double>()));
}

TEST_CASE("preprocess_logits_for_metrics runs on every evaluation batch, and include_for_metrics adds inputs and losses") {
  TempDir dir;
  auto args = quiet_args(dir);
  args.per_device_eval_batch_size = 4;
  args.include_for_metrics = {"inputs", "loss"};
  TokenSequences eval(10, 3);
  TaggerTrainer trainer(Tagger(), args, std::nullopt, eval);
  int calls = 0;
  trainer.preprocess_logits_for_metrics = [&](const torch::Tensor& logits, const torch::Tensor& labels) {
    ++calls;
    CHECK(logits.dim() == 3);
    CHECK(labels.sizes() == logits.sizes().slice(0, 2));
    return logits.argmax(-1);
  };
  tt::EvalPrediction seen;
  trainer.compute_metrics = [&](const tt::EvalPrediction& p) {
    seen = p;
    return tt::metrics::accuracy(p);
  };
  trainer.evaluate();
  CHECK(calls == 3);  // 10 examples in batches of 4
  REQUIRE(seen.predictions.scalar_type() == torch::kLong);
  CHECK(seen.predictions.sizes() == seen.label_ids.sizes());
  REQUIRE(seen.inputs.defined());
  CHECK(seen.inputs.sizes() == seen.label_ids.sizes());
  CHECK(torch::equal(seen.inputs[0].narrow(0, 0, eval.tokens[0].size(0)), eval.tokens[0]));
  REQUIRE(seen.losses.defined());
  CHECK((seen.losses.sizes() == torch::IntArrayRef({10})));
  // Each example carries its batch's loss: the first four share one.
  CHECK(seen.losses[0].item<double>() == seen.losses[3].item<double>());

  // eval_accumulation_steps changes where the outputs wait, not what they are.
  auto accumulated = args;
  accumulated.eval_accumulation_steps = 2;
  TaggerTrainer again(trainer.model, accumulated, std::nullopt, eval);
  again.preprocess_logits_for_metrics = trainer.preprocess_logits_for_metrics;
  tt::EvalPrediction seen_again;
  again.compute_metrics = [&](const tt::EvalPrediction& p) {
    seen_again = p;
    return tt::Metrics::object();
  };
  again.evaluate();
  CHECK(torch::equal(seen_again.predictions, seen.predictions));
  CHECK(torch::equal(seen_again.label_ids, seen.label_ids));
}

TEST_CASE("a model's other named outputs are kept too, each padded as the predictions are") {
  // The tagger's logits, and its hidden states as a second output.
  struct TwoOutputsImpl : TaggerImpl {
    tt::ModelOutput forward(const torch::Tensor& ids, const torch::Tensor& attention_mask) {
      auto hidden = std::get<0>(gru(embed(ids))) * attention_mask.unsqueeze(-1).to(torch::kFloat);
      return {{"logits", head(hidden)}, {"hidden", hidden}};
    }
  };
  TORCH_MODULE(TwoOutputs);
  TempDir dir;
  auto args = quiet_args(dir);
  args.per_device_eval_batch_size = 4;
  TokenSequences eval(10, 3);
  tt::Trainer<TwoOutputs, TokenSequences, TokenSequences, tt::data::PaddingCollator> trainer(TwoOutputs(), args,
                                                                                           std::nullopt, eval);
  std::int64_t longest = 0;
  for (const auto& t : eval.tokens) longest = std::max(longest, t.size(0));
  const auto predicted = trainer.predict(eval);
  CHECK((predicted.predictions.sizes() == torch::IntArrayRef({10, longest, 3})));
  REQUIRE(predicted.outputs.size() == 1);
  const auto& hidden = predicted.outputs.at("hidden");
  REQUIRE((hidden.sizes() == torch::IntArrayRef({10, longest, 16})));
  const auto shortest = eval.tokens[0].size(0);  // batches of 4 pad to their own longest, the set to its longest
  CHECK(hidden[0].narrow(0, shortest, longest - shortest).eq(-100).all().item<bool>());
  const auto alone = trainer.model->forward(eval.tokens[0].unsqueeze(0), torch::ones({1, shortest})).at("hidden");
  CHECK(torch::allclose(hidden[0].narrow(0, 0, shortest), alone[0].detach()));

  tt::EvalPrediction seen;
  trainer.compute_metrics = [&](const tt::EvalPrediction& p) {
    seen = p;
    return tt::Metrics::object();
  };
  auto accumulated = args;
  accumulated.eval_accumulation_steps = 1;
  trainer.args = accumulated;
  trainer.evaluate();
  REQUIRE(seen.outputs.count("hidden"));
  CHECK(torch::equal(seen.outputs.at("hidden"), hidden));
  CHECK(trainer.predict(eval, /*ignore_keys=*/{"hidden"}).outputs.empty());
}

TEST_CASE("evaluation of long per-token outputs keeps memory bounded with preprocess_logits_for_metrics") {
  // 64 sequences of 64 tokens with a vocabulary of 2000: all the logits take 32 MiB, their argmax 32 KiB.
  struct WideImpl : torch::nn::Module {
    torch::nn::Embedding embed{20, 8};
    torch::nn::Linear head{8, 2000};
    WideImpl() {
      register_module("embed", embed);
      register_module("head", head);
    }
    torch::Tensor forward(const torch::Tensor& ids) { return head(embed(ids)); }
  };
  TORCH_MODULE(Wide);
  struct Fixed : torch::data::datasets::Dataset<Fixed> {
    torch::data::Example<> get(std::size_t i) override {
      auto ids = torch::arange(64).add(static_cast<std::int64_t>(i)).remainder(20);
      return {ids, ids};
    }
    torch::optional<std::size_t> size() const override { return 64; }
  };
  // Outlives every tensor it allocates: the tensors made during the test free their memory through it.
  static CountingAllocator counter(c10::GetCPUAllocator());
  c10::Allocator* const original = c10::GetCPUAllocator();
  c10::SetCPUAllocator(&counter, /*priority=*/100);
  auto peak_during_evaluation = [](bool preprocess) {
    TempDir dir;
    auto args = quiet_args(dir);
    args.per_device_eval_batch_size = 8;
    tt::Trainer<Wide, Fixed> trainer(Wide(), args, std::nullopt, Fixed());
    trainer.compute_metrics = tt::metrics::accuracy;
    if (preprocess) trainer.preprocess_logits_for_metrics = [](const torch::Tensor& l, const torch::Tensor&) { return l.argmax(-1); };
    auto peak = trainer.add_callback<TensorPeak>(counter);
    trainer.evaluate();
    return peak->peak;
  };
  const auto with = peak_during_evaluation(true), without = peak_during_evaluation(false);
  c10::SetCPUAllocator(original, /*priority=*/100);
  INFO("tensor memory growth during evaluation: " << with << " bytes with preprocess_logits_for_metrics, " << without
                                                  << " without");
  CHECK(without > std::size_t{24} << 20);  // the logits of the whole set pile up...
  CHECK(with < std::size_t{4} << 20);      // ...not their argmax: at most a batch's logits at a time
}

TEST_CASE("the loss of an accumulation window is the mean over its label tokens: 4 x 2 sequences step as 1 x 8") {
  TokenSequences data(8, 7);  // lengths 3 to 12: micro-batches of 2 hold different numbers of tokens
  auto run = [&](std::int64_t batch, std::int64_t accumulation, double smoothing) {
    TempDir dir;
    auto args = quiet_args(dir);
    args.max_steps = 1;
    args.per_device_train_batch_size = batch;
    args.gradient_accumulation_steps = accumulation;
    args.label_smoothing_factor = smoothing;
    args.max_grad_norm = 0;
    torch::manual_seed(5);
    TaggerTrainer trainer(Tagger(), args, data);
    auto grads = trainer.add_callback<FirstGradients>();
    trainer.train();
    return std::make_pair(trainer.state.log_history.front().at("loss").get<double>(), grads->grads);
  };
  for (const double smoothing : {0.0, 0.1}) {
    INFO("label_smoothing_factor " << smoothing);
    const auto [whole_loss, whole_grads] = run(8, 1, smoothing);
    const auto [accumulated_loss, accumulated_grads] = run(2, 4, smoothing);
    CHECK(accumulated_loss == Approx(whole_loss).epsilon(1e-5));
    REQUIRE(accumulated_grads.size() == whole_grads.size());
    for (std::size_t i = 0; i < whole_grads.size(); ++i)
      CHECK(torch::allclose(accumulated_grads[i], whole_grads[i], 1e-4, 1e-6));
  }
}

TEST_CASE("include_num_input_tokens_seen counts the tokens, logs them and keeps them across a resume") {
  TokenSequences data(24, 11);
  TempDir dir;
  auto args = quiet_args(dir);
  args.per_device_train_batch_size = 6;
  args.num_train_epochs = 2;
  args.include_num_input_tokens_seen = "non_padding";
  args.save_strategy = tt::SaveStrategy::steps;
  args.save_steps = 4;
  TaggerTrainer trainer(Tagger(), args, data);
  trainer.train();
  CHECK(trainer.state.num_input_tokens_seen == 2 * data.total_tokens());
  const auto& first = trainer.state.log_history.front();
  CHECK(first.at("num_input_tokens_seen").get<std::int64_t>() > 0);
  CHECK(first.contains("train_tokens_per_second"));
  CHECK(trainer.state.log_history.back().at("num_input_tokens_seen").get<std::int64_t>() == 2 * data.total_tokens());

  // Resumed from the end of the first epoch, the count goes on from the checkpoint's.
  TaggerTrainer resumed(Tagger(), args, data);
  resumed.train((dir / "checkpoint-4").string());
  CHECK(resumed.state.num_input_tokens_seen == 2 * data.total_tokens());

  auto all = args;
  all.include_num_input_tokens_seen = "all";  // padding included: batch x longest sequence of each batch
  all.save_strategy = tt::SaveStrategy::no;
  TaggerTrainer padded(Tagger(), all, data);
  padded.train();
  CHECK(padded.state.num_input_tokens_seen > 2 * data.total_tokens());
}

TEST_CASE("training_step and prediction_step can be overridden without copying the loop") {
  // Doubles every loss: the logged loss doubles, and evaluation uses the same overridden step.
  struct Doubling : TaggerTrainer {
    using TaggerTrainer::TaggerTrainer;
    int steps = 0, predictions = 0;
    torch::Tensor training_step(Tagger& m, const Batch& batch, const torch::Tensor& num_items) override {
      ++steps;
      return TaggerTrainer::training_step(m, batch, num_items);
    }
    tt::PredictionStepOutput prediction_step(Tagger& m, const Batch& batch, bool loss_only,
                                             const std::vector<std::string>& ignore_keys) override {
      ++predictions;
      auto out = TaggerTrainer::prediction_step(m, batch, loss_only, ignore_keys);
      out.loss = out.loss * 2;
      return out;
    }
  };
  TempDir dir;
  auto args = quiet_args(dir);
  args.max_steps = 3;
  args.per_device_train_batch_size = 4;
  args.gradient_accumulation_steps = 2;
  TokenSequences data(16, 4);
  Doubling trainer(Tagger(), args, data, data);
  trainer.train();
  CHECK(trainer.steps == 6);
  const double doubled = trainer.evaluate().at("eval_loss").get<double>();
  CHECK(trainer.predictions == 2);
  TaggerTrainer plain(trainer.model, args, data, data);
  CHECK(doubled == Approx(2 * plain.evaluate().at("eval_loss").get<double>()));
}

TEST_CASE("group_by_length orders each epoch by mega-batches of similar lengths, as a function of seed and epoch") {
  std::vector<std::int64_t> lengths;
  for (std::int64_t i = 0; i < 200; ++i) lengths.push_back((i * 37) % 101 + 1);
  const std::size_t batch = 5;
  auto sampler = tt::data::EpochSampler(lengths.size(), 7).group_by_length(lengths, batch);
  const auto order = sampler.indices(3);
  REQUIRE(order.size() == lengths.size());
  auto sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < sorted.size(); ++i) REQUIRE(sorted[i] == i);  // each example once
  CHECK(order == sampler.indices(3));                                        // the same for the same epoch
  CHECK(order != sampler.indices(4));
  // Mega-batches of min(200 / 20, 50) = 10 batches: each sorted longest first, except that the longest of all
  // was swapped to the front.
  CHECK(lengths[order[0]] == *std::max_element(lengths.begin(), lengths.end()));
  int unsorted = 0;
  for (std::size_t start = 0; start < order.size(); start += 50)
    for (std::size_t i = start + 1; i < start + 50; ++i) unsorted += lengths[order[i - 1]] < lengths[order[i]];
  CHECK(unsorted <= 2);  // only around the swapped pair

  // The Trainer groups by the data's lengths; sequential keeps the data set's order.
  TempDir dir;
  auto args = quiet_args(dir);
  args.max_steps = 4;
  args.per_device_train_batch_size = 2;
  args.train_sampling_strategy = "group_by_length";
  TokenSequences data(40, 5);
  std::vector<std::int64_t> batch_lengths;
  struct Longest : tt::data::PaddingCollator {
    std::vector<std::int64_t>* seen;
    tt::data::PaddedBatch operator()(const std::vector<torch::data::Example<>>& examples) const {
      auto batch = PaddingCollator::operator()(examples);
      seen->push_back(batch.data.size(1));
      return batch;
    }
  };
  Longest collator;
  collator.seen = &batch_lengths;
  tt::Trainer<Tagger, TokenSequences, TokenSequences, Longest> trainer(Tagger(), args, data, std::nullopt, collator);
  trainer.train();
  std::int64_t longest = 0;
  for (const auto& t : data.tokens) longest = std::max(longest, t.size(0));
  REQUIRE(batch_lengths.size() == 4);
  CHECK(batch_lengths.front() == longest);  // the longest sequence comes first
  CHECK(std::is_sorted(batch_lengths.rbegin(), batch_lengths.rend()));

  CHECK(tt::data::EpochSampler(5, 1, /*shuffle=*/false).indices(2) == std::vector<std::size_t>{0, 1, 2, 3, 4});
  auto bad = quiet_args(dir);
  bad.train_sampling_strategy = "shortest_first";
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("train_sampling_strategy = \"shortest_first\": choose random, "
                                                    "sequential or group_by_length"));
}
