// SPDX-License-Identifier: MIT
// ProtobufWriter: the few protocol-buffer encodings an event file needs (varints, doubles, floats, nested
// messages), written by hand so that TensorBoard support costs no dependency.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace torchtrain::detail {

/// Appends fields in the protobuf wire format to a byte string. Fields are written in the order they are
/// added; every reader accepts any order.
class ProtobufWriter {
 public:
  ProtobufWriter& varint(int field, std::uint64_t value) {
    key(field, kVarint);
    raw_varint(value);
    return *this;
  }
  /// int64/int32/enum fields: negative values take ten bytes, as protobuf specifies.
  ProtobufWriter& int64(int field, std::int64_t value) { return varint(field, static_cast<std::uint64_t>(value)); }
  ProtobufWriter& float64(int field, double value) {
    key(field, kFixed64);
    std::uint64_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    for (int i = 0; i < 8; ++i) bytes_ += static_cast<char>((bits >> (8 * i)) & 0xFFu);
    return *this;
  }
  ProtobufWriter& float32(int field, float value) {
    key(field, kFixed32);
    std::uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    for (int i = 0; i < 4; ++i) bytes_ += static_cast<char>((bits >> (8 * i)) & 0xFFu);
    return *this;
  }
  /// A string, bytes or embedded message field.
  ProtobufWriter& bytes(int field, std::string_view value) {
    key(field, kLengthDelimited);
    raw_varint(value.size());
    bytes_.append(value.data(), value.size());
    return *this;
  }
  ProtobufWriter& message(int field, const ProtobufWriter& nested) { return bytes(field, nested.str()); }

  const std::string& str() const { return bytes_; }

 private:
  enum WireType : std::uint64_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

  void key(int field, WireType type) { raw_varint((static_cast<std::uint64_t>(field) << 3) | type); }
  void raw_varint(std::uint64_t value) {
    while (value >= 0x80) {
      bytes_ += static_cast<char>((value & 0x7Fu) | 0x80u);
      value >>= 7;
    }
    bytes_ += static_cast<char>(value);
  }

  std::string bytes_;
};

}  // namespace torchtrain::detail
