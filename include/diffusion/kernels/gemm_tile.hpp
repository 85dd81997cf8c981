#pragma once
// Pieces shared by the packed AVX-512 GEMMs (gemm_f32.hpp, gemm_bf16.hpp): lane masks for partial vectors, an 8 x 8
// transpose of 32-bit words (packing a matrix whose k lie side by side into k-major panels), and the write of one
// row of a C tile (alpha * acc + beta * C, beta = 0 ignoring C); and C = beta * C for an empty sum (K = 0).

#include "diffusion/core/shape.hpp"

namespace diffusion::kernels::detail {

// C = beta * C over M x N: a product whose depth K is 0 (beta = 0 writes zeros without reading C).
inline void scale_c(Index M, Index N, float beta, float* C, Index ldc) {
  for (Index i = 0; i < M; ++i)
    for (Index j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

}  // namespace diffusion::kernels::detail

#if defined(__AVX512F__) && defined(__AVX512VL__)
#define DIFFUSION_HAVE_AVX512 1
#include <immintrin.h>

namespace diffusion::kernels::detail {

// The first n of 16 lanes (none for n <= 0, all for n >= 16).
inline __mmask16 first_lanes(Index n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1u);
}

// Transposes 8 x 8 32-bit words in place: r[q] word p becomes r[p] word q.
inline void transpose8x8(__m256i r[8]) {
  __m256i t[8], u[8];
  for (int q = 0; q < 8; q += 2) {
    t[q] = _mm256_unpacklo_epi32(r[q], r[q + 1]);
    t[q + 1] = _mm256_unpackhi_epi32(r[q], r[q + 1]);
  }
  for (int q = 0; q < 8; q += 4) {
    u[q] = _mm256_unpacklo_epi64(t[q], t[q + 2]);
    u[q + 1] = _mm256_unpackhi_epi64(t[q], t[q + 2]);
    u[q + 2] = _mm256_unpacklo_epi64(t[q + 1], t[q + 3]);
    u[q + 3] = _mm256_unpackhi_epi64(t[q + 1], t[q + 3]);
  }
  for (int q = 0; q < 4; ++q) {
    r[q] = _mm256_permute2x128_si256(u[q], u[q + 4], 0x20);
    r[q + 4] = _mm256_permute2x128_si256(u[q], u[q + 4], 0x31);
  }
}

// c[0, 16) in `lanes` = alpha * acc + beta * c (beta = 0: alpha * acc, c not read).
inline void store_tile_vector(__m512 acc, float* c, __mmask16 lanes, float alpha, float beta) {
  const __m512 alpha_v = _mm512_set1_ps(alpha);
  if (beta == 0.0f) {
    _mm512_mask_storeu_ps(c, lanes, _mm512_mul_ps(alpha_v, acc));
  } else {
    const __m512 old = _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(lanes, c));
    _mm512_mask_storeu_ps(c, lanes, _mm512_fmadd_ps(alpha_v, acc, old));
  }
}

}  // namespace diffusion::kernels::detail
#endif
