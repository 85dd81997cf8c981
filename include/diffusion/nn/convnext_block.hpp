#pragma once
// The reference's ConvNextBlock (Liu et al. 2022): a depthwise 7x7 conv, the time embedding (GELU + Linear) added
// per channel, then GroupNorm(1) -> 3x3 conv to dim_out * mult -> GELU -> GroupNorm(1) -> 3x3 conv to dim_out, plus a
// residual path (1x1 conv when the channel count changes):
//   h = dwconv7x7(x) + Linear(GELU(t))[:, :, None, None];  y = net(h) + res_conv(x)
// Parameters: `<name>.mlp.1.{weight,bias}` (time_emb_dim > 0), `<name>.ds_conv.{weight,bias}`,
// `<name>.net.0.{weight,bias}` (GroupNorm, when norm), `<name>.net.1`, `<name>.net.3` (GroupNorm), `<name>.net.4`,
// `<name>.res_conv` (dim != dim_out). Same forward/backward signatures as ResnetBlock.

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
class ConvNextBlock {
 public:
  ConvNextBlock(ParameterStore<T>& params, const std::string& name, Index dim, Index dim_out, Index time_emb_dim = 0,
                Index mult = 2, bool norm = true)
      : name_(name),
        ds_conv_(params, join_name(name, "ds_conv"), dim, dim, 7, 1, 3, dim),
        conv1_(params, join_name(name, "net.1"), dim, dim_out * mult, 3, 1, 1),
        norm2_(params, join_name(name, "net.3"), 1, dim_out * mult),
        conv2_(params, join_name(name, "net.4"), dim_out * mult, dim_out, 3, 1, 1) {
    if (time_emb_dim > 0) mlp_ = std::make_unique<Linear<T>>(params, join_name(name, "mlp.1"), time_emb_dim, dim);
    if (norm) norm1_ = std::make_unique<GroupNorm<T>>(params, join_name(name, "net.0"), 1, dim);
    if (dim != dim_out) res_conv_ = std::make_unique<Conv2d<T>>(params, join_name(name, "res_conv"), dim, dim_out, 1);
  }

  bool has_time_mlp() const { return mlp_ != nullptr; }

  void forward(const Tensor<T>& x, const Tensor<T>* t_emb, Tensor<T>& y) {
    ds_conv_.forward(x, h_);
    if (mlp_ && t_emb) {
      gelu_.forward(*t_emb, t_act_);
      mlp_->forward(t_act_, t_out_);
      add_channel_vector(h_, t_out_);
    }
    const Tensor<T>* normed = &h_;
    if (norm1_) {
      norm1_->forward(h_, n0_);
      normed = &n0_;
    }
    conv1_.forward(*normed, c1_);
    gelu_.forward(c1_, a_);
    norm2_.forward(a_, n3_);
    conv2_.forward(n3_, y);
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
    Tensor<T>& dn3 = scratch_tensor<T>(kBlock0 + 0);
    Tensor<T>& da = scratch_tensor<T>(kBlock0 + 1);
    Tensor<T>& dc1 = scratch_tensor<T>(kBlock0 + 2);
    Tensor<T>& dn0 = scratch_tensor<T>(kBlock0 + 3);
    Tensor<T>& dh = scratch_tensor<T>(kBlock0 + 4);
    Tensor<T>& dt_out = scratch_tensor<T>(kBlock0 + 5);
    Tensor<T>& dt_act = scratch_tensor<T>(kBlock0 + 6);
    zero_like(dn3, n3_);
    conv2_.backward(n3_, dy, &dn3);
    zero_like(da, a_);
    norm2_.backward(a_, dn3, &da);
    zero_like(dc1, c1_);
    gelu_.backward(c1_, da, &dc1);
    zero_like(dh, h_);
    if (norm1_) {
      zero_like(dn0, n0_);
      conv1_.backward(n0_, dc1, &dn0);
      norm1_->backward(h_, dn0, &dh);
    } else {
      conv1_.backward(h_, dc1, &dh);
    }
    if (mlp_ && t_emb) {
      zero_like(dt_out, t_out_);
      add_channel_vector_backward(dh, dt_out);
      zero_like(dt_act, t_act_);
      mlp_->backward(t_act_, dt_out, &dt_act);
      gelu_.backward(*t_emb, dt_act, dt_emb);
    }
    ds_conv_.backward(x, dh, dx);
    if (res_conv_) {
      res_conv_->backward(x, dy, dx);
    } else if (dx) {
      add_into(*dx, dy);
    }
  }

  const std::string& name() const { return name_; }

 private:
  std::string name_;
  Conv2d<T> ds_conv_;
  Conv2d<T> conv1_;
  GroupNorm<T> norm2_;
  Conv2d<T> conv2_;
  std::unique_ptr<Linear<T>> mlp_;
  std::unique_ptr<GroupNorm<T>> norm1_;
  std::unique_ptr<Conv2d<T>> res_conv_;
  GELU<T> gelu_;
  // Saved activations: h_, n0_ (N, dim, H, W); c1_, a_, n3_ (N, dim_out * mult, H, W).
  Tensor<T> h_, n0_, c1_, a_, n3_;
  Tensor<T> t_act_, t_out_;  // (N, time_emb_dim), (N, dim)
};

}  // namespace diffusion::nn
