#pragma once
// Residual(PreNorm(dim, fn)) from the reference: y = fn(GroupNorm(1, dim)(x)) + x. Used around every attention
// layer of the U-Net. Parameters: `<name>.fn.norm.{weight,bias}` and fn's under `<name>.fn.fn`.
// `Fn` is Attention<T> or LinearAttention<T> (any layer constructed as Fn(params, name, dim, args...), with a
// Workspace type and forward(x, y, ws) / backward(x, dy, dx, ws)).

#include <string>
#include <utility>

#include "diffusion/nn/group_norm.hpp"
#include "diffusion/nn/tensor_ops.hpp"
#include "diffusion/nn/workspace.hpp"

namespace diffusion::nn {

// Temporaries of one PreNormResidual call (nn/workspace.hpp). A template of the inner workspace, not of the inner
// layer, so that residuals around layers sharing a workspace type (Attention, LinearAttention) share one too.
template <class T, class FnWorkspace>
struct PreNormWorkspace {
  Tensor<T> dnormed;  // backward: d(loss)/d(normed) (N, dim, H, W); inference forward: normed
  FnWorkspace fn;     // the inner layer's
};

template <class T, class Fn>
class PreNormResidual {
 public:
  using Workspace = PreNormWorkspace<T, typename Fn::Workspace>;

  template <class... Args>
  PreNormResidual(ParameterStore<T>& params, const std::string& name, Index dim, Args&&... fn_args)
      : name_(name),
        norm_(params, join_name(name, "fn.norm"), 1, dim),
        fn_(params, join_name(name, "fn.fn"), dim, std::forward<Args>(fn_args)...) {}

  void forward(const Tensor<T>& x, Tensor<T>& y, Workspace& ws, ForwardMode mode = ForwardMode::Training) {
    Tensor<T>& normed = mode == ForwardMode::Training ? normed_ : ws.dnormed;
    norm_.forward(x, normed);
    fn_.forward(normed, y, ws.fn, mode);
    add_into(y, x);
  }

  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx, Workspace& ws) {
    zero_like(ws.dnormed, normed_);
    fn_.backward(normed_, dy, &ws.dnormed, ws.fn);
    norm_.backward(x, ws.dnormed, dx);
    if (dx) add_into(*dx, dy);
  }

  const std::string& name() const { return name_; }
  Fn& fn() { return fn_; }

 private:
  std::string name_;
  GroupNorm<T> norm_;
  Fn fn_;
  Tensor<T> normed_;  // (N, dim, H, W) saved: norm(x)
};

}  // namespace diffusion::nn
