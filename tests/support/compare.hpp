#pragma once
// Tensor comparisons for golden tests: the worst element, where it is, and the tolerance actually applied.
// Non-finite values never pass: a NaN or an infinity where the reference is finite is an infinite error (and is
// reported as the worst element), a non-finite reference value must be matched exactly (NaN by NaN, +inf by +inf),
// and a size mismatch is an infinite error. Every "worst so far" below keeps NaN and infinity (std::max drops a NaN
// in its second argument, which is how a NaN used to slip through).

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "diffusion/core/tensor.hpp"

namespace diffusion::testing {

// The error of one element against its reference, as described above.
inline double element_error(double got, double ref) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (std::isfinite(ref)) return std::isfinite(got) ? std::abs(got - ref) : kInf;
  if (std::isnan(ref)) return std::isnan(got) ? 0.0 : kInf;
  return got == ref ? 0.0 : kInf;
}

// max(a, b) that keeps a NaN of either argument (a NaN is larger than everything).
inline double max_keep_nan(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::quiet_NaN();
  return a < b ? b : a;
}

struct Comparison {
  double max_abs_error = 0.0;      // the largest element_error (inf for a non-finite value or a size mismatch)
  double max_abs_reference = 0.0;  // the largest |reference| over the finite reference values
  Index worst = -1;
  double got_at_worst = 0.0, ref_at_worst = 0.0;
  bool size_mismatch = false;
  std::string describe(const std::string& what) const {
    std::ostringstream s;
    s.precision(9);
    s << what << ": ";
    if (size_mismatch) s << "SIZE MISMATCH; ";
    s << "max |error| " << max_abs_error << " at element " << worst << " (got " << got_at_worst << ", reference "
      << ref_at_worst << "), max |reference| " << max_abs_reference;
    return s.str();
  }
  // max |error| <= rel * max |reference| + abs; false for any non-finite error.
  bool within(double rel, double abs = 0.0) const {
    return std::isfinite(max_abs_error) && max_abs_error <= rel * max_abs_reference + abs;
  }
};

// got[0..n) against ref[0..n).
template <class A, class B>
Comparison compare(const A* got, const B* ref, Index n) {
  Comparison c;
  for (Index i = 0; i < n; ++i) {
    const double g = static_cast<double>(got[i]), r = static_cast<double>(ref[i]);
    if (std::isfinite(r)) c.max_abs_reference = std::max(c.max_abs_reference, std::abs(r));
    const double e = element_error(g, r);
    if (c.worst < 0 || e > c.max_abs_error) {
      c.max_abs_error = e;
      c.worst = i;
      c.got_at_worst = g;
      c.ref_at_worst = r;
    }
  }
  return c;
}

template <class A, class B>
Comparison compare(const Tensor<A>& got, const Tensor<B>& ref) {
  Comparison c = compare(got.data(), ref.data(), std::min(got.numel(), ref.numel()));
  if (got.numel() != ref.numel()) {
    c.size_mismatch = true;
    c.max_abs_error = std::numeric_limits<double>::infinity();
  }
  return c;
}

// ||got - ref|| and ||ref|| (Euclidean norms over the finite reference values, in double). The difference is
// infinite as soon as one element_error is (a NaN or an infinity against a finite reference).
struct NormError {
  double diff = 0.0, ref = 0.0;
  double relative() const { return ref > 0 ? diff / ref : diff; }
};

template <class A, class B>
NormError norm_error(const A* got, const B* ref, Index n) {
  double diff = 0.0, norm = 0.0;
  for (Index i = 0; i < n; ++i) {
    const double g = static_cast<double>(got[i]), r = static_cast<double>(ref[i]);
    const double e = element_error(g, r);
    if (!std::isfinite(e)) return {std::numeric_limits<double>::infinity(), std::sqrt(norm)};
    if (!std::isfinite(r)) continue;  // matched exactly
    diff += e * e;
    norm += r * r;
  }
  return {std::sqrt(diff), std::sqrt(norm)};
}

// ||got - ref|| / ||ref||; ||got - ref|| when ref is all zero; infinite for a non-finite value (see norm_error).
template <class A, class B>
double relative_norm_error(const A* got, const B* ref, Index n) {
  return norm_error(got, ref, n).relative();
}

}  // namespace diffusion::testing
