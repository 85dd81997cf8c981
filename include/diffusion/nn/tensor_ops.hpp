#pragma once
// Small tensor operations the networks are wired with: residual add, channel concatenation (U-Net skips), and
// broadcasting a per-(n, c) vector over the pixels (time-embedding conditioning), each with its backward.
// Assigned/accumulated outputs are stated per function.

#include <algorithm>
#include <cstring>

#include "diffusion/core/parallel.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/kernels/simd.hpp"
#include "diffusion/nn/workspace.hpp"

namespace diffusion::nn {

// y += x (same shapes). The residual connection, and every "dx += dy" of a skip path.
template <class T>
void add_into(Tensor<T>& y, const Tensor<T>& x) {
  check_shape(x, y.shape(), "add_into: x");
  const Index n = x.numel(), chunk = 1 << 15;
  parallel_for(0, (n + chunk - 1) / chunk, double(chunk), [&](Index c) {
    const Index b = c * chunk, m = std::min(chunk, n - b);
    kernels::simd_map3(m, x.data() + b, x.data() + b, y.data() + b,
                       [](kernels::Batch<T> v, kernels::Batch<T>, kernels::Batch<T> acc) { return acc + v; });
  });
}

// out (N, Ca + Cb, H, W) = cat(a (N, Ca, H, W), b (N, Cb, H, W)) along channels (torch.cat(dim=1)). Assigned.
template <class T>
void concat_channels(const Tensor<T>& a, const Tensor<T>& b, Tensor<T>& out) {
  DIFFUSION_CHECK(a.rank() == 4 && b.rank() == 4 && a.dim(0) == b.dim(0) && a.dim(2) == b.dim(2) &&
                      a.dim(3) == b.dim(3),
                  "concat_channels: cannot concatenate " << a.shape() << " and " << b.shape()
                                                         << " along channels (N, H, W must match)");
  const Index N = a.dim(0), sa = a.numel() / N, sb = b.numel() / N;
  out.resize(Shape{N, a.dim(1) + b.dim(1), a.dim(2), a.dim(3)});
  for (Index n = 0; n < N; ++n) {
    std::memcpy(out.data() + n * (sa + sb), a.data() + n * sa, sizeof(T) * static_cast<std::size_t>(sa));
    std::memcpy(out.data() + n * (sa + sb) + sa, b.data() + n * sb, sizeof(T) * static_cast<std::size_t>(sb));
  }
}

// da += dout[:, :Ca], db += dout[:, Ca:]. Either may be null.
template <class T>
void concat_channels_backward(const Tensor<T>& dout, Tensor<T>* da, Tensor<T>* db, Index ca) {
  const Index N = dout.dim(0), P = dout.dim(2) * dout.dim(3), c = dout.dim(1);
  DIFFUSION_CHECK(ca > 0 && ca < c, "concat_channels_backward: split " << ca << " outside " << dout.shape());
  if (da) check_shape(*da, Shape{N, ca, dout.dim(2), dout.dim(3)}, "concat_channels_backward: da");
  if (db) check_shape(*db, Shape{N, c - ca, dout.dim(2), dout.dim(3)}, "concat_channels_backward: db");
  parallel_for(0, N, double(c * P), [&](Index n) {
    const T* d = dout.data() + n * c * P;
    if (da)
      for (Index i = 0; i < ca * P; ++i) da->data()[n * ca * P + i] += d[i];
    if (db)
      for (Index i = 0; i < (c - ca) * P; ++i) db->data()[n * (c - ca) * P + i] += d[ca * P + i];
  });
}

// h (N, C, H, W) += v (N, C) broadcast over pixels: the reference's `h + rearrange(t, "b c -> b c 1 1")`.
template <class T>
void add_channel_vector(Tensor<T>& h, const Tensor<T>& v) {
  DIFFUSION_CHECK(h.rank() == 4 && v.rank() == 2 && v.dim(0) == h.dim(0) && v.dim(1) == h.dim(1),
                  "add_channel_vector: cannot broadcast " << v.shape() << " over " << h.shape());
  const Index NC = h.dim(0) * h.dim(1), P = h.dim(2) * h.dim(3);
  parallel_for(0, NC, double(P), [&](Index i) {
    T* row = h.data() + i * P;
    const T add = v[i];
    for (Index p = 0; p < P; ++p) row[p] += add;
  });
}

// dv (N, C) += sum over pixels of dh (N, C, H, W), in double.
template <class T>
void add_channel_vector_backward(const Tensor<T>& dh, Tensor<T>& dv) {
  check_shape(dv, Shape{dh.dim(0), dh.dim(1)}, "add_channel_vector_backward: dv");
  const Index NC = dh.dim(0) * dh.dim(1), P = dh.dim(2) * dh.dim(3);
  parallel_for(0, NC, double(P), [&](Index i) { dv[i] += static_cast<T>(kernels::simd_sum(P, dh.data() + i * P)); });
}

}  // namespace diffusion::nn
