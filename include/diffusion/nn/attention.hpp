#pragma once
// Multi-head self-attention over the pixels of a feature map: the reference's `Attention` (used in the U-Net's
// middle). x (N, dim, H, W), P = H * W pixels, heads of dim_head features, hidden = heads * dim_head:
//   q, k, v = split(to_qkv(x))                  to_qkv: 1x1 conv dim -> 3 * hidden, no bias
//   A = softmax_rows(scale * q^T k)              (P, P) per head, scale = dim_head^-1/2, row max subtracted
//   out[h * dim_head + e][i] = sum_j v[e][j] A[i][j]
//   y = to_out(out)                              to_out: 1x1 conv hidden -> dim
// Parameters: `<name>.to_qkv.weight`, `<name>.to_out.weight`, `<name>.to_out.bias`.
// Saves qkv, the attention matrices (N, heads, P, P) and the heads' output for backward; the products are
// kernels/attention.hpp. Contract as in conv2d.hpp, plus the workspace of nn/workspace.hpp.

#include <cmath>
#include <string>

#include "diffusion/kernels/attention.hpp"
#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/tensor_ops.hpp"
#include "diffusion/nn/workspace.hpp"

namespace diffusion::nn {

// Temporaries of one Attention or LinearAttention call (one type for both, so that a network's attention layers of
// either kind share one workspace). hidden = heads * dim_head.
template <class T>
struct AttentionWorkspace {
  Tensor<T> qkv;         // (N, 3 * hidden, H, W) forward (LinearAttention): to_qkv(x), not saved;
                         //                       backward: d(loss)/d(qkv), once forward's is dead
  Tensor<T> heads_out;   // (N, hidden, H, W) LinearAttention: the heads' output (forward, recomputed in backward)
  Tensor<T> dheads_out;  // (N, hidden, H, W) backward: d(loss)/d(heads' output)
  Tensor<T> dconv_out;   // (N, dim, H, W) LinearAttention backward: d(loss)/d(to_out conv output);
                         //                 inference forward: the to_out conv output
  // Inference forward only: what a training forward saves in the layer (ForwardMode, nn/workspace.hpp).
  Tensor<T> q_soft, context;  // LinearAttention's, of one part of the batch (the keys' softmax and v: not stored)
  Tensor<T> part_out;         // LinearAttention's output for one part of the batch
  Tensor<T> attn;             // Attention's weights (N, heads, P, P)
};

template <class T>
class Attention {
 public:
  using Workspace = AttentionWorkspace<T>;

  Attention(ParameterStore<T>& params, const std::string& name, Index dim, Index heads = 4, Index dim_head = 32)
      : name_(name), dim_(dim), heads_(heads), dim_head_(dim_head), scale_(static_cast<T>(std::pow(dim_head, -0.5))),
        to_qkv_(params, join_name(name, "to_qkv"), dim, 3 * heads * dim_head, 1, 1, 0, 1, false),
        to_out_(params, join_name(name, "to_out"), heads * dim_head, dim, 1) {
    DIFFUSION_CHECK(heads > 0 && dim_head > 0, "Attention '" << name << "': heads and dim_head must be positive");
  }

  // Inference keeps nothing: qkv, the weights and the heads' output go to the workspace.
  void forward(const Tensor<T>& x, Tensor<T>& y, Workspace& ws, ForwardMode mode = ForwardMode::Training) {
    const bool keep = mode == ForwardMode::Training;
    Tensor<T>& qkv = keep ? qkv_ : ws.qkv;
    Tensor<T>& attn = keep ? attn_ : ws.attn;
    Tensor<T>& heads_out = keep ? heads_out_ : ws.heads_out;
    to_qkv_.forward(x, qkv);
    const Index N = x.dim(0), P = x.dim(2) * x.dim(3);
    attn.resize(Shape{N, heads_, P, P});
    heads_out.resize(Shape{N, heads_ * dim_head_, x.dim(2), x.dim(3)});
    kernels::attention_forward(N, heads_, dim_head_, P, scale_, qkv.data(), attn.data(), heads_out.data());
    to_out_.forward(heads_out, y);
  }

  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx, Workspace& ws) {
    Tensor<T>& dheads_out = ws.dheads_out;
    Tensor<T>& dqkv = ws.qkv;
    zero_like(dheads_out, heads_out_);
    to_out_.backward(heads_out_, dy, &dheads_out);
    dqkv.resize(qkv_.shape());  // every element assigned
    kernels::attention_backward(x.dim(0), heads_, dim_head_, x.dim(2) * x.dim(3), scale_, qkv_.data(), attn_.data(),
                                dheads_out.data(), dqkv.data());
    to_qkv_.backward(x, dqkv, dx);
  }

  const std::string& name() const { return name_; }

 private:
  std::string name_;
  Index dim_, heads_, dim_head_;
  T scale_;
  Conv2d<T> to_qkv_, to_out_;
  Tensor<T> qkv_;        // (N, 3 * hidden, H, W)
  Tensor<T> attn_;       // (N, heads, P, P) attention weights
  Tensor<T> heads_out_;  // (N, hidden, H, W)
};

}  // namespace diffusion::nn
