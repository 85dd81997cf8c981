#pragma once
// Depthwise convolution planes (one input and one output channel, e.g. the ConvNeXt block's 7x7), stride 1, as
// SIMD kernels over output rows. Each plane is copied into a zero-padded scratch image whose rows are padded to a
// whole number of SIMD vectors, so the inner loops are unmasked vector FMAs: for every output row and tap (i, j),
// acc[v] += w[i][j] * xpad[oh + i][j + v * L ...]. The input gradient is the same correlation of dy with the kernel
// flipped and padding k - 1 - p; the weight gradient accumulates dy * shifted x per tap in vector registers.
//   depthwise_plane_forward:         y = bias + corr(x, w)    (ASSIGNED, or ADDED with accumulate = true)
//   depthwise_plane_backward_weight: acc[i][j] += sum dy * x shifted (acc: one SIMD accumulator per tap, summed
//                                    across lanes by the caller)

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "diffusion/kernels/gemm_tile.hpp"  // first_lanes, and DIFFUSION_HAVE_AVX512 where the CPU target has AVX-512
#include "diffusion/kernels/scratch.hpp"
#include "diffusion/kernels/simd.hpp"

namespace diffusion::kernels {

struct DepthwisePlane {
  Index in_h, in_w, out_h, out_w, kernel_h, kernel_w, pad;  // stride 1

  Index vector_width() const { return (out_w + kLanes<float> - 1) / kLanes<float> * kLanes<float>; }
};

namespace detail {

// dst[0, n) = src[0, n), for the short rows of a plane (7 to 56 floats here), where a call to memcpy per row costs
// more than the copy.
template <class T>
inline void copy_row(const T* src, Index n, T* dst) {
#ifdef DIFFUSION_HAVE_AVX512
  if constexpr (std::is_same_v<T, float>) {
    for (Index i = 0; i < n; i += 16) {
      const __mmask16 lanes = first_lanes(n - i);
      _mm512_mask_storeu_ps(dst + i, lanes, _mm512_maskz_loadu_ps(lanes, src + i));
    }
    return;
  }
#endif
  for (Index i = 0; i < n; ++i) dst[i] = src[i];
}

// Zero-padded copy of x (H, W) into `xp` (out_h + kh - 1 rows of `row` elements); x sits at (pad, pad).
template <class T>
void pad_plane(const DepthwisePlane& g, Index row, const T* x, T* xp) {
  const Index rows = g.out_h + g.kernel_h - 1;
  std::memset(xp, 0, sizeof(T) * static_cast<std::size_t>(rows * row));
  for (Index h = 0; h < g.in_h; ++h) {
    const Index r = h + g.pad;
    if (r < 0 || r >= rows) continue;
    // Columns that land inside [0, row): x col c goes to c + pad.
    const Index c0 = std::max<Index>(0, -g.pad), c1 = std::min<Index>(g.in_w, row - g.pad);
    if (c1 > c0) copy_row(x + h * g.in_w + c0, c1 - c0, xp + r * row + c0 + g.pad);
  }
}

// V vectors of R consecutive output rows from the padded plane (r = the first row's oh at column c0; rows `row`
// apart): acc = bias + sum_ij w[i][j] r[i * row + j ...] for each row, then straight into y (rows y_row apart, n
// columns): whole vectors, and of the last one only the lanes inside the row, through a small buffer (before, a row
// buffer and a memcpy call per row cost a third of the plane). With accumulate, y += acc instead. V and R are fixed
// at compile time so that acc stays in registers; R > 1 gives narrow planes (one vector per row: 7x7, 14x14) R
// independent chains of fused multiply-adds instead of one, each element's sum still in the order of (i, j).
template <int R, int V, class T>
inline void depthwise_row_vectors(const DepthwisePlane& g, const T* r, Index row, const T* w, T bias, bool accumulate,
                                  T* y, Index y_row, Index n) {
  constexpr Index L = kLanes<T>;
  Batch<T> acc[R][V];
  for (int q = 0; q < R; ++q)
    for (int v = 0; v < V; ++v) acc[q][v] = Batch<T>(bias);
  for (Index i = 0; i < g.kernel_h; ++i, r += row) {
    const T* wi = w + i * g.kernel_w;
    for (Index j = 0; j < g.kernel_w; ++j) {
      const Batch<T> wv(wi[j]);
      for (int q = 0; q < R; ++q)
        for (int v = 0; v < V; ++v)
          acc[q][v] = xsimd::fma(Batch<T>::load_unaligned(r + q * row + j + v * L), wv, acc[q][v]);
    }
  }
  for (int q = 0; q < R; ++q) {
    for (int v = 0; v < V; ++v) {
      T* yv = y + q * y_row + v * L;
      const Index lanes = n - v * L;
      if (lanes >= L) {
        (accumulate ? Batch<T>::load_unaligned(yv) + acc[q][v] : acc[q][v]).store_unaligned(yv);
      } else {
        alignas(kAlignment) T tail[L];
        acc[q][v].store_aligned(tail);
        for (Index k = 0; k < lanes; ++k) yv[k] = accumulate ? yv[k] + tail[k] : tail[k];
      }
    }
  }
}

// The weight gradient of J taps (i, j0 .. j0 + J - 1) over V vectors of columns: sum[j][v] = sum over output rows oh
// of dy[oh] * x shifted by (i, j), then acc[j] += sum[j][0] + ... + sum[j][V - 1]. J and V fixed at compile time, so
// the J x V accumulators stay in registers (with run-time counts they lived on the stack: 2x slower).
template <int J, int V, class T>
inline void depthwise_weight_taps_fixed(const T* xr, Index row, const T* dyr, Index dy_row, Index out_h,
                                        Batch<T>* acc) {
  constexpr Index L = kLanes<T>;
  Batch<T> sum[J][V];
  for (int j = 0; j < J; ++j)
    for (int v = 0; v < V; ++v) sum[j][v] = Batch<T>(T(0));
  for (Index oh = 0; oh < out_h; ++oh, xr += row, dyr += dy_row) {
    Batch<T> d[V];
    for (int v = 0; v < V; ++v) d[v] = Batch<T>::load_unaligned(dyr + v * L);
    for (int j = 0; j < J; ++j)
      for (int v = 0; v < V; ++v) sum[j][v] = xsimd::fma(Batch<T>::load_unaligned(xr + j + v * L), d[v], sum[j][v]);
  }
  for (int j = 0; j < J; ++j) {
    Batch<T> s = sum[j][0];
    for (int v = 1; v < V; ++v) s += sum[j][v];
    acc[j] += s;
  }
}

// depthwise_weight_taps_fixed for a run-time J in 1 .. 8.
template <int V, class T>
inline void depthwise_weight_taps(Index J, const T* xr, Index row, const T* dyr, Index dy_row, Index out_h,
                                  Batch<T>* acc) {
  switch (J) {
    case 1: return depthwise_weight_taps_fixed<1, V>(xr, row, dyr, dy_row, out_h, acc);
    case 2: return depthwise_weight_taps_fixed<2, V>(xr, row, dyr, dy_row, out_h, acc);
    case 3: return depthwise_weight_taps_fixed<3, V>(xr, row, dyr, dy_row, out_h, acc);
    case 4: return depthwise_weight_taps_fixed<4, V>(xr, row, dyr, dy_row, out_h, acc);
    case 5: return depthwise_weight_taps_fixed<5, V>(xr, row, dyr, dy_row, out_h, acc);
    case 6: return depthwise_weight_taps_fixed<6, V>(xr, row, dyr, dy_row, out_h, acc);
    case 7: return depthwise_weight_taps_fixed<7, V>(xr, row, dyr, dy_row, out_h, acc);
    default: return depthwise_weight_taps_fixed<8, V>(xr, row, dyr, dy_row, out_h, acc);
  }
}

}  // namespace detail

// y (out_h, out_w) = bias + sum_ij w[i][j] x[oh - pad + i][ow - pad + j]; with accumulate, y += that instead.
template <class T>
void depthwise_plane_forward(const DepthwisePlane& g, const T* x, const T* w, T bias, T* y, bool accumulate) {
  constexpr Index L = kLanes<T>;
  constexpr Index kMaxVectors = 4;
  const Index Wv = (g.out_w + L - 1) / L * L;
  const Index row = Wv + g.kernel_w - 1;
  const ScratchBuffer<T, Scratch::DepthwisePlane> xp_buffer(static_cast<std::size_t>((g.out_h + g.kernel_h - 1) * row));
  T* xp = xp_buffer.data();
  detail::pad_plane(g, row, x, xp);
  // Four rows at a time where a row is one vector, two where it is two: four independent accumulators either way.
  const Index vectors = Wv / L;
  const Index rows_at_once = vectors == 1 ? 4 : vectors == 2 ? 2 : 1;
  Index oh = 0;
  for (; oh + rows_at_once <= g.out_h && rows_at_once > 1; oh += rows_at_once) {
    const T* r = xp + oh * row;
    T* yr = y + oh * g.out_w;
    if (vectors == 1)
      detail::depthwise_row_vectors<4, 1>(g, r, row, w, bias, accumulate, yr, g.out_w, g.out_w);
    else
      detail::depthwise_row_vectors<2, 2>(g, r, row, w, bias, accumulate, yr, g.out_w, g.out_w);
  }
  for (; oh < g.out_h; ++oh) {
    T* yr = y + oh * g.out_w;
    for (Index c0 = 0; c0 < Wv; c0 += kMaxVectors * L) {
      const T* r = xp + oh * row + c0;
      const Index n = g.out_w - c0;
      switch (std::min(kMaxVectors, (Wv - c0) / L)) {  // a fixed number of accumulators: they stay in registers
        case 1: detail::depthwise_row_vectors<1, 1>(g, r, row, w, bias, accumulate, yr + c0, g.out_w, n); break;
        case 2: detail::depthwise_row_vectors<1, 2>(g, r, row, w, bias, accumulate, yr + c0, g.out_w, n); break;
        case 3: detail::depthwise_row_vectors<1, 3>(g, r, row, w, bias, accumulate, yr + c0, g.out_w, n); break;
        default: detail::depthwise_row_vectors<1, 4>(g, r, row, w, bias, accumulate, yr + c0, g.out_w, n); break;
      }
    }
  }
}

// acc[i * kw + j] += sum_{oh, ow} dy[oh][ow] x[oh - pad + i][ow - pad + j]  (the weight gradient of one plane,
// as lane-wise partial sums: the caller reduces each accumulator across its lanes)
template <class T>
void depthwise_plane_backward_weight(const DepthwisePlane& g, const T* x, const T* dy, Batch<T>* acc) {
  constexpr Index L = kLanes<T>;
  constexpr Index kMaxVectors = 2, kMaxTaps = 8;
  const Index Wv = (g.out_w + L - 1) / L * L;
  const Index row = Wv + g.kernel_w - 1;
  const ScratchBuffer<T, Scratch::DepthwisePlane> xp_buffer(
      static_cast<std::size_t>((g.out_h + g.kernel_h - 1) * row + Wv * g.out_h));
  T* xp = xp_buffer.data();
  T* dyp = xp + (g.out_h + g.kernel_h - 1) * row;  // dy rows padded with zeros to Wv
  detail::pad_plane(g, row, x, xp);
  std::memset(dyp, 0, sizeof(T) * static_cast<std::size_t>(Wv * g.out_h));
  for (Index oh = 0; oh < g.out_h; ++oh)
    detail::copy_row(dy + oh * g.out_w, g.out_w, dyp + oh * Wv);
  for (Index i = 0; i < g.kernel_h; ++i) {
    for (Index j0 = 0; j0 < g.kernel_w; j0 += kMaxTaps) {
      const Index J = std::min(kMaxTaps, g.kernel_w - j0);
      for (Index c0 = 0; c0 < Wv; c0 += kMaxVectors * L) {
        const T* xr = xp + i * row + c0 + j0;
        Batch<T>* sums = acc + i * g.kernel_w + j0;
        if ((Wv - c0) / L >= 2)
          detail::depthwise_weight_taps<2>(J, xr, row, dyp + c0, Wv, g.out_h, sums);
        else
          detail::depthwise_weight_taps<1>(J, xr, row, dyp + c0, Wv, g.out_h, sums);
      }
    }
  }
}

}  // namespace diffusion::kernels
