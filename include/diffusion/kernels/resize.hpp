#pragma once
// Bilinear resizing of NCHW planes as PyTorch's F.interpolate(x, size, mode="bilinear", align_corners=False)
// computes it (no antialiasing), the resize pytorch-fid applies before Inception:
//   scale = in / out;  src = max(scale * (dst + 0.5) - 0.5, 0);  i0 = floor(src);  i1 = min(i0 + 1, in - 1);
//   l1 = src - i0, l0 = 1 - l1;  y = l0h (l0w x[i0h][i0w] + l1w x[i0h][i1w]) + l1h (l0w x[i1h][i0w] + l1w x[i1h][i1w])
// Coordinates and weights in double (PyTorch uses float for float tensors: the weights differ by ~1e-8).
//   bilinear_resize(planes, in_h, in_w, x, out_h, out_w, y)   y (planes, out_h, out_w) ASSIGNED
// Split over planes: thread-count independent.

#include <algorithm>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/shape.hpp"

namespace diffusion::kernels {

namespace detail {
struct ResizeTap {
  Index i0, i1;
  double l0, l1;
};
inline std::vector<ResizeTap> resize_taps(Index in, Index out) {
  std::vector<ResizeTap> taps(static_cast<std::size_t>(out));
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  for (Index d = 0; d < out; ++d) {
    const double src = std::max(scale * (static_cast<double>(d) + 0.5) - 0.5, 0.0);
    const Index i0 = std::min(static_cast<Index>(src), in - 1);
    const Index i1 = i0 + (i0 < in - 1 ? 1 : 0);
    const double l1 = src - static_cast<double>(i0);
    taps[static_cast<std::size_t>(d)] = {i0, i1, 1.0 - l1, l1};
  }
  return taps;
}
}  // namespace detail

template <class T>
void bilinear_resize(Index planes, Index in_h, Index in_w, const T* x, Index out_h, Index out_w, T* y) {
  DIFFUSION_CHECK(planes >= 0 && in_h > 0 && in_w > 0 && out_h > 0 && out_w > 0,
                  "bilinear_resize: invalid sizes " << in_h << "x" << in_w << " -> " << out_h << "x" << out_w);
  const std::vector<detail::ResizeTap> th = detail::resize_taps(in_h, out_h), tw = detail::resize_taps(in_w, out_w);
  parallel_for(0, planes, double(4 * out_h * out_w), [&](Index p) {
    const T* plane = x + p * in_h * in_w;
    T* out = y + p * out_h * out_w;
    for (Index oh = 0; oh < out_h; ++oh) {
      const detail::ResizeTap& a = th[static_cast<std::size_t>(oh)];
      const T* r0 = plane + a.i0 * in_w;
      const T* r1 = plane + a.i1 * in_w;
      for (Index ow = 0; ow < out_w; ++ow) {
        const detail::ResizeTap& b = tw[static_cast<std::size_t>(ow)];
        const double top = b.l0 * static_cast<double>(r0[b.i0]) + b.l1 * static_cast<double>(r0[b.i1]);
        const double bottom = b.l0 * static_cast<double>(r1[b.i0]) + b.l1 * static_cast<double>(r1[b.i1]);
        out[oh * out_w + ow] = static_cast<T>(a.l0 * top + a.l1 * bottom);
      }
    }
  });
}

}  // namespace diffusion::kernels
