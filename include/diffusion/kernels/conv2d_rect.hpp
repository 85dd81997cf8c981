#pragma once
// Forward-only 2-D convolution (cross-correlation, as PyTorch's Conv2d) with rectangular kernels, per-axis stride
// and padding, no groups: what Inception-v3 needs (1x7, 7x1, 1x3, 3x1 kernels with (0, 3) / (3, 0) ... padding),
// which kernels/conv2d.hpp (square kernels, one padding) does not cover. No backward: Inception is used for
// features only.
//
//   conv2d_rect_forward(g, x, w, bias, y, workspace)
//     y (N, C_out, OH, OW) = conv(x (N, C_in, H, W), w) + bias  (ASSIGNED); w (C_out, C_in, KH, KW), bias (C_out)
//     or null; OH = floor((H + 2 PH - KH) / SH) + 1, likewise OW. `workspace` holds the im2col matrix: owned by the
//     caller (the network), it grows to the largest layer once and is reused.
//
// Per image: im2col into (C_in KH KW, OH OW) (skipped for 1x1 stride-1 unpadded kernels), then one GEMM per tile of
// (64 output channels x 1024 output pixels). Tiles are fixed by the shapes, so results do not depend on the thread
// count; the tiles of an image run in parallel, images one after another (Inception runs one image at a time: its
// im2col matrices reach 25 MB). Reference twin: a direct loop in double (reference::conv2d_rect_forward).

#include <algorithm>
#include <vector>

#include "diffusion/core/parallel.hpp"
#include "diffusion/core/shape.hpp"
#include "diffusion/kernels/dispatch.hpp"
#include "diffusion/kernels/gemm.hpp"

namespace diffusion::kernels {

struct Conv2dRectGeometry {
  Index batch = 0, in_channels = 0, in_height = 0, in_width = 0;
  Index out_channels = 0, out_height = 0, out_width = 0;
  Index kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;

  static Index output_size(Index in, Index kernel, Index stride, Index pad) { return (in + 2 * pad - kernel) / stride + 1; }
  static Conv2dRectGeometry make(Index n, Index c_in, Index h, Index w, Index c_out, Index kh, Index kw, Index sh,
                                 Index sw, Index ph, Index pw) {
    Conv2dRectGeometry g;
    g.batch = n, g.in_channels = c_in, g.in_height = h, g.in_width = w, g.out_channels = c_out;
    g.kernel_h = kh, g.kernel_w = kw, g.stride_h = sh, g.stride_w = sw, g.pad_h = ph, g.pad_w = pw;
    g.out_height = output_size(h, kh, sh, ph);
    g.out_width = output_size(w, kw, sw, pw);
    return g;
  }
  Index in_pixels() const { return in_height * in_width; }
  Index out_pixels() const { return out_height * out_width; }
  Index col_rows() const { return in_channels * kernel_h * kernel_w; }
  bool is_pointwise() const {
    return kernel_h == 1 && kernel_w == 1 && stride_h == 1 && stride_w == 1 && pad_h == 0 && pad_w == 0;
  }
};

namespace reference {

template <class T>
void conv2d_rect_forward(const Conv2dRectGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  for (Index n = 0; n < g.batch; ++n)
    for (Index co = 0; co < g.out_channels; ++co)
      for (Index oh = 0; oh < g.out_height; ++oh)
        for (Index ow = 0; ow < g.out_width; ++ow) {
          double sum = bias ? static_cast<double>(bias[co]) : 0.0;
          for (Index ci = 0; ci < g.in_channels; ++ci)
            for (Index i = 0; i < g.kernel_h; ++i)
              for (Index j = 0; j < g.kernel_w; ++j) {
                const Index ih = oh * g.stride_h - g.pad_h + i, iw = ow * g.stride_w - g.pad_w + j;
                if (ih < 0 || ih >= g.in_height || iw < 0 || iw >= g.in_width) continue;
                sum += static_cast<double>(x[((n * g.in_channels + ci) * g.in_height + ih) * g.in_width + iw]) *
                       static_cast<double>(w[((co * g.in_channels + ci) * g.kernel_h + i) * g.kernel_w + j]);
              }
          y[((n * g.out_channels + co) * g.out_height + oh) * g.out_width + ow] = static_cast<T>(sum);
        }
}

}  // namespace reference

namespace detail {

// col (C KH KW, OH OW) from one image x (C, H, W); rows in (c, i, j) order, matching w's layout.
template <class T>
void im2col_rect(const Conv2dRectGeometry& g, const T* x, T* col) {
  const Index OH = g.out_height, OW = g.out_width, H = g.in_height, W = g.in_width;
  const Index rows = g.col_rows();
  parallel_for(0, rows, double(OH * OW), [&](Index r) {
    const Index c = r / (g.kernel_h * g.kernel_w), i = (r / g.kernel_w) % g.kernel_h, j = r % g.kernel_w;
    const T* plane = x + c * H * W;
    T* out = col + r * OH * OW;
    for (Index oh = 0; oh < OH; ++oh) {
      const Index ih = oh * g.stride_h - g.pad_h + i;
      T* row = out + oh * OW;
      if (ih < 0 || ih >= H) {
        std::fill(row, row + OW, T(0));
        continue;
      }
      const T* in = plane + ih * W;
      for (Index ow = 0; ow < OW; ++ow) {
        const Index iw = ow * g.stride_w - g.pad_w + j;
        row[ow] = (iw >= 0 && iw < W) ? in[iw] : T(0);
      }
    }
  });
}

}  // namespace detail

template <class T>
void conv2d_rect_forward(const Conv2dRectGeometry& g, const T* x, const T* w, const T* bias, T* y,
                         std::vector<T>& workspace) {
  if (reference_kernels()) return reference::conv2d_rect_forward(g, x, w, bias, y);
  const Index K = g.col_rows(), P = g.out_pixels(), C = g.out_channels;
  constexpr Index kTileC = 64, kTileP = 1024;
  const Index tiles_c = (C + kTileC - 1) / kTileC, tiles_p = (P + kTileP - 1) / kTileP;
  if (!g.is_pointwise() && workspace.size() < static_cast<std::size_t>(K * P))
    workspace.resize(static_cast<std::size_t>(K * P));
  for (Index n = 0; n < g.batch; ++n) {
    const T* xn = x + n * g.in_channels * g.in_pixels();
    T* yn = y + n * C * P;
    const T* b = xn;
    if (!g.is_pointwise()) {
      detail::im2col_rect(g, xn, workspace.data());
      b = workspace.data();
    }
    parallel_for(0, tiles_c * tiles_p, double(kTileC * kTileP * K), [&](Index t) {
      const Index c0 = (t / tiles_p) * kTileC, p0 = (t % tiles_p) * kTileP;
      const Index rows = std::min(kTileC, C - c0), cols = std::min(kTileP, P - p0);
      T beta = T(0);
      if (bias) {
        for (Index co = c0; co < c0 + rows; ++co) std::fill(yn + co * P + p0, yn + co * P + p0 + cols, bias[co]);
        beta = T(1);
      }
      gemm(Op::NoTrans, Op::NoTrans, rows, cols, K, T(1), w + c0 * K, K, b + p0, P, beta, yn + c0 * P + p0, P);
    });
  }
}

}  // namespace diffusion::kernels
