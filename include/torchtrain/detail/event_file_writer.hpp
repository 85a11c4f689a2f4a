// SPDX-License-Identifier: MIT
// EventFileWriter: TensorBoard's event files (TFRecord-framed tensorflow.Event protos) written without
// TensorFlow: scalars, text summaries and the session-start marker that drops a crashed run's orphaned steps.
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "torchtrain/detail/crc32c.hpp"
#include "torchtrain/detail/protobuf_writer.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

inline std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "localhost";
  return name;
}

/// One event file, created in `dir` (and its parents) as events.out.tfevents.<unix time>.<host>.<pid>.<n>, the
/// name TensorBoard looks for and sorts by. Every add_* call writes its records with one write(2), so a live
/// TensorBoard sees them at once; an error throws Error naming the file.
class EventFileWriter {
 public:
  explicit EventFileWriter(const std::filesystem::path& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    static std::atomic<int> files_opened{0};
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    char stamp[32];
    std::snprintf(stamp, sizeof stamp, "%010lld",
                  static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(now).count()));
    path_ = dir / ("events.out.tfevents." + std::string(stamp) + "." + host_name() + "." +
                   std::to_string(::getpid()) + "." + std::to_string(files_opened++));
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0)
      throw Error(path_.string() + ": cannot create the TensorBoard event file: " + std::strerror(errno) +
                  "; set logging_dir to a writable folder, or leave tensorboard out of report_to");
    ProtobufWriter event;
    event.float64(kWallTime, wall_time()).bytes(kFileVersion, "brain.Event:2");
    write(event);
  }
  ~EventFileWriter() {
    if (fd_ >= 0) ::close(fd_);
  }
  EventFileWriter(const EventFileWriter&) = delete;
  EventFileWriter& operator=(const EventFileWriter&) = delete;

  const std::filesystem::path& path() const { return path_; }

  /// One event at `step` holding a simple_value per (tag, value).
  void add_scalars(std::int64_t step, const std::vector<std::pair<std::string, double>>& values) {
    if (values.empty()) return;
    ProtobufWriter summary;
    for (const auto& [tag, value] : values) {
      ProtobufWriter v;
      v.bytes(kValueTag, tag).float32(kSimpleValue, to_float(value));
      summary.message(kSummaryValue, v);
    }
    write(summary_event(step, summary));
  }

  /// A text-plugin summary: a DT_STRING tensor of shape [1] tagged with plugin_name "text" (Markdown).
  void add_text(std::int64_t step, const std::string& tag, std::string_view text) {
    ProtobufWriter plugin_data, metadata, dim, shape, tensor, value, summary;
    plugin_data.bytes(kPluginName, "text");
    metadata.message(kPluginData, plugin_data);
    dim.int64(kDimSize, 1);
    shape.message(kShapeDim, dim);
    tensor.varint(kTensorDtype, kDtString).message(kTensorShape, shape).bytes(kTensorStringVal, text);
    value.bytes(kValueTag, tag).message(kValueMetadata, metadata).message(kValueTensor, tensor);
    summary.message(kSummaryValue, value);
    write(summary_event(step, summary));
  }

  /// session_log { status: START } at `step`: TensorBoard then drops every event of this run folder, read
  /// before it, whose step is `step` or later.
  void add_session_start(std::int64_t step) {
    ProtobufWriter session_log, event;
    session_log.varint(kSessionStatus, kSessionStart);
    event.float64(kWallTime, wall_time()).int64(kStep, step).message(kSessionLog, session_log);
    write(event);
  }

 private:
  // Field numbers of tensorflow/core/util/event.proto, framework/summary.proto, tensor.proto, tensor_shape.proto.
  enum : int {
    kWallTime = 1, kStep = 2, kFileVersion = 3, kSummary = 5, kSessionLog = 7,  // Event
    kSessionStatus = 1,                                                          // SessionLog
    kSummaryValue = 1,                                                           // Summary
    kValueTag = 1, kSimpleValue = 2, kValueTensor = 8, kValueMetadata = 9,       // Summary.Value
    kPluginData = 1, kPluginName = 1,                                            // SummaryMetadata(.PluginData)
    kTensorDtype = 1, kTensorShape = 2, kTensorStringVal = 8,                    // TensorProto
    kShapeDim = 2, kDimSize = 1,                                                 // TensorShapeProto(.Dim)
  };
  static constexpr std::uint64_t kDtString = 7;     // tensorflow.DataType.DT_STRING
  static constexpr std::uint64_t kSessionStart = 1;  // SessionLog.START

  // simple_value is a float; a double beyond its range becomes an infinity (a plain cast would be undefined).
  static float to_float(double value) {
    if (value > std::numeric_limits<float>::max()) return std::numeric_limits<float>::infinity();
    if (value < -std::numeric_limits<float>::max()) return -std::numeric_limits<float>::infinity();
    return static_cast<float>(value);
  }

  static double wall_time() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  }

  static ProtobufWriter summary_event(std::int64_t step, const ProtobufWriter& summary) {
    ProtobufWriter event;
    event.float64(kWallTime, wall_time()).int64(kStep, step).message(kSummary, summary);
    return event;
  }

  // TFRecord framing: u64 length, masked CRC32C of those 8 bytes, the data, masked CRC32C of the data.
  void write(const ProtobufWriter& event) {
    const std::string& data = event.str();
    std::string out(12, '\0');
    const std::uint64_t length = data.size();
    for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((length >> (8 * i)) & 0xFFu);
    put_le32(&out[8], masked_crc32c(crc32c(out.data(), 8)));
    out += data;
    out.resize(out.size() + 4);
    put_le32(&out[out.size() - 4], masked_crc32c(crc32c(data.data(), data.size())));
    const char* p = out.data();
    std::size_t left = out.size();
    while (left > 0) {
      const ::ssize_t n = ::write(fd_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        throw Error(path_.string() + ": cannot write the TensorBoard event file: " +
                    std::strerror(n < 0 ? errno : EIO) + " (free disk space, or leave tensorboard out of report_to)");
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }

  static void put_le32(char* out, std::uint32_t value) {
    for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xFFu);
  }

  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace torchtrain::detail
