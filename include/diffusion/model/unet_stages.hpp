#pragma once
// The stages a Unet (model/unet.hpp) is assembled from, each with a forward and a backward that is its forward
// reversed line by line, and owning what its backward reads:
//   UnetBlock            a ResnetBlock or a ConvNextBlock (the reference's `block_klass`), chosen by UnetConfig
//   UnetAttention        Residual(PreNorm(LinearAttention or Attention)), or nothing (identity)
//   UnetConditioning     what every block's MLP takes: time_mlp(t), or cat(time_mlp(t), classes_mlp(c))
//   UnetDownStage        one level of the down path: two blocks, attention, downsample
//   UnetMiddleStage      block, attention, block at the lowest resolution
//   UnetUpStage          one level of the up path: cat with the skip, two blocks, attention, upsample
//   UnetHead             the final block (without time) and the 1x1 output convolution
// Temporaries of one call live in a UnetStageWorkspace that the network owns and passes down (nn/workspace.hpp):
// one for all stages, with one block workspace for all blocks and one attention workspace for all attention layers.
//
// Contract of every stage: forward(x, ...) keeps a pointer to x (the previous stage's output, which must stay
// unchanged until backward) and, in ForwardMode::Training, what backward reads; in ForwardMode::Inference it keeps
// nothing, writing those activations to the workspace's gradient buffers instead. backward(..., dy, dx, ...) takes
// dy = d(loss)/d(output) and writes d(loss)/d(x) into dx (zeroed by the caller, x's shape); parameter gradients and
// the gradient of the blocks' embedding (dtemb) accumulate.

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "diffusion/model/unet_config.hpp"
#include "diffusion/nn/activations.hpp"
#include "diffusion/nn/attention.hpp"
#include "diffusion/nn/class_embedding.hpp"
#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/conv_transpose2d.hpp"
#include "diffusion/nn/convnext_block.hpp"
#include "diffusion/nn/linear.hpp"
#include "diffusion/nn/linear_attention.hpp"
#include "diffusion/nn/prenorm_residual.hpp"
#include "diffusion/nn/resnet_block.hpp"
#include "diffusion/nn/tensor_ops.hpp"
#include "diffusion/nn/time_embedding.hpp"

namespace diffusion {

template <class T>
class UnetBlock {
 public:
  // One of the two is used (a network has blocks of one kind); the other stays empty.
  struct Workspace {
    typename nn::ConvNextBlock<T>::Workspace convnext;
    typename nn::ResnetBlock<T>::Workspace resnet;
  };

  UnetBlock(ParameterStore<T>& params, const std::string& name, const UnetConfig& config, Index dim, Index dim_out,
            Index time_emb_dim) {
    if (config.use_convnext)
      convnext_ = std::make_unique<nn::ConvNextBlock<T>>(params, name, dim, dim_out, time_emb_dim, config.convnext_mult);
    else
      resnet_ = std::make_unique<nn::ResnetBlock<T>>(params, name, dim, dim_out, time_emb_dim,
                                                      config.resnet_block_groups);
  }
  void forward(const Tensor<T>& x, const Tensor<T>* t_emb, Tensor<T>& y, Workspace& ws,
               nn::ForwardMode mode = nn::ForwardMode::Training) {
    if (convnext_) convnext_->forward(x, t_emb, y, ws.convnext, mode);
    else resnet_->forward(x, t_emb, y, ws.resnet, mode);
  }
  void backward(const Tensor<T>& x, const Tensor<T>* t_emb, const Tensor<T>& dy, Tensor<T>* dx, Tensor<T>* dt_emb,
                Workspace& ws) {
    if (convnext_) convnext_->backward(x, t_emb, dy, dx, dt_emb, ws.convnext);
    else resnet_->backward(x, t_emb, dy, dx, dt_emb, ws.resnet);
  }

 private:
  std::unique_ptr<nn::ConvNextBlock<T>> convnext_;
  std::unique_ptr<nn::ResnetBlock<T>> resnet_;
};

template <class T>
class UnetAttention {
 public:
  // Both kinds of attention share the workspace type, so one serves a network's attention layers of either kind.
  using Workspace = nn::PreNormWorkspace<T, nn::AttentionWorkspace<T>>;

  UnetAttention(ParameterStore<T>& params, const std::string& name, AttentionKind kind, Index dim, Index heads,
                Index dim_head) {
    if (kind == AttentionKind::Linear)
      linear_ = std::make_unique<Linear>(params, name, dim, heads, dim_head);
    else if (kind == AttentionKind::Full)
      full_ = std::make_unique<Full>(params, name, dim, heads, dim_head);
  }
  void forward(const Tensor<T>& x, Tensor<T>& y, Workspace& ws, nn::ForwardMode mode = nn::ForwardMode::Training) {
    if (linear_) linear_->forward(x, y, ws, mode);
    else if (full_) full_->forward(x, y, ws, mode);
    else y.copy_from(x);
  }
  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx, Workspace& ws) {
    if (linear_) linear_->backward(x, dy, dx, ws);
    else if (full_) full_->backward(x, dy, dx, ws);
    else if (dx) nn::add_into(*dx, dy);
  }

 private:
  using Linear = nn::PreNormResidual<T, nn::LinearAttention<T>>;
  using Full = nn::PreNormResidual<T, nn::Attention<T>>;
  static_assert(std::is_same_v<typename Linear::Workspace, Workspace> &&
                    std::is_same_v<typename Full::Workspace, Workspace>,
                "both attention kinds must share one workspace type");
  std::unique_ptr<Linear> linear_;
  std::unique_ptr<Full> full_;
};

// Temporaries of one stage's call, shared by every stage: a stage's backward ends before the next one's begins.
// An inference forward keeps its stage's block and attention outputs here, in the buffers of their gradients: free
// until a backward, which cannot follow an inference pass.
template <class T>
struct UnetStageWorkspace {
  Tensor<T> db1, db2;  // d(loss)/d(block1 output), d(block2 output); the head: db1 = d(final block output)
  Tensor<T> dattn;     // d(loss)/d(attention output) of an up stage or the middle
  Tensor<T> dcat;      // d(loss)/d(cat(x, skip)) of an up stage
  typename UnetBlock<T>::Workspace block;          // every block's
  typename UnetAttention<T>::Workspace attention;  // every attention layer's
};

// out = linear2(GELU(linear1(e))): the time MLP (after the sinusoidal embedding: the reference's time_mlp.1, .3)
// and the class MLP (after the class embedding: classes_mlp.0, .2).
template <class T>
struct UnetEmbeddingMlp {
  std::unique_ptr<nn::Linear<T>> linear1, linear2;
  nn::GELU<T> gelu;
  Tensor<T> h1, g, out;  // (N, width) each: linear1's output, GELU's, linear2's
  Tensor<T> dg, dh1;     // their gradients (out's comes from the caller)

  const Tensor<T>& forward(const Tensor<T>& e) {
    linear1->forward(e, h1);
    gelu.forward(h1, g);
    linear2->forward(g, out);
    return out;
  }
  // dout = d(loss)/d(out); de (optional) accumulates d(loss)/d(e).
  void backward(const Tensor<T>& e, const Tensor<T>& dout, Tensor<T>* de) {
    nn::zero_like(dg, g);
    nn::zero_like(dh1, h1);
    linear2->backward(g, dout, &dg);
    gelu.backward(h1, dg, &dh1);
    linear1->backward(e, dh1, de);
  }
};

// What every block's MLP takes, computed once per pass:
//   temb = time_mlp(sinusoidal(t))                     (N, 4 dim)
//   cond = cat(temb, classes_mlp(classes_emb(c)))      (N, 8 dim), class-conditional networks
// or nothing for a network without time embedding. classifier_free_guidance.py concatenates the two inside each
// block before the block's activation + Linear; the activation acts element by element, so concatenating once here
// is the same function, and backward splits d(cat) once. Every block adds its share of d(loss)/d(output) into
// gradient() (zeroed by zeroed_gradient() before the network's backward); backward() takes it down to the MLPs'
// parameters (t and the class ids have no gradient).
template <class T>
struct UnetConditioning {
  std::unique_ptr<nn::SinusoidalTimeEmbedding<T>> sinusoidal;  // null without time embedding
  UnetEmbeddingMlp<T> time_mlp;
  std::unique_ptr<nn::ClassEmbedding<T>> classes_embedding;  // conditional networks only, as classes_mlp
  UnetEmbeddingMlp<T> classes_mlp;
  std::vector<std::int64_t> classes;  // (N) the ids of the last forward
  Tensor<T> t_sin;                    // (N, dim) sinusoidal(t)
  Tensor<T> c_emb;                    // (N, dim) classes_emb(c)
  Tensor<T> cond;                     // (N, 8 dim) cat(temb, cemb)
  Tensor<T> dout;                     // d(loss)/d(output()): every block's share
  Tensor<T> dtemb, dcemb, dc_emb;     // conditional: dout split into the two MLPs' shares; d(loss)/d(c_emb)

  // classes: a conditional network's ids (N), null otherwise. Returns output().
  const Tensor<T>* forward(const std::vector<std::int64_t>& t, const std::vector<std::int64_t>* ids) {
    if (!sinusoidal) return nullptr;
    sinusoidal->forward(t, t_sin);
    const Tensor<T>& temb = time_mlp.forward(t_sin);
    if (!classes_embedding) return &temb;
    classes = *ids;
    classes_embedding->forward(classes, c_emb);
    concat_features(temb, classes_mlp.forward(c_emb), cond);
    return &cond;
  }
  // What the blocks took in the last forward (temb or cond), or null without time embedding.
  const Tensor<T>* output() const {
    if (!sinusoidal) return nullptr;
    return classes_embedding ? &cond : &time_mlp.out;
  }
  // dout sized as output() and zeroed, for the blocks to add to; null without time embedding.
  Tensor<T>* zeroed_gradient() {
    const Tensor<T>* y = output();
    if (!y) return nullptr;
    nn::zero_like(dout, *y);
    return &dout;
  }
  void backward() {
    if (!sinusoidal) return;
    if (!classes_embedding) return time_mlp.backward(t_sin, dout, nullptr);
    nn::zero_like(dtemb, time_mlp.out);
    nn::zero_like(dcemb, classes_mlp.out);
    split_features_backward(dout, dtemb, dcemb);
    nn::zero_like(dc_emb, c_emb);
    classes_mlp.backward(c_emb, dcemb, &dc_emb);
    classes_embedding->backward(classes, dc_emb);
    time_mlp.backward(t_sin, dtemb, nullptr);
  }

 private:
  // out (N, A + B) = cat(a (N, A), b (N, B)) along features (torch.cat(dim=-1)); assigned.
  static void concat_features(const Tensor<T>& a, const Tensor<T>& b, Tensor<T>& out) {
    const Index N = a.dim(0), A = a.dim(1), B = b.dim(1);
    out.resize(Shape{N, A + B});
    for (Index n = 0; n < N; ++n) {
      for (Index j = 0; j < A; ++j) out[n * (A + B) + j] = a[n * A + j];
      for (Index j = 0; j < B; ++j) out[n * (A + B) + A + j] = b[n * B + j];
    }
  }
  // da += dout[:, :A], db += dout[:, A:]: concat_features reversed.
  static void split_features_backward(const Tensor<T>& dout, Tensor<T>& da, Tensor<T>& db) {
    const Index N = da.dim(0), A = da.dim(1), B = db.dim(1);
    for (Index n = 0; n < N; ++n) {
      for (Index j = 0; j < A; ++j) da[n * A + j] += dout[n * (A + B) + j];
      for (Index j = 0; j < B; ++j) db[n * B + j] += dout[n * (A + B) + A + j];
    }
  }
};

// One level of the down path: skip = attn(block2(block1(x, temb), temb)); output = downsample(skip), or skip on
// the last level.
template <class T>
struct UnetDownStage {
  std::unique_ptr<UnetBlock<T>> block1, block2;
  std::unique_ptr<UnetAttention<T>> attn;
  std::unique_ptr<nn::Conv2d<T>> downsample;  // null on the last level (the reference's nn.Identity)
  const Tensor<T>* input = nullptr;            // x of the last forward: the previous stage's output
  Tensor<T> b1, b2, skip, down;                // block outputs, attention output (= skip), downsampled
  Tensor<T> dskip;                             // d(loss)/d(skip): the up path's share, then this stage's

  const Tensor<T>& forward(const Tensor<T>& x, const Tensor<T>* temb, UnetStageWorkspace<T>& ws,
                           nn::ForwardMode mode) {
    const bool keep = mode == nn::ForwardMode::Training;
    input = &x;
    Tensor<T>& o1 = keep ? b1 : ws.db1;
    Tensor<T>& o2 = keep ? b2 : ws.db2;
    block1->forward(x, temb, o1, ws.block, mode);
    block2->forward(o1, temb, o2, ws.block, mode);
    attn->forward(o2, skip, ws.attention, mode);  // skip: the up path reads it
    if (!downsample) return skip;
    downsample->forward(skip, down);
    return down;
  }
  // dskip must hold the up path's share (zeroed before the up path's backward: zero_skip_gradient).
  void backward(const Tensor<T>* temb, const Tensor<T>& dy, Tensor<T>& dx, Tensor<T>* dtemb,
                UnetStageWorkspace<T>& ws) {
    nn::zero_like(ws.db2, b2);
    nn::zero_like(ws.db1, b1);
    if (downsample) downsample->backward(skip, dy, &dskip);
    else nn::add_into(dskip, dy);
    attn->backward(b2, dskip, &ws.db2, ws.attention);
    block2->backward(b1, temb, ws.db2, &ws.db1, dtemb, ws.block);
    block1->backward(*input, temb, ws.db1, &dx, dtemb, ws.block);
  }
  void zero_skip_gradient() { nn::zero_like(dskip, skip); }
};

// The middle: mid_block2(mid_attn(mid_block1(x, temb)), temb).
template <class T>
struct UnetMiddleStage {
  std::unique_ptr<UnetBlock<T>> block1, block2;
  std::unique_ptr<UnetAttention<T>> attn;
  const Tensor<T>* input = nullptr;  // x of the last forward: the last down stage's output
  Tensor<T> b1, attn_out, out;       // (N, mid, H', W') each

  const Tensor<T>& forward(const Tensor<T>& x, const Tensor<T>* temb, UnetStageWorkspace<T>& ws,
                           nn::ForwardMode mode) {
    const bool keep = mode == nn::ForwardMode::Training;
    input = &x;
    Tensor<T>& o1 = keep ? b1 : ws.db1;
    Tensor<T>& a = keep ? attn_out : ws.dattn;
    block1->forward(x, temb, o1, ws.block, mode);
    attn->forward(o1, a, ws.attention, mode);
    block2->forward(a, temb, out, ws.block, mode);  // out: the first up stage reads it in either mode
    return out;
  }
  void backward(const Tensor<T>* temb, const Tensor<T>& dy, Tensor<T>& dx, Tensor<T>* dtemb,
                UnetStageWorkspace<T>& ws) {
    nn::zero_like(ws.dattn, attn_out);
    nn::zero_like(ws.db1, b1);
    block2->backward(attn_out, temb, dy, &ws.dattn, dtemb, ws.block);
    attn->backward(b1, ws.dattn, &ws.db1, ws.attention);
    block1->backward(*input, temb, ws.db1, &dx, dtemb, ws.block);
  }
};

// One level of the up path: output = upsample(attn(block2(block1(cat(x, skip), temb), temb))).
template <class T>
struct UnetUpStage {
  std::unique_ptr<UnetBlock<T>> block1, block2;
  std::unique_ptr<UnetAttention<T>> attn;
  std::unique_ptr<nn::ConvTranspose2d<T>> upsample;
  const Tensor<T>* input = nullptr;  // x of the last forward: the previous stage's output
  Tensor<T> cat, b1, b2, attn_out, up;

  const Tensor<T>& forward(const Tensor<T>& x, const Tensor<T>& skip, const Tensor<T>* temb,
                           UnetStageWorkspace<T>& ws, nn::ForwardMode mode) {
    const bool keep = mode == nn::ForwardMode::Training;
    input = &x;
    Tensor<T>& c = keep ? cat : ws.dcat;
    Tensor<T>& o1 = keep ? b1 : ws.db1;
    Tensor<T>& o2 = keep ? b2 : ws.db2;
    Tensor<T>& a = keep ? attn_out : ws.dattn;
    nn::concat_channels(x, skip, c);
    block1->forward(c, temb, o1, ws.block, mode);
    block2->forward(o1, temb, o2, ws.block, mode);
    attn->forward(o2, a, ws.attention, mode);
    upsample->forward(a, up);
    return up;
  }
  // dskip accumulates d(loss)/d(skip).
  void backward(const Tensor<T>* temb, const Tensor<T>& dy, Tensor<T>& dx, Tensor<T>& dskip, Tensor<T>* dtemb,
                UnetStageWorkspace<T>& ws) {
    nn::zero_like(ws.dattn, attn_out);
    nn::zero_like(ws.db2, b2);
    nn::zero_like(ws.db1, b1);
    nn::zero_like(ws.dcat, cat);
    upsample->backward(attn_out, dy, &ws.dattn);
    attn->backward(b2, ws.dattn, &ws.db2, ws.attention);
    block2->backward(b1, temb, ws.db2, &ws.db1, dtemb, ws.block);
    block1->backward(cat, temb, ws.db1, &ws.dcat, dtemb, ws.block);
    nn::concat_channels_backward(ws.dcat, &dx, &dskip, input->dim(1));
  }
};

// The head: y = final_conv(final_block(x)); the final block takes no time embedding, as in the primer.
template <class T>
struct UnetHead {
  std::unique_ptr<UnetBlock<T>> block;
  std::unique_ptr<nn::Conv2d<T>> conv;  // 1x1, dim -> out_dim
  const Tensor<T>* input = nullptr;     // x of the last forward: the last up stage's output
  Tensor<T> h;                          // (N, dim, H, W) the block's output

  void forward(const Tensor<T>& x, Tensor<T>& y, UnetStageWorkspace<T>& ws, nn::ForwardMode mode) {
    input = &x;
    Tensor<T>& o = mode == nn::ForwardMode::Training ? h : ws.db1;
    block->forward(x, nullptr, o, ws.block, mode);
    conv->forward(o, y);
  }
  void backward(const Tensor<T>& dy, Tensor<T>& dx, UnetStageWorkspace<T>& ws) {
    nn::zero_like(ws.db1, h);
    conv->backward(h, dy, &ws.db1);
    block->backward(*input, nullptr, ws.db1, &dx, nullptr, ws.block);
  }
};

}  // namespace diffusion
