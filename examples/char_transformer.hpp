// The character-level language model of the char_lm example (and of the benchmarks): a vocabulary of the
// characters a text uses, its blocks as a data set, a small decoder-only transformer and sampling from it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace examples {

/// The characters of a UTF-8 text as ids, and back: each distinct code point is one id, in byte order, so a
/// sample is always valid UTF-8. A byte that starts no valid sequence is a character of its own.
class Vocabulary {
 public:
  explicit Vocabulary(const std::string& text) {
    for (std::size_t at = 0; at < text.size();) {
      const auto length = character_length(text, at);
      id_.emplace(text.substr(at, length), 0);
      at += length;
    }
    for (auto& [character, id] : id_) {
      id = static_cast<std::int64_t>(characters_.size());
      characters_.push_back(character);
    }
  }
  std::int64_t size() const { return static_cast<std::int64_t>(characters_.size()); }
  /// The ids of `text`'s characters; a character outside the vocabulary is an error.
  torch::Tensor encode(const std::string& text) const {
    std::vector<std::int64_t> ids;
    ids.reserve(text.size());
    for (std::size_t at = 0; at < text.size();) {
      const auto length = character_length(text, at);
      const auto found = id_.find(text.substr(at, length));
      if (found == id_.end()) throw std::invalid_argument("the character " + text.substr(at, length) +
                                                          " is not in the vocabulary");
      ids.push_back(found->second);
      at += length;
    }
    return torch::tensor(ids, torch::kLong);
  }
  const std::string& decode(std::int64_t id) const { return characters_.at(static_cast<std::size_t>(id)); }

 private:
  // The bytes of the UTF-8 sequence that starts at text[at]: 1 to 4.
  static std::size_t character_length(const std::string& text, std::size_t at) {
    const auto lead = static_cast<unsigned char>(text[at]);
    const std::size_t length = lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : lead < 0xF8 ? 4 : 1;
    if (at + length > text.size()) return 1;
    for (std::size_t i = 1; i < length; ++i)
      if ((static_cast<unsigned char>(text[at + i]) & 0xC0) != 0x80) return 1;
    return length;
  }

  std::map<std::string, std::int64_t> id_;
  std::vector<std::string> characters_;
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
    const auto future =
        torch::ones({time, time}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(1);
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
inline std::string generate(CharTransformer& model, const Vocabulary& vocabulary, const std::string& prompt,
                            std::int64_t length, double temperature, std::uint64_t seed) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  auto gen = at::detail::createCPUGenerator(seed);
  const auto device = model->head->weight.device();
  const auto encoded = vocabulary.encode(prompt);
  const auto* prompt_ids = encoded.data_ptr<std::int64_t>();
  std::vector<std::int64_t> context(prompt_ids, prompt_ids + encoded.numel());
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
inline double unigram_entropy(const torch::Tensor& ids, std::int64_t vocabulary) {
  const auto p = torch::bincount(ids, {}, vocabulary).to(torch::kDouble) / static_cast<double>(ids.size(0));
  const auto nonzero = p.masked_select(p > 0);
  return -(nonzero * nonzero.log()).sum().item<double>();
}

}  // namespace examples
