#pragma once
// Residual(PreNorm(dim, fn)) from the reference: y = fn(GroupNorm(1, dim)(x)) + x. Used around every attention
// layer of the U-Net. Parameters: `<name>.fn.norm.{weight,bias}` and fn's under `<name>.fn.fn`.
// `Fn` is Attention<T> or LinearAttention<T> (any layer constructed as Fn(params, name, dim, args...)).

#include <string>
#include <utility>

#include "diffusion/nn/group_norm.hpp"
#include "diffusion/nn/scratch.hpp"
#include "diffusion/nn/tensor_ops.hpp"

namespace diffusion::nn {

template <class T, class Fn>
class PreNormResidual {
 public:
  template <class... Args>
  PreNormResidual(ParameterStore<T>& params, const std::string& name, Index dim, Args&&... fn_args)
      : name_(name),
        norm_(params, join_name(name, "fn.norm"), 1, dim),
        fn_(params, join_name(name, "fn.fn"), dim, std::forward<Args>(fn_args)...) {}

  void forward(const Tensor<T>& x, Tensor<T>& y) {
    norm_.forward(x, normed_);
    fn_.forward(normed_, y);
    add_into(y, x);
  }

  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) {
    Tensor<T>& dnormed = scratch_tensor<T>(kPreNorm);
    zero_like(dnormed, normed_);
    fn_.backward(normed_, dy, &dnormed);
    norm_.backward(x, dnormed, dx);
    if (dx) add_into(*dx, dy);
  }

  const std::string& name() const { return name_; }
  Fn& fn() { return fn_; }

 private:
  std::string name_;
  GroupNorm<T> norm_;
  Fn fn_;
  Tensor<T> normed_;  // (N, dim, H, W)
};

}  // namespace diffusion::nn
