#pragma once
// Improved precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for Assessing
// Generative Models"), as their reference code (precision_recall.py: ManifoldEstimator) and torch-fidelity
// (metric_prc.py) compute it:
//   - the manifold of a feature set A is the union of balls B(a_i, r_i), r_i = distance from a_i to its k-th
//     nearest neighbour in A other than itself (k = 3 by default; the reference takes the (k+1)-th smallest
//     distance including the zero to itself, which is the same number);
//   - precision = fraction of generated features inside the manifold of the real ones;
//     recall    = fraction of real features inside the manifold of the generated ones;
//   - "inside" is |q - a_i|^2 <= r_i^2 for some i (<=, as both references).
// Squared distances are |a|^2 + |b|^2 - 2 a.b clamped at 0 (the reference's batch_pairwise_distances), in double,
// with the dot products through kernels::gemm in fixed blocks of rows: results are independent of the thread count.
// Cost: four distance matrices (real-real, fake-real, fake-fake, real-fake), n_1 n_2 D multiply-adds each, computed
// in blocks of 32 rows (memory: 32 x n doubles per task, never a whole matrix).

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/kernels/gemm.hpp"

namespace diffusion::metrics {

struct PrecisionRecall {
  double precision = 0.0;
  double recall = 0.0;
  Index k = 0;
  Index real_count = 0;
  Index fake_count = 0;
};

namespace detail {

inline constexpr Index kDistanceBlockRows = 32;

inline std::vector<double> squared_norms(const Tensor<double>& x) {
  const Index n = x.dim(0), D = x.dim(1);
  std::vector<double> out(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    double s = 0.0;
    for (Index d = 0; d < D; ++d) s += x[i * D + d] * x[i * D + d];
    out[static_cast<std::size_t>(i)] = s;
  }
  return out;
}

// For each block of rows of a: dist (rows, n_b) = squared distances to every row of b, then visit(row, dist_row).
template <class Visit>
void for_each_distance_row(const Tensor<double>& a, const Tensor<double>& b, Visit&& visit) {
  const Index na = a.dim(0), nb = b.dim(0), D = a.dim(1);
  const std::vector<double> norm_a = squared_norms(a), norm_b = squared_norms(b);
  const Index blocks = (na + kDistanceBlockRows - 1) / kDistanceBlockRows;
  parallel_for(0, blocks, double(kDistanceBlockRows * nb * D), [&](Index blk) {
    const Index r0 = blk * kDistanceBlockRows, rows = std::min(kDistanceBlockRows, na - r0);
    // One allocation per block of rows x n_b x D multiply-adds (amortised; metrics run once per evaluation).
    std::vector<double> dist(static_cast<std::size_t>(rows * nb));
    kernels::gemm(kernels::Op::NoTrans, kernels::Op::Trans, rows, nb, D, -2.0, a.data() + r0 * D, D, b.data(), D, 0.0,
                  dist.data(), nb);
    for (Index i = 0; i < rows; ++i) {
      double* row = dist.data() + i * nb;
      const double ni = norm_a[static_cast<std::size_t>(r0 + i)];
      for (Index j = 0; j < nb; ++j) row[j] = std::max(ni + row[j] + norm_b[static_cast<std::size_t>(j)], 0.0);
      visit(r0 + i, static_cast<const double*>(row));
    }
  });
}

inline void check_features(const Tensor<double>& x, const char* what) {
  DIFFUSION_CHECK(x.rank() == 2 && x.dim(1) > 0, "precision_recall: " << what << " features must be (n, D), got "
                                                                      << x.shape());
  for (Index i = 0; i < x.numel(); ++i)
    DIFFUSION_CHECK(std::isfinite(x[i]), "precision_recall: " << what << " features have a non-finite element at "
                                                              << i << " (" << x[i] << ")");
}

}  // namespace detail

// Squared k-NN radii (n): r2_i = squared distance from row i of x (n, D) to its k-th nearest other row. n > k.
inline std::vector<double> knn_squared_radii(const Tensor<double>& x, Index k) {
  detail::check_features(x, "reference");
  const Index n = x.dim(0);
  DIFFUSION_CHECK(k >= 1 && k < 64 && n > k, "knn_squared_radii: needs 1 <= k < 64 and more than k rows, got k = " << k << " and "
                                                                                                   << n << " rows");
  std::vector<double> radii(static_cast<std::size_t>(n));
  detail::for_each_distance_row(x, x, [&](Index i, const double* row) {
    // The k smallest distances to other rows, kept sorted (k is small).
    double best[64];
    Index kept = 0;
    for (Index j = 0; j < n; ++j) {
      if (j == i) continue;
      const double d = row[j];
      if (kept == k && d >= best[k - 1]) continue;
      Index pos = kept < k ? kept++ : k - 1;
      while (pos > 0 && best[pos - 1] > d) {
        best[pos] = best[pos - 1];
        --pos;
      }
      best[pos] = d;
    }
    radii[static_cast<std::size_t>(i)] = best[k - 1];
  });
  return radii;
}

// Fraction of the rows of q (n_q, D) inside the manifold of ref (n_ref, D) with squared radii r2 (n_ref).
inline double manifold_coverage(const Tensor<double>& ref, const std::vector<double>& r2, const Tensor<double>& q) {
  detail::check_features(q, "query");
  DIFFUSION_CHECK(ref.rank() == 2 && q.dim(1) == ref.dim(1) && static_cast<Index>(r2.size()) == ref.dim(0),
                  "manifold_coverage: query " << q.shape() << ", reference " << ref.shape() << " and "
                                              << r2.size() << " radii do not match");
  std::vector<char> inside(static_cast<std::size_t>(q.dim(0)), 0);
  const Index nr = ref.dim(0);
  detail::for_each_distance_row(q, ref, [&](Index i, const double* row) {
    for (Index j = 0; j < nr; ++j)
      if (row[j] <= r2[static_cast<std::size_t>(j)]) {
        inside[static_cast<std::size_t>(i)] = 1;
        break;
      }
  });
  Index count = 0;
  for (char c : inside) count += c;
  return static_cast<double>(count) / static_cast<double>(q.dim(0));
}

// Precision and recall of generated features `fake` (n_f, D) against real features `real` (n_r, D), given the
// real set's squared k-NN radii real_r2 = knn_squared_radii(real, k) (which reference statistics cache: they cost
// one n_r x n_r distance matrix).
inline PrecisionRecall precision_recall(const Tensor<double>& real, const std::vector<double>& real_r2,
                                        const Tensor<double>& fake, Index k) {
  detail::check_features(real, "real");
  detail::check_features(fake, "generated");
  DIFFUSION_CHECK(k >= 1 && k < 64, "precision_recall: k must be in [1, 64), got " << k);
  DIFFUSION_CHECK(real.dim(1) == fake.dim(1), "precision_recall: real features " << real.shape()
                                                                                 << " and generated features "
                                                                                 << fake.shape()
                                                                                 << " differ in dimension");
  PrecisionRecall r;
  r.k = k;
  r.real_count = real.dim(0);
  r.fake_count = fake.dim(0);
  r.precision = manifold_coverage(real, real_r2, fake);
  r.recall = manifold_coverage(fake, knn_squared_radii(fake, k), real);
  return r;
}

// The same, computing the real set's radii.
inline PrecisionRecall precision_recall(const Tensor<double>& real, const Tensor<double>& fake, Index k = 3) {
  detail::check_features(real, "real");
  DIFFUSION_CHECK(k >= 1 && k < 64, "precision_recall: k must be in [1, 64), got " << k);
  return precision_recall(real, knn_squared_radii(real, k), fake, k);
}

}  // namespace diffusion::metrics
