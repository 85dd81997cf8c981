#pragma once
// Tensor comparisons for golden tests: the worst element, where it is, and the tolerance actually applied.

#include <cmath>
#include <sstream>
#include <string>

#include "diffusion/core/tensor.hpp"

namespace diffusion::testing {

struct Comparison {
  double max_abs_error = 0.0;
  double max_abs_reference = 0.0;
  Index worst = -1;
  std::string describe(const std::string& what) const {
    std::ostringstream s;
    s << what << ": max |error| " << max_abs_error << " at element " << worst << ", max |reference| "
      << max_abs_reference;
    return s.str();
  }
};

template <class A, class B>
Comparison compare(const Tensor<A>& got, const Tensor<B>& ref) {
  Comparison c;
  for (Index i = 0; i < ref.numel(); ++i) {
    c.max_abs_reference = std::max(c.max_abs_reference, std::abs(static_cast<double>(ref[i])));
    const double e = std::abs(static_cast<double>(got[i]) - static_cast<double>(ref[i]));
    if (e > c.max_abs_error || c.worst < 0) {
      c.max_abs_error = std::max(e, c.max_abs_error);
      c.worst = i;
    }
  }
  return c;
}

// ||got - ref|| / ||ref|| (Euclidean norms, in double).
template <class A, class B>
double relative_norm_error(const A* got, const B* ref, Index n) {
  double diff = 0.0, norm = 0.0;
  for (Index i = 0; i < n; ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(ref[i]);
    diff += d * d;
    norm += static_cast<double>(ref[i]) * static_cast<double>(ref[i]);
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

}  // namespace diffusion::testing
