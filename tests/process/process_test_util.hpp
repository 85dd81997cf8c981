#pragma once
// Helpers shared by the process, samplers and optimizer tests: fixture access and error measures that report
// where the worst element is.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "diffusion/core/tensor.hpp"
#include "diffusion/io/safetensors.hpp"
#include "support/compare.hpp"

namespace process_test {

inline std::string golden(const std::string& file) { return std::string(DIFFUSION_GOLDEN_DIR) + "/" + file; }

// Timesteps stored as F64 (exact integers) -> int64.
inline std::vector<std::int64_t> to_timesteps(const diffusion::Tensor<double>& t) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(t.numel()));
  for (diffusion::Index i = 0; i < t.numel(); ++i) out[static_cast<std::size_t>(i)] = static_cast<std::int64_t>(t[i]);
  return out;
}

inline std::vector<double> to_vector(const diffusion::Tensor<double>& t) { return {t.begin(), t.end()}; }

// The worst disagreement between a computed array and a reference: the largest |got - want| and where it is,
// and that error divided by max |want| (norm-wise relative error: elements near zero do not blow it up).
struct Mismatch {
  double max_abs = 0.0;
  double max_ref = 0.0;
  std::size_t where = 0;
  double got = 0.0, want = 0.0;
  double rel() const { return max_ref > 0.0 ? max_abs / max_ref : max_abs; }
  std::string str() const {
    std::ostringstream s;
    s.precision(17);
    s << "max abs error " << max_abs << " at element " << where << " (got " << got << ", want " << want
      << "), max |ref| " << max_ref << ", relative " << rel();
    return s.str();
  }
};

// Non-finite values never pass (diffusion::testing::element_error): a NaN or infinity where `want` is finite is an
// infinite error, and so is a size mismatch.
template <class A, class B>
Mismatch compare(const A* got, const B* want, std::size_t n) {
  Mismatch m;
  for (std::size_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    const double e = diffusion::testing::element_error(g, w);
    if (i == 0 || e > m.max_abs) {
      m.max_abs = e;
      m.where = i;
      m.got = g;
      m.want = w;
    }
    if (std::isfinite(w)) m.max_ref = std::max(m.max_ref, std::fabs(w));
  }
  return m;
}

inline Mismatch size_mismatch(Mismatch m, std::size_t got, std::size_t want) {
  if (got != want) {
    m.max_abs = INFINITY;
    m.where = std::min(got, want);
  }
  return m;
}

template <class A, class B>
Mismatch compare(const diffusion::Tensor<A>& got, const diffusion::Tensor<B>& want) {
  const auto n = static_cast<std::size_t>(std::min(got.numel(), want.numel()));
  return size_mismatch(compare(got.data(), want.data(), n), static_cast<std::size_t>(got.numel()),
                       static_cast<std::size_t>(want.numel()));
}

template <class A>
Mismatch compare(const std::vector<A>& got, const diffusion::Tensor<double>& want) {
  const std::size_t n = std::min(got.size(), static_cast<std::size_t>(want.numel()));
  return size_mismatch(compare(got.data(), want.data(), n), got.size(), static_cast<std::size_t>(want.numel()));
}

// A copy of a double tensor in type T.
template <class T>
diffusion::Tensor<T> cast(const diffusion::Tensor<double>& t) {
  diffusion::Tensor<T> out;
  out.resize(t.shape());
  for (diffusion::Index i = 0; i < t.numel(); ++i) out[i] = static_cast<T>(t[i]);
  return out;
}

// True when both tensors have the same shape and the same bits.
template <class T>
bool bitwise_equal(const diffusion::Tensor<T>& a, const diffusion::Tensor<T>& b) {
  if (a.shape() != b.shape()) return false;
  return a.numel() == 0 || std::memcmp(a.data(), b.data(), sizeof(T) * static_cast<std::size_t>(a.numel())) == 0;
}

}  // namespace process_test
