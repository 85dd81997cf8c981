#pragma once
// The fp32 GEMM of AVX-512 CPUs: C = alpha * op(A) * op(B) + beta * C, arguments as kernels/gemm.hpp's. The same
// scheme as gemm_bf16 (kernels/gemm_bf16.hpp) with fp32 operands: A packed into tiles of 14 rows, B into panels of
// 32 columns, and a micro-kernel that keeps a 14 x 32 tile of C in 28 zmm registers while it walks K (per k: two
// loads of B, 14 broadcasts of A, 28 vfmadd231ps). It replaces Eigen's GEMM where the CPU has AVX-512: Eigen 3.4's
// micro-kernel reaches 54-66% of a core's FMA peak on the U-Net's shapes (benchmarks/README.md), and a GEMM whose
// packed layout is ours lets a convolution pack its weights once per call and write its im2col rows straight into
// packed panels (kernels/conv2d.hpp), as the bf16 path does.
//
// Exactly what it computes (reference::gemm_f32 spells it out; the tests check the kernel against it bit for bit):
//   acc = 0 (fp32); for k = 0, 1, ..., K - 1: acc = fma(a(i, k), b(k, j), acc)      (one fused multiply-add each)
//   C(i, j) = beta == 0 ? alpha * acc : fma(alpha, acc, beta * C(i, j))              (beta = 0 ignores C, NaNs too)
// One chain over the whole K (no blocking along K), so the result depends on neither block sizes nor threads; like
// every kernel here it is single-threaded: the caller parallelises.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "diffusion/core/shape.hpp"
#include "diffusion/kernels/dispatch.hpp"
#include "diffusion/kernels/gemm_op.hpp"
#include "diffusion/kernels/gemm_tile.hpp"  // defines DIFFUSION_HAVE_AVX512 where the CPU target has AVX-512
#include "diffusion/kernels/scratch.hpp"

namespace diffusion::kernels {

// Whether gemm_f32 has its AVX-512 kernel in this build (compile time: the library is built per machine).
constexpr bool f32_gemm_available() {
#ifdef DIFFUSION_HAVE_AVX512
  return true;
#else
  return false;
#endif
}

namespace reference {

// gemm_f32 as its header comment defines it, one fused multiply-add at a time.
inline void gemm_f32(Op op_a, Op op_b, Index M, Index N, Index K, float alpha, const float* A, Index lda,
                     const float* B, Index ldb, float beta, float* C, Index ldc) {
  for (Index i = 0; i < M; ++i) {
    for (Index j = 0; j < N; ++j) {
      float acc = 0.0f;
      for (Index k = 0; k < K; ++k) {
        const float a = op_a == Op::NoTrans ? A[i * lda + k] : A[k * lda + i];
        const float b = op_b == Op::NoTrans ? B[k * ldb + j] : B[j * ldb + k];
        acc = std::fma(a, b, acc);
      }
      float& c = C[i * ldc + j];
      c = beta == 0.0f ? alpha * acc : std::fma(alpha, acc, beta * c);
    }
  }
}

}  // namespace reference

#ifdef DIFFUSION_HAVE_AVX512
namespace detail {

inline constexpr int kF32Mr = 14;  // rows of C per micro-tile (divides the U-Net's channel counts 28, 56, 112, 224)
inline constexpr int kF32Nr = 32;  // columns of C per micro-tile: two zmm of 16 floats

// 8 consecutive elements (from `from`) of each of `count` <= 8 vectors `stride` apart, transposed: r[p] element q =
// element p of vector q (0 for q >= count).
inline void load_transposed8(const float* from, Index stride, int count, __m256i r[8]) {
  for (int q = 0; q < 8; ++q)
    r[q] = q < count ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from + q * stride)) : _mm256_setzero_si256();
  transpose8x8(r);
}

// Packs rows [row0, row0 + rows) of op(A) (rows <= kF32Mr) into dst[k * kF32Mr + i], zero-padded to kF32Mr rows.
inline void pack_f32_a_tile(Op op_a, const float* A, Index lda, Index K, Index row0, int rows, float* dst) {
  constexpr int mr = kF32Mr;
  if (rows < mr) std::fill(dst, dst + K * mr, 0.0f);
  if (op_a == Op::NoTrans) {  // a row's k lie side by side: 8 rows x 8 k at a time, transposed
    const float* tile = A + row0 * lda;
    Index k = 0;
    for (; k + 8 <= K; k += 8) {
      __m256i r[8];
      float* d = dst + k * mr;
      load_transposed8(tile + k, lda, std::min(rows, 8), r);  // rows 0-7
      for (int p = 0; p < 8; ++p) _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + p * mr), r[p]);
      if (rows > 8) {
        load_transposed8(tile + 8 * lda + k, lda, rows - 8, r);  // rows 8-13
        for (int p = 0; p < 8; ++p) _mm256_mask_storeu_epi32(d + p * mr + 8, __mmask8(0x3F), r[p]);
      }
    }
    for (int i = 0; i < rows; ++i)
      for (Index kk = k; kk < K; ++kk) dst[kk * mr + i] = tile[i * lda + kk];
  } else {  // stored K x M: the tile's rows lie side by side in each row of the storage
    const __mmask16 lanes = first_lanes(rows);
    for (Index k = 0; k < K; ++k)
      _mm512_mask_storeu_ps(dst + k * mr, lanes, _mm512_maskz_loadu_ps(lanes, A + k * lda + row0));
  }
}

// Packs columns [col0, col0 + cols) of op(B) (cols <= kF32Nr) into dst[k * kF32Nr + j], zero-padded to kF32Nr.
inline void pack_f32_b_panel(Op op_b, const float* B, Index ldb, Index K, Index col0, int cols, float* dst) {
  constexpr int nr = kF32Nr;
  if (op_b == Op::NoTrans) {  // each row of B holds the panel's columns side by side
    const __mmask16 low = first_lanes(cols), high = first_lanes(cols - 16);
    for (Index k = 0; k < K; ++k) {
      const float* row = B + k * ldb + col0;
      _mm512_storeu_ps(dst + k * nr, _mm512_maskz_loadu_ps(low, row));
      _mm512_storeu_ps(dst + k * nr + 16, _mm512_maskz_loadu_ps(high, row + 16));
    }
  } else {  // stored N x K: a column's k lie side by side: 8 columns x 8 k at a time, transposed
    if (cols < nr) std::fill(dst, dst + K * nr, 0.0f);
    const Index vector_k = K / 8 * 8;
    for (int j0 = 0; j0 < cols; j0 += 8) {
      const float* from = B + (col0 + j0) * ldb;
      for (Index k = 0; k < vector_k; k += 8) {
        __m256i r[8];
        load_transposed8(from + k, ldb, std::min(cols - j0, 8), r);
        for (int p = 0; p < 8; ++p) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (k + p) * nr + j0), r[p]);
      }
    }
    for (int j = 0; j < cols; ++j)
      for (Index k = vector_k; k < K; ++k) dst[k * nr + j] = B[(col0 + j) * ldb + k];
  }
}

// C tile (rows x cols, rows <= Rows <= kF32Mr, cols <= 16 * Vectors) = alpha * a_tile . b_panel + beta * C, from
// the first Rows rows of the tile (a partial tile of 1 to 8 rows computes only those: the same chain per element).
// Never inlined, for the reason bf16_micro_kernel is not (28 accumulators: inlined, GCC may spill some).
template <int Rows, int Vectors>
__attribute__((noinline)) void f32_micro_kernel(Index K, const float* a, const float* b, float* C, Index ldc, int rows, int cols,
                             float alpha, float beta) {
  constexpr int mr = kF32Mr, nr = kF32Nr;
  __m512 acc[Rows][Vectors];
  for (int i = 0; i < Rows; ++i)
    for (int v = 0; v < Vectors; ++v) acc[i][v] = _mm512_setzero_ps();
  for (Index k = 0; k < K; ++k) {
    __m512 bv[Vectors];
    for (int v = 0; v < Vectors; ++v) bv[v] = _mm512_loadu_ps(b + k * nr + 16 * v);
    for (int i = 0; i < Rows; ++i) {
      const __m512 ai = _mm512_set1_ps(a[k * mr + i]);
      for (int v = 0; v < Vectors; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < rows; ++i)
    for (int v = 0; v < Vectors; ++v)
      store_tile_vector(acc[i][v], C + i * ldc + 16 * v, first_lanes(cols - 16 * v), alpha, beta);
}

// Calls kernel(rows_constant, vectors_constant) (std::integral_constant<int, ...>) with the micro-kernel size for a
// tile of `rows` rows (up to kF32Mr) and `cols` columns (up to kF32Nr): 14, 8, 4 or 2 rows, one or two vectors. Both
// fp32 micro-kernels take their sizes from here (this one and conv2d.hpp's f32_image_micro_kernel).
template <class Kernel>
inline void f32_tile_shape(int rows, int cols, Kernel&& kernel) {
  const auto with_vectors = [&](auto vectors) {
    if (rows > 8)
      kernel(std::integral_constant<int, kF32Mr>{}, vectors);
    else if (rows > 4)
      kernel(std::integral_constant<int, 8>{}, vectors);
    else if (rows > 2)
      kernel(std::integral_constant<int, 4>{}, vectors);
    else
      kernel(std::integral_constant<int, 2>{}, vectors);
  };
  if (cols > 16)
    with_vectors(std::integral_constant<int, 2>{});
  else
    with_vectors(std::integral_constant<int, 1>{});
}

// C's columns [col0, col0 + cols) (cols <= kF32Nr) = alpha * A . (one packed panel of B) + beta * C, every tile of A.
inline void f32_multiply_panel(Index M, Index K, float alpha, const float* a_packed, const float* b_panel, float beta,
                               float* C, Index ldc, Index col0, int cols) {
  const Index m_tiles = (M + kF32Mr - 1) / kF32Mr;
  for (Index t = 0; t < m_tiles; ++t) {
    const int rows = static_cast<int>(std::min<Index>(kF32Mr, M - t * kF32Mr));
    float* c = C + t * kF32Mr * ldc + col0;
    const float* a = a_packed + t * kF32Mr * K;
    f32_tile_shape(rows, cols, [&](auto rows_c, auto vectors_c) {
      f32_micro_kernel<decltype(rows_c)::value, decltype(vectors_c)::value>(K, a, b_panel, c, ldc, rows, cols, alpha,
                                                                           beta);
    });
  }
}

}  // namespace detail

// A packed for gemm_f32_packed_a: ceil(M / 14) tiles of 14 rows x K, padded to a multiple of 16 floats (64 bytes).
inline Index f32_packed_a_floats(Index M, Index K) {
  const Index tiles = (M + detail::kF32Mr - 1) / detail::kF32Mr;
  return (tiles * detail::kF32Mr * K + 15) / 16 * 16;
}

// Packs op(A) (M x K) into dst (f32_packed_a_floats(M, K) floats).
inline void pack_f32_a(Op op_a, Index M, Index K, const float* A, Index lda, float* dst) {
  using namespace detail;
  const Index m_tiles = (M + kF32Mr - 1) / kF32Mr;
  for (Index t = 0; t < m_tiles; ++t) {
    const int rows = static_cast<int>(std::min<Index>(kF32Mr, M - t * kF32Mr));
    pack_f32_a_tile(op_a, A, lda, K, t * kF32Mr, rows, dst + t * kF32Mr * K);
  }
}

// gemm_f32 with A already packed by pack_f32_a (M, K as packed; K >= 1): the same numbers bit for bit.
inline void gemm_f32_packed_a(Index M, Index N, Index K, float alpha, const float* a_packed, Op op_b, const float* B,
                              Index ldb, float beta, float* C, Index ldc) {
  using namespace detail;
  if (M <= 0 || N <= 0) return;
  ScratchBuffer<float, Scratch::GemmPanelF32> panel(static_cast<std::size_t>(K * kF32Nr));
  for (Index col0 = 0; col0 < N; col0 += kF32Nr) {
    const int cols = static_cast<int>(std::min<Index>(kF32Nr, N - col0));
    pack_f32_b_panel(op_b, B, ldb, K, col0, cols, panel.data());
    f32_multiply_panel(M, K, alpha, a_packed, panel.data(), beta, C, ldc, col0, cols);
  }
}

// B (K x N) packed whole: ceil(N / 32) panels of K x 32 floats, zero-padded. For B produced row by row (a
// convolution's im2col matrix), so that its rows go straight into panels without a copy of the whole matrix.
inline Index f32_packed_b_floats(Index N, Index K) {
  return (N + detail::kF32Nr - 1) / detail::kF32Nr * K * detail::kF32Nr;
}

// Copies row k of B (N floats) into row k of every panel of dst (f32_packed_b_floats(N, K) floats).
inline void pack_f32_b_row(Index N, Index K, Index k, const float* row, float* dst) {
  using namespace detail;
  for (Index col0 = 0; col0 < N; col0 += kF32Nr) {
    float* d = dst + (col0 / kF32Nr) * K * kF32Nr + k * kF32Nr;
    _mm512_storeu_ps(d, _mm512_maskz_loadu_ps(first_lanes(N - col0), row + col0));
    _mm512_storeu_ps(d + 16, _mm512_maskz_loadu_ps(first_lanes(N - col0 - 16), row + col0 + 16));
  }
}

// gemm_f32 with A packed by pack_f32_a and B packed whole (f32_packed_b_floats, pack_f32_b_row): the same numbers
// as gemm_f32 on the unpacked operands, bit for bit.
inline void gemm_f32_packed(Index M, Index N, Index K, float alpha, const float* a_packed, const float* b_packed,
                            float beta, float* C, Index ldc) {
  using namespace detail;
  if (M <= 0 || N <= 0) return;
  for (Index col0 = 0; col0 < N; col0 += kF32Nr) {
    const int cols = static_cast<int>(std::min<Index>(kF32Nr, N - col0));
    f32_multiply_panel(M, K, alpha, a_packed, b_packed + (col0 / kF32Nr) * K * kF32Nr, beta, C, ldc, col0, cols);
  }
}
#endif

// C = alpha * op(A) * op(B) + beta * C in fp32 as the header comment defines it. Without AVX-512 it computes the same
// numbers with the reference loop (slowly): kernels::gemm only calls it where f32_gemm_available().
inline void gemm_f32(Op op_a, Op op_b, Index M, Index N, Index K, float alpha, const float* A, Index lda,
                     const float* B, Index ldb, float beta, float* C, Index ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // an empty sum: C = beta * C
    detail::scale_c(M, N, beta, C, ldc);
    return;
  }
#ifdef DIFFUSION_HAVE_AVX512
  if (!reference_kernels()) {
    ScratchBuffer<float, Scratch::GemmPackedAF32> a_packed(static_cast<std::size_t>(f32_packed_a_floats(M, K)));
    pack_f32_a(op_a, M, K, A, lda, a_packed.data());
    gemm_f32_packed_a(M, N, K, alpha, a_packed.data(), op_b, B, ldb, beta, C, ldc);
    return;
  }
#endif
  reference::gemm_f32(op_a, op_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace diffusion::kernels
