// SPDX-License-Identifier: MIT
// The pieces of a W&B offline run file (run-<id>.wandb): its LevelDB-log framing with W&B's header, and the
// wandb_internal.Record messages WandbCallback writes (field numbers of wandb/proto/wandb_internal.proto).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/protobuf_writer.hpp"
#include "torchtrain/detail/python_json.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain::detail::wandb {

// wandb/sdk/internal/datastore.py and core/pkg/leveldb/record.go.
inline constexpr std::size_t kBlockSize = 32768;
inline constexpr std::size_t kChunkHeaderSize = 7;
inline constexpr std::string_view kFileHeader{":W&B\xE1\xBE\x00", 7};  // ident, magic 0xBEE1 LE, version 0
enum ChunkType : unsigned char { kFull = 1, kFirst = 2, kMiddle = 3, kLast = 4 };

/// IEEE CRC-32 (zlib's crc32), which W&B uses unmasked over a chunk's type byte and payload.
inline std::uint32_t crc32_ieee(std::uint32_t crc, std::string_view bytes) {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int bit = 0; bit < 8; ++bit) c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (unsigned char byte : bytes) crc = table[(crc ^ byte) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

/// The bytes that append `payload` as one record to a log whose end is at file offset `offset`: blocks are
/// counted from offset 0 (the file header is part of the first), a block with fewer than 7 bytes left is
/// zero-padded, and a record that does not fit is split into FIRST, MIDDLE..., LAST chunks, as datastore.py does.
inline std::string frame_record(std::uint64_t offset, std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + kChunkHeaderSize * (2 + payload.size() / kBlockSize) + kChunkHeaderSize);
  std::uint64_t position = offset;
  const auto space_left = [&] { return kBlockSize - position % kBlockSize; };
  const auto chunk = [&](ChunkType type, std::string_view data) {
    const char type_byte = static_cast<char>(type);
    const std::uint32_t crc = crc32_ieee(crc32_ieee(0, std::string_view(&type_byte, 1)), data);
    for (int i = 0; i < 4; ++i) out += static_cast<char>((crc >> (8 * i)) & 0xFFu);
    out += static_cast<char>(data.size() & 0xFFu);
    out += static_cast<char>((data.size() >> 8) & 0xFFu);
    out += type_byte;
    out.append(data.data(), data.size());
    position += kChunkHeaderSize + data.size();
  };
  if (space_left() < kChunkHeaderSize) {
    const std::size_t pad = space_left();
    out.append(pad, '\0');
    position += pad;
  }
  if (payload.size() + kChunkHeaderSize <= space_left()) {
    chunk(kFull, payload);
    return out;
  }
  std::size_t used = space_left() - kChunkHeaderSize;  // may be 0: an empty FIRST chunk is legal
  chunk(kFirst, payload.substr(0, used));
  constexpr std::size_t kBlockData = kBlockSize - kChunkHeaderSize;
  while (payload.size() - used > kBlockData) {
    chunk(kMiddle, payload.substr(used, kBlockData));
    used += kBlockData;
  }
  chunk(kLast, payload.substr(used));
  return out;
}

/// The .wandb file of a run, appended to record by record and flushed each time, so that a killed process loses
/// nothing it wrote. A record that cannot be written is cut back off (append_text_file), and Error names the
/// file, so that it can be tried again at the same offset.
class TransactionLog {
 public:
  /// Creates the file (and its folder), replacing one of that name, and writes the W&B header.
  void create(const std::filesystem::path& file) {
    path_.clear();
    std::error_code ec;
    std::filesystem::create_directories(file.parent_path(), ec);
    if (ec)
      throw Error(file.parent_path().string() + ": cannot create the W&B run folder: " + ec.message() +
                  "; point WANDB_DIR at a writable folder");
    with_hint([&] { write_text_file(file.string(), kFileHeader); });
    path_ = file;
    size_ = kFileHeader.size();
  }

  /// Continues an existing file, cut back to `size` bytes, where the next record goes.
  void reopen(const std::filesystem::path& file, std::uint64_t size) {
    path_.clear();
    cut(file, size);
    path_ = file;
    size_ = size;
  }

  void append(std::string_view payload) {
    if (path_.empty()) throw Error("the W&B run file was not created, so a record cannot be written to it");
    // A failed append whose cut-back failed too left bytes behind: the record's blocks are counted from size_.
    std::error_code ec;
    if (std::filesystem::file_size(path_, ec) != size_ && !ec) cut(path_, size_);
    const std::string bytes = frame_record(size_, payload);
    with_hint([&] { append_text_file(path_.string(), bytes); });
    size_ += bytes.size();
  }

  bool is_open() const { return !path_.empty(); }
  std::uint64_t size() const { return size_; }

 private:
  template <class Write>
  static void with_hint(const Write& write) {
    try {
      write();
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + "; point WANDB_DIR at a writable folder with free space");
    }
  }

  static void cut(const std::filesystem::path& file, std::uint64_t size) {
    std::error_code ec;
    std::filesystem::resize_file(file, size, ec);
    if (ec)
      throw Error(file.string() + ": cannot cut the W&B run file back to " + std::to_string(size) +
                  " bytes: " + ec.message());
  }

  std::filesystem::path path_;  // empty until the file is created or reopened
  std::uint64_t size_ = 0;
};

/// JSON as Python's json.dumps writes it by default (one line, ", " and ": ", NaN and Infinity as bare
/// tokens): what W&B stores in value_json.
template <class BasicJson>
std::string to_json(const BasicJson& value) {
  std::string out;
  append_python_json(out, value, 0, kOneLineJson);
  return out;
}

/// A key and its JSON value: ConfigItem, HistoryItem and SummaryItem alike (key = 1, value_json = 16).
using Item = std::pair<std::string, std::string>;

inline ProtobufWriter items_message(int field, const std::vector<Item>& items) {
  ProtobufWriter message;
  for (const auto& [key, value_json] : items) message.message(field, ProtobufWriter().bytes(1, key).bytes(16, value_json));
  return message;
}

// Record: num = 1, then one field of the record_type oneof.
enum RecordField : int {
  kHistory = 2, kSummary = 3, kConfig = 5, kMetric = 12, kRun = 17, kExit = 18, kFinal = 20, kHeader = 21,
  kFooter = 22
};

inline std::string record(std::int64_t num, RecordField field, const ProtobufWriter& body) {
  ProtobufWriter r;
  r.int64(1, num).message(field, body);
  return r.str();
}

/// HeaderRecord{version_info{producer}}.
inline ProtobufWriter header_body(const std::string& producer) {
  return std::move(ProtobufWriter().message(1, ProtobufWriter().bytes(1, producer)));
}

struct RunFields {
  std::string run_id, entity, project, run_group, job_type, display_name, notes, host;
  std::vector<std::string> tags;
  double start_time = 0;        // Unix seconds
  std::int64_t starting_step = 0;
  bool resumed = false;
  std::int32_t runtime = 0;     // seconds the run had run before, when resumed
};

/// RunRecord; empty strings and zeros are left out, as proto3 serialises them.
inline ProtobufWriter run_body(const RunFields& run) {
  ProtobufWriter body;
  const auto text = [&body](int field, const std::string& value) {
    if (!value.empty()) body.bytes(field, value);
  };
  text(1, run.run_id);
  text(2, run.entity);
  text(3, run.project);
  text(6, run.run_group);
  text(7, run.job_type);
  text(8, run.display_name);
  text(9, run.notes);
  for (const auto& tag : run.tags) body.bytes(10, tag);
  text(13, run.host);
  if (run.starting_step != 0) body.int64(14, run.starting_step);
  // google.protobuf.Timestamp{seconds = 1, nanos = 2}, from microseconds as interface.py fills it
  const auto micros = static_cast<std::int64_t>(std::llround(run.start_time * 1e6));
  ProtobufWriter timestamp;
  timestamp.int64(1, micros / 1000000);
  if (micros % 1000000 != 0) timestamp.int64(2, (micros % 1000000) * 1000);
  body.message(17, timestamp);
  if (run.resumed) body.varint(18, 1);
  if (run.runtime != 0) body.int64(20, run.runtime);
  return body;
}

/// MetricRecord: a name (or glob "*"), its step metric, options{step_sync = 1, defined = 3}, and for a
/// definition expanded from a glob, _control{overwrite} = 9 and expanded_from_glob = 10, as wandb-core writes.
inline ProtobufWriter metric_body(const std::string& name, const std::string& step_metric, bool step_sync,
                                  bool expanded_from_glob) {
  ProtobufWriter body;
  if (!name.empty() && name.back() == '*')
    body.bytes(2, name);
  else
    body.bytes(1, name);
  if (!step_metric.empty()) body.bytes(4, step_metric);
  ProtobufWriter options;
  if (step_sync) options.varint(1, 1);
  options.varint(3, 1);
  body.message(6, options);
  if (expanded_from_glob) {
    body.message(9, ProtobufWriter().varint(1, 1));
    body.varint(10, 1);
  }
  return body;
}

/// HistoryRecord{item..., step{num}}.
inline ProtobufWriter history_body(const std::vector<Item>& items, std::int64_t step) {
  ProtobufWriter body = items_message(1, items);
  ProtobufWriter step_message;
  if (step != 0) step_message.int64(1, step);
  body.message(2, step_message);
  return body;
}

/// RunExitRecord{exit_code = 1, runtime = 2}.
inline ProtobufWriter exit_body(std::int32_t exit_code, std::int32_t runtime) {
  ProtobufWriter body;
  if (exit_code != 0) body.int64(1, exit_code);
  if (runtime != 0) body.int64(2, runtime);
  return body;
}

/// files/config.yaml as wandb writes it: each key wraps its value as {desc, value}. The values are written in
/// JSON's flow syntax, which YAML reads.
inline std::string config_yaml(const nlohmann::ordered_json& config) {
  std::string out = "wandb_version: 1\n\n";
  for (const auto& [key, value] : config.items()) {
    append_python_string(out, key);
    out += ":\n  desc: null\n  value: ";
    append_python_json(out, value, 0, kOneLineJson);
    out += '\n';
  }
  return out;
}

}  // namespace torchtrain::detail::wandb
