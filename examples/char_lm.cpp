// char_lm: trains a small decoder-only transformer, character by character, on the Jargon File (public domain,
// 1.7 MB of text from the Debian package jargon-text), holding out its last tenth; prints a generated sample at
// each evaluation and reports perplexity and bits per character. Every TrainingArguments flag is available on the
// command line; --help lists them.
//
//   char_lm --output_dir lm                                  # the README's run
//   char_lm --max_steps 300 --d_model 64 --layers 2          # a quick one
//
// Exit status: 0 on success, 2 for bad input or missing data (with a one-line reason), 1 for anything else,
// 128 + the signal after a preemption checkpoint.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include <torchtrain/callbacks/sample_text.hpp>
#include <torchtrain/torchtrain.hpp>

#include "gunzip.hpp"

namespace tt = torchtrain;
namespace fs = std::filesystem;

namespace {

/// The characters of a text as ids, and back.
class Vocabulary {
 public:
  explicit Vocabulary(const std::string& text) {
    std::array<bool, 256> seen{};
    for (const unsigned char c : text) seen[c] = true;
    for (int c = 0; c < 256; ++c)
      if (seen[static_cast<std::size_t>(c)]) {
        id_[static_cast<std::size_t>(c)] = static_cast<std::int64_t>(chars_.size());
        chars_.push_back(static_cast<char>(c));
      }
  }
  std::int64_t size() const { return static_cast<std::int64_t>(chars_.size()); }
  torch::Tensor encode(const std::string& text) const {
    std::vector<std::int64_t> ids;
    ids.reserve(text.size());
    for (const unsigned char c : text) ids.push_back(id_[c]);
    return torch::tensor(ids, torch::kLong);
  }
  char decode(std::int64_t id) const { return chars_.at(static_cast<std::size_t>(id)); }

 private:
  std::array<std::int64_t, 256> id_{};
  std::vector<char> chars_;
};

/// Consecutive blocks of `block` characters of a text; each predicts the same block shifted by one.
struct CharBlocks : torch::data::datasets::Dataset<CharBlocks> {
  CharBlocks(torch::Tensor ids, std::int64_t block) : ids(std::move(ids)), block(block) {}
  torch::data::Example<> get(std::size_t i) override {
    const auto start = static_cast<std::int64_t>(i) * block;
    return {ids.narrow(0, start, block), ids.narrow(0, start + 1, block)};
  }
  torch::optional<std::size_t> size() const override { return static_cast<std::size_t>((ids.size(0) - 1) / block); }
  torch::Tensor ids;
  std::int64_t block;
};

/// Causal self-attention with `heads` heads: each position attends to itself and the positions before it.
struct CausalSelfAttentionImpl : torch::nn::Module {
  CausalSelfAttentionImpl(std::int64_t d_model, std::int64_t heads)
      : heads(heads),
        qkv(register_module("qkv", torch::nn::Linear(d_model, 3 * d_model))),
        out(register_module("out", torch::nn::Linear(d_model, d_model))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    const auto batch = x.size(0), time = x.size(1), d = x.size(2);
    auto parts = qkv(x).view({batch, time, 3, heads, d / heads}).permute({2, 0, 3, 1, 4});  // [3, B, H, T, d/H]
    const auto q = parts[0], k = parts[1], v = parts[2];
    auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(d / heads));
    const auto future = torch::ones({time, time}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(1);
    scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
    const auto mixed = torch::matmul(torch::softmax(scores, -1), v);  // [B, H, T, d/H]
    return out(mixed.transpose(1, 2).reshape({batch, time, d}));
  }
  std::int64_t heads;
  torch::nn::Linear qkv, out;
};
TORCH_MODULE(CausalSelfAttention);

/// A pre-norm transformer block: attention, then a 4x-wide GELU MLP, each around a residual connection.
struct BlockImpl : torch::nn::Module {
  BlockImpl(std::int64_t d_model, std::int64_t heads)
      : norm1(register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d_model})))),
        attention(register_module("attention", CausalSelfAttention(d_model, heads))),
        norm2(register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d_model})))),
        mlp(register_module("mlp", torch::nn::Sequential(torch::nn::Linear(d_model, 4 * d_model), torch::nn::GELU(),
                                                         torch::nn::Linear(4 * d_model, d_model)))) {}
  torch::Tensor forward(torch::Tensor x) {
    x = x + attention(norm1(x));
    return x + mlp->forward(norm2(x));
  }
  torch::nn::LayerNorm norm1;
  CausalSelfAttention attention;
  torch::nn::LayerNorm norm2;
  torch::nn::Sequential mlp;
};
TORCH_MODULE(Block);

/// Token and position embeddings, `layers` blocks, a final LayerNorm and the logits over the vocabulary.
struct CharTransformerImpl : torch::nn::Module {
  CharTransformerImpl(std::int64_t vocabulary, std::int64_t block, std::int64_t d_model, std::int64_t heads,
                      std::int64_t layers)
      : token(register_module("token", torch::nn::Embedding(vocabulary, d_model))),
        position(register_module("position", torch::nn::Embedding(block, d_model))),
        blocks(register_module("blocks", torch::nn::Sequential())),
        norm(register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d_model})))),
        head(register_module("head", torch::nn::Linear(d_model, vocabulary))),
        block(block) {
    for (std::int64_t i = 0; i < layers; ++i) blocks->push_back(Block(d_model, heads));
  }
  torch::Tensor forward(const torch::Tensor& ids) {
    const auto positions = torch::arange(ids.size(1), torch::TensorOptions().dtype(torch::kLong).device(ids.device()));
    return head(norm(blocks->forward(token(ids) + position(positions))));
  }
  torch::nn::Embedding token, position;
  torch::nn::Sequential blocks;
  torch::nn::LayerNorm norm;
  torch::nn::Linear head;
  std::int64_t block;
};
TORCH_MODULE(CharTransformer);

/// `length` characters after `prompt`, each drawn from the model's distribution at `temperature`.
std::string generate(CharTransformer& model, const Vocabulary& vocabulary, const std::string& prompt,
                     std::int64_t length, double temperature, std::uint64_t seed) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  auto gen = at::detail::createCPUGenerator(seed);
  const auto device = model->head->weight.device();
  std::vector<std::int64_t> context;
  for (std::int64_t i = 0; i < vocabulary.encode(prompt).size(0); ++i)
    context.push_back(vocabulary.encode(prompt)[i].item<std::int64_t>());
  std::string text = prompt;
  for (std::int64_t i = 0; i < length; ++i) {
    const auto start = std::max<std::int64_t>(0, static_cast<std::int64_t>(context.size()) - model->block);
    const auto window = torch::tensor(std::vector<std::int64_t>(context.begin() + start, context.end()), torch::kLong);
    const auto logits = model->forward(window.unsqueeze(0).to(device))[0][-1].to(torch::kCPU).to(torch::kDouble);
    const auto next = torch::multinomial(torch::softmax(logits / temperature, -1), 1, false, gen).item<std::int64_t>();
    context.push_back(next);
    text += vocabulary.decode(next);
  }
  if (was_training) model->train();
  return text;
}

/// The entropy, in nats per character, of the text's character frequencies: what a model that knows no context
/// can reach.
double unigram_entropy(const torch::Tensor& ids, std::int64_t vocabulary) {
  const auto p = torch::bincount(ids, {}, vocabulary).to(torch::kDouble) / static_cast<double>(ids.size(0));
  const auto nonzero = p.masked_select(p > 0);
  return -(nonzero * nonzero.log()).sum().item<double>();
}

tt::TrainingArguments program_defaults() {
  tt::TrainingArguments defaults;
  defaults.output_dir = "char_lm_output";
  defaults.max_steps = 3000;
  defaults.learning_rate = 1e-3;
  defaults.lr_scheduler_type = tt::SchedulerType::cosine;
  defaults.warmup_steps = 0.05;
  defaults.weight_decay = 0.1;
  defaults.per_device_train_batch_size = 16;
  defaults.gradient_accumulation_steps = 2;
  defaults.per_device_eval_batch_size = 64;
  defaults.logging_steps = 100;
  defaults.eval_strategy = tt::IntervalStrategy::steps;
  defaults.eval_steps = 500;
  defaults.eval_on_start = true;
  defaults.save_strategy = tt::SaveStrategy::steps;
  defaults.save_steps = 1000;
  defaults.include_for_metrics = {"loss"};
  return defaults;
}

int run(int argc, char** argv) {
  std::string text_file = "/usr/share/doc/jargon-text/jargon.txt.gz", prompt = "The ", resume_from_checkpoint;
  std::int64_t block = 128, d_model = 128, heads = 4, layers = 4, sample_length = 200, max_eval_blocks = 400;
  double temperature = 0.8;
  tt::ArgumentParser parser("Train a character-level transformer language model with torchtrain.", program_defaults());
  parser.add_argument("text_file", text_file, "the text to learn (.gz or plain)")
      .add_argument("block_size", block, "characters of context")
      .add_argument("d_model", d_model, "width of the transformer")
      .add_argument("heads", heads, "attention heads (d_model must be a multiple)")
      .add_argument("layers", layers, "transformer blocks")
      .add_argument("prompt", prompt, "how each generated sample starts")
      .add_argument("sample_length", sample_length, "characters generated at each evaluation")
      .add_argument("temperature", temperature, "sampling temperature")
      .add_argument("max_eval_blocks", max_eval_blocks, "held-out blocks evaluated; 0: all of them")
      .add_argument("resume_from_checkpoint", resume_from_checkpoint,
                    "a checkpoint folder, or true for the newest valid one in output_dir");
  auto parsed = parser.parse(argc, argv);
  if (parsed.help_requested) return 0;
  const tt::TrainingArguments& args = parsed.args;
  if (block < 2 || d_model < 1 || heads < 1 || layers < 1 || d_model % heads != 0)
    throw tt::ArgumentError("--block_size must be at least 2, and --d_model a positive multiple of --heads");
  if (!fs::exists(text_file))
    throw tt::ArgumentError("no text at " + text_file + "; install the Debian package jargon-text "
                            "(apt-get install jargon-text) or pass --text_file");

  const std::string text = text_file.size() > 3 && text_file.compare(text_file.size() - 3, 3, ".gz") == 0
                               ? examples::gunzipped_text(text_file)
                               : examples::read_text(text_file);
  const Vocabulary vocabulary(text + prompt);
  const auto ids = vocabulary.encode(text);
  const auto split = ids.size(0) * 9 / 10;
  CharBlocks train(ids.narrow(0, 0, split), block);
  auto held_out = ids.narrow(0, split, ids.size(0) - split);
  if (max_eval_blocks > 0) held_out = held_out.narrow(0, 0, std::min(held_out.size(0), max_eval_blocks * block + 1));
  CharBlocks eval(held_out, block);
  const double entropy = unigram_entropy(ids.narrow(0, 0, split), vocabulary.size());
  std::cout << "text: " << text.size() << " characters, " << vocabulary.size() << " distinct; unigram entropy "
            << entropy / std::log(2.0) << " bits per character\n";

  torch::manual_seed(args.seed);
  tt::Trainer trainer(CharTransformer(vocabulary.size(), block, d_model, heads, layers), args, train, eval);
  // Only the loss is needed for the metrics: the logits' arg-max keeps the kept outputs small.
  trainer.preprocess_logits_for_metrics = [](const torch::Tensor& logits, const torch::Tensor&) {
    return logits.argmax(-1);
  };
  trainer.compute_metrics = [](const tt::EvalPrediction& p) {
    const double loss = p.losses.mean().item<double>();  // nats per character
    tt::Metrics metrics = tt::metrics::accuracy(p);
    metrics["perplexity"] = std::exp(loss);
    metrics["bits_per_character"] = loss / std::log(2.0);
    return metrics;
  };
  trainer.add_callback<tt::SampleTextCallback>([&](const tt::TrainerState& state) {
    return generate(trainer.model, vocabulary, prompt, sample_length, temperature, args.seed + static_cast<std::uint64_t>(state.global_step));
  });
  const auto result = trainer.train(tt::ResumeFrom::parse(resume_from_checkpoint));
  if (result.preempted_by) {
    std::cerr << "char_lm: stopped by signal " << result.preempted_by << " after saving checkpoint-"
              << result.global_step << "; continue with --resume_from_checkpoint true\n";
    return 128 + result.preempted_by;
  }
  trainer.save_model();
  trainer.save_metrics("train", result.metrics);
  trainer.save_state();
  auto metrics = trainer.evaluate();
  metrics["eval_unigram_entropy"] = entropy;
  trainer.save_metrics("eval", metrics);
  std::cout << "train_runtime " << result.metrics["train_runtime"].get<double>() << " s  eval_loss "
            << metrics["eval_loss"].get<double>() << " nats  bits_per_character "
            << metrics["eval_bits_per_character"].get<double>() << "  (unigram " << entropy / std::log(2.0) << ")\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const tt::Error& e) {
    std::cerr << "char_lm: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "char_lm: error: " << e.what() << "\n";
    return 1;
  }
}
