#pragma once
// IEEE binary16 (F16) and bfloat16 (BF16) bit conversions, in portable integer code.
//
// f16_bits_to_float / bf16_bits_to_float: exact (every F16 and BF16 value is a float), including signed zeros,
//   subnormals (F16: m * 2^-24), infinities, and NaNs (sign and payload kept, shifted into the float mantissa).
// float_to_f16_bits / float_to_bf16_bits: round to nearest, ties to even, as IEEE 754 and PyTorch's .half() /
//   .bfloat16() do; overflow goes to infinity, underflow to (signed) zero or a subnormal; NaN stays a quiet NaN
//   with its sign and the top payload bits.

#include <cstdint>
#include <cstring>

namespace diffusion::io {

namespace detail {
inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
}  // namespace detail

inline float f16_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exponent = (h >> 10) & 0x1fu;
  std::uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return detail::bits_float(sign | 0x7f800000u | (mantissa << 13));  // inf, NaN
  if (exponent != 0) return detail::bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));  // normal
  if (mantissa == 0) return detail::bits_float(sign);                                                 // +-0
  // Subnormal m * 2^-24: shift the leading one up to the implicit bit, lowering the exponent to match.
  exponent = 113;
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    --exponent;
  }
  return detail::bits_float(sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13));
}

inline std::uint16_t float_to_f16_bits(float f) {
  const std::uint32_t u = detail::float_bits(f);
  const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t x = u & 0x7fffffffu;
  if (x > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((x >> 13) & 0x3ffu));  // quiet NaN
  if (x >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520 (incl. inf): rounds to inf
  if (x >= 0x38800000u) {  // normal half (>= 2^-14): rebias the exponent, round the 13 dropped bits
    std::uint32_t r = (x - 0x38000000u) >> 13;
    const std::uint32_t rest = x & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (r & 1u))) ++r;
    return static_cast<std::uint16_t>(sign | r);
  }
  if (x <= 0x33000000u) return sign;  // <= 2^-25 (half the smallest subnormal, a tie to even zero): +-0
  // Subnormal half: value = m * 2^(e-150) with the implicit bit; in units of 2^-24 that is m >> (126 - e).
  const std::uint32_t e = x >> 23;  // 102..112
  const std::uint32_t m = (x & 0x7fffffu) | 0x800000u;
  const std::uint32_t shift = 126 - e;  // 14..24
  std::uint32_t r = m >> shift;
  const std::uint32_t rest = m & ((1u << shift) - 1);
  const std::uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (r & 1u))) ++r;  // may carry into the smallest normal: still correct
  return static_cast<std::uint16_t>(sign | r);
}

inline float bf16_bits_to_float(std::uint16_t b) { return detail::bits_float(static_cast<std::uint32_t>(b) << 16); }

inline std::uint16_t float_to_bf16_bits(float f) {
  std::uint32_t u = detail::float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even; the carry may reach infinity, as it should
  return static_cast<std::uint16_t>(u >> 16);
}

}  // namespace diffusion::io
