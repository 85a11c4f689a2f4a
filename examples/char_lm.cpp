// char_lm: trains a small decoder-only transformer, character by character, on the Jargon File (public domain,
// 1.7 MB of text from the Debian package jargon-text), holding out its last tenth; prints a generated sample at
// each evaluation and reports perplexity and bits per character. Every TrainingArguments flag is available on the
// command line; --help lists them.
//
//   char_lm --output_dir lm                                     # the README's run: 1500 steps, about 6 minutes
//   char_lm --max_steps 300 --gradient_accumulation_steps 1     # a quick one
//   char_lm --stream true                                       # the training text read as a stream of lines
//
// Exit status: 0 on success, 2 for bad input or missing data (with a one-line reason), 1 for anything else,
// 128 + the signal after a preemption checkpoint.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include <torchtrain/callbacks/sample_text.hpp>
#include <torchtrain/torchtrain.hpp>

#include "char_transformer.hpp"
#include "gunzip.hpp"

namespace tt = torchtrain;
namespace fs = std::filesystem;

namespace {

tt::TrainingArguments program_defaults() {
  tt::TrainingArguments defaults;
  defaults.output_dir = "char_lm_output";
  defaults.max_steps = 1500;
  defaults.learning_rate = 3e-3;
  defaults.lr_scheduler_type = tt::SchedulerType::cosine;
  defaults.warmup_steps = 0.05;
  defaults.weight_decay = 0.1;
  defaults.per_device_train_batch_size = 16;
  defaults.gradient_accumulation_steps = 2;
  defaults.per_device_eval_batch_size = 64;
  defaults.logging_steps = 50;
  defaults.eval_strategy = tt::IntervalStrategy::steps;
  defaults.eval_steps = 250;
  defaults.eval_on_start = true;
  defaults.save_strategy = tt::SaveStrategy::steps;
  defaults.save_steps = 500;
  defaults.include_for_metrics = {"loss"};
  return defaults;
}

// The bytes of `text` that hold its first `characters` characters (UTF-8).
std::int64_t text_prefix_bytes(const std::string& text, std::int64_t characters) {
  std::int64_t bytes = 0;
  for (std::int64_t seen = 0; bytes < static_cast<std::int64_t>(text.size()); ++bytes)
    if ((static_cast<unsigned char>(text[static_cast<std::size_t>(bytes)]) & 0xC0) != 0x80 && seen++ == characters)
      break;
  return bytes;
}

template <class Trainer>
int train_and_report(Trainer& trainer, const tt::TrainingArguments& args, const examples::Vocabulary& vocabulary,
                     const std::string& prompt, std::int64_t sample_length, double temperature, double entropy,
                     const std::string& resume_from_checkpoint) {
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
  trainer.template add_callback<tt::SampleTextCallback>([&](const tt::TrainerState& state) {
    return examples::generate(trainer.model, vocabulary, prompt, sample_length, temperature,
                              args.seed + static_cast<std::uint64_t>(state.global_step));
  });
  const auto result = trainer.train(tt::ResumeFrom::parse(resume_from_checkpoint));
  if (result.preempted_by) return 128 + result.preempted_by;  // the Trainer said which checkpoint it saved
  trainer.save_model();
  trainer.save_metrics("train", result.metrics);
  trainer.save_state();
  auto metrics = trainer.evaluate();
  metrics["eval_unigram_entropy"] = entropy;
  trainer.save_metrics("eval", metrics);
  std::cout << "train_runtime " << result.metrics["train_runtime"].template get<double>() << " s  eval_loss "
            << metrics["eval_loss"].template get<double>() << " nats  bits_per_character "
            << metrics["eval_bits_per_character"].template get<double>() << "  (unigram " << entropy / std::log(2.0) << ")\n";
  return 0;
}

int run(int argc, char** argv) {
  std::string text_file = "/usr/share/doc/jargon-text/jargon.txt.gz", prompt = "The ", resume_from_checkpoint;
  std::int64_t block = 64, d_model = 64, heads = 4, layers = 2, sample_length = 200, max_eval_blocks = 200;
  double temperature = 0.8;
  bool stream = false;
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
      .add_argument("stream", stream, "train on the lines of the training text read as a stream (a plain-text copy in "
                                      "output_dir), each line one example of up to block_size characters")
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

  const std::string text = examples::text_of(text_file);
  const examples::Vocabulary vocabulary(text + prompt);
  const auto ids = vocabulary.encode(text);
  const auto split = ids.size(0) * 9 / 10;
  examples::CharBlocks train(ids.narrow(0, 0, split), block);
  auto held_out = ids.narrow(0, split, ids.size(0) - split);
  if (max_eval_blocks > 0) held_out = held_out.narrow(0, 0, std::min(held_out.size(0), max_eval_blocks * block + 1));
  examples::CharBlocks eval(held_out, block);
  const double entropy = examples::unigram_entropy(ids.narrow(0, 0, split), vocabulary.size());
  std::cout << "text: " << ids.size(0) << " characters, " << vocabulary.size() << " distinct; unigram entropy "
            << entropy / std::log(2.0) << " bits per character\n";

  torch::manual_seed(args.seed);
  const examples::CharTransformer model(vocabulary.size(), block, d_model, heads, layers);
  const auto report = [&](auto& trainer) {
    return train_and_report(trainer, args, vocabulary, prompt, sample_length, temperature, entropy,
                            resume_from_checkpoint);
  };
  if (!stream) {
    tt::Trainer trainer(model, args, train, eval);
    return report(trainer);
  }
  // Each line of the training text (with its line break) predicts itself shifted by one, up to block_size
  // characters; the padding's labels are -100, and causal attention never looks ahead at it.
  const fs::path lines = fs::path(args.output_dir) / "train_text.txt";
  if (!fs::exists(lines)) {
    fs::create_directories(lines.parent_path());
    std::ofstream(lines, std::ios::binary) << text.substr(0, static_cast<std::size_t>(text_prefix_bytes(text, split)));
  }
  using Lines = tt::data::TextLineStream<std::vector<torch::data::Example<>>>;
  Lines train_lines(lines.string(), [&vocabulary, block](const std::vector<tt::data::TextLine>& batch) {
    std::vector<torch::data::Example<>> out;
    for (const auto& line : batch) {
      const auto ids = vocabulary.encode(line.text + "\n");
      const auto length = std::min<std::int64_t>(ids.size(0) - 1, block);
      out.push_back({ids.narrow(0, 0, length), ids.narrow(0, 1, length)});
    }
    return out;
  });
  tt::Trainer<examples::CharTransformer, Lines, examples::CharBlocks, tt::data::PaddingCollator> trainer(
      model, args, std::move(train_lines), eval);
  return report(trainer);
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
