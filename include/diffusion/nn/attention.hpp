#pragma once
// Multi-head self-attention over the pixels of a feature map: the reference's `Attention` (used in the U-Net's
// middle). x (N, dim, H, W), P = H * W pixels, heads of dim_head features, hidden = heads * dim_head:
//   q, k, v = split(to_qkv(x))                  to_qkv: 1x1 conv dim -> 3 * hidden, no bias
//   A = softmax_rows(scale * q^T k)              (P, P) per head, scale = dim_head^-1/2, row max subtracted
//   out[h * dim_head + e][i] = sum_j v[e][j] A[i][j]
//   y = to_out(out)                              to_out: 1x1 conv hidden -> dim
// Parameters: `<name>.to_qkv.weight`, `<name>.to_out.weight`, `<name>.to_out.bias`.
// Saves the attention matrices (N, heads, P, P) for backward. Contract as in conv2d.hpp.

#include <cmath>
#include <string>

#include "diffusion/core/parallel.hpp"
#include "diffusion/kernels/gemm.hpp"
#include "diffusion/kernels/softmax.hpp"
#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/scratch.hpp"
#include "diffusion/nn/tensor_ops.hpp"

namespace diffusion::nn {

inline constexpr int kScratchAttention = 3;

template <class T>
class Attention {
 public:
  Attention(ParameterStore<T>& params, const std::string& name, Index dim, Index heads = 4, Index dim_head = 32)
      : name_(name), dim_(dim), heads_(heads), dim_head_(dim_head), scale_(static_cast<T>(std::pow(dim_head, -0.5))),
        to_qkv_(params, join_name(name, "to_qkv"), dim, 3 * heads * dim_head, 1, 1, 0, 1, false),
        to_out_(params, join_name(name, "to_out"), heads * dim_head, dim, 1) {
    DIFFUSION_CHECK(heads > 0 && dim_head > 0, "Attention '" << name << "': heads and dim_head must be positive");
  }

  void forward(const Tensor<T>& x, Tensor<T>& y) {
    to_qkv_.forward(x, qkv_);
    const Index N = x.dim(0), P = x.dim(2) * x.dim(3), d = dim_head_, hidden = heads_ * d;
    attn_.resize(Shape{N, heads_, P, P});
    heads_out_.resize(Shape{N, hidden, x.dim(2), x.dim(3)});
    parallel_for(0, N * heads_, double(P * P * (2 * d + 10)), [&](Index nh) {  // two GEMMs, a softmax
      const Index n = nh / heads_, h = nh % heads_;
      const T* q = qkv_.data() + (n * 3 * hidden + h * d) * P;  // (d, P)
      const T* k = q + hidden * P;                               // (d, P)
      const T* v = k + hidden * P;                               // (d, P)
      T* A = attn_.data() + nh * P * P;                          // (P, P)
      kernels::gemm(kernels::Op::Trans, kernels::Op::NoTrans, P, P, d, scale_, q, P, k, P, T(0), A, P);
      kernels::softmax_rows(P, P, A, A);
      T* out = heads_out_.data() + (n * hidden + h * d) * P;  // (d, P)
      kernels::gemm(kernels::Op::NoTrans, kernels::Op::Trans, d, P, P, T(1), v, P, A, P, T(0), out, P);
    });
    to_out_.forward(heads_out_, y);
  }

  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) {
    Tensor<T>& dheads_out = scratch_tensor<T>(kAttention0);
    Tensor<T>& dqkv = scratch_tensor<T>(kAttention0 + 1);
    zero_like(dheads_out, heads_out_);
    to_out_.backward(heads_out_, dy, &dheads_out);
    const Index N = x.dim(0), P = x.dim(2) * x.dim(3), d = dim_head_, hidden = heads_ * d;
    dqkv.resize(qkv_.shape());  // every element assigned below
    parallel_for(0, N * heads_, double(P * P * (4 * d + 5)), [&](Index nh) {  // four GEMMs, a softmax
      const Index n = nh / heads_, h = nh % heads_;
      const Index off = (n * 3 * hidden + h * d) * P;
      const T* q = qkv_.data() + off;
      const T* k = q + hidden * P;
      const T* v = k + hidden * P;
      T* dq = dqkv.data() + off;
      T* dk = dq + hidden * P;
      T* dv = dk + hidden * P;
      const T* A = attn_.data() + nh * P * P;
      const T* dout = dheads_out.data() + (n * hidden + h * d) * P;  // (d, P)
      T* dA = thread_scratch<T, kScratchAttention>(static_cast<std::size_t>(P * P));
      // dv[e][j] = sum_i dout[e][i] A[i][j];  dA[i][j] = sum_e dout[e][i] v[e][j]
      kernels::gemm(kernels::Op::NoTrans, kernels::Op::NoTrans, d, P, P, T(1), dout, P, A, P, T(0), dv, P);
      kernels::gemm(kernels::Op::Trans, kernels::Op::NoTrans, P, P, d, T(1), dout, P, v, P, T(0), dA, P);
      kernels::softmax_rows_backward(P, P, A, dA, dA);  // dA := d(scaled similarity)
      // sim[i][j] = scale sum_e q[e][i] k[e][j]
      kernels::gemm(kernels::Op::NoTrans, kernels::Op::Trans, d, P, P, scale_, k, P, dA, P, T(0), dq, P);
      kernels::gemm(kernels::Op::NoTrans, kernels::Op::NoTrans, d, P, P, scale_, q, P, dA, P, T(0), dk, P);
    });
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
