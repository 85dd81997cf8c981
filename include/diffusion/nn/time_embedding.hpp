#pragma once
// Sinusoidal time embedding (the reference's SinusoidalPositionEmbeddings, after "Attention is all you need"):
// for t (N) integer timesteps and dim = 2 * half, y (N, dim) = [sin(t * f_j), cos(t * f_j)] with
// f_j = exp(-j * log(10000) / (half - 1)), j = 0..half-1. No parameters; no backward (t is an integer input).
// Computed in double and rounded once: at t ~ 1000 a float32 argument t * f_j is already off by ~6e-5 rad, which is
// what PyTorch's float32 module returns; the double path gives the exact embedding to float rounding.

#include <cmath>
#include <cstdint>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/tensor.hpp"

namespace diffusion::nn {

template <class T>
class SinusoidalTimeEmbedding {
 public:
  explicit SinusoidalTimeEmbedding(Index dim) : dim_(dim) {
    DIFFUSION_CHECK(dim_ >= 4 && dim_ % 2 == 0,
                    "SinusoidalTimeEmbedding: dim must be even and >= 4 (half - 1 divides), got " << dim_);
    const Index half = dim_ / 2;
    const double step = std::log(10000.0) / static_cast<double>(half - 1);
    frequencies_.resize(static_cast<std::size_t>(half));
    for (Index j = 0; j < half; ++j) frequencies_[static_cast<std::size_t>(j)] = std::exp(static_cast<double>(j) * -step);
  }

  void forward(const std::vector<std::int64_t>& t, Tensor<T>& y) const {
    DIFFUSION_CHECK(!t.empty(), "SinusoidalTimeEmbedding: empty batch of timesteps");
    const Index N = static_cast<Index>(t.size()), half = dim_ / 2;
    y.resize(Shape{N, dim_});
    for (Index n = 0; n < N; ++n) {
      const double tn = static_cast<double>(t[static_cast<std::size_t>(n)]);
      for (Index j = 0; j < half; ++j) {
        const double arg = tn * frequencies_[static_cast<std::size_t>(j)];
        y[n * dim_ + j] = static_cast<T>(std::sin(arg));
        y[n * dim_ + half + j] = static_cast<T>(std::cos(arg));
      }
    }
  }

  Index dim() const { return dim_; }

 private:
  Index dim_;
  std::vector<double> frequencies_;  // (half)
};

}  // namespace diffusion::nn
