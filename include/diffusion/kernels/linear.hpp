#pragma once
// A linear layer y (N, out) = x (N, in) W^T + b (PyTorch's nn.Linear), computed so that every image's results do not
// depend on the batch it is in, and parameter gradients fold over the batch in image order like every parameter
// gradient of the library (see conv2d.hpp): a batch's gradient equals the one accumulated over consecutive
// sub-batches of it, bit for bit (gradient accumulation, train/trainer.hpp).
//   linear_forward          y (N, out) = x W^T + b                                                    (ASSIGNED)
//   linear_backward_data    dx (N, in) += dy W                                                        (ACCUMULATED)
//   linear_backward_weight  dw (out, in) += dy^T x, as dw = (((dw + dy_0 x_0^T) + dy_1 x_1^T) + ...)   (ACCUMULATED)
//   linear_backward_bias    db (out) += sum over n of dy, likewise one image at a time                  (ACCUMULATED)
// The two products over the batch run as GEMMs on fixed blocks of kLinearBatchBlock images (the last one padded
// with zero rows): one GEMM of a single shape whatever N is. A GEMM over all N rows at once would not do: Eigen
// computes the columns of a panel of 4 and the 1-3 columns left over differently (measured: up to 75 of 16 x 28
// outputs differ between a batch of 16 and its first 1-15 rows), and picks its blocking from N.
// dw takes one fused multiply-add per image and element (dw[o][i] = fma(dy[n][o], x[n][i], dw[o][i])).

#include <algorithm>

#include "diffusion/core/parallel.hpp"
#include "diffusion/kernels/gemm.hpp"
#include "diffusion/kernels/scratch.hpp"
#include "diffusion/kernels/dispatch.hpp"
#include "diffusion/kernels/simd.hpp"

namespace diffusion::kernels {

inline constexpr Index kLinearBatchBlock = 8;

namespace reference {

template <class T>
void linear_forward(Index N, Index in, Index out, const T* x, const T* w, const T* bias, T* y) {
  for (Index n = 0; n < N; ++n)
    for (Index o = 0; o < out; ++o) {
      double sum = bias ? static_cast<double>(bias[o]) : 0.0;
      for (Index i = 0; i < in; ++i) sum += static_cast<double>(x[n * in + i]) * static_cast<double>(w[o * in + i]);
      y[n * out + o] = static_cast<T>(sum);
    }
}

template <class T>
void linear_backward_data(Index N, Index in, Index out, const T* dy, const T* w, T* dx) {
  for (Index n = 0; n < N; ++n)
    for (Index i = 0; i < in; ++i) {
      double sum = 0.0;
      for (Index o = 0; o < out; ++o) sum += static_cast<double>(dy[n * out + o]) * static_cast<double>(w[o * in + i]);
      dx[n * in + i] += static_cast<T>(sum);
    }
}

template <class T>
void linear_backward_weight(Index N, Index out, Index in, const T* dy, const T* x, T* dw) {
  for (Index o = 0; o < out; ++o)
    for (Index i = 0; i < in; ++i) {
      double sum = 0.0;
      for (Index n = 0; n < N; ++n) sum += static_cast<double>(dy[n * out + o]) * static_cast<double>(x[n * in + i]);
      dw[o * in + i] += static_cast<T>(sum);
    }
}

template <class T>
void linear_backward_bias(Index N, Index out, const T* dy, T* db) {
  for (Index o = 0; o < out; ++o) {
    double sum = 0.0;
    for (Index n = 0; n < N; ++n) sum += static_cast<double>(dy[n * out + o]);
    db[o] += static_cast<T>(sum);
  }
}

}  // namespace reference

namespace detail {

// Calls body(n0, rows, a, c) for each block of kLinearBatchBlock rows of a (N, a_cols) and c (N, c_cols): a and c
// point at the block's rows, or, for a last block of fewer rows, at zero-padded copies (c's rows copied in first,
// copied back after body).
template <class T, class Body>
void for_each_batch_block(Index N, Index a_cols, Index c_cols, const T* a, T* c, double work, Body&& body) {
  constexpr Index B = kLinearBatchBlock;
  parallel_for(0, (N + B - 1) / B, work * double(B), [&](Index blk) {
    const Index n0 = blk * B, rows = std::min(B, N - n0);
    if (rows == B) return body(a + n0 * a_cols, c + n0 * c_cols);
    const ScratchBuffer<T, Scratch::LinearPadding> padded(static_cast<std::size_t>(B * (a_cols + c_cols)));
    T* pa = padded.data();
    T* pc = pa + B * a_cols;
    std::fill(pa, pa + B * (a_cols + c_cols), T(0));
    std::copy(a + n0 * a_cols, a + (n0 + rows) * a_cols, pa);
    std::copy(c + n0 * c_cols, c + (n0 + rows) * c_cols, pc);
    body(pa, pc);
    std::copy(pc, pc + rows * c_cols, c + n0 * c_cols);
  });
}

}  // namespace detail

// y (N, out) = x (N, in) w^T (w: (out, in)) + bias (out; may be null).
template <class T>
void linear_forward(Index N, Index in, Index out, const T* x, const T* w, const T* bias, T* y) {
  if (reference_kernels()) return reference::linear_forward(N, in, out, x, w, bias, y);
  detail::for_each_batch_block(N, in, out, x, y, double(in * out), [&](const T* xb, T* yb) {
    T beta = T(0);
    if (bias) {
      for (Index n = 0; n < kLinearBatchBlock; ++n) std::copy(bias, bias + out, yb + n * out);
      beta = T(1);
    }
    gemm(Op::NoTrans, Op::Trans, kLinearBatchBlock, out, in, T(1), xb, in, w, in, beta, yb, out);
  });
}

// dx (N, in) += dy (N, out) w (out, in).
template <class T>
void linear_backward_data(Index N, Index in, Index out, const T* dy, const T* w, T* dx) {
  if (reference_kernels()) return reference::linear_backward_data(N, in, out, dy, w, dx);
  detail::for_each_batch_block(N, out, in, dy, dx, double(in * out), [&](const T* dyb, T* dxb) {
    gemm(Op::NoTrans, Op::NoTrans, kLinearBatchBlock, in, out, T(1), dyb, out, w, in, T(1), dxb, in);
  });
}

// dw (out, in) += dy (N, out)^T x (N, in), image by image.
template <class T>
void linear_backward_weight(Index N, Index out, Index in, const T* dy, const T* x, T* dw) {
  if (reference_kernels()) return reference::linear_backward_weight(N, out, in, dy, x, dw);
  parallel_for(0, out, double(N * in), [&](Index o) {
    T* row = dw + o * in;
    for (Index n = 0; n < N; ++n) {
      const Batch<T> d(dy[n * out + o]);
      simd_map3(in, x + n * in, row, row, [&](Batch<T> xv, Batch<T>, Batch<T> acc) { return xsimd::fma(d, xv, acc); });
    }
  });
}

// db (out) += sum over n of dy (N, out), image by image.
template <class T>
void linear_backward_bias(Index N, Index out, const T* dy, T* db) {
  if (reference_kernels()) return reference::linear_backward_bias(N, out, dy, db);
  for (Index n = 0; n < N; ++n)
    simd_map3(out, dy + n * out, db, db, [](Batch<T> d, Batch<T>, Batch<T> acc) { return acc + d; });
}

}  // namespace diffusion::kernels
