#pragma once
// GroupNorm kernels (Wu & He 2018; PyTorch nn.GroupNorm): x (N, C, P) split into G groups of C/G channels;
// y = (x - mean_ng) * rstd_ng * gamma_c + beta_c with biased variance, rstd = 1 / sqrt(var + eps).
// Statistics are computed in double (two passes) and saved, (N, G) each, for the backward pass.
//   group_norm_forward:  y ASSIGNED, mean/rstd ASSIGNED
//   group_norm_backward: dx, dgamma, dbeta ACCUMULATED (dx may be null: the input gradient is not needed)
// Parallel over (n, g) items; the per-channel parameter gradients are computed per image in double, rounded to T
// and added image by image in order afterwards: a fold over the batch, so that a batch's gradient equals the one
// accumulated over consecutive sub-batches (see conv2d.hpp).

#include <cmath>

#include "diffusion/core/parallel.hpp"
#include "diffusion/kernels/dispatch.hpp"
#include "diffusion/kernels/scratch.hpp"
#include "diffusion/kernels/simd.hpp"

namespace diffusion::kernels {

namespace detail {

// Mean and 1/sqrt(biased variance + eps) of x[0..count), two passes (exact up to rounding even when the mean is
// large against the spread). The reference twin accumulates element by element in double.
template <class T>
void group_stats(Index count, const T* x, double eps, double& mean, double& rstd) {
  double sum = 0.0, sq = 0.0;
  if (reference_kernels()) {
    for (Index i = 0; i < count; ++i) sum += static_cast<double>(x[i]);
    mean = sum / static_cast<double>(count);
    for (Index i = 0; i < count; ++i) sq += (static_cast<double>(x[i]) - mean) * (static_cast<double>(x[i]) - mean);
  } else {
    mean = simd_sum(count, x) / static_cast<double>(count);
    sq = simd_sum_squared_deviation(count, x, mean);
  }
  rstd = 1.0 / std::sqrt(sq / static_cast<double>(count) + eps);
}

}  // namespace detail

namespace reference {

template <class T>
void group_norm_forward(Index N, Index C, Index P, Index G, double eps, const T* x, const T* gamma, const T* beta,
                        T* y, double* mean, double* rstd) {
  const Index cg = C / G;
  for (Index n = 0; n < N; ++n)
    for (Index g = 0; g < G; ++g) {
      const Index base = (n * C + g * cg) * P;
      detail::group_stats(cg * P, x + base, eps, mean[n * G + g], rstd[n * G + g]);
      for (Index c = 0; c < cg; ++c)
        for (Index p = 0; p < P; ++p) {
          const Index i = base + c * P + p;
          const double xhat = (static_cast<double>(x[i]) - mean[n * G + g]) * rstd[n * G + g];
          y[i] = static_cast<T>(xhat * gamma[g * cg + c] + beta[g * cg + c]);
        }
    }
}

template <class T>
void group_norm_backward(Index N, Index C, Index P, Index G, const T* x, const T* gamma, const double* mean,
                         const double* rstd, const T* dy, T* dx, T* dgamma, T* dbeta) {
  const Index cg = C / G;
  const double M = static_cast<double>(cg * P);
  for (Index c = 0; c < C; ++c) {
    double sg = 0.0, sb = 0.0;
    const Index g = c / cg;
    for (Index n = 0; n < N; ++n)
      for (Index p = 0; p < P; ++p) {
        const Index i = (n * C + c) * P + p;
        sg += static_cast<double>(dy[i]) * (static_cast<double>(x[i]) - mean[n * G + g]) * rstd[n * G + g];
        sb += static_cast<double>(dy[i]);
      }
    dgamma[c] += static_cast<T>(sg);
    dbeta[c] += static_cast<T>(sb);
  }
  if (!dx) return;
  for (Index n = 0; n < N; ++n)
    for (Index g = 0; g < G; ++g) {
      double s1 = 0.0, s2 = 0.0;  // sum of dxhat and of dxhat * xhat over the group
      for (Index c = g * cg; c < (g + 1) * cg; ++c)
        for (Index p = 0; p < P; ++p) {
          const Index i = (n * C + c) * P + p;
          const double dxhat = static_cast<double>(dy[i]) * gamma[c];
          s1 += dxhat;
          s2 += dxhat * (static_cast<double>(x[i]) - mean[n * G + g]) * rstd[n * G + g];
        }
      for (Index c = g * cg; c < (g + 1) * cg; ++c)
        for (Index p = 0; p < P; ++p) {
          const Index i = (n * C + c) * P + p;
          const double xhat = (static_cast<double>(x[i]) - mean[n * G + g]) * rstd[n * G + g];
          const double dxhat = static_cast<double>(dy[i]) * gamma[c];
          dx[i] += static_cast<T>(rstd[n * G + g] * (dxhat - s1 / M - xhat * s2 / M));
        }
    }
}

}  // namespace reference

template <class T>
void group_norm_forward(Index N, Index C, Index P, Index G, double eps, const T* x, const T* gamma, const T* beta,
                        T* y, double* mean, double* rstd) {
  if (reference_kernels()) return reference::group_norm_forward(N, C, P, G, eps, x, gamma, beta, y, mean, rstd);
  const Index cg = C / G;
  parallel_for(0, N * G, double(3 * cg * P), [&](Index ng) {  // statistics, then normalise
    const Index n = ng / G, g = ng % G, base = (n * C + g * cg) * P;
    detail::group_stats(cg * P, x + base, eps, mean[ng], rstd[ng]);
    for (Index c = 0; c < cg; ++c) {
      // y = x * a + b with a = rstd * gamma, b = beta - mean * a
      const double a = rstd[ng] * static_cast<double>(gamma[g * cg + c]);
      const Batch<T> va(static_cast<T>(a)), vb(static_cast<T>(static_cast<double>(beta[g * cg + c]) - mean[ng] * a));
      simd_map(P, x + base + c * P, y + base + c * P, [&](Batch<T> v) { return xsimd::fma(v, va, vb); });
    }
  });
}

template <class T>
void group_norm_backward(Index N, Index C, Index P, Index G, const T* x, const T* gamma, const double* mean,
                         const double* rstd, const T* dy, T* dx, T* dgamma, T* dbeta) {
  if (reference_kernels())
    return reference::group_norm_backward(N, C, P, G, x, gamma, mean, rstd, dy, dx, dgamma, dbeta);
  const Index cg = C / G;
  // Per (n, c): sum dy and sum dy * x, in double. (N, C) each.
  const ScratchBuffer<double, Scratch::NormPartials> sums_buffer(static_cast<std::size_t>(2 * N * C));
  double* sums = sums_buffer.data();
  double* sum_dy = sums;
  double* sum_dyx = sums + N * C;
  parallel_for(0, N * G, double(4 * cg * P), [&](Index ng) {  // two sums, then dx
    const Index n = ng / G, g = ng % G;
    double s1 = 0.0, s2 = 0.0;
    for (Index c = g * cg; c < (g + 1) * cg; ++c) {
      const T* d = dy + (n * C + c) * P;
      const T* xv = x + (n * C + c) * P;
      const double a = simd_sum(P, d), b = simd_dot(P, d, xv);
      sum_dy[n * C + c] = a;
      sum_dyx[n * C + c] = b;
      s1 += static_cast<double>(gamma[c]) * a;                             // sum dxhat
      s2 += static_cast<double>(gamma[c]) * rstd[ng] * (b - mean[ng] * a);  // sum dxhat * xhat
    }
    if (!dx) return;
    // dx = rstd (dxhat - s1/M - xhat s2/M) = A_c dy + B x + D
    const double M = static_cast<double>(cg * P), r = rstd[ng];
    const double B = -r * r * s2 / M;
    const double D = r * (mean[ng] * r * s2 / M - s1 / M);
    for (Index c = g * cg; c < (g + 1) * cg; ++c) {
      const Batch<T> vA(static_cast<T>(r * static_cast<double>(gamma[c]))), vB(static_cast<T>(B)),
          vD(static_cast<T>(D));
      const Index off = (n * C + c) * P;
      simd_map3(P, dy + off, x + off, dx + off,
                [&](Batch<T> d, Batch<T> xv, Batch<T> acc) { return acc + xsimd::fma(vA, d, xsimd::fma(vB, xv, vD)); });
    }
  });
  parallel_for(0, C, double(2 * N), [&](Index c) {  // image by image, in order (a fold over the batch)
    const Index g = c / cg;
    for (Index n = 0; n < N; ++n) {
      dgamma[c] += static_cast<T>(rstd[n * G + g] * (sum_dyx[n * C + c] - mean[n * G + g] * sum_dy[n * C + c]));
      dbeta[c] += static_cast<T>(sum_dy[n * C + c]);
    }
  });
}

}  // namespace diffusion::kernels
