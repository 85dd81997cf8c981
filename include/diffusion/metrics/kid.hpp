#pragma once
// Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased estimator of the squared
// maximum mean discrepancy with the cubic polynomial kernel
//     k(x, y) = (x . y / D + 1)^3                           (D = feature dimension)
//     MMD^2_u(X, Y) = sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2
// over `subsets` pairs of random subsets of m rows each (drawn without replacement, independently for X and Y), as
// torch-fidelity (metric_kid.py: mmd2(..., "unbiased"), defaults 100 subsets of 1000) and clean-fid
// (kernel_distance) compute it. Reported: the mean over subsets and their standard deviation (population std,
// numpy.std's default, as torch-fidelity reports it). Like clean-fid, m = min(subset_size, n_x, n_y) (torch-fidelity
// refuses fewer samples than subset_size).
//
// Subsets: for subset s, X's indices are the first m of a partial Fisher-Yates shuffle of [0, n_x) driven by
// Rng(seed).fork(2 s), Y's by Rng(seed).fork(2 s + 1); the result is a pure function of the features and the seed.
// All arithmetic in double; Gram matrices through kernels::gemm in fixed row slabs, sums in a fixed order, so the
// result is bitwise the same for any thread count.
//
// Cost per subset: 3 m^2 D multiply-adds (m = 1000, D = 128: 0.4 G; D = 2048: 6 G).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/kernels/gemm.hpp"

namespace diffusion::metrics {

struct KidOptions {
  Index subsets = 100;
  Index subset_size = 1000;
  std::uint64_t seed = 0;
};

struct KidResult {
  double mean = 0.0;            // mean of MMD^2_u over the subsets
  double std = 0.0;             // their population standard deviation
  Index subsets = 0;
  Index subset_size = 0;        // m actually used
  std::vector<double> values;   // MMD^2_u of each subset
};

namespace detail {

// Sum over i, j (i != j when skip_diagonal) of k(a_i, b_j) for a, b (m, D), gram (m, m) scratch.
inline double polynomial_kernel_sum(const double* a, const double* b, Index m, Index D, bool skip_diagonal,
                                    double* gram) {
  const Index slab = 32, slabs = (m + slab - 1) / slab;
  std::vector<double> partial(static_cast<std::size_t>(slabs), 0.0);
  const double inv_d = 1.0 / static_cast<double>(D);
  parallel_for(0, slabs, double(slab * m * D), [&](Index s) {
    const Index r0 = s * slab, rows = std::min(slab, m - r0);
    double* g = gram + r0 * m;
    kernels::gemm(kernels::Op::NoTrans, kernels::Op::Trans, rows, m, D, 1.0, a + r0 * D, D, b, D, 0.0, g, m);
    double sum = 0.0;
    for (Index i = 0; i < rows; ++i) {
      double row = 0.0;
      for (Index j = 0; j < m; ++j) {
        if (skip_diagonal && j == r0 + i) continue;
        const double base = g[i * m + j] * inv_d + 1.0;
        row += base * base * base;
      }
      sum += row;
    }
    partial[static_cast<std::size_t>(s)] = sum;
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace detail

// MMD^2_u with the cubic polynomial kernel between x (m, D) and y (m, D), m >= 2.
inline double polynomial_mmd2_unbiased(const double* x, const double* y, Index m, Index D,
                                       std::vector<double>* scratch = nullptr) {
  DIFFUSION_CHECK(m >= 2 && D > 0, "polynomial_mmd2_unbiased: needs m >= 2 rows and D > 0, got m = " << m
                                                                                                    << ", D = " << D);
  std::vector<double> local;
  std::vector<double>& gram = scratch ? *scratch : local;
  gram.resize(static_cast<std::size_t>(m * m));
  const double xx = detail::polynomial_kernel_sum(x, x, m, D, true, gram.data());
  const double yy = detail::polynomial_kernel_sum(y, y, m, D, true, gram.data());
  const double xy = detail::polynomial_kernel_sum(x, y, m, D, false, gram.data());
  const double md = static_cast<double>(m);
  return (xx + yy) / (md * (md - 1.0)) - 2.0 * xy / (md * md);
}

// m distinct indices of [0, n): the first m entries of a partial Fisher-Yates shuffle driven by rng.
inline std::vector<Index> sample_without_replacement(Index n, Index m, Rng rng) {
  DIFFUSION_CHECK(m >= 0 && m <= n, "sample_without_replacement: cannot draw " << m << " of " << n);
  std::vector<Index> perm(static_cast<std::size_t>(n));
  std::iota(perm.begin(), perm.end(), Index{0});
  for (Index i = 0; i < m; ++i) {
    const Index j = i + static_cast<Index>(rng.uniform_int(n - i));
    std::swap(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(j)]);
  }
  perm.resize(static_cast<std::size_t>(m));
  return perm;
}

// KID over given subsets: subsets_x[s] and subsets_y[s] are row indices (each of the same length m) into
// x (n_x, D) and y (n_y, D).
inline KidResult kid_from_subsets(const Tensor<double>& x, const Tensor<double>& y,
                                  const std::vector<std::vector<Index>>& subsets_x,
                                  const std::vector<std::vector<Index>>& subsets_y) {
  DIFFUSION_CHECK(x.rank() == 2 && y.rank() == 2 && x.dim(1) == y.dim(1) && x.dim(1) > 0,
                  "kid: features must be (n, D) with equal D, got " << x.shape() << " and " << y.shape());
  DIFFUSION_CHECK(!subsets_x.empty() && subsets_x.size() == subsets_y.size(),
                  "kid: needs as many X subsets as Y subsets (and at least one), got " << subsets_x.size() << " and "
                                                                                       << subsets_y.size());
  const Index D = x.dim(1), m = static_cast<Index>(subsets_x[0].size());
  DIFFUSION_CHECK(m >= 2, "kid: subsets need at least 2 rows, got " << m);
  KidResult r;
  r.subsets = static_cast<Index>(subsets_x.size());
  r.subset_size = m;
  std::vector<double> xs(static_cast<std::size_t>(m * D)), ys(static_cast<std::size_t>(m * D)), gram;
  auto gather = [&](const Tensor<double>& f, const std::vector<Index>& idx, std::vector<double>& out, const char* w) {
    DIFFUSION_CHECK(static_cast<Index>(idx.size()) == m, "kid: every subset must have " << m << " rows, a " << w
                                                                                        << " subset has "
                                                                                        << idx.size());
    for (Index i = 0; i < m; ++i) {
      const Index row = idx[static_cast<std::size_t>(i)];
      DIFFUSION_CHECK(row >= 0 && row < f.dim(0), "kid: " << w << " subset index " << row << " outside [0, "
                                                          << f.dim(0) << ")");
      std::copy(f.data() + row * D, f.data() + (row + 1) * D, out.begin() + i * D);
    }
  };
  for (std::size_t s = 0; s < subsets_x.size(); ++s) {
    gather(x, subsets_x[s], xs, "X");
    gather(y, subsets_y[s], ys, "Y");
    r.values.push_back(polynomial_mmd2_unbiased(xs.data(), ys.data(), m, D, &gram));
  }
  for (double v : r.values) r.mean += v;
  r.mean /= static_cast<double>(r.subsets);
  double var = 0.0;
  for (double v : r.values) var += (v - r.mean) * (v - r.mean);
  r.std = std::sqrt(var / static_cast<double>(r.subsets));
  DIFFUSION_CHECK(std::isfinite(r.mean) && std::isfinite(r.std), "kid: non-finite result (NaN or Inf in the features?)");
  return r;
}

// KID between feature sets x (n_x, D) and y (n_y, D) with random subsets (see the header comment).
inline KidResult kernel_inception_distance(const Tensor<double>& x, const Tensor<double>& y,
                                           const KidOptions& options = {}) {
  DIFFUSION_CHECK(options.subsets > 0 && options.subset_size >= 2,
                  "kid: needs subsets > 0 and subset_size >= 2, got " << options.subsets << " and "
                                                                      << options.subset_size);
  DIFFUSION_CHECK(x.rank() == 2 && y.rank() == 2, "kid: features must be (n, D), got " << x.shape() << " and "
                                                                                       << y.shape());
  const Index m = std::min({options.subset_size, x.dim(0), y.dim(0)});
  DIFFUSION_CHECK(m >= 2, "kid: needs at least 2 samples on each side, got " << x.dim(0) << " and " << y.dim(0));
  std::vector<std::vector<Index>> sx, sy;
  const Rng root(options.seed);
  for (Index s = 0; s < options.subsets; ++s) {
    sx.push_back(sample_without_replacement(x.dim(0), m, root.fork(static_cast<std::uint64_t>(2 * s))));
    sy.push_back(sample_without_replacement(y.dim(0), m, root.fork(static_cast<std::uint64_t>(2 * s + 1))));
  }
  return kid_from_subsets(x, y, sx, sy);
}

}  // namespace diffusion::metrics
