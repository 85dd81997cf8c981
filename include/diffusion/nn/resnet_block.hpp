#pragma once
// The reference's ResnetBlock (He et al. 2016, as used by DDPM): two Blocks (3x3 conv -> GroupNorm -> SiLU) with the
// time embedding, passed through SiLU + Linear, added per channel between them, and a residual path that is a 1x1
// conv when the channel count changes:
//   h = SiLU(GN(conv3x3(x))) + Linear(SiLU(t))[:, :, None, None];  y = SiLU(GN(conv3x3(h))) + res_conv(x)
// Parameters: `<name>.mlp.1.{weight,bias}` (when time_emb_dim > 0), `<name>.block{1,2}.proj.{weight,bias}`,
// `<name>.block{1,2}.norm.{weight,bias}`, `<name>.res_conv.{weight,bias}` (when dim != dim_out).
// forward(x, t_emb, y): t_emb (N, time_emb_dim) or null; backward(x, t_emb, dy, dx, dt_emb) accumulates into
// dx, dt_emb (either may be null) and every parameter gradient.

#include <memory>
#include <string>

#include "diffusion/nn/activations.hpp"
#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/group_norm.hpp"
#include "diffusion/nn/linear.hpp"
#include "diffusion/nn/scratch.hpp"
#include "diffusion/nn/tensor_ops.hpp"

namespace diffusion::nn {

template <class T>
class ResnetBlock {
 public:
  ResnetBlock(ParameterStore<T>& params, const std::string& name, Index dim, Index dim_out, Index time_emb_dim = 0,
              Index groups = 8)
      : name_(name),
        proj1_(params, join_name(name, "block1.proj"), dim, dim_out, 3, 1, 1),
        norm1_(params, join_name(name, "block1.norm"), groups, dim_out),
        proj2_(params, join_name(name, "block2.proj"), dim_out, dim_out, 3, 1, 1),
        norm2_(params, join_name(name, "block2.norm"), groups, dim_out) {
    if (time_emb_dim > 0) mlp_ = std::make_unique<Linear<T>>(params, join_name(name, "mlp.1"), time_emb_dim, dim_out);
    if (dim != dim_out) res_conv_ = std::make_unique<Conv2d<T>>(params, join_name(name, "res_conv"), dim, dim_out, 1);
  }

  bool has_time_mlp() const { return mlp_ != nullptr; }

  void forward(const Tensor<T>& x, const Tensor<T>* t_emb, Tensor<T>& y) {
    proj1_.forward(x, h1_);
    norm1_.forward(h1_, n1_);
    silu_.forward(n1_, h_);
    if (mlp_ && t_emb) {
      silu_.forward(*t_emb, t_act_);
      mlp_->forward(t_act_, t_out_);
      add_channel_vector(h_, t_out_);
    }
    proj2_.forward(h_, h2_);
    norm2_.forward(h2_, n2_);
    silu_.forward(n2_, y);
    if (res_conv_) {
      Tensor<T>& res = scratch_tensor<T>(kResidual);  // not needed by backward
      res_conv_->forward(x, res);
      add_into(y, res);
    } else {
      add_into(y, x);
    }
  }

  void backward(const Tensor<T>& x, const Tensor<T>* t_emb, const Tensor<T>& dy, Tensor<T>* dx, Tensor<T>* dt_emb) {
    // Gradient buffers: shared scratch (see scratch.hpp), valid during this call only.
    Tensor<T>& dn2 = scratch_tensor<T>(kBlock0 + 0);
    Tensor<T>& dh2 = scratch_tensor<T>(kBlock0 + 1);
    Tensor<T>& dh = scratch_tensor<T>(kBlock0 + 2);
    Tensor<T>& dn1 = scratch_tensor<T>(kBlock0 + 3);
    Tensor<T>& dh1 = scratch_tensor<T>(kBlock0 + 4);
    Tensor<T>& dt_out = scratch_tensor<T>(kBlock0 + 5);
    Tensor<T>& dt_act = scratch_tensor<T>(kBlock0 + 6);
    zero_like(dn2, n2_);
    silu_.backward(n2_, dy, &dn2);
    zero_like(dh2, h2_);
    norm2_.backward(h2_, dn2, &dh2);
    zero_like(dh, h_);
    proj2_.backward(h_, dh2, &dh);
    if (mlp_ && t_emb) {
      zero_like(dt_out, t_out_);
      add_channel_vector_backward(dh, dt_out);
      zero_like(dt_act, t_act_);
      mlp_->backward(t_act_, dt_out, &dt_act);
      silu_.backward(*t_emb, dt_act, dt_emb);
    }
    zero_like(dn1, n1_);
    silu_.backward(n1_, dh, &dn1);
    zero_like(dh1, h1_);
    norm1_.backward(h1_, dn1, &dh1);
    proj1_.backward(x, dh1, dx);
    if (res_conv_) {
      res_conv_->backward(x, dy, dx);
    } else if (dx) {
      add_into(*dx, dy);
    }
  }

  const std::string& name() const { return name_; }

 private:
  std::string name_;
  Conv2d<T> proj1_;
  GroupNorm<T> norm1_;
  Conv2d<T> proj2_;
  GroupNorm<T> norm2_;
  std::unique_ptr<Linear<T>> mlp_;
  std::unique_ptr<Conv2d<T>> res_conv_;
  SiLU<T> silu_;
  // Saved activations, (N, dim_out, H, W) unless noted.
  Tensor<T> h1_, n1_, h_, h2_, n2_;
  Tensor<T> t_act_, t_out_;  // (N, time_emb_dim), (N, dim_out)
};

}  // namespace diffusion::nn
