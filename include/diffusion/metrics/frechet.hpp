#pragma once
// Frechet distance between two Gaussian fits N(mu_a, S_a), N(mu_b, S_b) of feature distributions (FID when the
// features are Inception's; Heusel et al. 2017):
//     d^2 = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))
//
// The matrix square root. pytorch-fid and clean-fid compute scipy.linalg.sqrtm(S_a S_b) (a Schur method on the
// non-symmetric product, in complex arithmetic), drop its imaginary part, and when the result is not finite retry
// with 1e-6 added to both diagonals. Here only the trace is needed, and S_a S_b is similar to the symmetric
// positive semi-definite M = R S_b R with R = S_a^(1/2):  S_a S_b = R (R S_b R) R^-1 (for singular S_a by
// continuity), so
//     tr((S_a S_b)^(1/2)) = sum_i sqrt(lambda_i(M)),
// computed with two symmetric eigendecompositions in double (kernels/symmetric_eigen.hpp): S_a = V diag(l) V^T,
// R = V diag(sqrt(l)) V^T, then the eigenvalues mu of M (symmetrised). No offset is added and nothing is complex.
// Rank: an eigenvalue below D * 2^-52 * (largest eigenvalue) is at the level of the decomposition's round-off
// (backward error ~D eps |A|) and is set to 0, as numpy.linalg.matrix_rank decides rank. Without this, the
// round-off eigenvalues (~1e-16 |A|) of a singular covariance (fewer samples than dimensions) each add their
// square root (~1e-8 sqrt|A|) to the trace; measured on the "singular" fixture (D = 32, n = 24 / 20): 4.6e-9
// relative error without the threshold, against 1.1e-8 for pytorch-fid's scipy.sqrtm. Dropping a true eigenvalue
// below the threshold changes the trace by at most its square root: the same size as the noise it removes.
// Accuracy against scipy and against a 50-digit mpmath evaluation: tests/golden/make_metric_fixtures.py and
// tests/metrics/test_metrics.cpp.
//
// Cost: two D x D eigendecompositions and two D x D GEMMs (D = 2048: seconds).

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/kernels/gemm.hpp"
#include "diffusion/kernels/symmetric_eigen.hpp"
#include "diffusion/metrics/feature_statistics.hpp"

namespace diffusion::metrics {

struct FrechetResult {
  double distance = 0.0;     // d^2 = mean_term + trace_a + trace_b - 2 trace_sqrt
  double mean_term = 0.0;    // |mu_a - mu_b|^2
  double trace_a = 0.0;      // tr(S_a)
  double trace_b = 0.0;      // tr(S_b)
  double trace_sqrt = 0.0;   // tr((S_a S_b)^(1/2))
};

namespace detail {

// c (n, n) = a (n, n) b (n, n), row-major, in fixed row slabs (one GEMM each; independent of the thread count).
inline void square_matmul(Index n, const double* a, const double* b, double* c) {
  const Index slab = 64, slabs = (n + slab - 1) / slab;
  parallel_for(0, slabs, double(slab * n * n), [&](Index s) {
    const Index r0 = s * slab, rows = std::min(slab, n - r0);
    kernels::gemm(kernels::Op::NoTrans, kernels::Op::NoTrans, rows, n, n, 1.0, a + r0 * n, n, b, n, 0.0, c + r0 * n, n);
  });
}

// Eigenvalues of a symmetric positive semi-definite matrix as computed: those below D * 2^-52 * max are round-off
// (negative ones included) and become 0.
inline void drop_roundoff_eigenvalues(std::vector<double>& values) {
  double largest = 0.0;
  for (double v : values) largest = std::max(largest, v);
  const double tol = static_cast<double>(values.size()) * std::numeric_limits<double>::epsilon() * largest;
  for (double& v : values)
    if (v < tol) v = 0.0;
}

inline void check_finite(const double* v, Index n, const char* what) {
  for (Index i = 0; i < n; ++i)
    DIFFUSION_CHECK(std::isfinite(v[i]), "frechet_distance: " << what << " has a non-finite element at index " << i
                                                              << " (" << v[i] << ")");
}

}  // namespace detail

// tr((S_a S_b)^(1/2)) for symmetric positive semi-definite S_a, S_b (D, D), by the method above.
inline double trace_sqrt_product(const Tensor<double>& cov_a, const Tensor<double>& cov_b) {
  const Index D = cov_a.rank() == 2 ? cov_a.dim(0) : 0;
  DIFFUSION_CHECK(D > 0 && cov_a.shape() == (Shape{D, D}) && cov_b.shape() == cov_a.shape(),
                  "trace_sqrt_product: covariances must be square and of equal shape, got " << cov_a.shape()
                                                                                            << " and " << cov_b.shape());
  std::vector<double> values(static_cast<std::size_t>(D)), vectors(static_cast<std::size_t>(D * D));
  kernels::symmetric_eigen(D, cov_a.data(), values.data(), vectors.data());
  detail::drop_roundoff_eigenvalues(values);
  // W = V diag(sqrt(max(l, 0))), R = W V^T.
  std::vector<double> w(vectors), vt(static_cast<std::size_t>(D * D)), r(static_cast<std::size_t>(D * D));
  for (Index i = 0; i < D; ++i)
    for (Index j = 0; j < D; ++j) {
      w[static_cast<std::size_t>(i * D + j)] *= std::sqrt(values[static_cast<std::size_t>(j)]);
      vt[static_cast<std::size_t>(j * D + i)] = vectors[static_cast<std::size_t>(i * D + j)];
    }
  detail::square_matmul(D, w.data(), vt.data(), r.data());
  // M = R S_b R, symmetrised (round-off leaves it asymmetric by ~1e-16 |M|).
  std::vector<double> t(static_cast<std::size_t>(D * D)), m(static_cast<std::size_t>(D * D));
  detail::square_matmul(D, r.data(), cov_b.data(), t.data());
  detail::square_matmul(D, t.data(), r.data(), m.data());
  for (Index i = 0; i < D; ++i)
    for (Index j = 0; j < i; ++j) {
      const double s = 0.5 * (m[static_cast<std::size_t>(i * D + j)] + m[static_cast<std::size_t>(j * D + i)]);
      m[static_cast<std::size_t>(i * D + j)] = m[static_cast<std::size_t>(j * D + i)] = s;
    }
  kernels::symmetric_eigen(D, m.data(), values.data(), nullptr);
  detail::drop_roundoff_eigenvalues(values);
  double trace = 0.0;
  for (double mu : values) trace += std::sqrt(mu);
  return trace;
}

inline FrechetResult frechet_distance(const Tensor<double>& mean_a, const Tensor<double>& cov_a,
                                      const Tensor<double>& mean_b, const Tensor<double>& cov_b) {
  const Index D = mean_a.numel();
  DIFFUSION_CHECK(D > 0 && mean_a.rank() == 1 && mean_b.shape() == mean_a.shape(),
                  "frechet_distance: means must be vectors of equal length, got " << mean_a.shape() << " and "
                                                                                  << mean_b.shape());
  DIFFUSION_CHECK(cov_a.shape() == (Shape{D, D}) && cov_b.shape() == (Shape{D, D}),
                  "frechet_distance: covariances must be (" << D << ", " << D << "), got " << cov_a.shape()
                                                            << " and " << cov_b.shape());
  detail::check_finite(mean_a.data(), D, "mean_a");
  detail::check_finite(mean_b.data(), D, "mean_b");
  detail::check_finite(cov_a.data(), D * D, "cov_a");
  detail::check_finite(cov_b.data(), D * D, "cov_b");
  FrechetResult r;
  for (Index i = 0; i < D; ++i) {
    const double d = mean_a[i] - mean_b[i];
    r.mean_term += d * d;
    r.trace_a += cov_a[i * D + i];
    r.trace_b += cov_b[i * D + i];
  }
  r.trace_sqrt = trace_sqrt_product(cov_a, cov_b);
  r.distance = r.mean_term + r.trace_a + r.trace_b - 2.0 * r.trace_sqrt;
  return r;
}

inline FrechetResult frechet_distance(const GaussianStats& a, const GaussianStats& b) {
  return frechet_distance(a.mean, a.covariance, b.mean, b.covariance);
}

}  // namespace diffusion::metrics
