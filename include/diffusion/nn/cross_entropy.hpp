#pragma once
// Cross-entropy loss of a classifier, PyTorch's F.cross_entropy(logits, labels) with reduction "mean":
//     loss = -(1/N) sum_n log softmax(z_n)[y_n],   log softmax(z)_c = z_c - m - log sum_k exp(z_k - m), m = max_k z_k
// computed in double (max-subtracted, so large logits cannot overflow).
// Gradient: d loss / d z_nc = (softmax(z_n)_c - [c == y_n]) / N.
//   forward(logits (N, C), labels (N))        returns the loss; labels must lie in [0, C)
//   backward(logits, labels, dlogits, scale)   dlogits (N, C) += scale * d loss / d logits   (ACCUMULATED)
// Both are per row; rows are independent, so any thread split gives the same bits.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "diffusion/core/parallel.hpp"
#include "diffusion/core/tensor.hpp"

namespace diffusion::nn {

template <class T>
class CrossEntropyLoss {
 public:
  double forward(const Tensor<T>& logits, const std::vector<std::int64_t>& labels) {
    check(logits, labels);
    const Index N = logits.dim(0), C = logits.dim(1);
    losses_.resize(static_cast<std::size_t>(N));
    parallel_for(0, N, double(4 * C), [&](Index n) {
      const T* z = logits.data() + n * C;
      const double lse = log_sum_exp(z, C);
      losses_[static_cast<std::size_t>(n)] = lse - static_cast<double>(z[labels[static_cast<std::size_t>(n)]]);
    });
    double sum = 0.0;  // fixed order
    for (double l : losses_) sum += l;
    return sum / static_cast<double>(N);
  }

  void backward(const Tensor<T>& logits, const std::vector<std::int64_t>& labels, Tensor<T>& dlogits,
                double scale = 1.0) const {
    check(logits, labels);
    check_shape(dlogits, logits.shape(), "CrossEntropyLoss backward: dlogits");
    const Index N = logits.dim(0), C = logits.dim(1);
    const double factor = scale / static_cast<double>(N);
    parallel_for(0, N, double(4 * C), [&](Index n) {
      const T* z = logits.data() + n * C;
      T* dz = dlogits.data() + n * C;
      const double lse = log_sum_exp(z, C);
      const Index y = static_cast<Index>(labels[static_cast<std::size_t>(n)]);
      for (Index c = 0; c < C; ++c) {
        const double p = std::exp(static_cast<double>(z[c]) - lse);
        dz[c] += static_cast<T>(factor * (p - (c == y ? 1.0 : 0.0)));
      }
    });
  }

 private:
  static double log_sum_exp(const T* z, Index C) {
    double m = static_cast<double>(z[0]);
    for (Index c = 1; c < C; ++c) m = std::max(m, static_cast<double>(z[c]));
    double s = 0.0;
    for (Index c = 0; c < C; ++c) s += std::exp(static_cast<double>(z[c]) - m);
    return m + std::log(s);
  }

  static void check(const Tensor<T>& logits, const std::vector<std::int64_t>& labels) {
    DIFFUSION_CHECK(logits.rank() == 2 && logits.dim(0) > 0 && logits.dim(1) > 0,
                    "CrossEntropyLoss: logits must be (N, C) with N, C > 0, got " << logits.shape());
    DIFFUSION_CHECK(static_cast<Index>(labels.size()) == logits.dim(0),
                    "CrossEntropyLoss: " << labels.size() << " labels for logits " << logits.shape());
    for (std::size_t n = 0; n < labels.size(); ++n)
      DIFFUSION_CHECK(labels[n] >= 0 && labels[n] < logits.dim(1),
                      "CrossEntropyLoss: label " << labels[n] << " of sample " << n << " is outside [0, "
                                                 << logits.dim(1) << ")");
  }

  std::vector<double> losses_;  // (N) per-sample losses of the last forward
};

}  // namespace diffusion::nn
