// SPDX-License-Identifier: MIT
// TextLineStream: the lines of a text file of any size as a stream dataset, read with constant memory, optionally
// through a shuffle buffer, with a position that a checkpoint saves and a resume restores at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <torch/data/datasets/stateful.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>

#include "torchtrain/detail/split_mix64.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain::data {

/// One line of a text file: its text without the line break (nor a '\r' before it), its number (from 1) and the
/// byte where it starts.
struct TextLine {
  std::string text;
  std::int64_t number = 0;
  std::int64_t offset = 0;
};

struct TextLineStreamOptions {
  /// Lines held to draw from at random (0: the file's order). A batch takes its lines from the buffer, each
  /// replaced by the file's next line, as the shuffle buffers of tf.data and Hugging Face datasets do; the
  /// order is a pure function of the seed, the epoch (set_epoch) and the position, so a resume continues it.
  std::size_t shuffle_buffer = 0;
  std::uint64_t seed = 42;
  /// Lines at the start of the file that are not data (a header), counted after blank lines are skipped.
  std::size_t header_lines = 0;
  /// Lines of only spaces and tabs are not data.
  bool skip_blank_lines = true;
};

/// get_batch(n) reads the next n lines (or the last ones) and returns what `make_batch` makes of them (of this
/// process's share of n x world_size lines after set_shard); the file is read through one buffered stream, so
/// memory does not grow with its size. The position (save/load: the next line's byte offset, the shuffle
/// generator and where each buffered line starts) is O(buffer), whatever the step, and load() checks it against
/// the file.
template <class Batch>
class TextLineStream : public torch::data::datasets::StatefulDataset<TextLineStream<Batch>, Batch> {
 public:
  using MakeBatch = std::function<Batch(const std::vector<TextLine>& lines)>;

  TextLineStream(std::string path, MakeBatch make_batch, TextLineStreamOptions options = {})
      : path_(std::move(path)), make_batch_(std::move(make_batch)), options_(options) {
    if (!make_batch_) throw ArgumentError("TextLineStream: make_batch must be set");
    reset();
  }

  const std::string& path() const { return path_; }

  /// The shuffle of each epoch differs; the Trainer calls this before reset() at every epoch, as Hugging Face
  /// calls set_epoch.
  void set_epoch(std::int64_t epoch) { epoch_ = epoch; }

  /// Process `rank` of `world_size` (the Trainer calls it): get_batch(n) then reads n x world_size lines, as
  /// every process does, and makes its batch of the lines at positions rank, rank + world_size, ... only.
  void set_shard(std::size_t rank, std::size_t world_size) {
    if (world_size == 0 || rank >= world_size)
      throw ArgumentError("TextLineStream: rank " + std::to_string(rank) + " of " + std::to_string(world_size));
    rank_ = rank;
    world_size_ = world_size;
  }

  /// Back to the file's first data line, with the shuffle of the current epoch.
  void reset() override {
    open();
    next_offset_ = 0;
    next_number_ = 0;
    detail::SplitMix64 mix{options_.seed};
    rng_.state = mix.next() + static_cast<std::uint64_t>(epoch_) * 0xD1B54A32D192ED03ULL;
    buffer_.clear();
    TextLine header;
    for (std::size_t i = 0; i < options_.header_lines && read_line(header);) ++i;
  }

  torch::optional<Batch> get_batch(std::size_t per_process) override {
    const std::size_t n = per_process * world_size_;
    batch_.resize(n);
    std::size_t count = 0;
    if (options_.shuffle_buffer == 0) {
      while (count < n && read_line(batch_[count])) ++count;
    } else {
      while (buffer_.size() < options_.shuffle_buffer) {
        buffer_.emplace_back();
        if (!read_line(buffer_.back())) {
          buffer_.pop_back();
          break;
        }
      }
      for (; count < n && !buffer_.empty(); ++count) {
        auto& drawn = buffer_[rng_.below(buffer_.size())];
        std::swap(batch_[count], drawn);
        if (!read_line(drawn)) {
          std::swap(drawn, buffer_.back());
          buffer_.pop_back();
        }
      }
    }
    if (world_size_ > 1) {  // this process's lines, to the front
      std::size_t kept = 0;
      for (std::size_t i = rank_; i < count; i += world_size_) std::swap(batch_[kept++], batch_[i]);
      count = kept;
    }
    if (count == 0) return torch::nullopt;
    batch_.resize(count);
    return make_batch_(batch_);
  }

  torch::optional<std::size_t> size() const override { return torch::nullopt; }

  void save(torch::serialize::OutputArchive& archive) const override {
    std::vector<std::int64_t> offsets, numbers;
    for (const auto& line : buffer_) {
      offsets.push_back(line.offset);
      numbers.push_back(line.number);
    }
    const auto as_tensor = [](std::vector<std::int64_t> values) { return torch::tensor(values, torch::kLong); };
    archive.write("next", as_tensor({next_offset_, next_number_, epoch_, static_cast<std::int64_t>(rng_.state),
                                     file_size_}));
    archive.write("buffer_offsets", as_tensor(offsets));
    archive.write("buffer_numbers", as_tensor(numbers));
  }

  void load(torch::serialize::InputArchive& archive) override {
    torch::Tensor next, offsets, numbers;
    archive.read("next", next);
    archive.read("buffer_offsets", offsets);
    archive.read("buffer_numbers", numbers);
    const auto bad = [&](const std::string& why) {
      return FileFormatError(path_ + ": the saved position does not fit the file (" + why +
                             "); was the file changed since the checkpoint?");
    };
    if (next.scalar_type() != torch::kLong || next.numel() != 5 || offsets.scalar_type() != torch::kLong ||
        numbers.scalar_type() != torch::kLong || offsets.numel() != numbers.numel())
      throw bad("the position has the wrong shape");
    const auto* n = next.data_ptr<std::int64_t>();
    open();
    if (n[4] != file_size_) throw bad("it was saved for a file of " + std::to_string(n[4]) + " bytes, not " +
                                      std::to_string(file_size_));
    if (n[0] < 0 || n[0] > file_size_ || !starts_line(n[0])) throw bad("no line starts at byte " + std::to_string(n[0]));
    std::vector<TextLine> buffer(static_cast<std::size_t>(offsets.numel()));
    for (std::size_t i = 0; i < buffer.size(); ++i) {
      const std::int64_t offset = offsets[static_cast<std::int64_t>(i)].item<std::int64_t>();
      if (offset < 0 || offset >= file_size_ || !starts_line(offset))
        throw bad("no line starts at byte " + std::to_string(offset));
      seek(offset);
      next_number_ = numbers[static_cast<std::int64_t>(i)].item<std::int64_t>() - 1;
      next_offset_ = offset;
      if (!read_line(buffer[i], /*skip_blank=*/false)) throw bad("the line at byte " + std::to_string(offset) + " is gone");
    }
    buffer_ = std::move(buffer);
    seek(n[0]);
    next_offset_ = n[0];
    next_number_ = n[1];
    epoch_ = n[2];
    rng_.state = static_cast<std::uint64_t>(n[3]);
  }

 private:
  void open() {
    file_ = std::ifstream();
    file_.rdbuf()->pubsetbuf(read_buffer_.data(), static_cast<std::streamsize>(read_buffer_.size()));
    file_.open(path_, std::ios::binary);
    if (!file_) throw FileFormatError(path_ + ": cannot open the file: " + detail::errno_text());
    file_.seekg(0, std::ios::end);
    file_size_ = static_cast<std::int64_t>(file_.tellg());
    file_.seekg(0);
  }

  void seek(std::int64_t offset) {
    file_.clear();
    file_.seekg(offset);
  }

  bool starts_line(std::int64_t offset) {
    if (offset == 0 || offset == file_size_) return true;
    seek(offset - 1);
    return file_.get() == '\n';
  }

  // The next line (blank ones skipped unless `skip_blank` is false) into `line`; false at the end of the file.
  bool read_line(TextLine& line, bool skip_blank = true) {
    for (;;) {
      if (!std::getline(file_, line.text)) {
        if (file_.bad()) throw FileFormatError(path_ + ": cannot read the file: " + detail::errno_text());
        return false;
      }
      line.offset = next_offset_;
      line.number = ++next_number_;
      next_offset_ += static_cast<std::int64_t>(line.text.size()) + (file_.eof() ? 0 : 1);
      if (!line.text.empty() && line.text.back() == '\r') line.text.pop_back();
      if (!(skip_blank && options_.skip_blank_lines) || line.text.find_first_not_of(" \t") != std::string::npos)
        return true;
    }
  }

  std::string path_;
  MakeBatch make_batch_;
  TextLineStreamOptions options_;
  std::vector<char> read_buffer_ = std::vector<char>(1 << 16);
  std::ifstream file_;
  std::int64_t file_size_ = 0;
  std::int64_t next_offset_ = 0;  // where the next line to read starts
  std::int64_t next_number_ = 0;  // the number of the line read last
  std::int64_t epoch_ = 0;
  std::size_t rank_ = 0, world_size_ = 1;
  detail::SplitMix64 rng_{0};
  std::vector<TextLine> buffer_;  // the shuffle buffer
  std::vector<TextLine> batch_;   // reused: a batch's lines
};

}  // namespace torchtrain::data
