#pragma once
// Activation kernels: SiLU and GELU (exact erf form, PyTorch's nn.GELU() default), forward and backward.
// Forward ASSIGNS y; backward ACCUMULATES into dx (dx += dy * f'(x)). All take the layer input x, so backward needs
// nothing saved but x. Work is split into fixed chunks of kChunk elements (thread-count independent).

#include <algorithm>
#include <cmath>

#include "diffusion/core/parallel.hpp"
#include "diffusion/kernels/dispatch.hpp"
#include "diffusion/kernels/simd.hpp"

namespace diffusion::kernels {

inline constexpr Index kElementwiseChunk = 1 << 15;

// Runs f(begin, count) over [0, n) in chunks of kElementwiseChunk, in parallel.
template <class F>
void for_each_chunk(Index n, F f) {
  const Index chunks = (n + kElementwiseChunk - 1) / kElementwiseChunk;
  parallel_for(0, chunks, double(kElementwiseChunk), [&](Index c) {
    const Index begin = c * kElementwiseChunk;
    f(begin, std::min(kElementwiseChunk, n - begin));
  });
}

namespace reference {

template <class T>
void silu_forward(Index n, const T* x, T* y) {
  for (Index i = 0; i < n; ++i) y[i] = x[i] / (T(1) + std::exp(-x[i]));
}
template <class T>
void silu_backward(Index n, const T* x, const T* dy, T* dx) {
  for (Index i = 0; i < n; ++i) {
    const T s = T(1) / (T(1) + std::exp(-x[i]));
    dx[i] += dy[i] * s * (T(1) + x[i] * (T(1) - s));
  }
}
template <class T>
void gelu_forward(Index n, const T* x, T* y) {
  for (Index i = 0; i < n; ++i) y[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * T(M_SQRT1_2)));
}
template <class T>
void gelu_backward(Index n, const T* x, const T* dy, T* dx) {
  const T inv_sqrt_2pi = T(0.3989422804014326779399460599343819);
  for (Index i = 0; i < n; ++i) {
    const T cdf = T(0.5) * (T(1) + std::erf(x[i] * T(M_SQRT1_2)));
    const T pdf = inv_sqrt_2pi * std::exp(T(-0.5) * x[i] * x[i]);
    dx[i] += dy[i] * (cdf + x[i] * pdf);
  }
}

}  // namespace reference

// y = x * sigmoid(x) = x / (1 + exp(-x))
template <class T>
void silu_forward(Index n, const T* x, T* y) {
  if (reference_kernels()) return reference::silu_forward(n, x, y);
  for_each_chunk(n, [&](Index b, Index m) {
    simd_map(m, x + b, y + b, [](Batch<T> v) { return v / (Batch<T>(T(1)) + xsimd::exp(-v)); });
  });
}

// dx += dy * s (1 + x (1 - s)), s = sigmoid(x)
template <class T>
void silu_backward(Index n, const T* x, const T* dy, T* dx) {
  if (reference_kernels()) return reference::silu_backward(n, x, dy, dx);
  for_each_chunk(n, [&](Index b, Index m) {
    simd_map3(m, x + b, dy + b, dx + b, [](Batch<T> v, Batch<T> g, Batch<T> acc) {
      const Batch<T> one(T(1));
      const Batch<T> s = one / (one + xsimd::exp(-v));
      return xsimd::fma(g, s * xsimd::fma(v, one - s, one), acc);
    });
  });
}

// y = 0.5 x (1 + erf(x / sqrt(2)))
template <class T>
void gelu_forward(Index n, const T* x, T* y) {
  if (reference_kernels()) return reference::gelu_forward(n, x, y);
  for_each_chunk(n, [&](Index b, Index m) {
    simd_map(m, x + b, y + b, [](Batch<T> v) {
      return Batch<T>(T(0.5)) * v * (Batch<T>(T(1)) + xsimd::erf(v * Batch<T>(T(M_SQRT1_2))));
    });
  });
}

// dx += dy (Phi(x) + x phi(x)): Phi the standard normal CDF, phi its density
template <class T>
void gelu_backward(Index n, const T* x, const T* dy, T* dx) {
  if (reference_kernels()) return reference::gelu_backward(n, x, dy, dx);
  for_each_chunk(n, [&](Index b, Index m) {
    simd_map3(m, x + b, dy + b, dx + b, [](Batch<T> v, Batch<T> g, Batch<T> acc) {
      const Batch<T> half(T(0.5));
      const Batch<T> cdf = half * (Batch<T>(T(1)) + xsimd::erf(v * Batch<T>(T(M_SQRT1_2))));
      const Batch<T> pdf = Batch<T>(T(0.3989422804014326779399460599343819)) * xsimd::exp(-half * v * v);
      return xsimd::fma(g, xsimd::fma(v, pdf, cdf), acc);
    });
  });
}

}  // namespace diffusion::kernels
