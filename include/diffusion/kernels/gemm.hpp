#pragma once
// GEMM on row-major matrices: C = alpha * op(A) * op(B) + beta * C. Float GEMMs go to gemm_bf16 while the matmul
// precision is bf16 (kernels/precision.hpp), to oneDNN's sgemm where the build links it (DIFFUSION_USE_ONEDNN), else
// to gemm_f32 on AVX-512 CPUs (kernels/gemm_f32.hpp); everything else (double, CPUs without AVX-512) to Eigen.
//
// A is M x K (op = NoTrans, leading dimension lda >= K) or stored K x M (op = Trans, lda >= M); likewise B is K x N
// or stored N x K. C is M x N with leading dimension ldc. beta = 0 ignores C's old contents (NaNs included).
// Always single-threaded: callers parallelise over independent GEMMs (images, heads, slabs), which keeps results
// identical for every thread count (Eigen's own threading would choose block sizes from the thread count).
// With Eigen 3.4 the product goes straight to Eigen's blocked GEMM (general_matrix_matrix_product, Goto's
// algorithm) with its packing buffers in per-thread scratch memory: Eigen's Map expressions would otherwise
// malloc ~1 MB of packing space on every call, thousands of times per training step.

#ifndef EIGEN_DONT_PARALLELIZE
#define EIGEN_DONT_PARALLELIZE
#endif
// GCC 12 reports false -Wmaybe-uninitialized (-O2/-O3) and -Wuninitialized (-O1, the sanitizer build) inside Eigen's
// AVX-512 packing and transposition code: the intrinsics' deliberately undefined operands (_mm512_undefined_ps).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <Eigen/Core>
#include <cstdint>
#include <optional>
#include <type_traits>
#ifdef DIFFUSION_USE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

#include "diffusion/core/parallel.hpp"
#include "diffusion/core/shape.hpp"
#include "diffusion/kernels/dispatch.hpp"
#include "diffusion/kernels/gemm_f32.hpp"
#include "diffusion/kernels/gemm_op.hpp"
#include "diffusion/kernels/precision.hpp"
#include "diffusion/kernels/scratch.hpp"

namespace diffusion::kernels {

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

#if EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90)
#define DIFFUSION_EIGEN_GEMM_INTERNALS 1

namespace detail {

// Eigen's blocking object with its packed-panel buffers in this thread's scratch memory (held while it lives).
template <class T>
class ScratchBlocking : public Eigen::internal::level3_blocking<T, T> {
 public:
  ScratchBlocking(Index rows, Index cols, Index depth) : ScratchBlocking(Sizes::of(rows, cols, depth)) {}

 private:
  struct Sizes {
    Index mc, nc, kc;
    std::size_t a_padded, total;  // A's panel padded to 64 elements (keeps blockB 64-byte aligned), A + B
    static Sizes of(Index rows, Index cols, Index depth) {
      Sizes s{rows, cols, depth, 0, 0};
      Eigen::internal::computeProductBlockingSizes<T, T, 1>(s.kc, s.mc, s.nc, Index(1));
      s.a_padded = (static_cast<std::size_t>(s.kc * s.mc) + 63) / 64 * 64;
      s.total = s.a_padded + static_cast<std::size_t>(s.kc * s.nc);
      return s;
    }
  };
  explicit ScratchBlocking(const Sizes& s) : packing_(s.total) {
    this->m_mc = s.mc;
    this->m_nc = s.nc;
    this->m_kc = s.kc;
    this->m_blockA = packing_.data();
    this->m_blockB = packing_.data() + s.a_padded;
  }

  ScratchBuffer<T, Scratch::GemmPacking> packing_;
};

// res (column-major rows x cols) += alpha * lhs (rows x depth, LhsOrder) * rhs (depth x cols, RhsOrder).
template <class T, int LhsOrder, int RhsOrder>
void eigen_gemm(Index rows, Index cols, Index depth, const T* lhs, Index lhs_stride, const T* rhs, Index rhs_stride,
                T* res, Index res_stride, T alpha) {
  ScratchBlocking<T> blocking(rows, cols, depth);
  Eigen::internal::general_matrix_matrix_product<Index, T, LhsOrder, false, T, RhsOrder, false, Eigen::ColMajor,
                                                 1>::run(rows, cols, depth, lhs, lhs_stride, rhs, rhs_stride, res, 1,
                                                         res_stride, alpha, blocking);
}

}  // namespace detail
#endif

#ifdef DIFFUSION_USE_ONEDNN
// Optional backend (define DIFFUSION_USE_ONEDNN and link oneDNN, e.g. the CMake option DIFFUSION_ONEDNN): float
// GEMMs through oneDNN's dnnl_sgemm, whose AVX-512 kernels run the U-Net's shapes 12-51% faster than Eigen 3.4's
// here (benchmarks/README.md). Always single-threaded, like the Eigen path: inside a parallel region oneDNN runs
// sequentially by itself; outside one it would use every OpenMP thread, so the thread count is set to 1 around the
// call (results must not depend on it). beta = 0 must ignore C's old contents (NaNs included), as BLAS specifies;
// the tests check it. Returns false if oneDNN reports an error; the caller then uses Eigen.
inline bool onednn_sgemm(Op op_a, Op op_b, Index M, Index N, Index K, float alpha, const float* A, Index lda,
                         const float* B, Index ldb, float beta, float* C, Index ldc) {
  const bool serial = !in_parallel_region();
  const int saved = max_threads();
  if (serial && saved > 1) set_num_threads(1);
  const dnnl_status_t status = dnnl_sgemm(op_a == Op::Trans ? 'T' : 'N', op_b == Op::Trans ? 'T' : 'N', M, N, K,
                                          alpha, A, lda, B, ldb, beta, C, ldc);
  if (serial && saved > 1) set_num_threads(saved);
  return status == dnnl_success;
}
#endif

// Whether fp32 GEMMs run gemm_f32 (AVX-512, and no oneDNN backend asked for).
constexpr bool native_f32_gemm() {
#ifdef DIFFUSION_USE_ONEDNN
  return false;
#else
  return f32_gemm_available();
#endif
}

template <class T>
void gemm(Op op_a, Op op_b, Index M, Index N, Index K, T alpha, const T* A, Index lda, const T* B, Index ldb, T beta,
          T* C, Index ldc) {
  if (M <= 0 || N <= 0) return;
  if constexpr (std::is_same_v<T, float>) {  // mixed precision (kernels/precision.hpp); its own reference twin
    if (effective_matmul_precision(matmul_precision()) == MatmulPrecision::Bf16)
      return gemm_bf16(op_a, op_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  if (reference_kernels()) return reference::gemm(op_a, op_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#ifdef DIFFUSION_USE_ONEDNN
  if constexpr (std::is_same_v<T, float>) {
    if (K > 0 && onednn_sgemm(op_a, op_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  }
#endif
  if constexpr (std::is_same_v<T, float> && native_f32_gemm())
    return gemm_f32(op_a, op_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);

  using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  Eigen::Map<Matrix, Eigen::Unaligned, Stride> c(C, M, N, Stride(ldc));
  if (beta == T(0)) {
    c.setZero();
  } else if (beta != T(1)) {
    c *= beta;
  }
  if (K <= 0) return;
#ifdef DIFFUSION_EIGEN_GEMM_INTERNALS
  // Row-major C (M x N) is column-major C^T (N x M) = op(B)^T op(A)^T: lhs = op(B)^T, rhs = op(A)^T.
  // A row-major stored matrix read as column-major is its transpose, hence the storage orders below.
  constexpr int Row = Eigen::RowMajor, Col = Eigen::ColMajor;
  if (op_b == Op::NoTrans && op_a == Op::NoTrans)
    detail::eigen_gemm<T, Col, Col>(N, M, K, B, ldb, A, lda, C, ldc, alpha);
  else if (op_b == Op::NoTrans)
    detail::eigen_gemm<T, Col, Row>(N, M, K, B, ldb, A, lda, C, ldc, alpha);
  else if (op_a == Op::NoTrans)
    detail::eigen_gemm<T, Row, Col>(N, M, K, B, ldb, A, lda, C, ldc, alpha);
  else
    detail::eigen_gemm<T, Row, Row>(N, M, K, B, ldb, A, lda, C, ldc, alpha);
#else
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
#endif
}

// The A operand of many GEMMs: `count` matrices op(A_g) of M x K, A_g = A + g * stride (a convolution's weights,
// one per group, multiplied by every image of the batch; or the output gradient of every image, multiplied by each
// block of the im2col matrix). Where the float GEMMs pack their operands themselves (gemm_bf16 in a bf16 scope,
// gemm_f32 otherwise on AVX-512 CPUs) they are packed here once (in parallel over the matrices), into the calling
// thread's scratch, instead of once per GEMM; the worker threads of the caller's parallel loop read the packed tiles
// while this object lives. Otherwise it only remembers them (Eigen and oneDNN pack per call). gemm(shared, g, ...)
// gives the numbers gemm gives for A_g, bit for bit.
template <class T>
class SharedA {
 public:
  SharedA(Op op, Index M, Index K, const T* A, Index lda, Index count = 1, Index stride = 0)
      : op_(op), M_(M), K_(K), lda_(lda), stride_(stride), A_(A) {
    if constexpr (std::is_same_v<T, float>) {
      if (M <= 0 || K <= 0 || count <= 0 || reference_kernels()) return;
      if (effective_matmul_precision(matmul_precision()) == MatmulPrecision::Bf16) {
#ifdef DIFFUSION_HAVE_AVX512_BF16
        words_ = bf16_packed_a_words(M, K);
        packed_.emplace(static_cast<std::size_t>(words_ * count));
        std::uint32_t* tiles = packed_->data();
        parallel_for(0, count, double(M * K), [&](Index g) {  // each matrix into its own words
          pack_bf16_a(op, M, K, A + g * stride, lda, tiles + g * words_);
        });
#endif
      } else if (native_f32_gemm()) {
#ifdef DIFFUSION_HAVE_AVX512
        words_ = f32_packed_a_floats(M, K);
        packed_f32_.emplace(static_cast<std::size_t>(words_ * count));
        float* tiles = packed_f32_->data();
        parallel_for(0, count, double(M * K), [&](Index g) {
          pack_f32_a(op, M, K, A + g * stride, lda, tiles + g * words_);
        });
#endif
      }
    }
    (void)count;
  }

  Index rows() const { return M_; }
  // A_g's bf16 tiles (pack_bf16_a's layout), or null where this is not a bf16 SharedA.
  const std::uint32_t* bf16_tiles(Index g) const { return packed_ ? packed_->data() + g * words_ : nullptr; }
  // A_g's fp32 tiles (pack_f32_a's layout), or null where gemm_f32 does not run.
  const float* f32_tiles(Index g) const { return packed_f32_ ? packed_f32_->data() + g * words_ : nullptr; }

  template <class U>
  friend void gemm(const SharedA<U>& a, Index g, Op op_b, Index N, U alpha, const U* B, Index ldb, U beta, U* C,
                   Index ldc);

 private:
  Op op_;
  Index M_, K_, lda_, stride_;
  const T* A_;
  Index words_ = 0;                                                              // per A_g
  std::optional<ScratchBuffer<std::uint32_t, Scratch::GemmSharedA>> packed_;    // bf16 tiles of every A_g
  std::optional<ScratchBuffer<float, Scratch::GemmSharedA>> packed_f32_;        // or its fp32 tiles
};

// C = alpha * op(A_g) * op(B) + beta * C, A_g the g-th matrix of `a` (M x K as given there).
template <class T>
void gemm(const SharedA<T>& a, Index g, Op op_b, Index N, T alpha, const T* B, Index ldb, T beta, T* C, Index ldc) {
#ifdef DIFFUSION_HAVE_AVX512_BF16
  if constexpr (std::is_same_v<T, float>) {
    if (a.packed_)
      return gemm_bf16_packed_a(a.M_, N, a.K_, alpha, a.packed_->data() + g * a.words_, op_b, B, ldb, beta, C, ldc);
  }
#endif
#ifdef DIFFUSION_HAVE_AVX512
  if constexpr (std::is_same_v<T, float>) {
    if (a.packed_f32_)
      return gemm_f32_packed_a(a.M_, N, a.K_, alpha, a.f32_tiles(g), op_b, B, ldb, beta, C, ldc);
  }
#endif
  gemm(a.op_, op_b, a.M_, N, a.K_, alpha, a.A_ + g * a.stride_, a.lda_, B, ldb, beta, C, ldc);
}

}  // namespace diffusion::kernels

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
