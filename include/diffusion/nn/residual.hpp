#pragma once
// The residual branch of ResnetBlock and ConvNextBlock: res_conv(x), a 1x1 convolution, when the block changes the
// channel count (res_conv non-null), x itself otherwise.
//   add_residual:          y += branch(x)       (res: where res_conv's output goes, a temporary of the call)
//   add_residual_backward: dx += branch^T(dy)   (dx may be null), res_conv's parameter gradients accumulated

#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/tensor_ops.hpp"

namespace diffusion::nn {

template <class T>
void add_residual(Conv2d<T>* res_conv, const Tensor<T>& x, Tensor<T>& y, Tensor<T>& res) {
  if (!res_conv) return add_into(y, x);
  res_conv->forward(x, res);
  add_into(y, res);
}

template <class T>
void add_residual_backward(Conv2d<T>* res_conv, const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) {
  if (res_conv) res_conv->backward(x, dy, dx);
  else if (dx) add_into(*dx, dy);
}

}  // namespace diffusion::nn
