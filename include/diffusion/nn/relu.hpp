#pragma once
// ReLU (nn.ReLU): y = max(x, 0); dx += dy where x > 0 (PyTorch's gradient at 0 is 0). NaN passes through forward
// (as torch.relu). Same contract as the other activations (nn/activations.hpp): y assigned, dx accumulated.

#include <algorithm>

#include "diffusion/core/parallel.hpp"
#include "diffusion/core/tensor.hpp"

namespace diffusion::nn {

template <class T>
struct ReLU {
  void forward(const Tensor<T>& x, Tensor<T>& y) const {
    y.resize(x.shape());
    const T* in = x.data();
    T* out = y.data();
    const Index n = x.numel(), chunk = 1 << 14;
    parallel_for(0, (n + chunk - 1) / chunk, double(chunk), [&](Index c) {
      for (Index i = c * chunk, end = std::min(n, (c + 1) * chunk); i < end; ++i)
        out[i] = in[i] < T(0) ? T(0) : in[i];
    });
  }
  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) const {
    check_shape(dy, x.shape(), "ReLU backward: dy");
    if (!dx) return;
    check_shape(*dx, x.shape(), "ReLU backward: dx");
    const T* in = x.data();
    const T* d = dy.data();
    T* out = dx->data();
    const Index n = x.numel(), chunk = 1 << 14;
    parallel_for(0, (n + chunk - 1) / chunk, double(chunk), [&](Index c) {
      for (Index i = c * chunk, end = std::min(n, (c + 1) * chunk); i < end; ++i)
        if (in[i] > T(0)) out[i] += d[i];
    });
  }
};

}  // namespace diffusion::nn
