#pragma once
// GEMM with bfloat16 operands and fp32 accumulation, for mixed precision (the primer's `amp = True`):
// C = alpha * op(A) * op(B) + beta * C, with A, B and C in fp32 as in kernels/gemm.hpp (same arguments). A and B are
// rounded to bfloat16 as they are packed, by the CPU's vcvtneps2bf16 (round to nearest even, NaN kept: what
// PyTorch's .to(torch.bfloat16) does, except that subnormal floats, |x| < 1.2e-38, become zero), and multiplied with
// AVX512_BF16's vdpbf16ps, which does 32 multiply-adds per instruction where vfmadd231ps does 16: twice the fp32 rate on the CPUs that have it. Weights stay fp32 in memory (the master copy); only the
// packed panels are bf16, so this is autocast's "matmuls in bf16" without a second copy of anything.
//
// Exactly what it computes (reference::gemm_bf16 spells it out; the tests check the kernel against it bit for bit):
//   a(i, k), b(k, j): the operands rounded to bf16; K odd: one more k with a = b = 0.
//   acc = 0 (fp32); for k-pairs p = 0, 1, ...: acc += a(i, 2p+1) b(2p+1, j); acc += a(i, 2p) b(2p, j)
//     (each product of two bf16 values is exact in fp32; each sum rounds to nearest even: vdpbf16ps's definition)
//   C(i, j) = beta == 0 ? alpha * acc : fma(alpha, acc, beta * C(i, j))     (beta = 0 ignores C, NaNs included)
// vdpbf16ps also flushes subnormal sums to zero; the reference does the same. The sum runs over the whole K in one
// chain (no blocking along K), so the result does not depend on block sizes, and like every kernel here it is
// single-threaded: the caller parallelises.
//
// Layout (Goto's scheme without the K blocking): A is packed once into tiles of 14 rows, each k-pair of a row one
// 32-bit word (two bf16); each panel of 32 columns of B is packed likewise, one word per (k-pair, column), and the
// micro-kernel keeps a 14 x 32 tile of C in 28 zmm registers while it walks the k-pairs: per pair, two loads of B,
// 14 broadcasts of A, 28 vdpbf16ps. 14 rows (kBf16Mr) divide the U-Net's channel counts (28, 56, 112, 224).
//
// Written with AVX-512 intrinsics rather than xsimd: xsimd 8.1 has no bf16 type or dot product.
//
// Where the CPU lacks AVX512_BF16 (or the compiler was not told it has it: -march=native on such a CPU),
// bf16_gemm_available() is false and kernels::gemm runs fp32 instead (kernels/precision.hpp).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512BW__) && defined(__AVX512BF16__)
#define DIFFUSION_HAVE_AVX512_BF16 1
#include <immintrin.h>
#endif

#include "diffusion/core/shape.hpp"
#include "diffusion/kernels/dispatch.hpp"
#include "diffusion/kernels/gemm_op.hpp"
#include "diffusion/kernels/gemm_tile.hpp"
#include "diffusion/kernels/scratch.hpp"

namespace diffusion::kernels {

// Whether gemm_bf16 runs on this build's CPU target (compile time: the library is built per machine).
constexpr bool bf16_gemm_available() {
#ifdef DIFFUSION_HAVE_AVX512_BF16
  return true;
#else
  return false;
#endif
}

// The bf16 nearest to x, ties to even, as its 16 bits in the upper half of a 32-bit word (the lower half zero);
// a NaN stays a (quiet) NaN and a subnormal x becomes a zero of its sign. This is the rounding of every operand of
// gemm_bf16: vcvtneps2bf16's, as Intel's SDM spells it out (the packers use the instruction).
inline std::uint32_t bf16_round_bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if (std::isnan(x)) return (u | 0x00400000u) & 0xFFFF0000u;
  if ((u & 0x7F800000u) == 0) return u & 0x80000000u;  // zero or subnormal
  return (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
}

// x rounded to bf16, as a float.
inline float bf16_round(float x) {
  const std::uint32_t u = bf16_round_bits(x);
  float r;
  std::memcpy(&r, &u, sizeof r);
  return r;
}

namespace reference {

// gemm_bf16 as its header comment defines it, one multiply-add at a time.
inline void gemm_bf16(Op op_a, Op op_b, Index M, Index N, Index K, float alpha, const float* A, Index lda,
                      const float* B, Index ldb, float beta, float* C, Index ldc) {
  const auto flush = [](float x) { return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x; };
  const auto a = [&](Index i, Index k) {
    return k >= K ? 0.0f : bf16_round(op_a == Op::NoTrans ? A[i * lda + k] : A[k * lda + i]);
  };
  const auto b = [&](Index k, Index j) {
    return k >= K ? 0.0f : bf16_round(op_b == Op::NoTrans ? B[k * ldb + j] : B[j * ldb + k]);
  };
  for (Index i = 0; i < M; ++i) {
    for (Index j = 0; j < N; ++j) {
      float acc = 0.0f;
      for (Index k = 0; k < K; k += 2) {
        const float odd = a(i, k + 1) * b(k + 1, j), even = a(i, k) * b(k, j);  // exact
        acc = flush(acc + odd);
        acc = flush(acc + even);
      }
      float& c = C[i * ldc + j];
      c = beta == 0.0f ? alpha * acc : std::fma(alpha, acc, beta * c);
    }
  }
}

}  // namespace reference

#ifdef DIFFUSION_HAVE_AVX512_BF16
namespace detail {

inline constexpr int kBf16Mr = 14;  // rows of C per micro-tile
inline constexpr int kBf16Nr = 32;  // columns of C per micro-tile: two zmm of 16 floats

// 16 pairs whose halves lie in two arrays (even[j], odd[j]): word j = bf16(odd[j]) << 16 | bf16(even[j]).
// vcvtne2ps2bf16 rounds even's 16 floats into the low half of a register and odd's into the high half; vpermw
// interleaves the halves.
inline __m512i bf16_pairs_across(__m512 even, __m512 odd) {
  const __m512i halves = (__m512i)_mm512_cvtne2ps_pbh(odd, even);
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,  //
                                              23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(interleave, halves);
}

// 8 pairs lying side by side in 16 floats (x[2p], x[2p+1]): word p = bf16(x[2p+1]) << 16 | bf16(x[2p]), which is
// vcvtneps2bf16's output as it stands.
inline __m256i bf16_pairs_along(__m512 x) { return (__m256i)_mm512_cvtneps_pbh(x); }

inline std::uint32_t bf16_pair(float even, float odd) { return bf16_round_bits(odd) | (bf16_round_bits(even) >> 16); }

// 8 consecutive k-pairs (16 floats from `from`) of each of `count` <= 8 vectors of a matrix whose k-pairs lie side
// by side (a row of A, a column of B transposed), transposed: r[p] word q = pair p of vector q (0 for q >= count).
inline void pairs_along_transposed(const float* from, Index stride, int count, __m256i r[8]) {
  for (int q = 0; q < 8; ++q)
    r[q] = q < count ? bf16_pairs_along(_mm512_loadu_ps(from + q * stride)) : _mm256_setzero_si256();
  transpose8x8(r);
}

// Packs rows [row0, row0 + rows) of op(A) (rows <= kBf16Mr) into dst[p * kBf16Mr + i], zero-padded to kBf16Mr rows
// and to `pairs` k-pairs.
inline void pack_a_tile(Op op_a, const float* A, Index lda, Index K, Index pairs, Index row0, int rows,
                        std::uint32_t* dst) {
  constexpr int mr = kBf16Mr;
  if (rows < mr) std::fill(dst, dst + pairs * mr, 0u);
  if (op_a == Op::NoTrans) {  // a row's k-pairs lie side by side: 8 rows x 8 pairs at a time, transposed
    const float* tile = A + row0 * lda;
    Index k = 0;
    for (; k + 16 <= K; k += 16) {
      __m256i r[8];
      std::uint32_t* d = dst + (k / 2) * mr;
      pairs_along_transposed(tile + k, lda, std::min(rows, 8), r);  // rows 0-7
      for (int p = 0; p < 8; ++p) _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + p * mr), r[p]);
      if (rows > 8) {
        pairs_along_transposed(tile + 8 * lda + k, lda, rows - 8, r);  // rows 8-13
        for (int p = 0; p < 8; ++p) _mm256_mask_storeu_epi32(d + p * mr + 8, __mmask8(0x3F), r[p]);
      }
    }
    for (int i = 0; i < rows; ++i) {
      const float* row = tile + i * lda;
      for (Index kk = k; kk < K; kk += 2) dst[(kk / 2) * mr + i] = bf16_pair(row[kk], kk + 1 < K ? row[kk + 1] : 0.0f);
    }
  } else {  // stored K x M: a k-pair's halves are two rows of the storage, the tile's rows side by side in each
    const __mmask16 lanes = first_lanes(rows);
    for (Index p = 0; p < pairs; ++p) {
      const Index k = 2 * p;
      const __m512 even = _mm512_maskz_loadu_ps(lanes, A + k * lda + row0);
      const __m512 odd = k + 1 < K ? _mm512_maskz_loadu_ps(lanes, A + (k + 1) * lda + row0) : _mm512_setzero_ps();
      _mm512_mask_storeu_epi32(dst + p * mr, __mmask16((1u << mr) - 1u) & lanes, bf16_pairs_across(even, odd));
    }
  }
}

// Packs columns [col0, col0 + cols) of op(B) (cols <= kBf16Nr) into dst[p * kBf16Nr + j], zero-padded to kBf16Nr.
inline void pack_b_panel(Op op_b, const float* B, Index ldb, Index K, Index pairs, Index col0, int cols,
                         std::uint32_t* dst) {
  constexpr int nr = kBf16Nr;
  if (op_b == Op::NoTrans) {  // a k-pair's halves are two rows of B, the panel's columns side by side in each
    for (Index p = 0; p < pairs; ++p) {
      const Index k = 2 * p;
      for (int half = 0; half < nr; half += 16) {
        const __mmask16 lanes = first_lanes(cols - half);
        const __m512 even = _mm512_maskz_loadu_ps(lanes, B + k * ldb + col0 + half);
        const __m512 odd =
            k + 1 < K ? _mm512_maskz_loadu_ps(lanes, B + (k + 1) * ldb + col0 + half) : _mm512_setzero_ps();
        _mm512_storeu_si512(dst + p * nr + half, bf16_pairs_across(even, odd));
      }
    }
  } else {  // stored N x K: a column's k-pairs lie side by side: 8 columns x 8 pairs at a time, transposed
    if (cols < nr) std::fill(dst, dst + pairs * nr, 0u);
    const Index vector_k = K / 16 * 16;
    for (int j0 = 0; j0 < cols; j0 += 8) {
      const float* from = B + (col0 + j0) * ldb;
      for (Index k = 0; k < vector_k; k += 16) {
        __m256i r[8];
        pairs_along_transposed(from + k, ldb, std::min(cols - j0, 8), r);
        for (int p = 0; p < 8; ++p)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (k / 2 + p) * nr + j0), r[p]);
      }
    }
    for (int j = 0; j < cols; ++j) {
      const float* col = B + (col0 + j) * ldb;
      for (Index k = vector_k; k < K; k += 2) dst[(k / 2) * nr + j] = bf16_pair(col[k], k + 1 < K ? col[k + 1] : 0.0f);
    }
  }
}

// C tile (rows x cols, rows <= kBf16Mr, cols <= 16 * Vectors) = alpha * a_tile . b_panel + beta * C.
// Never inlined: its 28 accumulators, two B vectors and the broadcast take 31 of the 32 zmm registers, and inlined
// into a caller that keeps constants in registers (the convolutions' panel loops) GCC 12 spills accumulators to the
// stack inside the loop (a load and a store per k-pair). A call per 14 x 32 tile costs nothing in comparison.
template <int Vectors>
__attribute__((noinline)) void bf16_micro_kernel(Index pairs, const std::uint32_t* a, const std::uint32_t* b, float* C,
                                                 Index ldc, int rows, int cols, float alpha, float beta) {
  constexpr int mr = kBf16Mr, nr = kBf16Nr;
  __m512 acc[mr][Vectors];
  for (int i = 0; i < mr; ++i)
    for (int v = 0; v < Vectors; ++v) acc[i][v] = _mm512_setzero_ps();
  for (Index p = 0; p < pairs; ++p) {
    __m512bh bv[Vectors];
    for (int v = 0; v < Vectors; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + p * nr + 16 * v);
    for (int i = 0; i < mr; ++i) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[p * mr + i]));
      for (int v = 0; v < Vectors; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], ai, bv[v]);
    }
  }
  for (int i = 0; i < rows; ++i)
    for (int v = 0; v < Vectors; ++v)
      store_tile_vector(acc[i][v], C + i * ldc + 16 * v, first_lanes(cols - 16 * v), alpha, beta);
}

}  // namespace detail
#endif

#ifdef DIFFUSION_HAVE_AVX512_BF16
// A packed for gemm_bf16_packed_a: ceil(M / 14) tiles of 14 rows x ceil(K / 2) k-pairs, one 32-bit word (two bf16)
// per (pair, row), padded to a multiple of 16 words (64 bytes).
inline Index bf16_packed_a_words(Index M, Index K) {
  const Index tiles = (M + detail::kBf16Mr - 1) / detail::kBf16Mr, pairs = (K + 1) / 2;
  return (tiles * detail::kBf16Mr * pairs + 15) / 16 * 16;
}

// Rounds op(A) (M x K) to bf16 and packs it into dst (bf16_packed_a_words(M, K) words).
inline void pack_bf16_a(Op op_a, Index M, Index K, const float* A, Index lda, std::uint32_t* dst) {
  using namespace detail;
  const Index pairs = (K + 1) / 2, m_tiles = (M + kBf16Mr - 1) / kBf16Mr;
  for (Index t = 0; t < m_tiles; ++t) {
    const int rows = static_cast<int>(std::min<Index>(kBf16Mr, M - t * kBf16Mr));
    pack_a_tile(op_a, A, lda, K, pairs, t * kBf16Mr, rows, dst + t * kBf16Mr * pairs);
  }
}

namespace detail {

// C's columns [col0, col0 + cols) (cols <= kBf16Nr) = alpha * A . (one packed panel of B) + beta * C, every tile of A.
inline void multiply_panel(Index M, Index pairs, float alpha, const std::uint32_t* a_packed,
                           const std::uint32_t* b_panel, float beta, float* C, Index ldc, Index col0, int cols) {
  const Index m_tiles = (M + kBf16Mr - 1) / kBf16Mr;
  for (Index t = 0; t < m_tiles; ++t) {
    const int rows = static_cast<int>(std::min<Index>(kBf16Mr, M - t * kBf16Mr));
    float* c = C + t * kBf16Mr * ldc + col0;
    const std::uint32_t* a = a_packed + t * kBf16Mr * pairs;
    if (cols > 16)
      bf16_micro_kernel<2>(pairs, a, b_panel, c, ldc, rows, cols, alpha, beta);
    else
      bf16_micro_kernel<1>(pairs, a, b_panel, c, ldc, rows, cols, alpha, beta);
  }
}

}  // namespace detail

// gemm_bf16 with A already packed by pack_bf16_a (M, K as packed; K >= 1): the same numbers bit for bit. Callers
// that multiply one A by many B (a convolution's weights by every image) pack A once.
inline void gemm_bf16_packed_a(Index M, Index N, Index K, float alpha, const std::uint32_t* a_packed, Op op_b,
                               const float* B, Index ldb, float beta, float* C, Index ldc) {
  using namespace detail;
  if (M <= 0 || N <= 0) return;
  const Index pairs = (K + 1) / 2;
  ScratchBuffer<std::uint32_t, Scratch::GemmPackingBf16> packing(static_cast<std::size_t>(pairs * kBf16Nr));
  std::uint32_t* b_packed = packing.data();
  for (Index col0 = 0; col0 < N; col0 += kBf16Nr) {
    const int cols = static_cast<int>(std::min<Index>(kBf16Nr, N - col0));
    pack_b_panel(op_b, B, ldb, K, pairs, col0, cols, b_packed);
    multiply_panel(M, pairs, alpha, a_packed, b_packed, beta, C, ldc, col0, cols);
  }
}

// B (K x N) packed whole: ceil(N / 32) panels of ceil(K / 2) k-pairs x 32 columns, one word (two bf16) per
// (pair, column), zero-padded. For B that is produced row by row (a convolution's im2col matrix), so that its rows
// go straight into bf16 panels without a float copy of the whole matrix.
inline Index bf16_packed_b_words(Index N, Index K) {
  return (N + detail::kBf16Nr - 1) / detail::kBf16Nr * ((K + 1) / 2) * detail::kBf16Nr;
}

// Packs rows 2 * pair (`even`) and 2 * pair + 1 (`odd`; null past the last row of an odd K) of B, N floats each,
// into k-pair `pair` of every panel of dst (bf16_packed_b_words(N, K) words).
inline void pack_bf16_b_rows(Index N, Index K, Index pair, const float* even, const float* odd, std::uint32_t* dst) {
  using namespace detail;
  const Index pairs = (K + 1) / 2;
  for (Index col0 = 0; col0 < N; col0 += kBf16Nr) {
    std::uint32_t* d = dst + (col0 / kBf16Nr) * pairs * kBf16Nr + pair * kBf16Nr;
    for (Index half = 0; half < kBf16Nr; half += 16) {
      const __mmask16 lanes = first_lanes(N - col0 - half);
      const __m512 e = _mm512_maskz_loadu_ps(lanes, even + col0 + half);
      const __m512 o = odd ? _mm512_maskz_loadu_ps(lanes, odd + col0 + half) : _mm512_setzero_ps();
      _mm512_storeu_si512(d + half, bf16_pairs_across(e, o));
    }
  }
}

// gemm_bf16 with A packed by pack_bf16_a and B packed whole (bf16_packed_b_words, pack_bf16_b_rows): the same
// numbers as gemm_bf16 on the unpacked operands, bit for bit.
inline void gemm_bf16_packed(Index M, Index N, Index K, float alpha, const std::uint32_t* a_packed,
                             const std::uint32_t* b_packed, float beta, float* C, Index ldc) {
  using namespace detail;
  if (M <= 0 || N <= 0) return;
  const Index pairs = (K + 1) / 2;
  for (Index col0 = 0; col0 < N; col0 += kBf16Nr) {
    const int cols = static_cast<int>(std::min<Index>(kBf16Nr, N - col0));
    multiply_panel(M, pairs, alpha, a_packed, b_packed + (col0 / kBf16Nr) * pairs * kBf16Nr, beta, C, ldc, col0,
                   cols);
  }
}
#endif

// C = alpha * op(A) * op(B) + beta * C in bf16 x bf16 -> fp32 (see the header comment). Without AVX512_BF16, or with
// reference_kernels() on, it computes the same numbers with the reference loop (slowly).
inline void gemm_bf16(Op op_a, Op op_b, Index M, Index N, Index K, float alpha, const float* A, Index lda,
                      const float* B, Index ldb, float beta, float* C, Index ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // an empty sum: C = beta * C, as the fp32 gemm does
    detail::scale_c(M, N, beta, C, ldc);
    return;
  }
#ifdef DIFFUSION_HAVE_AVX512_BF16
  if (!reference_kernels()) {
    ScratchBuffer<std::uint32_t, Scratch::GemmPackedA> a_packed(static_cast<std::size_t>(bf16_packed_a_words(M, K)));
    pack_bf16_a(op_a, M, K, A, lda, a_packed.data());
    gemm_bf16_packed_a(M, N, K, alpha, a_packed.data(), op_b, B, ldb, beta, C, ldc);
    return;
  }
#endif
  reference::gemm_bf16(op_a, op_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace diffusion::kernels
