#pragma once
// Attention products over the heads of a batch, for nn::Attention and nn::LinearAttention (the 1x1 convolutions
// and norms around them stay in the layers). Layout: qkv (N, 3 * hidden, P) with hidden = heads * d, q then k then
// v, head h at rows h * d .. h * d + d of each; P = H * W pixels. Parallel over (image, head) items; each item's
// GEMMs and softmaxes are the same whatever thread runs it. Scratch: AttentionHead and SoftmaxWork (scratch.hpp).
//
// Full attention (the reference's `Attention`), per head with q, k, v (d, P):
//   A = softmax_rows(scale * q^T k)  (P, P);  out[e][i] = sum_j v[e][j] A[i][j]
//   attention_forward:  attn (N, heads, P, P) and out (N, hidden, P) ASSIGNED
//   attention_backward: dqkv ASSIGNED from dout (N, hidden, P) and the saved attn
// Linear attention (Shen et al. 2018; the reference's `LinearAttention`), per head:
//   qs = softmax over d (per pixel), ks = softmax over P (per feature), context[d][e] = sum_n ks[d][n] v[e][n],
//   out[e][n] = scale sum_d context[d][e] qs[d][n]
//   linear_attention_forward:   q_soft, k_soft, v (N, heads, d, P) and context (N, heads, d, d) ASSIGNED; k_soft and
//                               v may both be null (an inference pass: the keys' softmax then lives in per-thread
//                               scratch and the context reads v from qkv, the same values, so context is the same)
//   linear_attention_out:       out (N, hidden, P) ASSIGNED from context and q_soft
//   linear_attention_backward:  dqkv ASSIGNED from dout (N, hidden, P) and the saved q_soft, k_soft, v, context

#include <algorithm>

#include "diffusion/core/parallel.hpp"
#include "diffusion/kernels/gemm.hpp"
#include "diffusion/kernels/scratch.hpp"
#include "diffusion/kernels/softmax.hpp"

namespace diffusion::kernels {

template <class T>
void attention_forward(Index N, Index heads, Index d, Index P, T scale, const T* qkv, T* attn, T* out) {
  const Index hidden = heads * d;
  parallel_for(0, N * heads, double(P * P * (2 * d + 10)), [&](Index nh) {  // two GEMMs, a softmax
    const Index n = nh / heads, h = nh % heads;
    const T* q = qkv + (n * 3 * hidden + h * d) * P;  // (d, P)
    const T* k = q + hidden * P;                       // (d, P)
    const T* v = k + hidden * P;                       // (d, P)
    T* A = attn + nh * P * P;                          // (P, P)
    gemm(Op::Trans, Op::NoTrans, P, P, d, scale, q, P, k, P, T(0), A, P);
    softmax_rows(P, P, A, A);
    T* o = out + (n * hidden + h * d) * P;  // (d, P)
    gemm(Op::NoTrans, Op::Trans, d, P, P, T(1), v, P, A, P, T(0), o, P);
  });
}

template <class T>
void attention_backward(Index N, Index heads, Index d, Index P, T scale, const T* qkv, const T* attn, const T* dout,
                        T* dqkv) {
  const Index hidden = heads * d;
  parallel_for(0, N * heads, double(P * P * (4 * d + 5)), [&](Index nh) {  // four GEMMs, a softmax
    const Index n = nh / heads, h = nh % heads;
    const Index off = (n * 3 * hidden + h * d) * P;
    const T* q = qkv + off;
    const T* k = q + hidden * P;
    const T* v = k + hidden * P;
    T* dq = dqkv + off;
    T* dk = dq + hidden * P;
    T* dv = dk + hidden * P;
    const T* A = attn + nh * P * P;
    const T* dO = dout + (n * hidden + h * d) * P;  // (d, P)
    const ScratchBuffer<T, Scratch::AttentionHead> dA_buffer(static_cast<std::size_t>(P * P));
    T* dA = dA_buffer.data();  // (P, P)
    // dv[e][j] = sum_i dO[e][i] A[i][j];  dA[i][j] = sum_e dO[e][i] v[e][j]
    gemm(Op::NoTrans, Op::NoTrans, d, P, P, T(1), dO, P, A, P, T(0), dv, P);
    gemm(Op::Trans, Op::NoTrans, P, P, d, T(1), dO, P, v, P, T(0), dA, P);
    softmax_rows_backward(P, P, A, dA, dA);  // dA := d(scaled similarity)
    // sim[i][j] = scale sum_e q[e][i] k[e][j]
    gemm(Op::NoTrans, Op::Trans, d, P, P, scale, k, P, dA, P, T(0), dq, P);
    gemm(Op::NoTrans, Op::NoTrans, d, P, P, scale, q, P, dA, P, T(0), dk, P);
  });
}

template <class T>
void linear_attention_forward(Index N, Index heads, Index d, Index P, const T* qkv, T* q_soft, T* k_soft, T* v_out,
                              T* context) {
  const Index hidden = heads * d;
  parallel_for(0, N * heads, double(d * P * (d + 20)), [&](Index nh) {  // two softmaxes, one (d, d, P) GEMM
    const Index n = nh / heads, h = nh % heads;
    const T* q = qkv + (n * 3 * hidden + h * d) * P;  // (d, P)
    const T* k = q + hidden * P;
    const T* v = k + hidden * P;
    T* qs = q_soft + nh * d * P;
    const bool keep = k_soft != nullptr;
    const ScratchBuffer<T, Scratch::KeysSoftmax> keys(keep ? 0 : static_cast<std::size_t>(d * P));
    T* ks = keep ? k_soft + nh * d * P : keys.data();
    if (keep) std::copy(v, v + d * P, v_out + nh * d * P);
    const ScratchBuffer<double, Scratch::SoftmaxWork> work(static_cast<std::size_t>(2 * P));
    softmax_cols(d, P, q, qs, work.data());  // over features, per pixel
    softmax_rows(d, P, k, ks);               // over pixels, per feature
    T* ctx = context + nh * d * d;
    gemm(Op::NoTrans, Op::Trans, d, d, P, T(1), ks, P, v, P, T(0), ctx, d);
  });
}

template <class T>
void linear_attention_out(Index N, Index heads, Index d, Index P, T scale, const T* context, const T* q_soft,
                          T* out) {
  const Index hidden = heads * d;
  parallel_for(0, N * heads, double(d * d * P), [&](Index nh) {
    const Index n = nh / heads, h = nh % heads;
    gemm(Op::Trans, Op::NoTrans, d, P, d, scale, context + nh * d * d, d, q_soft + nh * d * P, P, T(0),
         out + (n * hidden + h * d) * P, P);
  });
}

template <class T>
void linear_attention_backward(Index N, Index heads, Index d, Index P, T scale, const T* q_soft, const T* k_soft,
                               const T* v_saved, const T* context, const T* dout, T* dqkv) {
  const Index hidden = heads * d;
  parallel_for(0, N * heads, double(d * P * (4 * d + 10)), [&](Index nh) {  // four GEMMs, two softmaxes
    const Index n = nh / heads, h = nh % heads;
    const Index off = (n * 3 * hidden + h * d) * P;
    const T* v = v_saved + nh * d * P;
    T* dq = dqkv + off;
    T* dk = dq + hidden * P;
    T* dv = dk + hidden * P;
    const T* qs = q_soft + nh * d * P;
    const T* ks = k_soft + nh * d * P;
    const T* ctx = context + nh * d * d;
    const T* dO = dout + (n * hidden + h * d) * P;  // (d, P)
    const ScratchBuffer<T, Scratch::AttentionHead> head(static_cast<std::size_t>(d * d + 2 * d * P));
    T* dctx = head.data();     // (d, d)
    T* dqs = dctx + d * d;     // (d, P)
    T* dks = dqs + d * P;      // (d, P)
    const ScratchBuffer<double, Scratch::SoftmaxWork> work(static_cast<std::size_t>(2 * P));
    // out[e][n] = scale sum_d ctx[d][e] qs[d][n]
    gemm(Op::NoTrans, Op::Trans, d, d, P, scale, qs, P, dO, P, T(0), dctx, d);
    gemm(Op::NoTrans, Op::NoTrans, d, P, d, scale, ctx, d, dO, P, T(0), dqs, P);
    // ctx[d][e] = sum_n ks[d][n] v[e][n]
    gemm(Op::NoTrans, Op::NoTrans, d, P, d, T(1), dctx, d, v, P, T(0), dks, P);
    gemm(Op::Trans, Op::NoTrans, d, P, d, T(1), dctx, d, ks, P, T(0), dv, P);
    softmax_cols_backward(d, P, qs, dqs, dq, work.data());
    softmax_rows_backward(d, P, ks, dks, dk);
  });
}

}  // namespace diffusion::kernels
