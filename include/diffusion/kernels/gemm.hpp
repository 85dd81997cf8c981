#pragma once
// GEMM on row-major matrices through Eigen maps: C = alpha * op(A) * op(B) + beta * C.
//
// A is M x K (op = NoTrans, leading dimension lda >= K) or stored K x M (op = Trans, lda >= M); likewise B is K x N
// or stored N x K. C is M x N with leading dimension ldc. beta = 0 ignores C's old contents (NaNs included).
// Always single-threaded: callers parallelise over independent GEMMs (images, heads, slabs), which keeps results
// identical for every thread count (Eigen's own threading would choose block sizes from the thread count).

#ifndef EIGEN_DONT_PARALLELIZE
#define EIGEN_DONT_PARALLELIZE
#endif
// GCC 12 reports a false -Wmaybe-uninitialized inside Eigen's AVX-512 packing code (_mm256_undefined_pd).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>

#include "diffusion/core/shape.hpp"
#include "diffusion/kernels/dispatch.hpp"

namespace diffusion::kernels {

enum class Op { NoTrans, Trans };

namespace reference {

template <class T>
void gemm(Op op_a, Op op_b, Index M, Index N, Index K, T alpha, const T* A, Index lda, const T* B, Index ldb, T beta,
          T* C, Index ldc) {
  for (Index i = 0; i < M; ++i) {
    for (Index j = 0; j < N; ++j) {
      double sum = 0.0;
      for (Index k = 0; k < K; ++k) {
        const T a = op_a == Op::NoTrans ? A[i * lda + k] : A[k * lda + i];
        const T b = op_b == Op::NoTrans ? B[k * ldb + j] : B[j * ldb + k];
        sum += static_cast<double>(a) * static_cast<double>(b);
      }
      const double old = beta == T(0) ? 0.0 : static_cast<double>(beta) * static_cast<double>(C[i * ldc + j]);
      C[i * ldc + j] = static_cast<T>(static_cast<double>(alpha) * sum + old);
    }
  }
}

}  // namespace reference

template <class T>
void gemm(Op op_a, Op op_b, Index M, Index N, Index K, T alpha, const T* A, Index lda, const T* B, Index ldb, T beta,
          T* C, Index ldc) {
  if (M <= 0 || N <= 0) return;
  if (reference_kernels()) return reference::gemm(op_a, op_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);

  using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  Eigen::Map<Matrix, Eigen::Unaligned, Stride> c(C, M, N, Stride(ldc));
  if (beta == T(0)) {
    c.setZero();
  } else if (beta != T(1)) {
    c *= beta;
  }
  if (K <= 0) return;
  const Index a_rows = op_a == Op::NoTrans ? M : K, a_cols = op_a == Op::NoTrans ? K : M;
  const Index b_rows = op_b == Op::NoTrans ? K : N, b_cols = op_b == Op::NoTrans ? N : K;
  Eigen::Map<const Matrix, Eigen::Unaligned, Stride> a(A, a_rows, a_cols, Stride(lda));
  Eigen::Map<const Matrix, Eigen::Unaligned, Stride> b(B, b_rows, b_cols, Stride(ldb));
  if (op_a == Op::NoTrans && op_b == Op::NoTrans) {
    c.noalias() += alpha * (a * b);
  } else if (op_a == Op::NoTrans) {
    c.noalias() += alpha * (a * b.transpose());
  } else if (op_b == Op::NoTrans) {
    c.noalias() += alpha * (a.transpose() * b);
  } else {
    c.noalias() += alpha * (a.transpose() * b.transpose());
  }
}

}  // namespace diffusion::kernels

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
