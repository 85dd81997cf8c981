#pragma once
// Linear attention (Shen et al. 2018; the reference's `LinearAttention`, used at every U-Net level): cost linear in
// the number of pixels P. x (N, dim, H, W), heads of dim_head features, hidden = heads * dim_head:
//   q, k, v = split(to_qkv(x))                          to_qkv: 1x1 conv dim -> 3 * hidden, no bias
//   q = softmax over features (dim -2), then * scale    k = softmax over pixels (dim -1)
//   context[d][e] = sum_n k[d][n] v[e][n]               (dim_head, dim_head) per head
//   out[h * dim_head + e][n] = sum_d context[d][e] q[d][n]
//   y = GroupNorm(1, dim)(conv1x1(out))                  to_out = Sequential(Conv2d(hidden, dim, 1), GroupNorm(1, dim))
// Parameters: `<name>.to_qkv.weight`, `<name>.to_out.0.{weight,bias}`, `<name>.to_out.1.{weight,bias}`.
// Saves softmaxed q and k, v and the contexts for backward (not the raw q and k, nor the heads' output, which
// backward recomputes from context and q: memory matters at 28x28 with 384 qkv channels); the products are
// kernels/attention.hpp. Contract as in conv2d.hpp, plus the workspace of nn/workspace.hpp (AttentionWorkspace).

#include <algorithm>
#include <cmath>
#include <string>

#include "diffusion/core/batch_parts.hpp"
#include "diffusion/kernels/attention.hpp"
#include "diffusion/nn/attention.hpp"
#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/group_norm.hpp"
#include "diffusion/nn/tensor_ops.hpp"
#include "diffusion/nn/workspace.hpp"

namespace diffusion::nn {

template <class T>
class LinearAttention {
 public:
  using Workspace = AttentionWorkspace<T>;

  LinearAttention(ParameterStore<T>& params, const std::string& name, Index dim, Index heads = 4, Index dim_head = 32)
      : name_(name), dim_(dim), heads_(heads), dim_head_(dim_head), scale_(static_cast<T>(std::pow(dim_head, -0.5))),
        to_qkv_(params, join_name(name, "to_qkv"), dim, 3 * heads * dim_head, 1, 1, 0, 1, false),
        to_out_conv_(params, join_name(name, "to_out.0"), heads * dim_head, dim, 1),
        to_out_norm_(params, join_name(name, "to_out.1"), 1, dim) {
    DIFFUSION_CHECK(heads > 0 && dim_head > 0, "LinearAttention '" << name << "': heads and dim_head must be positive");
  }

  // Images per part of an inference forward.
  static constexpr Index kInferencePart = 8;

  // Inference keeps nothing and runs kInferencePart images at a time: every step treats each image alone, the same
  // way in any batch, so the output is the same bits, while qkv (3 * hidden channels: the largest activation of a
  // U-Net level) and the queries are a part's size. The softmaxed queries, the context and the conv output go to
  // the workspace; the softmaxed keys and v, which only the context needs, are not stored at all.
  void forward(const Tensor<T>& x, Tensor<T>& y, Workspace& ws, ForwardMode mode = ForwardMode::Training) {
    if (mode == ForwardMode::Training) return forward_part(x, y, ws, true);
    if (x.dim(0) <= kInferencePart) return forward_part(x, y, ws, false);
    y.resize(x.shape());
    for_each_part(x.dim(0), kInferencePart, [&](Index start, Index count) {
      forward_part(batch_part<T>(x, start, count), ws.part_out, ws, false);
      copy_into_part<T>(ws.part_out, y, start);
    });
  }

  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx, Workspace& ws) {
    Tensor<T>& dqkv = ws.qkv;
    heads_out(x.shape(), context_, q_soft_, ws.heads_out);
    zero_like(ws.dconv_out, conv_out_);
    to_out_norm_.backward(conv_out_, dy, &ws.dconv_out);
    zero_like(ws.dheads_out, ws.heads_out);
    to_out_conv_.backward(ws.heads_out, ws.dconv_out, &ws.dheads_out);
    const Index N = x.dim(0), P = x.dim(2) * x.dim(3), d = dim_head_;
    dqkv.resize(Shape{N, 3 * heads_ * d, x.dim(2), x.dim(3)});  // every element assigned
    kernels::linear_attention_backward(N, heads_, d, P, scale_, q_soft_.data(), k_soft_.data(), v_.data(),
                                       context_.data(), ws.dheads_out.data(), dqkv.data());
    to_qkv_.backward(x, dqkv, dx);
  }

  const std::string& name() const { return name_; }

 private:
  // y = the layer of x; keep: save what backward reads in the members, else in the workspace (or nowhere).
  void forward_part(TensorView<T> x, Tensor<T>& y, Workspace& ws, bool keep) {
    Tensor<T>& q_soft = keep ? q_soft_ : ws.q_soft;
    Tensor<T>& context = keep ? context_ : ws.context;
    Tensor<T>& conv_out = keep ? conv_out_ : ws.dconv_out;
    Tensor<T>& qkv = ws.qkv;
    to_qkv_.forward(x, qkv);
    const Index N = x.dim(0), P = x.dim(2) * x.dim(3), d = dim_head_;
    q_soft.resize(Shape{N, heads_, d, P});
    context.resize(Shape{N, heads_, d, d});
    if (keep) {  // backward reads the softmaxed keys and v
      k_soft_.resize(Shape{N, heads_, d, P});
      v_.resize(Shape{N, heads_, d, P});
    }
    kernels::linear_attention_forward(N, heads_, d, P, qkv.data(), q_soft.data(), keep ? k_soft_.data() : nullptr,
                                      keep ? v_.data() : nullptr, context.data());
    heads_out(x.shape(), context, q_soft, ws.heads_out);
    to_out_conv_.forward(ws.heads_out, conv_out);
    to_out_norm_.forward(conv_out, y);
  }

  // out (N, hidden, H, W) from the context and q_soft; x is the input's shape.
  void heads_out(const Shape& x, const Tensor<T>& context, const Tensor<T>& q_soft, Tensor<T>& out) const {
    out.resize(Shape{x[0], heads_ * dim_head_, x[2], x[3]});
    kernels::linear_attention_out(x[0], heads_, dim_head_, x[2] * x[3], scale_, context.data(), q_soft.data(),
                                  out.data());
  }

  std::string name_;
  Index dim_, heads_, dim_head_;
  T scale_;
  Conv2d<T> to_qkv_, to_out_conv_;
  GroupNorm<T> to_out_norm_;
  Tensor<T> q_soft_;    // (N, heads, d, P) softmax of q over d (unscaled)
  Tensor<T> k_soft_;    // (N, heads, d, P) softmax of k over P
  Tensor<T> v_;         // (N, heads, d, P)
  Tensor<T> context_;   // (N, heads, d, d)
  Tensor<T> conv_out_;  // (N, dim, H, W) before the GroupNorm
};

}  // namespace diffusion::nn
