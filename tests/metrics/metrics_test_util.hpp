#pragma once
// Helpers of the metrics tests: fixture paths and a relative error that treats NaN and Inf as failures.

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "diffusion/core/tensor.hpp"

namespace metrics_test {

inline std::string golden(const std::string& file) { return std::string(DIFFUSION_GOLDEN_DIR) + "/" + file; }

// |got - want| / |want|; infinite when either is not finite (so every tolerance check fails on NaN/Inf).
inline double rel_error(double got, double want) {
  if (!std::isfinite(got) || !std::isfinite(want)) return std::numeric_limits<double>::infinity();
  return want == 0.0 ? std::fabs(got) : std::fabs(got - want) / std::fabs(want);
}

// Norm-wise: max |got - want| / max |want| over n elements, and where the worst element is.
struct Mismatch {
  double error = 0.0;  // max |got - want| / max |want|; infinite if anything is not finite
  diffusion::Index where = -1;
  double got = 0.0, want = 0.0;
  std::string str() const {
    std::ostringstream s;
    s.precision(17);
    s << "relative error " << error << ", worst at element " << where << " (got " << got << ", want " << want << ")";
    return s.str();
  }
};

template <class A, class B>
Mismatch compare(const A* got, const B* want, diffusion::Index n) {
  Mismatch m;
  double max_ref = 0.0, max_err = -1.0;
  bool finite = true;
  for (diffusion::Index i = 0; i < n; ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    double e = std::fabs(g - w);
    if (!std::isfinite(g) || !std::isfinite(w)) {
      finite = false;
      e = std::numeric_limits<double>::infinity();
    }
    if (e > max_err) {
      max_err = e;
      m.where = i;
      m.got = g;
      m.want = w;
    }
    max_ref = std::max(max_ref, std::fabs(w));
  }
  m.error = !finite ? std::numeric_limits<double>::infinity() : (max_ref > 0 ? max_err / max_ref : max_err);
  return m;
}

template <class A, class B>
Mismatch compare(const diffusion::Tensor<A>& got, const diffusion::Tensor<B>& want) {
  if (got.shape() != want.shape()) {
    Mismatch m;
    m.error = std::numeric_limits<double>::infinity();
    return m;
  }
  return compare(got.data(), want.data(), want.numel());
}

}  // namespace metrics_test
