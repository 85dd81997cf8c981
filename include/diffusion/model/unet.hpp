#pragma once
// Unet<T>: the noise predictor of the primer's "Implementing the Original Paper" (Ho et al. 2020 as written by
// P. Wang and The Annotated Diffusion Model), the same network as the reference PyTorch `Unet`: same layers, same
// parameter names and shapes as its state_dict(), so weights move both ways (model/unet_weights.hpp).
//
//   x (N, channels, H, W), t (N) integer timesteps
//   x = init_conv(x)                                   7x7 conv, channels -> init_dim
//   temb = time_mlp(t)                                 sinusoidal(dim) -> Linear -> GELU -> Linear, (N, 4 dim)
//   for each level l:      x = attn(block2(block1(x, temb), temb)); skip[l] = x; x = downsample(x) (not last level)
//   middle:                x = mid_block2(mid_attn(mid_block1(x, temb)), temb)
//   for each up stage i:   x = upsample(attn(block2(block1(cat(x, skip[L-1-i]), temb), temb)))
//   y = final_conv(final_block(x))                     block(dim, dim) without time, then 1x1 conv -> out_dim
//
// Class-conditional (config.num_classes > 0; classifier_free_guidance.py's parts on the primer's network): a class
// id per image c (N), in [0, num_classes) or kNullClass for the learned null embedding, and
//   cemb = classes_mlp(classes_emb(c))                 Embedding (or null_classes_emb) -> Linear -> GELU -> Linear,
//                                                      (N, 4 dim)
//   temb = cat(temb, cemb)                             (N, 8 dim): what every block's MLP takes (the final block
//                                                      still takes none, as in the primer)
// That file concatenates the two inside each block before the block's activation + Linear; the activation acts
// element by element, so concatenating once here is the same function, and backward splits d(cat) once.
//
// Like the reference, every up stage upsamples and the first level's skip is never used; H and W must be
// divisible by 2^(levels - 1). backward(dy) accumulates every parameter gradient into params().
//
// Memory (nn/workspace.hpp): every activation backward reads is owned by the stage or layer that saves it; the
// temporaries of one call live in one workspace the network owns and passes down (one for all blocks, one for all
// attention layers, one for the stages' gradients), and the gradient between stages flows through two buffers that
// trade roles (GradientRelay). Everything is allocated on the first batch and reused after: no allocation per step.
// predict (the model call of the samplers) is the same computation keeping nothing: what forward saves goes to the
// workspaces' buffers, so that sampling needs about a stage's activations instead of the whole network's.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "diffusion/core/parameters.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/model/unet_config.hpp"
#include "diffusion/model/unet_plan.hpp"
#include "diffusion/model/unet_stages.hpp"
#include "diffusion/nn/activations.hpp"
#include "diffusion/nn/class_embedding.hpp"
#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/conv_transpose2d.hpp"
#include "diffusion/nn/linear.hpp"
#include "diffusion/nn/tensor_ops.hpp"
#include "diffusion/nn/time_embedding.hpp"

namespace diffusion {

template <class T>
class Unet {
 public:
  // Builds the network; parameters drawn from `seed` with PyTorch's default initialisation.
  explicit Unet(const UnetConfig& config, std::uint64_t seed = 0)
      : config_(config), params_(std::make_unique<ParameterStore<T>>(seed)) {
    config_.validate();
    build();
  }

  // A Unet is a value. A copy is a deep, independent network: the same config, its own layers registered in its own
  // store, the values and gradients of `other` copied in. A move hands over the layers and their store (the layers
  // refer to the store, which lives on the heap, so they stay valid); the moved-from network may only be assigned
  // to or destroyed. Neither carries the last forward pass: run forward again before backward.
  Unet(const Unet& other) : config_(other.config_), params_(std::make_unique<ParameterStore<T>>(other.params().seed())) {
    build();
    params_->copy_from(*other.params_);
    predict_chunk_ = other.predict_chunk_;
  }
  Unet& operator=(const Unet& other) {
    if (this != &other) *this = Unet(other);
    return *this;
  }
  Unet(Unet&&) = default;
  Unet& operator=(Unet&&) = default;

  const UnetConfig& config() const { return config_; }
  ParameterStore<T>& params() { return *params_; }
  const ParameterStore<T>& params() const { return *params_; }

  // The model callable the samplers take (samplers/sample.hpp): out (N, out_dim, H, W) = eps_theta(x, t), an
  // inference pass (predict).
  void operator()(TensorView<T> x, const std::vector<std::int64_t>& t, Tensor<T>& out) { predict(x, t, out); }
  // A conditional network's: out = eps_theta(x, t, classes) (a class id per image, or kNullClass).
  void operator()(TensorView<T> x, const std::vector<std::int64_t>& t, const std::vector<std::int64_t>& classes,
                  Tensor<T>& out) {
    predict(x, t, classes, out);
  }

  // y = eps_theta(x, t) as forward computes it, bit for bit, keeping nothing for backward (sampling, evaluation):
  // the activations that forward saves go to buffers that one block, one attention layer and one stage at a time
  // reuse (the gradient buffers of backward), so that memory is about one stage's worth instead of the network's.
  // backward may not follow (it throws). x is read during the call only.
  void predict(TensorView<T> x, const std::vector<std::int64_t>& t, Tensor<T>& y) { predict_impl(x, t, nullptr, y); }
  void predict(TensorView<T> x, const std::vector<std::int64_t>& t, const std::vector<std::int64_t>& classes,
               Tensor<T>& y) {
    predict_impl(x, t, &classes, y);
  }

  // predict runs a batch in parts of at most `images` images (0, the default: the whole batch at once). Every layer
  // treats the images of a batch independently, each the same way whatever the batch (the guarantee gradient
  // accumulation rests on), so the output is the same bit for bit; memory is one part's, speed that of smaller
  // GEMMs. For batches too large for memory.
  void set_predict_chunk(Index images) {
    DIFFUSION_CHECK(images >= 0, "Unet::set_predict_chunk: images per part must be >= 0 (0: whole batch), got "
                                     << images);
    predict_chunk_ = images;
  }
  Index predict_chunk() const { return predict_chunk_; }

  // y (N, out_dim, H, W) = eps_theta(x (N, channels, H, W), t). Keeps what backward needs. x is read through a
  // view (a Tensor, or the caller's own buffer: no copy) and is kept until backward: it must stay alive and
  // unchanged until then, so a temporary does not compile.
  // Unconditional networks only (a conditional one throws, naming the class ids it needs).
  void forward(TensorView<T> x, const std::vector<std::int64_t>& t, Tensor<T>& y) {
    forward_impl(x, t, nullptr, y, nn::ForwardMode::Training);
  }
  void forward(const Tensor<T>&& x, const std::vector<std::int64_t>& t, Tensor<T>& y) = delete;  // x would dangle
  // Conditional networks only: classes (N) holds each image's class id in [0, num_classes) or kNullClass.
  void forward(TensorView<T> x, const std::vector<std::int64_t>& t, const std::vector<std::int64_t>& classes,
               Tensor<T>& y) {
    forward_impl(x, t, &classes, y, nn::ForwardMode::Training);
  }
  void forward(const Tensor<T>&& x, const std::vector<std::int64_t>& t, const std::vector<std::int64_t>& classes,
               Tensor<T>& y) = delete;  // x would dangle

  bool is_conditional() const { return config_.num_classes > 0; }

  // Accumulates d(loss)/d(parameters) into params().grads() given dy = d(loss)/d(y) for the last forward.
  // dx (optional) accumulates d(loss)/d(x). The forward pass reversed, stage by stage.
  void backward(const Tensor<T>& dy, Tensor<T>* dx = nullptr) {
    DIFFUSION_CHECK(input_.view.data() != nullptr,
                    "Unet::backward needs a forward just before it: none since the network was built, copied or "
                    "moved, or the last pass was predict (or the model call), which keeps nothing for backward");
    // What the blocks took (temb_, or cond_ = cat(temb_, cemb_) when conditional) and the gradient they add to.
    const Tensor<T>* temb = config_.with_time_emb ? (is_conditional() ? &cond_ : &temb_) : nullptr;
    Tensor<T>* dtemb = temb ? (is_conditional() ? &dcond_ : &dtemb_) : nullptr;
    // The gradients that several stages add to, zeroed once: the blocks' embedding's and every skip connection's.
    if (dtemb) nn::zero_like(*dtemb, *temb);
    for (auto& s : downs_) nn::zero_like(s.dskip, s.skip);
    GradientRelay& g = relay_;
    final_backward(dy, g.dx_for(*final_input_));
    g.pass();
    for (std::size_t i = ups_.size(); i-- > 0;) {
      ups_[i].backward(temb, g.dy(), g.dx_for(*ups_[i].input), skip_of(i).dskip, dtemb, ws_);
      g.pass();
    }
    mid_backward(temb, g.dy(), g.dx_for(*mid_input_), dtemb);
    g.pass();
    for (std::size_t l = downs_.size(); l-- > 0;) {
      downs_[l].backward(temb, g.dy(), g.dx_for(*downs_[l].input), dtemb, ws_);
      g.pass();
    }
    init_conv_->backward(input_.view, g.dy(), dx);
    if (!dtemb) return;
    if (is_conditional()) {
      // dcond_ = [dtemb | dcemb]: the time MLP's share and the class MLP's, split once.
      nn::zero_like(dtemb_, temb_);
      nn::zero_like(dcemb_, cemb_);
      split_features_backward(dcond_, dtemb_, dcemb_);
      classes_backward();
    }
    time_backward();
  }

 private:
  void predict_impl(TensorView<T> x, const std::vector<std::int64_t>& t, const std::vector<std::int64_t>* classes,
                    Tensor<T>& y) {
    const Index n = x.rank() == 4 ? x.dim(0) : 0;
    if (predict_chunk_ == 0 || n <= predict_chunk_) return forward_impl(x, t, classes, y, nn::ForwardMode::Inference);
    check_input(x, t, classes);
    const Index image = x.numel() / n;
    for (Index start = 0; start < n; start += predict_chunk_) {
      const Index count = std::min(predict_chunk_, n - start);
      const auto first = static_cast<std::ptrdiff_t>(start), last = static_cast<std::ptrdiff_t>(start + count);
      chunk_t_.assign(t.begin() + first, t.begin() + last);
      if (classes) chunk_classes_.assign(classes->begin() + first, classes->begin() + last);
      const TensorView<T> part(x.data() + start * image, Shape{count, x.dim(1), x.dim(2), x.dim(3)});
      forward_impl(part, chunk_t_, classes ? &chunk_classes_ : nullptr, chunk_y_, nn::ForwardMode::Inference);
      if (start == 0) y.resize(Shape{n, chunk_y_.dim(1), chunk_y_.dim(2), chunk_y_.dim(3)});
      std::copy(chunk_y_.data(), chunk_y_.data() + chunk_y_.numel(), y.data() + start * (y.numel() / n));
    }
  }

  void forward_impl(TensorView<T> x, const std::vector<std::int64_t>& t, const std::vector<std::int64_t>* classes,
                    Tensor<T>& y, nn::ForwardMode mode) {
    check_input(x, t, classes);
    input_.view = TensorView<T>();  // backward may run only after a training forward that completed
    t_ = t;
    if (classes) classes_ = *classes;
    init_conv_->forward(x, x0_);
    const Tensor<T>* temb = time_forward(t);
    if (classes) temb = classes_forward(*temb);
    const Tensor<T>* cur = &x0_;
    for (auto& s : downs_) cur = &s.forward(*cur, temb, ws_, mode);
    cur = &mid_forward(*cur, temb, mode);
    for (std::size_t i = 0; i < ups_.size(); ++i) cur = &ups_[i].forward(*cur, skip_of(i).skip, temb, ws_, mode);
    final_forward(*cur, y, mode);
    if (mode == nn::ForwardMode::Training) input_.view = x;
  }

  // Temporaries of one stage's call, shared by every stage: a stage's backward ends before the next one's begins.
  // An inference forward (predict) keeps its stage's block and attention outputs here, in the buffers of their
  // gradients: free until a backward, which cannot follow an inference pass.
  struct StageWorkspace {
    Tensor<T> db1, db2;  // d(loss)/d(block1 output), d(block2 output); the final stage: db1 = d(final block output)
    Tensor<T> dattn;     // d(loss)/d(attention output) of an up stage or the middle
    Tensor<T> dcat;      // d(loss)/d(cat(x, skip)) of an up stage
    typename UnetBlock<T>::Workspace block;          // every block's
    typename UnetAttention<T>::Workspace attention;  // every attention layer's
  };

  // The gradient flowing down the stages, in two buffers that trade roles: while a stage's backward runs, dy() is
  // d(loss)/d(its output) and dx_for(input) (zeroed to the input's shape) receives d(loss)/d(its input); pass()
  // makes that the next stage's dy(). A stage never gets one buffer as both.
  class GradientRelay {
   public:
    Tensor<T>& dx_for(const Tensor<T>& input) {
      nn::zero_like(buffers_[dx_], input);
      return buffers_[dx_];
    }
    const Tensor<T>& dy() const { return buffers_[1 - dx_]; }
    void pass() { dx_ = 1 - dx_; }

   private:
    Tensor<T> buffers_[2];
    int dx_ = 0;
  };

  // One level of the down path: skip = attn(block2(block1(x, temb), temb)); output = downsample(skip), or skip on
  // the last level.
  struct DownStage {
    std::unique_ptr<UnetBlock<T>> block1, block2;
    std::unique_ptr<UnetAttention<T>> attn;
    std::unique_ptr<nn::Conv2d<T>> downsample;  // null on the last level (the reference's nn.Identity)
    const Tensor<T>* input = nullptr;            // x of the last forward: the previous stage's output
    Tensor<T> b1, b2, skip, down;                // block outputs, attention output (= skip), downsampled
    Tensor<T> dskip;                             // d(loss)/d(skip): the up path's share, then this stage's

    const Tensor<T>& forward(const Tensor<T>& x, const Tensor<T>* temb, StageWorkspace& ws, nn::ForwardMode mode) {
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
    // dy = d(loss)/d(output); dx (zeroed, x's shape) receives d(loss)/d(x). dskip must hold the up path's share.
    void backward(const Tensor<T>* temb, const Tensor<T>& dy, Tensor<T>& dx, Tensor<T>* dtemb, StageWorkspace& ws) {
      nn::zero_like(ws.db2, b2);
      nn::zero_like(ws.db1, b1);
      if (downsample) downsample->backward(skip, dy, &dskip);
      else nn::add_into(dskip, dy);
      attn->backward(b2, dskip, &ws.db2, ws.attention);
      block2->backward(b1, temb, ws.db2, &ws.db1, dtemb, ws.block);
      block1->backward(*input, temb, ws.db1, &dx, dtemb, ws.block);
    }
  };

  // One level of the up path: output = upsample(attn(block2(block1(cat(x, skip), temb), temb))).
  struct UpStage {
    std::unique_ptr<UnetBlock<T>> block1, block2;
    std::unique_ptr<UnetAttention<T>> attn;
    std::unique_ptr<nn::ConvTranspose2d<T>> upsample;
    const Tensor<T>* input = nullptr;  // x of the last forward: the previous stage's output
    Tensor<T> cat, b1, b2, attn_out, up;

    const Tensor<T>& forward(const Tensor<T>& x, const Tensor<T>& skip, const Tensor<T>* temb, StageWorkspace& ws,
                             nn::ForwardMode mode) {
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
    // dy = d(loss)/d(output); dx (zeroed, x's shape) receives d(loss)/d(x), dskip accumulates d(loss)/d(skip).
    void backward(const Tensor<T>* temb, const Tensor<T>& dy, Tensor<T>& dx, Tensor<T>& dskip, Tensor<T>* dtemb,
                  StageWorkspace& ws) {
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

  // Constructs every layer with the names and widths of the plan (model/unet_plan.hpp), in its registration order.
  void build() {
    const UnetPlan plan = plan_unet(config_);
    const UnetConfig& c = config_;
    ParameterStore<T>& params = *params_;
    const auto conv = [&params](const ConvPlan& p) {
      return std::make_unique<nn::Conv2d<T>>(params, p.name, p.in, p.out, p.kernel, p.stride, p.padding);
    };
    const auto block = [&](const BlockPlan& b) {
      return std::make_unique<UnetBlock<T>>(params, b.name, c, b.in, b.out, b.time_dim);
    };
    const auto attention = [&params](const AttentionPlan& a) {
      return std::make_unique<UnetAttention<T>>(params, a.name, a.kind, a.channels, a.heads, a.dim_head);
    };
    init_conv_ = conv(plan.init_conv);
    if (plan.time_dim > 0) {
      time_embedding_ = std::make_unique<nn::SinusoidalTimeEmbedding<T>>(plan.time_embedding_dim);
      time_linear1_ = std::make_unique<nn::Linear<T>>(params, plan.time_linear1.name, plan.time_linear1.in,
                                                      plan.time_linear1.out);
      time_linear2_ = std::make_unique<nn::Linear<T>>(params, plan.time_linear2.name, plan.time_linear2.in,
                                                      plan.time_linear2.out);
    }
    if (plan.classes_dim > 0) {
      classes_embedding_ = std::make_unique<nn::ClassEmbedding<T>>(params, "classes_emb", "null_classes_emb",
                                                                   c.num_classes, c.dim);
      classes_linear1_ = std::make_unique<nn::Linear<T>>(params, plan.classes_linear1.name, plan.classes_linear1.in,
                                                         plan.classes_linear1.out);
      classes_linear2_ = std::make_unique<nn::Linear<T>>(params, plan.classes_linear2.name, plan.classes_linear2.in,
                                                         plan.classes_linear2.out);
    }
    downs_.resize(plan.downs.size());
    for (std::size_t l = 0; l < plan.downs.size(); ++l) {
      const DownStagePlan& p = plan.downs[l];
      auto& s = downs_[l];
      s.block1 = block(p.block1);
      s.block2 = block(p.block2);
      s.attn = attention(p.attn);
      if (p.has_downsample) s.downsample = conv(p.downsample);
    }
    ups_.resize(plan.ups.size());
    for (std::size_t i = 0; i < plan.ups.size(); ++i) {
      const UpStagePlan& p = plan.ups[i];
      auto& s = ups_[i];
      s.block1 = block(p.block1);
      s.block2 = block(p.block2);
      s.attn = attention(p.attn);
      s.upsample = std::make_unique<nn::ConvTranspose2d<T>>(params, p.upsample.name, p.upsample.in, p.upsample.out,
                                                            p.upsample.kernel, p.upsample.stride, p.upsample.padding);
    }
    mid_block1_ = block(plan.mid.block1);
    mid_attn_ = attention(plan.mid.attn);
    mid_block2_ = block(plan.mid.block2);
    final_block_ = block(plan.final_block);
    final_conv_ = conv(plan.final_conv);
    check_parameters_match(params, plan);  // the layers registered what the plan (and so the weight loaders) expect
  }

  void check_input(const TensorView<T>& x, const std::vector<std::int64_t>& t,
                   const std::vector<std::int64_t>* classes) const {
    DIFFUSION_CHECK(x.rank() == 4 && x.dim(1) == config_.channels && x.dim(0) > 0,
                    "Unet: input " << x.shape() << " does not match (N > 0, " << config_.channels << ", H, W)");
    DIFFUSION_CHECK(static_cast<Index>(t.size()) == x.dim(0),
                    "Unet: " << t.size() << " timesteps for a batch of " << x.dim(0) << " images");
    DIFFUSION_CHECK(!is_conditional() || classes,
                    "Unet: this network is class-conditional (num_classes " << config_.num_classes
                        << "): call it with a class id per image (kNullClass = " << kNullClass
                        << " for the unconditional prediction)");
    DIFFUSION_CHECK(is_conditional() || !classes,
                    "Unet: class ids given to an unconditional network (num_classes 0); call it without classes");
    if (classes) {
      DIFFUSION_CHECK(static_cast<Index>(classes->size()) == x.dim(0),
                      "Unet: " << classes->size() << " class ids for a batch of " << x.dim(0) << " images");
      classes_embedding_->check_ids(*classes, "Unet");
    }
    const Index factor = Index(1) << (config_.levels() - 1);
    DIFFUSION_CHECK(x.dim(2) % factor == 0 && x.dim(3) % factor == 0,
                    "Unet: image size " << x.dim(2) << "x" << x.dim(3) << " must be divisible by " << factor
                                        << " (2^(levels-1)) to survive the down- and up-sampling");
  }

  UnetConfig config_;
  std::unique_ptr<ParameterStore<T>> params_;  // on the heap: the layers hold a reference, which a move keeps valid
  std::unique_ptr<nn::Conv2d<T>> init_conv_;
  std::unique_ptr<nn::SinusoidalTimeEmbedding<T>> time_embedding_;
  std::unique_ptr<nn::Linear<T>> time_linear1_, time_linear2_;
  std::unique_ptr<nn::ClassEmbedding<T>> classes_embedding_;  // conditional networks only, as the class MLP
  std::unique_ptr<nn::Linear<T>> classes_linear1_, classes_linear2_;
  nn::GELU<T> gelu_;
  std::vector<DownStage> downs_;
  std::vector<UpStage> ups_;
  std::unique_ptr<UnetBlock<T>> mid_block1_, mid_block2_;
  std::unique_ptr<UnetAttention<T>> mid_attn_;
  std::unique_ptr<UnetBlock<T>> final_block_;
  std::unique_ptr<nn::Conv2d<T>> final_conv_;

  // The down stage whose skip feeds up stage i.
  DownStage& skip_of(std::size_t i) { return downs_[downs_.size() - 1 - i]; }

  // temb (N, 4 dim) = Linear(GELU(Linear(sinusoidal(t)))), or null without time embedding.
  const Tensor<T>* time_forward(const std::vector<std::int64_t>& t) {
    if (!config_.with_time_emb) return nullptr;
    time_embedding_->forward(t, t_sin_);
    time_linear1_->forward(t_sin_, t_h1_);
    gelu_.forward(t_h1_, t_g_);
    time_linear2_->forward(t_g_, temb_);
    return &temb_;
  }
  void time_backward() {  // from dtemb_; t itself has no gradient
    nn::zero_like(d_t_g_, t_g_);
    nn::zero_like(d_t_h1_, t_h1_);
    time_linear2_->backward(t_g_, dtemb_, &d_t_g_);
    gelu_.backward(t_h1_, d_t_g_, &d_t_h1_);
    time_linear1_->backward(t_sin_, d_t_h1_, nullptr);
  }

  // cond_ (N, time_dim + classes_dim) = cat(temb, classes_mlp(classes_emb(classes_))) for the blocks' MLPs.
  const Tensor<T>* classes_forward(const Tensor<T>& temb) {
    classes_embedding_->forward(classes_, c_emb_);
    classes_linear1_->forward(c_emb_, c_h1_);
    gelu_.forward(c_h1_, c_g_);
    classes_linear2_->forward(c_g_, cemb_);
    concat_features(temb, cemb_, cond_);
    return &cond_;
  }
  void classes_backward() {  // from dcemb_; the ids have no gradient
    nn::zero_like(d_c_g_, c_g_);
    nn::zero_like(d_c_h1_, c_h1_);
    nn::zero_like(d_c_emb_, c_emb_);
    classes_linear2_->backward(c_g_, dcemb_, &d_c_g_);
    gelu_.backward(c_h1_, d_c_g_, &d_c_h1_);
    classes_linear1_->backward(c_emb_, d_c_h1_, &d_c_emb_);
    classes_embedding_->backward(classes_, d_c_emb_);
  }
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

  // The middle: mid_block2(mid_attn(mid_block1(x, temb)), temb).
  const Tensor<T>& mid_forward(const Tensor<T>& x, const Tensor<T>* temb, nn::ForwardMode mode) {
    const bool keep = mode == nn::ForwardMode::Training;
    mid_input_ = &x;
    Tensor<T>& m1 = keep ? m1_ : ws_.db1;
    Tensor<T>& m_attn = keep ? m_attn_ : ws_.dattn;
    mid_block1_->forward(x, temb, m1, ws_.block, mode);
    mid_attn_->forward(m1, m_attn, ws_.attention, mode);
    mid_block2_->forward(m_attn, temb, m2_, ws_.block, mode);
    return m2_;
  }
  void mid_backward(const Tensor<T>* temb, const Tensor<T>& dy, Tensor<T>& dx, Tensor<T>* dtemb) {
    nn::zero_like(ws_.dattn, m_attn_);
    nn::zero_like(ws_.db1, m1_);
    mid_block2_->backward(m_attn_, temb, dy, &ws_.dattn, dtemb, ws_.block);
    mid_attn_->backward(m1_, ws_.dattn, &ws_.db1, ws_.attention);
    mid_block1_->backward(*mid_input_, temb, ws_.db1, &dx, dtemb, ws_.block);
  }

  // The head: y = final_conv(final_block(x)), without time embedding.
  void final_forward(const Tensor<T>& x, Tensor<T>& y, nn::ForwardMode mode) {
    final_input_ = &x;
    Tensor<T>& h = mode == nn::ForwardMode::Training ? final_h_ : ws_.db1;
    final_block_->forward(x, nullptr, h, ws_.block, mode);
    final_conv_->forward(h, y);
  }
  void final_backward(const Tensor<T>& dy, Tensor<T>& dx) {
    nn::zero_like(ws_.db1, final_h_);
    final_conv_->backward(final_h_, dy, &ws_.db1);
    final_block_->backward(*final_input_, nullptr, ws_.db1, &dx, nullptr, ws_.block);
  }

  // Activations of the last forward (the stages keep theirs). Shapes: x0_ (N, init_dim, H, W); t_sin_ (N, dim);
  // t_h1_, t_g_, temb_ (N, 4 dim); m1_, m_attn_, m2_ (N, mid, H', W'); final_h_ (N, dim, H, W).
  // The input of the last forward, the mark that backward may run. A copy or a move does not carry it: the stages'
  // saved inputs point at activations of the network they were saved in (x0_, m2_ are members).
  struct LastInput {
    TensorView<T> view;
    LastInput() = default;
    LastInput(const LastInput&) {}
    LastInput& operator=(const LastInput&) {
      view = TensorView<T>();
      return *this;
    }
  };
  LastInput input_;
  const Tensor<T>* mid_input_ = nullptr;
  const Tensor<T>* final_input_ = nullptr;
  std::vector<std::int64_t> t_;
  Tensor<T> x0_, t_sin_, t_h1_, t_g_, temb_, m1_, m_attn_, m2_, final_h_;
  // Gradients of the time MLP (same shapes as their activations); dtemb_ sums every block's share.
  Tensor<T> dtemb_, d_t_g_, d_t_h1_;
  // Conditional networks: classes_ (N) the ids of the last forward; c_emb_ (N, dim) their embeddings; c_h1_, c_g_,
  // cemb_ (N, 4 dim) the class MLP; cond_ (N, 8 dim) = cat(temb_, cemb_), what the blocks take. Their gradients
  // (same shapes); dcond_ sums every block's share, then splits into dtemb_ and dcemb_.
  std::vector<std::int64_t> classes_;
  Tensor<T> c_emb_, c_h1_, c_g_, cemb_, cond_;
  Tensor<T> dcond_, dcemb_, d_c_g_, d_c_h1_, d_c_emb_;
  // predict in parts (set_predict_chunk): images per part (0: whole batch), a part's timesteps, ids and output.
  Index predict_chunk_ = 0;
  std::vector<std::int64_t> chunk_t_, chunk_classes_;
  Tensor<T> chunk_y_;
  // Temporaries shared by the stages, and the gradient flowing between them.
  StageWorkspace ws_;
  GradientRelay relay_;
};

}  // namespace diffusion
