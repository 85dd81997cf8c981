#pragma once
// Element-wise loops over xsimd batches. The tail of an array is processed by the same SIMD function on a padded
// copy, so every element goes through exactly the same arithmetic wherever it sits: results do not depend on how
// an array is split between threads.

// GCC 12 reports false -W(maybe-)uninitialized inside xsimd's AVX-512 code (_mm512_undefined_* operands).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <xsimd/xsimd.hpp>

#include "diffusion/core/aligned_buffer.hpp"
#include "diffusion/core/shape.hpp"

namespace diffusion::kernels {

template <class T>
using Batch = xsimd::batch<T>;

template <class T>
inline constexpr Index kLanes = static_cast<Index>(Batch<T>::size);

// y[i] = f(x[i]) for i in [0, n). f maps Batch<T> -> Batch<T>. x and y may alias.
template <class T, class F>
void simd_map(Index n, const T* x, T* y, F f) {
  constexpr Index L = kLanes<T>;
  Index i = 0;
  for (; i + L <= n; i += L) f(Batch<T>::load_unaligned(x + i)).store_unaligned(y + i);
  if (i < n) {
    alignas(kAlignment) T in[L] = {};
    alignas(kAlignment) T out[L];
    for (Index j = 0; i + j < n; ++j) in[j] = x[i + j];
    f(Batch<T>::load_aligned(in)).store_aligned(out);
    for (Index j = 0; i + j < n; ++j) y[i + j] = out[j];
  }
}

// out[i] = f(a[i], b[i], out[i]) for i in [0, n): the shape of every backward rule (dx = f(x, dy, dx)).
template <class T, class F>
void simd_map3(Index n, const T* a, const T* b, T* out, F f) {
  constexpr Index L = kLanes<T>;
  Index i = 0;
  for (; i + L <= n; i += L)
    f(Batch<T>::load_unaligned(a + i), Batch<T>::load_unaligned(b + i), Batch<T>::load_unaligned(out + i))
        .store_unaligned(out + i);
  if (i < n) {
    alignas(kAlignment) T ta[L] = {}, tb[L] = {}, to[L] = {};
    for (Index j = 0; i + j < n; ++j) ta[j] = a[i + j], tb[j] = b[i + j], to[j] = out[i + j];
    f(Batch<T>::load_aligned(ta), Batch<T>::load_aligned(tb), Batch<T>::load_aligned(to)).store_aligned(to);
    for (Index j = 0; i + j < n; ++j) out[i + j] = to[j];
  }
}

// Sum of x[0..n): SIMD partial sums in T over blocks of kSumBlock elements (each lane adds at most kSumBlock / L
// values), block totals accumulated in double; the last partial block likewise in whole vectors, then the few
// remaining elements in double. Fixed order, so the result depends only on the data.
inline constexpr Index kSumBlock = 256;
static_assert(kSumBlock % (2 * 16) == 0, "kSumBlock must hold whole pairs of the widest SIMD vectors");

template <class T>
double simd_sum(Index n, const T* x) {
  constexpr Index L = kLanes<T>;
  double total = 0.0;
  Index i = 0;
  for (; i + kSumBlock <= n; i += kSumBlock) {
    Batch<T> a(T(0)), b(T(0));
    for (Index k = 0; k < kSumBlock; k += 2 * L) {
      a += Batch<T>::load_unaligned(x + i + k);
      b += Batch<T>::load_unaligned(x + i + k + L);
    }
    total += static_cast<double>(xsimd::hadd(a + b));
  }
  if (i + L <= n) {  // the last partial block: whole vectors, then single elements
    Batch<T> a(T(0));
    for (; i + L <= n; i += L) a += Batch<T>::load_unaligned(x + i);
    total += static_cast<double>(xsimd::hadd(a));
  }
  for (; i < n; ++i) total += static_cast<double>(x[i]);
  return total;
}

// Sum of (x[i] - center)^2 over [0, n), blocked like simd_sum.
template <class T>
double simd_sum_squared_deviation(Index n, const T* x, double center) {
  constexpr Index L = kLanes<T>;
  const Batch<T> c(static_cast<T>(center));
  double total = 0.0;
  Index i = 0;
  for (; i + kSumBlock <= n; i += kSumBlock) {
    Batch<T> a(T(0)), b(T(0));
    for (Index k = 0; k < kSumBlock; k += 2 * L) {
      const Batch<T> u = Batch<T>::load_unaligned(x + i + k) - c, v = Batch<T>::load_unaligned(x + i + k + L) - c;
      a = xsimd::fma(u, u, a);
      b = xsimd::fma(v, v, b);
    }
    total += static_cast<double>(xsimd::hadd(a + b));
  }
  if (i + L <= n) {
    Batch<T> a(T(0));
    for (; i + L <= n; i += L) {
      const Batch<T> u = Batch<T>::load_unaligned(x + i) - c;
      a = xsimd::fma(u, u, a);
    }
    total += static_cast<double>(xsimd::hadd(a));
  }
  for (; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - center;
    total += d * d;
  }
  return total;
}

// Sum of x[i] * y[i] over [0, n), blocked like simd_sum.
template <class T>
double simd_dot(Index n, const T* x, const T* y) {
  constexpr Index L = kLanes<T>;
  double total = 0.0;
  Index i = 0;
  for (; i + kSumBlock <= n; i += kSumBlock) {
    Batch<T> a(T(0)), b(T(0));
    for (Index k = 0; k < kSumBlock; k += 2 * L) {
      a = xsimd::fma(Batch<T>::load_unaligned(x + i + k), Batch<T>::load_unaligned(y + i + k), a);
      b = xsimd::fma(Batch<T>::load_unaligned(x + i + k + L), Batch<T>::load_unaligned(y + i + k + L), b);
    }
    total += static_cast<double>(xsimd::hadd(a + b));
  }
  if (i + L <= n) {
    Batch<T> a(T(0));
    for (; i + L <= n; i += L) a = xsimd::fma(Batch<T>::load_unaligned(x + i), Batch<T>::load_unaligned(y + i), a);
    total += static_cast<double>(xsimd::hadd(a));
  }
  for (; i < n; ++i) total += static_cast<double>(x[i]) * static_cast<double>(y[i]);
  return total;
}

}  // namespace diffusion::kernels

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
