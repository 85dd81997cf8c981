#pragma once
// 2-D pooling kernels on NCHW planes, as PyTorch's CPU kernels compute them (ceil_mode = False, dilation 1):
//   max_pool2d_forward     y  = max over each window (padding never wins: it is -inf)          (y ASSIGNED)
//   max_pool2d_backward    dx += dy routed to each window's argmax                            (ACCUMULATED)
//                          argmax = the first maximal element in row-major scan order, a NaN counting as maximal
//                          (PyTorch: `if ((val > maxval) || std::isnan(val))`), so ties go where PyTorch sends them
//   avg_pool2d_forward     y  = window sum / divisor                                          (y ASSIGNED)
//   avg_pool2d_backward    dx += dy / divisor spread over the window                          (ACCUMULATED)
//                          divisor: count_include_pad ? the window clipped to the padded input : the number of
//                          input elements it covers (PyTorch's pool_size / (hend - hstart) * (wend - wstart))
//   global_avg_pool_forward / _backward: AdaptiveAvgPool2d((1, 1)), mean over H x W in double.
// Output size: floor((in + 2 pad - kernel) / stride) + 1. Work is split over (n, c) planes: no two tasks write the
// same output, so results do not depend on the thread count. Each has a plain reference twin (reference::).

#include <algorithm>
#include <cmath>
#include <limits>

#include "diffusion/core/parallel.hpp"
#include "diffusion/core/shape.hpp"
#include "diffusion/kernels/dispatch.hpp"

namespace diffusion::kernels {

struct Pool2dGeometry {
  Index batch = 0, channels = 0, in_height = 0, in_width = 0, out_height = 0, out_width = 0;
  Index kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  bool count_include_pad = true;  // average pooling only

  static Index output_size(Index in, Index kernel, Index stride, Index pad) { return (in + 2 * pad - kernel) / stride + 1; }
  static Pool2dGeometry make(Index n, Index c, Index h, Index w, Index kernel, Index stride, Index pad,
                             bool count_include_pad = true) {
    Pool2dGeometry g;
    g.batch = n, g.channels = c, g.in_height = h, g.in_width = w;
    g.kernel_h = g.kernel_w = kernel, g.stride_h = g.stride_w = stride, g.pad_h = g.pad_w = pad;
    g.count_include_pad = count_include_pad;
    g.out_height = output_size(h, kernel, stride, pad);
    g.out_width = output_size(w, kernel, stride, pad);
    return g;
  }
  Index planes() const { return batch * channels; }
  Index in_pixels() const { return in_height * in_width; }
  Index out_pixels() const { return out_height * out_width; }
};

namespace detail {

// The window of output (oh, ow) clipped to the input: rows [h0, h1), columns [w0, w1); divisor for averages.
struct PoolWindow {
  Index h0, h1, w0, w1;
  double divisor;
};
inline PoolWindow pool_window(const Pool2dGeometry& g, Index oh, Index ow) {
  Index h0 = oh * g.stride_h - g.pad_h, w0 = ow * g.stride_w - g.pad_w;
  Index h1 = std::min(h0 + g.kernel_h, g.in_height + g.pad_h), w1 = std::min(w0 + g.kernel_w, g.in_width + g.pad_w);
  const Index padded = (h1 - h0) * (w1 - w0);
  h0 = std::max<Index>(h0, 0), w0 = std::max<Index>(w0, 0);
  h1 = std::min(h1, g.in_height), w1 = std::min(w1, g.in_width);
  return {h0, h1, w0, w1, static_cast<double>(g.count_include_pad ? padded : (h1 - h0) * (w1 - w0))};
}

// Index (within the plane) of the window's maximum: first in scan order, NaN wins.
template <class T>
Index window_argmax(const Pool2dGeometry& g, const T* plane, const PoolWindow& win) {
  Index best = win.h0 * g.in_width + win.w0;
  T value = -std::numeric_limits<T>::infinity();
  for (Index h = win.h0; h < win.h1; ++h)
    for (Index w = win.w0; w < win.w1; ++w) {
      const T v = plane[h * g.in_width + w];
      if (v > value || std::isnan(v)) {
        value = v;
        best = h * g.in_width + w;
        if (std::isnan(v)) return best;
      }
    }
  return best;
}

}  // namespace detail

namespace reference {

template <class T>
void max_pool2d_forward(const Pool2dGeometry& g, const T* x, T* y) {
  for (Index p = 0; p < g.planes(); ++p)
    for (Index oh = 0; oh < g.out_height; ++oh)
      for (Index ow = 0; ow < g.out_width; ++ow) {
        T m = -std::numeric_limits<T>::infinity();
        bool nan = false;
        const Index hs = oh * g.stride_h - g.pad_h, ws = ow * g.stride_w - g.pad_w;
        for (Index i = 0; i < g.kernel_h; ++i)
          for (Index j = 0; j < g.kernel_w; ++j) {
            const Index h = hs + i, w = ws + j;
            if (h < 0 || h >= g.in_height || w < 0 || w >= g.in_width) continue;
            const T v = x[p * g.in_pixels() + h * g.in_width + w];
            if (std::isnan(v)) nan = true;
            m = std::max(m, v);
          }
        y[p * g.out_pixels() + oh * g.out_width + ow] = nan ? std::numeric_limits<T>::quiet_NaN() : m;
      }
}

template <class T>
void avg_pool2d_forward(const Pool2dGeometry& g, const T* x, T* y) {
  for (Index p = 0; p < g.planes(); ++p)
    for (Index oh = 0; oh < g.out_height; ++oh)
      for (Index ow = 0; ow < g.out_width; ++ow) {
        const detail::PoolWindow win = detail::pool_window(g, oh, ow);
        double sum = 0.0;
        for (Index h = win.h0; h < win.h1; ++h)
          for (Index w = win.w0; w < win.w1; ++w) sum += static_cast<double>(x[p * g.in_pixels() + h * g.in_width + w]);
        y[p * g.out_pixels() + oh * g.out_width + ow] = static_cast<T>(sum / win.divisor);
      }
}

}  // namespace reference

// y (N, C, OH, OW) = max pooling of x (N, C, H, W). Assigned.
template <class T>
void max_pool2d_forward(const Pool2dGeometry& g, const T* x, T* y) {
  if (reference_kernels()) return reference::max_pool2d_forward(g, x, y);
  parallel_for(0, g.planes(), double(g.out_pixels() * g.kernel_h * g.kernel_w), [&](Index p) {
    const T* plane = x + p * g.in_pixels();
    T* out = y + p * g.out_pixels();
    for (Index oh = 0; oh < g.out_height; ++oh)
      for (Index ow = 0; ow < g.out_width; ++ow)
        out[oh * g.out_width + ow] = plane[detail::window_argmax(g, plane, detail::pool_window(g, oh, ow))];
  });
}

// dx (N, C, H, W) += dy (N, C, OH, OW) at each window's argmax in x. Accumulated.
template <class T>
void max_pool2d_backward(const Pool2dGeometry& g, const T* x, const T* dy, T* dx) {
  parallel_for(0, g.planes(), double(g.out_pixels() * g.kernel_h * g.kernel_w), [&](Index p) {
    const T* plane = x + p * g.in_pixels();
    const T* d = dy + p * g.out_pixels();
    T* out = dx + p * g.in_pixels();
    for (Index oh = 0; oh < g.out_height; ++oh)
      for (Index ow = 0; ow < g.out_width; ++ow)
        out[detail::window_argmax(g, plane, detail::pool_window(g, oh, ow))] += d[oh * g.out_width + ow];
  });
}

// y (N, C, OH, OW) = average pooling of x (N, C, H, W), sums in double. Assigned.
template <class T>
void avg_pool2d_forward(const Pool2dGeometry& g, const T* x, T* y) {
  if (reference_kernels()) return reference::avg_pool2d_forward(g, x, y);
  parallel_for(0, g.planes(), double(g.out_pixels() * g.kernel_h * g.kernel_w), [&](Index p) {
    const T* plane = x + p * g.in_pixels();
    T* out = y + p * g.out_pixels();
    for (Index oh = 0; oh < g.out_height; ++oh)
      for (Index ow = 0; ow < g.out_width; ++ow) {
        const detail::PoolWindow win = detail::pool_window(g, oh, ow);
        double sum = 0.0;
        for (Index h = win.h0; h < win.h1; ++h) {
          const T* row = plane + h * g.in_width;
          for (Index w = win.w0; w < win.w1; ++w) sum += static_cast<double>(row[w]);
        }
        out[oh * g.out_width + ow] = static_cast<T>(sum / win.divisor);
      }
  });
}

// dx (N, C, H, W) += dy / divisor over each window. Accumulated.
template <class T>
void avg_pool2d_backward(const Pool2dGeometry& g, const T* dy, T* dx) {
  parallel_for(0, g.planes(), double(g.out_pixels() * g.kernel_h * g.kernel_w), [&](Index p) {
    const T* d = dy + p * g.out_pixels();
    T* out = dx + p * g.in_pixels();
    for (Index oh = 0; oh < g.out_height; ++oh)
      for (Index ow = 0; ow < g.out_width; ++ow) {
        const detail::PoolWindow win = detail::pool_window(g, oh, ow);
        const T share = static_cast<T>(static_cast<double>(d[oh * g.out_width + ow]) / win.divisor);
        for (Index h = win.h0; h < win.h1; ++h)
          for (Index w = win.w0; w < win.w1; ++w) out[h * g.in_width + w] += share;
      }
  });
}

// y (planes) = mean of each plane of x (planes, pixels), in double. Assigned.
template <class T>
void global_avg_pool_forward(Index planes, Index pixels, const T* x, T* y) {
  parallel_for(0, planes, double(pixels), [&](Index p) {
    double sum = 0.0;
    for (Index i = 0; i < pixels; ++i) sum += static_cast<double>(x[p * pixels + i]);
    y[p] = static_cast<T>(sum / static_cast<double>(pixels));
  });
}

// dx (planes, pixels) += dy (planes) / pixels. Accumulated.
template <class T>
void global_avg_pool_backward(Index planes, Index pixels, const T* dy, T* dx) {
  parallel_for(0, planes, double(pixels), [&](Index p) {
    const T share = static_cast<T>(static_cast<double>(dy[p]) / static_cast<double>(pixels));
    for (Index i = 0; i < pixels; ++i) dx[p * pixels + i] += share;
  });
}

}  // namespace diffusion::kernels
