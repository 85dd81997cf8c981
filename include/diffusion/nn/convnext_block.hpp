#pragma once
// The reference's ConvNextBlock (Liu et al. 2022): a depthwise 7x7 conv, the time embedding (GELU + Linear) added
// per channel, then GroupNorm(1) -> 3x3 conv to dim_out * mult -> GELU -> GroupNorm(1) -> 3x3 conv to dim_out, plus a
// residual path (1x1 conv when the channel count changes):
//   h = dwconv7x7(x) + Linear(GELU(t))[:, :, None, None];  y = net(h) + res_conv(x)
// Parameters: `<name>.mlp.1.{weight,bias}` (time_emb_dim > 0), `<name>.ds_conv.{weight,bias}`,
// `<name>.net.0.{weight,bias}` (GroupNorm, when norm), `<name>.net.1`, `<name>.net.3` (GroupNorm), `<name>.net.4`,
// `<name>.res_conv` (dim != dim_out). Same forward/backward signatures and workspace scheme as ResnetBlock.

#include <memory>
#include <string>
#include <tuple>

#include "diffusion/nn/activations.hpp"
#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/group_norm.hpp"
#include "diffusion/nn/linear.hpp"
#include "diffusion/nn/residual.hpp"
#include "diffusion/nn/tensor_ops.hpp"
#include "diffusion/nn/workspace.hpp"

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

  // What forward saves for backward, and (the same struct) their gradients during backward.
  struct Activations {
    Tensor<T> h;      // (N, dim, H, W) ds_conv(x) + t_out per channel
    Tensor<T> n0;     // (N, dim, H, W) norm1(h) (empty without norm)
    Tensor<T> c1;     // (N, dim_out * mult, H, W) conv1(n0)
    Tensor<T> a;      // GELU(c1)
    Tensor<T> n3;     // norm2(a); y = conv2(n3) + residual
    Tensor<T> t_act;  // (N, time_emb_dim) GELU(t_emb)
    Tensor<T> t_out;  // (N, dim) mlp(t_act)
    template <class Self>
    static auto tensors(Self& s) {
      return std::tie(s.h, s.n0, s.c1, s.a, s.n3, s.t_act, s.t_out);
    }
  };
  // Temporaries of one call, shared by every ConvNextBlock of a network (nn/workspace.hpp).
  using Workspace = BlockWorkspace<T, Activations>;

  // Inference keeps nothing: the activations go to the workspace's gradient mirror, free until a backward.
  void forward(const Tensor<T>& x, const Tensor<T>* t_emb, Tensor<T>& y, Workspace& ws,
               ForwardMode mode = ForwardMode::Training) {
    Activations& a = mode == ForwardMode::Training ? acts_ : ws.grads;
    ds_conv_.forward(x, a.h);
    if (mlp_ && t_emb) {
      gelu_.forward(*t_emb, a.t_act);
      mlp_->forward(a.t_act, a.t_out);
      add_channel_vector(a.h, a.t_out);
    }
    if (norm1_) norm1_->forward(a.h, a.n0);
    conv1_.forward(norm1_ ? a.n0 : a.h, a.c1);
    gelu_.forward(a.c1, a.a);
    norm2_.forward(a.a, a.n3);
    conv2_.forward(a.n3, y);
    add_residual(res_conv_.get(), x, y, ws.res);
  }

  // Forward reversed; d holds the gradient of each activation of the same name.
  void backward(const Tensor<T>& x, const Tensor<T>* t_emb, const Tensor<T>& dy, Tensor<T>* dx, Tensor<T>* dt_emb,
                Workspace& ws) {
    const Activations& a = acts_;
    Activations& d = ws.grads;
    zero_grads(d, a);
    conv2_.backward(a.n3, dy, &d.n3);
    norm2_.backward(a.a, d.n3, &d.a);
    gelu_.backward(a.c1, d.a, &d.c1);
    if (norm1_) {
      conv1_.backward(a.n0, d.c1, &d.n0);
      norm1_->backward(a.h, d.n0, &d.h);
    } else {
      conv1_.backward(a.h, d.c1, &d.h);
    }
    if (mlp_ && t_emb) {
      add_channel_vector_backward(d.h, d.t_out);
      mlp_->backward(a.t_act, d.t_out, &d.t_act);
      gelu_.backward(*t_emb, d.t_act, dt_emb);
    }
    ds_conv_.backward(x, d.h, dx);
    add_residual_backward(res_conv_.get(), x, dy, dx);  // last: dx sums the two branches in this order
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
  Activations acts_;
};

}  // namespace diffusion::nn
