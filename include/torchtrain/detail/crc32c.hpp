// SPDX-License-Identifier: MIT
// CRC32C (Castagnoli), the checksum of checkpoint manifests and of TFRecord files: the SSE4.2 crc32
// instruction in three interleaved streams when the CPU has it (up to 8 bytes per cycle), otherwise
// slicing-by-8 tables (1-2 GB/s).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/errors.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TORCHTRAIN_CRC32C_SSE42 1
#include <nmmintrin.h>
#endif

namespace torchtrain::detail {

namespace crc32c_impl {

// The reflected Castagnoli polynomial 0x1EDC6F41.
inline constexpr std::uint32_t kPolynomial = 0x82F63B78u;

// table[k][b]: the CRC of byte b followed by k zero bytes, so that 8 bytes fold with 8 lookups.
struct SlicingTables {
  std::array<std::array<std::uint32_t, 256>, 8> table{};
  constexpr SlicingTables() {
    for (std::uint32_t b = 0; b < 256; ++b) {
      std::uint32_t crc = b;
      for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (kPolynomial & (0u - (crc & 1u)));
      table[0][b] = crc;
    }
    for (std::size_t k = 1; k < 8; ++k)
      for (std::size_t b = 0; b < 256; ++b) table[k][b] = (table[k - 1][b] >> 8) ^ table[0][table[k - 1][b] & 0xFFu];
  }
};

inline constexpr SlicingTables kTables{};

// `crc` and the result are in the inverted domain (the caller applies the initial and final ~).
inline std::uint32_t software(std::uint32_t crc, const unsigned char* p, std::size_t n) {
  const auto& t = kTables.table;
  for (; n >= 8; p += 8, n -= 8) {
    std::uint32_t lo, hi;
    std::memcpy(&lo, p, 4);  // memcpy: no unaligned or aliasing loads
    std::memcpy(&hi, p + 4, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    lo = __builtin_bswap32(lo);
    hi = __builtin_bswap32(hi);
#endif
    lo ^= crc;
    crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
          t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
  }
  for (; n > 0; ++p, --n) crc = (crc >> 8) ^ t[0][(crc ^ *p) & 0xFFu];
  return crc;
}

// a * b modulo the polynomial, both bit-reflected (x^0 is the top bit), as zlib's multmodp.
constexpr std::uint32_t multiply_modulo(std::uint32_t a, std::uint32_t b) {
  std::uint32_t product = 0;
  for (std::uint32_t bit = 1u << 31; bit != 0; bit >>= 1) {
    if (a & bit) product ^= b;
    b = b & 1 ? (b >> 1) ^ kPolynomial : b >> 1;
  }
  return product;
}

// x^(8 * bytes) modulo the polynomial: multiplying a CRC register by it appends `bytes` zero bytes.
constexpr std::uint32_t zero_bytes_operator(std::size_t bytes) {
  std::uint32_t result = 1u << 31, power = 1u << 23;  // x^0 and x^8
  for (; bytes != 0; bytes >>= 1) {
    if (bytes & 1) result = multiply_modulo(power, result);
    power = multiply_modulo(power, power);
  }
  return result;
}

// The hardware loop runs three independent streams over consecutive blocks of kStreamBlock bytes (the crc32
// instruction's latency is three times its throughput), then shifts the first two past the blocks that follow
// them with this table, one lookup per byte of the register, and adds them up.
inline constexpr std::size_t kStreamBlock = 8192;
struct ShiftTable {
  std::array<std::array<std::uint32_t, 256>, 4> table{};
  constexpr explicit ShiftTable(std::size_t bytes) {
    const std::uint32_t op = zero_bytes_operator(bytes);
    for (std::size_t k = 0; k < 4; ++k)
      for (std::uint32_t b = 0; b < 256; ++b) table[k][b] = multiply_modulo(op, b << (8 * k));
  }
  constexpr std::uint32_t shift(std::uint32_t crc) const {
    return table[0][crc & 0xFF] ^ table[1][(crc >> 8) & 0xFF] ^ table[2][(crc >> 16) & 0xFF] ^ table[3][crc >> 24];
  }
};
inline constexpr ShiftTable kShiftBlock{kStreamBlock};

#ifdef TORCHTRAIN_CRC32C_SSE42
__attribute__((target("sse4.2"))) inline std::uint32_t hardware(std::uint32_t crc, const unsigned char* p,
                                                                std::size_t n) {
  for (; n > 0 && reinterpret_cast<std::uintptr_t>(p) % 8 != 0; ++p, --n) crc = _mm_crc32_u8(crc, *p);
  auto word = [](const unsigned char* at) {
    std::uint64_t w;
    std::memcpy(&w, at, 8);
    return w;
  };
  std::uint64_t wide = crc;
  for (; n >= 3 * kStreamBlock; p += 3 * kStreamBlock, n -= 3 * kStreamBlock) {
    std::uint64_t second = 0, third = 0;
    for (std::size_t i = 0; i < kStreamBlock; i += 8) {
      wide = _mm_crc32_u64(wide, word(p + i));
      second = _mm_crc32_u64(second, word(p + kStreamBlock + i));
      third = _mm_crc32_u64(third, word(p + 2 * kStreamBlock + i));
    }
    wide = kShiftBlock.shift(static_cast<std::uint32_t>(wide)) ^ second;
    wide = kShiftBlock.shift(static_cast<std::uint32_t>(wide)) ^ third;
  }
  for (; n >= 8; p += 8, n -= 8) wide = _mm_crc32_u64(wide, word(p));
  crc = static_cast<std::uint32_t>(wide);
  for (; n > 0; ++p, --n) crc = _mm_crc32_u8(crc, *p);
  return crc;
}

inline bool has_hardware() {
  static const bool supported = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  return supported;
}
#endif

}  // namespace crc32c_impl

/// CRC32C of `size` bytes; pass the previous result as `crc` to continue a checksum over several pieces.
inline std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc = 0) {
  const auto* p = static_cast<const unsigned char*>(data);
#ifdef TORCHTRAIN_CRC32C_SSE42
  if (crc32c_impl::has_hardware()) return ~crc32c_impl::hardware(~crc, p, size);
#endif
  return ~crc32c_impl::software(~crc, p, size);
}

/// TFRecord's masked CRC: a checksum stored next to the data it covers must not look like more data.
inline std::uint32_t masked_crc32c(std::uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

struct FileChecksum {
  std::uint64_t size = 0;
  std::uint32_t crc32c = 0;
};

/// Size and CRC32C of the file at `path`, read once in large blocks; throws FileFormatError naming the path.
inline FileChecksum crc32c_of_file(const std::string& path) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) throw FileFormatError(path + ": cannot open the file: " + errno_text());
  std::setvbuf(file.get(), nullptr, _IONBF, 0);  // reads go straight into our block
  constexpr std::size_t kBlock = std::size_t{1} << 20;
  const std::unique_ptr<unsigned char[]> block(new unsigned char[kBlock]);
  FileChecksum sum;
  std::size_t n = 0;
  while ((n = std::fread(block.get(), 1, kBlock, file.get())) > 0) {
    sum.crc32c = crc32c(block.get(), n, sum.crc32c);
    sum.size += n;
  }
  if (std::ferror(file.get())) throw FileFormatError(path + ": cannot read the file: " + errno_text());
  return sum;
}

}  // namespace torchtrain::detail
