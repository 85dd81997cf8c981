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

#include "diffusion/kernels/scratch.hpp"
#include "diffusion/kernels/simd.hpp"

namespace diffusion::kernels {

struct DepthwisePlane {
  Index in_h, in_w, out_h, out_w, kernel_h, kernel_w, pad;  // stride 1

  Index vector_width() const { return (out_w + kLanes<float> - 1) / kLanes<float> * kLanes<float>; }
};

namespace detail {

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
    if (c1 > c0) std::memcpy(xp + r * row + c0 + g.pad, x + h * g.in_w + c0, sizeof(T) * static_cast<std::size_t>(c1 - c0));
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
  const ScratchBuffer<T, Scratch::DepthwisePlane> xp_buffer(
      static_cast<std::size_t>((g.out_h + g.kernel_h - 1) * row + Wv));
  T* xp = xp_buffer.data();
  T* out = xp + (g.out_h + g.kernel_h - 1) * row;  // one output row, Wv wide
  detail::pad_plane(g, row, x, xp);
  for (Index oh = 0; oh < g.out_h; ++oh) {
    for (Index c0 = 0; c0 < Wv; c0 += kMaxVectors * L) {
      const Index V = std::min(kMaxVectors, (Wv - c0) / L);
      Batch<T> acc[kMaxVectors];
      for (Index v = 0; v < V; ++v) acc[v] = Batch<T>(bias);
      for (Index i = 0; i < g.kernel_h; ++i) {
        const T* r = xp + (oh + i) * row + c0;
        const T* wi = w + i * g.kernel_w;
        for (Index j = 0; j < g.kernel_w; ++j) {
          const Batch<T> wv(wi[j]);
          for (Index v = 0; v < V; ++v) acc[v] = xsimd::fma(Batch<T>::load_unaligned(r + j + v * L), wv, acc[v]);
        }
      }
      for (Index v = 0; v < V; ++v) acc[v].store_unaligned(out + c0 + v * L);
    }
    T* yr = y + oh * g.out_w;
    if (accumulate) {
      for (Index ow = 0; ow < g.out_w; ++ow) yr[ow] += out[ow];
    } else {
      std::memcpy(yr, out, sizeof(T) * static_cast<std::size_t>(g.out_w));
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
    std::memcpy(dyp + oh * Wv, dy + oh * g.out_w, sizeof(T) * static_cast<std::size_t>(g.out_w));
  for (Index i = 0; i < g.kernel_h; ++i) {
    for (Index j0 = 0; j0 < g.kernel_w; j0 += kMaxTaps) {
      const Index J = std::min(kMaxTaps, g.kernel_w - j0);
      for (Index c0 = 0; c0 < Wv; c0 += kMaxVectors * L) {
        const Index V = std::min(kMaxVectors, (Wv - c0) / L);
        Batch<T> sum[kMaxTaps][kMaxVectors];
        for (Index j = 0; j < J; ++j)
          for (Index v = 0; v < V; ++v) sum[j][v] = Batch<T>(T(0));
        for (Index oh = 0; oh < g.out_h; ++oh) {
          const T* r = xp + (oh + i) * row + c0 + j0;
          Batch<T> d[kMaxVectors];
          for (Index v = 0; v < V; ++v) d[v] = Batch<T>::load_unaligned(dyp + oh * Wv + c0 + v * L);
          for (Index j = 0; j < J; ++j)
            for (Index v = 0; v < V; ++v) sum[j][v] = xsimd::fma(Batch<T>::load_unaligned(r + j + v * L), d[v], sum[j][v]);
        }
        for (Index j = 0; j < J; ++j) {
          Batch<T> s = sum[j][0];
          for (Index v = 1; v < V; ++v) s += sum[j][v];
          acc[i * g.kernel_w + j0 + j] += s;
        }
      }
    }
  }
}

}  // namespace diffusion::kernels
