#pragma once
// FeatureStatistics: what the sample-quality metrics need from a stream of feature vectors (D numbers per sample),
// accumulated batch by batch in double so that the samples never sit in memory at once.
//
//  - count, mean and covariance (unbiased: divided by n - 1, as numpy.cov and pytorch-fid), for the Frechet
//    distance. Rows are buffered into fixed chunks of kChunkRows; each full chunk is centred at its own mean and
//    merged with the running statistics by the pairwise update of Chan, Golub & LeVeque (1979):
//        delta = mean_b - mean_a,  mean = mean_a + delta n_b / n,  M2 = M2_a + M2_b + delta delta^T n_a n_b / n
//    (M2 = the centred scatter matrix, one GEMM per chunk). Centring each chunk at its own mean avoids the
//    catastrophic cancellation of sum(x x^T) - n mean mean^T when |mean| >> std. Because chunks are fixed, the
//    result does not depend on how the caller cuts the stream into batches (nor on the thread count): bitwise.
//  - a uniform random sample ("reservoir", Vitter's Algorithm R) of at most `reservoir_size` feature vectors, for
//    KID and precision/recall, which need the vectors themselves: sample i (0-based over the whole stream) takes
//    slot i while i < M; after that, slot j = floor(u_i (i + 1)) if j < M (otherwise it is dropped), where u_i is
//    the 32-bit draw number i of Rng(seed) (Lemire's multiply-shift). The kept set depends only on the seed and the
//    order of the samples. Memory: M x D doubles (10,000 x 128: 10 MB; 10,000 x 2048: 164 MB).
//
// Shapes: a batch is (n, D) row-major (or (n, D, 1, 1): pooled CNN features), of float or double.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/kernels/gemm.hpp"

namespace diffusion::metrics {

// A Gaussian fit of a feature distribution: the inputs of the Frechet distance.
struct GaussianStats {
  Index count = 0;
  Tensor<double> mean;        // (D)
  Tensor<double> covariance;  // (D, D), unbiased (n - 1)
  Index dim() const { return mean.numel(); }
};

struct FeatureStatisticsOptions {
  Index reservoir_size = 10000;  // M: feature vectors kept for KID and precision/recall (0: none)
  std::uint64_t reservoir_seed = 0;
};

class FeatureStatistics {
 public:
  static constexpr Index kChunkRows = 256;

  FeatureStatistics() = default;
  explicit FeatureStatistics(Index dim, const FeatureStatisticsOptions& options = {}) : dim_(dim), options_(options) {
    DIFFUSION_CHECK(dim > 0, "FeatureStatistics: feature dimension must be positive, got " << dim);
    DIFFUSION_CHECK(options.reservoir_size >= 0,
                    "FeatureStatistics: reservoir_size must be >= 0, got " << options.reservoir_size);
    mean_.assign(static_cast<std::size_t>(dim), 0.0);
    m2_.resize(Shape{dim, dim});
    m2_.zero();
    pending_.resize(Shape{kChunkRows, dim});
  }

  // Adds n feature vectors x (n, D) row-major.
  template <class S>
  void add(const S* x, Index n) {
    DIFFUSION_CHECK(dim_ > 0, "FeatureStatistics::add: the statistics were default-constructed (no dimension)");
    DIFFUSION_CHECK(n >= 0, "FeatureStatistics::add: negative row count " << n);
    DIFFUSION_CHECK(seen_ + n < (Index{1} << 32), "FeatureStatistics::add: more than 2^32 - 1 samples");
    for (Index r = 0; r < n; ++r) {
      const S* row = x + r * dim_;
      double* dst = pending_.data() + pending_rows_ * dim_;
      for (Index d = 0; d < dim_; ++d) dst[d] = static_cast<double>(row[d]);
      keep_in_reservoir(dst);
      if (++pending_rows_ == kChunkRows) {
        merge_chunk(pending_.data(), pending_rows_, count_, mean_.data(), m2_.data());
        count_ += pending_rows_;
        pending_rows_ = 0;
      }
    }
  }
  // A (N, D) or (N, D, 1, 1) tensor of features.
  template <class S>
  void add(const Tensor<S>& features) {
    const Shape& s = features.shape();
    DIFFUSION_CHECK((s.rank() == 2 && s[1] == dim_) || (s.rank() == 4 && s[1] == dim_ && s[2] == 1 && s[3] == 1),
                    "FeatureStatistics::add: features " << s << " are not (N, " << dim_ << ") or (N, " << dim_
                                                        << ", 1, 1)");
    add(features.data(), s[0]);
  }

  Index dim() const { return dim_; }
  Index count() const { return seen_; }
  const FeatureStatisticsOptions& options() const { return options_; }

  // Mean and unbiased covariance of everything added so far (needs >= 2 samples). Does not change the state:
  // adding more later continues the same stream.
  GaussianStats gaussian() const {
    DIFFUSION_CHECK(seen_ >= 2, "FeatureStatistics::gaussian: needs at least 2 samples, got " << seen_);
    GaussianStats g;
    g.count = seen_;
    g.mean.resize(Shape{dim_});
    std::copy(mean_.begin(), mean_.end(), g.mean.data());
    g.covariance.copy_from(m2_);
    if (pending_rows_ > 0) merge_chunk(pending_.data(), pending_rows_, count_, g.mean.data(), g.covariance.data());
    const double scale = 1.0 / static_cast<double>(seen_ - 1);
    for (double& v : g.covariance) v *= scale;
    return g;
  }

  // The kept feature vectors: (min(count, M), D), in slot order.
  Tensor<double> reservoir() const {
    const Index rows = std::min(seen_, options_.reservoir_size);
    Tensor<double> out(Shape{rows, dim_});
    if (rows > 0) std::memcpy(out.data(), reservoir_.data(), sizeof(double) * static_cast<std::size_t>(rows * dim_));
    return out;
  }

 private:
  void keep_in_reservoir(const double* row) {
    const Index M = options_.reservoir_size, i = seen_++;
    if (M == 0) return;
    Index slot = i;
    if (i >= M) {
      const std::uint64_t u = Rng(options_.reservoir_seed).block(static_cast<std::uint64_t>(i))[0];
      slot = static_cast<Index>((u * static_cast<std::uint64_t>(i + 1)) >> 32);
      if (slot >= M) return;
    } else if (reservoir_.size() < static_cast<std::size_t>((i + 1) * dim_)) {
      reservoir_.resize(static_cast<std::size_t>(std::min(M, std::max<Index>(2 * i, kChunkRows)) * dim_));
    }
    std::copy(row, row + dim_, reservoir_.begin() + slot * dim_);
  }

  // Merges n_b rows x (n_b, D) into the statistics (n_a, mean (D), m2 (D, D)) of n_a earlier rows: mean and m2
  // are updated in place (ASSIGNED the merged values).
  void merge_chunk(const double* x, Index n_b, Index n_a, double* mean, double* m2) const {
    const Index D = dim_;
    centred_.resize(static_cast<std::size_t>(n_b * D));
    std::vector<double> mean_b(static_cast<std::size_t>(D), 0.0);
    for (Index r = 0; r < n_b; ++r)
      for (Index d = 0; d < D; ++d) mean_b[static_cast<std::size_t>(d)] += x[r * D + d];
    for (double& v : mean_b) v /= static_cast<double>(n_b);
    for (Index r = 0; r < n_b; ++r)
      for (Index d = 0; d < D; ++d) centred_[static_cast<std::size_t>(r * D + d)] = x[r * D + d] - mean_b[static_cast<std::size_t>(d)];
    // m2 += C^T C, in fixed slabs of rows (each slab one GEMM: independent of the thread count).
    const Index slab = 64, slabs = (D + slab - 1) / slab;
    const double* C = centred_.data();
    parallel_for(0, slabs, double(slab * D * n_b), [&](Index s) {
      const Index r0 = s * slab, rows = std::min(slab, D - r0);
      kernels::gemm(kernels::Op::Trans, kernels::Op::NoTrans, rows, D, n_b, 1.0, C + r0, D, C, D, 1.0, m2 + r0 * D, D);
    });
    const double n = static_cast<double>(n_a + n_b);
    const double weight = static_cast<double>(n_a) * static_cast<double>(n_b) / n;
    std::vector<double> delta(static_cast<std::size_t>(D));
    for (Index d = 0; d < D; ++d) delta[static_cast<std::size_t>(d)] = mean_b[static_cast<std::size_t>(d)] - mean[d];
    if (n_a > 0) {
      parallel_for(0, D, double(D), [&](Index i) {
        const double wi = weight * delta[static_cast<std::size_t>(i)];
        for (Index j = 0; j < D; ++j) m2[i * D + j] += wi * delta[static_cast<std::size_t>(j)];
      });
    }
    const double fraction = static_cast<double>(n_b) / n;
    for (Index d = 0; d < D; ++d) mean[d] += delta[static_cast<std::size_t>(d)] * fraction;
  }

  Index dim_ = 0;
  FeatureStatisticsOptions options_;
  Index seen_ = 0;                 // samples added (count of the stream)
  Index count_ = 0;                // samples merged into mean_ / m2_
  std::vector<double> mean_;       // (D) mean of the merged samples
  Tensor<double> m2_;              // (D, D) centred scatter matrix of the merged samples
  Tensor<double> pending_;         // (kChunkRows, D) rows not merged yet
  Index pending_rows_ = 0;
  std::vector<double> reservoir_;  // (<= M, D) kept feature vectors
  mutable std::vector<double> centred_;  // (kChunkRows, D) scratch of merge_chunk
};

}  // namespace diffusion::metrics
