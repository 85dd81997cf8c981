#pragma once
// Activation layers without parameters: SiLU (nn.SiLU) and GELU (nn.GELU, exact erf form). Same contract as the
// other layers: forward assigns y (any shape, same as x), backward accumulates into dx from the saved input x.

#include "diffusion/core/tensor.hpp"
#include "diffusion/kernels/activations.hpp"

namespace diffusion::nn {

template <class T>
struct SiLU {
  void forward(const Tensor<T>& x, Tensor<T>& y) const {
    y.resize(x.shape());
    kernels::silu_forward(x.numel(), x.data(), y.data());
  }
  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) const {
    check_shape(dy, x.shape(), "SiLU backward: dy");
    if (!dx) return;
    check_shape(*dx, x.shape(), "SiLU backward: dx");
    kernels::silu_backward(x.numel(), x.data(), dy.data(), dx->data());
  }
};

template <class T>
struct GELU {
  void forward(const Tensor<T>& x, Tensor<T>& y) const {
    y.resize(x.shape());
    kernels::gelu_forward(x.numel(), x.data(), y.data());
  }
  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) const {
    check_shape(dy, x.shape(), "GELU backward: dy");
    if (!dx) return;
    check_shape(*dx, x.shape(), "GELU backward: dx");
    kernels::gelu_backward(x.numel(), x.data(), dy.data(), dx->data());
  }
};

}  // namespace diffusion::nn
