#pragma once
// The reference's ResnetBlock (He et al. 2016, as used by DDPM): two Blocks (3x3 conv -> GroupNorm -> SiLU) with the
// time embedding, passed through SiLU + Linear, added per channel between them, and a residual path that is a 1x1
// conv when the channel count changes:
//   h = SiLU(GN(conv3x3(x))) + Linear(SiLU(t))[:, :, None, None];  y = SiLU(GN(conv3x3(h))) + res_conv(x)
// Parameters: `<name>.mlp.1.{weight,bias}` (when time_emb_dim > 0), `<name>.block{1,2}.proj.{weight,bias}`,
// `<name>.block{1,2}.norm.{weight,bias}`, `<name>.res_conv.{weight,bias}` (when dim != dim_out).
// forward(x, t_emb, y, ws): t_emb (N, time_emb_dim) or null; backward(x, t_emb, dy, dx, dt_emb, ws) accumulates into
// dx, dt_emb (either may be null) and every parameter gradient. ws: the blocks' shared Workspace (nn/workspace.hpp).

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

  // What forward saves for backward, and (the same struct) their gradients during backward. (N, dim_out, H, W)
  // unless noted.
  struct Activations {
    Tensor<T> h1;     // proj1(x)
    Tensor<T> n1;     // norm1(h1)
    Tensor<T> h;      // SiLU(n1) + t_out per channel
    Tensor<T> h2;     // proj2(h)
    Tensor<T> n2;     // norm2(h2); y = SiLU(n2) + residual
    Tensor<T> t_act;  // (N, time_emb_dim) SiLU(t_emb)
    Tensor<T> t_out;  // (N, dim_out) mlp(t_act)
    template <class Self>
    static auto tensors(Self& s) {
      return std::tie(s.h1, s.n1, s.h, s.h2, s.n2, s.t_act, s.t_out);
    }
  };
  // Temporaries of one call, shared by every ResnetBlock of a network (nn/workspace.hpp).
  using Workspace = BlockWorkspace<T, Activations>;

  // Inference keeps nothing: the activations go to the workspace's gradient mirror, free until a backward.
  void forward(const Tensor<T>& x, const Tensor<T>* t_emb, Tensor<T>& y, Workspace& ws,
               ForwardMode mode = ForwardMode::Training) {
    Activations& a = mode == ForwardMode::Training ? acts_ : ws.grads;
    proj1_.forward(x, a.h1);
    norm1_.forward(a.h1, a.n1);
    silu_.forward(a.n1, a.h);
    if (mlp_ && t_emb) {
      silu_.forward(*t_emb, a.t_act);
      mlp_->forward(a.t_act, a.t_out);
      add_channel_vector(a.h, a.t_out);
    }
    proj2_.forward(a.h, a.h2);
    norm2_.forward(a.h2, a.n2);
    silu_.forward(a.n2, y);
    add_residual(res_conv_.get(), x, y, ws.res);
  }

  // Forward reversed; d holds the gradient of each activation of the same name.
  void backward(const Tensor<T>& x, const Tensor<T>* t_emb, const Tensor<T>& dy, Tensor<T>* dx, Tensor<T>* dt_emb,
                Workspace& ws) {
    const Activations& a = acts_;
    Activations& d = ws.grads;
    zero_grads(d, a);
    silu_.backward(a.n2, dy, &d.n2);
    norm2_.backward(a.h2, d.n2, &d.h2);
    proj2_.backward(a.h, d.h2, &d.h);
    if (mlp_ && t_emb) {
      add_channel_vector_backward(d.h, d.t_out);
      mlp_->backward(a.t_act, d.t_out, &d.t_act);
      silu_.backward(*t_emb, d.t_act, dt_emb);
    }
    silu_.backward(a.n1, d.h, &d.n1);
    norm1_.backward(a.h1, d.n1, &d.h1);
    proj1_.backward(x, d.h1, dx);
    add_residual_backward(res_conv_.get(), x, dy, dx);  // last: dx sums the two branches in this order
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
  Activations acts_;
};

}  // namespace diffusion::nn
