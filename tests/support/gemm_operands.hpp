#pragma once
// Operands for the GEMM kernel tests: normal matrices with NaN in the padding of their leading dimension (a kernel
// that read past a row would show it), a float's bits for exact comparisons, and an element-by-element comparison
// of two GEMM results that names the first element that differs.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "diffusion/core/random.hpp"
#include "diffusion/core/shape.hpp"

namespace diffusion::testing {

inline std::uint32_t to_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// rows x cols of standard normal values (seeded) stored rows x ld, NaN in columns cols to ld - 1.
inline std::vector<float> random_matrix(Index rows, Index cols, Index ld, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> values(static_cast<std::size_t>(rows * cols));
  rng.normal(values.data(), rows * cols);
  std::vector<float> m(static_cast<std::size_t>(rows * ld), std::numeric_limits<float>::quiet_NaN());
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c)
      m[static_cast<std::size_t>(r * ld + c)] = values[static_cast<std::size_t>(r * cols + c)];
  return m;
}

// The elements of an M x N result (leading dimension ldc) that fail `same(i, j, got, want)`, or whose padding
// columns N to ldc - 1 lost the NaN they held in C0 (a kernel writing past a row); `first` names the first of them.
struct Mismatches {
  Index count = 0;
  std::string first;
};

template <class Same>
Mismatches compare_results(const std::vector<float>& got, const std::vector<float>& want,
                           const std::vector<float>& C0, Index M, Index N, Index ldc, Same same) {
  Mismatches m;
  for (Index i = 0; i < M; ++i) {
    for (Index j = 0; j < ldc; ++j) {
      const auto at = static_cast<std::size_t>(i * ldc + j);
      const bool ok = j >= N ? std::isnan(got[at]) == std::isnan(C0[at])
                             : std::isfinite(got[at]) && same(i, j, got[at], want[at]);
      if (!ok && m.count++ == 0)
        m.first = "(" + std::to_string(i) + ", " + std::to_string(j) + "): " + std::to_string(got[at]) +
                  " vs the reference's " + std::to_string(want[at]);
    }
  }
  return m;
}

}  // namespace diffusion::testing
