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
// backward recomputes from context and q: memory matters at 28x28 with 384 qkv channels). Contract as in conv2d.hpp.

#include <algorithm>
#include <cmath>
#include <string>

#include "diffusion/core/parallel.hpp"
#include "diffusion/kernels/gemm.hpp"
#include "diffusion/kernels/softmax.hpp"
#include "diffusion/nn/attention.hpp"
#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/group_norm.hpp"
#include "diffusion/nn/scratch.hpp"
#include "diffusion/nn/tensor_ops.hpp"

namespace diffusion::nn {

inline constexpr int kScratchSoftmaxWork = 4;

template <class T>
class LinearAttention {
 public:
  LinearAttention(ParameterStore<T>& params, const std::string& name, Index dim, Index heads = 4, Index dim_head = 32)
      : name_(name), dim_(dim), heads_(heads), dim_head_(dim_head), scale_(static_cast<T>(std::pow(dim_head, -0.5))),
        to_qkv_(params, join_name(name, "to_qkv"), dim, 3 * heads * dim_head, 1, 1, 0, 1, false),
        to_out_conv_(params, join_name(name, "to_out.0"), heads * dim_head, dim, 1),
        to_out_norm_(params, join_name(name, "to_out.1"), 1, dim) {
    DIFFUSION_CHECK(heads > 0 && dim_head > 0, "LinearAttention '" << name << "': heads and dim_head must be positive");
  }

  void forward(const Tensor<T>& x, Tensor<T>& y) {
    Tensor<T>& qkv = scratch_tensor<T>(kAttention0 + 1);        // (N, 3 * hidden, H, W), forward only
    Tensor<T>& heads_out = scratch_tensor<T>(kAttention0 + 3);  // (N, hidden, H, W), recomputed in backward
    to_qkv_.forward(x, qkv);
    const Index N = x.dim(0), P = x.dim(2) * x.dim(3), d = dim_head_, hidden = heads_ * d;
    q_soft_.resize(Shape{N, heads_, d, P});
    k_soft_.resize(Shape{N, heads_, d, P});
    v_.resize(Shape{N, heads_, d, P});
    context_.resize(Shape{N, heads_, d, d});
    heads_out.resize(Shape{N, hidden, x.dim(2), x.dim(3)});
    parallel_for(0, N * heads_, double(d * P * (d + 20)), [&](Index nh) {  // two softmaxes, one (d, d, P) GEMM
      const Index n = nh / heads_, h = nh % heads_;
      const T* q = qkv.data() + (n * 3 * hidden + h * d) * P;  // (d, P)
      const T* k = q + hidden * P;
      const T* v = k + hidden * P;
      T* qs = q_soft_.data() + nh * d * P;
      T* ks = k_soft_.data() + nh * d * P;
      std::copy(v, v + d * P, v_.data() + nh * d * P);
      double* work = thread_scratch<double, kScratchSoftmaxWork>(static_cast<std::size_t>(2 * P));
      kernels::softmax_cols(d, P, q, qs, work);  // over features, per pixel
      kernels::softmax_rows(d, P, k, ks);        // over pixels, per feature
      T* ctx = context_.data() + nh * d * d;
      kernels::gemm(kernels::Op::NoTrans, kernels::Op::Trans, d, d, P, T(1), ks, P, v, P, T(0), ctx, d);
    });
    compute_heads_out(N, P, heads_out);
    to_out_conv_.forward(heads_out, conv_out_);
    to_out_norm_.forward(conv_out_, y);
  }

  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) {
    Tensor<T>& dheads_out = scratch_tensor<T>(kAttention0);
    Tensor<T>& dqkv = scratch_tensor<T>(kAttention0 + 1);
    Tensor<T>& dconv_out = scratch_tensor<T>(kAttention0 + 2);
    Tensor<T>& heads_out = scratch_tensor<T>(kAttention0 + 3);
    const Index N = x.dim(0), P = x.dim(2) * x.dim(3), d = dim_head_, hidden = heads_ * d;
    heads_out.resize(Shape{N, hidden, x.dim(2), x.dim(3)});
    compute_heads_out(N, P, heads_out);
    zero_like(dconv_out, conv_out_);
    to_out_norm_.backward(conv_out_, dy, &dconv_out);
    zero_like(dheads_out, heads_out);
    to_out_conv_.backward(heads_out, dconv_out, &dheads_out);
    dqkv.resize(Shape{N, 3 * hidden, x.dim(2), x.dim(3)});  // every element assigned below
    parallel_for(0, N * heads_, double(d * P * (4 * d + 10)), [&](Index nh) {  // four GEMMs, two softmaxes
      const Index n = nh / heads_, h = nh % heads_;
      const Index off = (n * 3 * hidden + h * d) * P;
      const T* v = v_.data() + nh * d * P;
      T* dq = dqkv.data() + off;
      T* dk = dq + hidden * P;
      T* dv = dk + hidden * P;
      const T* qs = q_soft_.data() + nh * d * P;
      const T* ks = k_soft_.data() + nh * d * P;
      const T* ctx = context_.data() + nh * d * d;
      const T* dout = dheads_out.data() + (n * hidden + h * d) * P;  // (d, P)
      T* scratch = thread_scratch<T, kScratchAttention>(static_cast<std::size_t>(d * d + 2 * d * P));
      T* dctx = scratch;             // (d, d)
      T* dqs = scratch + d * d;      // (d, P)
      T* dks = dqs + d * P;          // (d, P)
      double* work = thread_scratch<double, kScratchSoftmaxWork>(static_cast<std::size_t>(2 * P));
      // out[e][n] = scale sum_d ctx[d][e] qs[d][n]
      kernels::gemm(kernels::Op::NoTrans, kernels::Op::Trans, d, d, P, scale_, qs, P, dout, P, T(0), dctx, d);
      kernels::gemm(kernels::Op::NoTrans, kernels::Op::NoTrans, d, P, d, scale_, ctx, d, dout, P, T(0), dqs, P);
      // ctx[d][e] = sum_n ks[d][n] v[e][n]
      kernels::gemm(kernels::Op::NoTrans, kernels::Op::NoTrans, d, P, d, T(1), dctx, d, v, P, T(0), dks, P);
      kernels::gemm(kernels::Op::Trans, kernels::Op::NoTrans, d, P, d, T(1), dctx, d, ks, P, T(0), dv, P);
      kernels::softmax_cols_backward(d, P, qs, dqs, dq, work);
      kernels::softmax_rows_backward(d, P, ks, dks, dk);
    });
    to_qkv_.backward(x, dqkv, dx);
  }

  const std::string& name() const { return name_; }

 private:
  std::string name_;
  Index dim_, heads_, dim_head_;
  T scale_;
  Conv2d<T> to_qkv_, to_out_conv_;
  GroupNorm<T> to_out_norm_;
  // out[h * d + e][n] = scale sum_d context[d][e] qs[d][n], for every image and head.
  void compute_heads_out(Index N, Index P, Tensor<T>& heads_out) const {
    const Index d = dim_head_, hidden = heads_ * d;
    parallel_for(0, N * heads_, double(d * d * P), [&](Index nh) {
      const Index n = nh / heads_, h = nh % heads_;
      kernels::gemm(kernels::Op::Trans, kernels::Op::NoTrans, d, P, d, scale_, context_.data() + nh * d * d, d,
                    q_soft_.data() + nh * d * P, P, T(0), heads_out.data() + (n * hidden + h * d) * P, P);
    });
  }

  Tensor<T> q_soft_;    // (N, heads, d, P) softmax of q over d (unscaled)
  Tensor<T> k_soft_;    // (N, heads, d, P) softmax of k over P
  Tensor<T> v_;         // (N, heads, d, P)
  Tensor<T> context_;   // (N, heads, d, d)
  Tensor<T> conv_out_;  // (N, dim, H, W) before the GroupNorm
};

}  // namespace diffusion::nn
