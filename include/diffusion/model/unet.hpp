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
// (Once per pass, not inside each block as that file does: see UnetConditioning in model/unet_stages.hpp.)
//
// Like the reference, every up stage upsamples and the first level's skip is never used; H and W must be
// divisible by 2^(levels - 1). backward(dy) accumulates every parameter gradient into params().
//
// Structure (model/unet_stages.hpp): init_conv, a UnetConditioning (time and class MLPs), the down stages, the
// middle, the up stages and the head; forward runs them in that order and backward in the reverse one, each stage's
// backward its forward reversed. Memory (nn/workspace.hpp): every activation backward reads is owned by the stage
// or layer that saves it; the temporaries of one call live in one UnetStageWorkspace the network owns and passes
// down, and the gradient between stages flows through two buffers that trade roles (GradientRelay). Everything is
// allocated on the first batch and reused after: no allocation per step. predict (the model call of the samplers)
// is the same computation keeping nothing: what forward saves goes to the workspace's buffers, so that sampling
// needs about a stage's activations instead of the whole network's.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "diffusion/core/batch_parts.hpp"
#include "diffusion/core/parameters.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/model/unet_config.hpp"
#include "diffusion/model/unet_plan.hpp"
#include "diffusion/model/unet_stages.hpp"
#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/workspace.hpp"

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
    // What the blocks took (temb, or cat(temb, cemb)), and the gradients several stages add to, zeroed once.
    const Tensor<T>* temb = conditioning_.output();
    Tensor<T>* dtemb = conditioning_.zeroed_gradient();
    for (auto& s : downs_) s.zero_skip_gradient();
    GradientRelay& g = relay_;
    head_.backward(dy, g.dx_for(*head_.input), ws_);
    g.pass();
    for (std::size_t i = ups_.size(); i-- > 0;) {
      ups_[i].backward(temb, g.dy(), g.dx_for(*ups_[i].input), skip_of(i).dskip, dtemb, ws_);
      g.pass();
    }
    middle_.backward(temb, g.dy(), g.dx_for(*middle_.input), dtemb, ws_);
    g.pass();
    for (std::size_t l = downs_.size(); l-- > 0;) {
      downs_[l].backward(temb, g.dy(), g.dx_for(*downs_[l].input), dtemb, ws_);
      g.pass();
    }
    init_conv_->backward(input_.view, g.dy(), dx);
    conditioning_.backward();
  }

 private:
  void predict_impl(TensorView<T> x, const std::vector<std::int64_t>& t, const std::vector<std::int64_t>* classes,
                    Tensor<T>& y) {
    const Index n = x.rank() == 4 ? x.dim(0) : 0;
    if (predict_chunk_ == 0 || n <= predict_chunk_) return forward_impl(x, t, classes, y, nn::ForwardMode::Inference);
    check_input(x, t, classes);
    for_each_part(n, predict_chunk_, [&](Index start, Index count) {
      const auto first = static_cast<std::ptrdiff_t>(start), last = static_cast<std::ptrdiff_t>(start + count);
      chunk_t_.assign(t.begin() + first, t.begin() + last);
      if (classes) chunk_classes_.assign(classes->begin() + first, classes->begin() + last);
      forward_impl(batch_part(x, start, count), chunk_t_, classes ? &chunk_classes_ : nullptr, chunk_y_,
                   nn::ForwardMode::Inference);
      if (start == 0) y.resize(Shape{n, chunk_y_.dim(1), chunk_y_.dim(2), chunk_y_.dim(3)});
      copy_into_part<T>(chunk_y_, y, start);
    });
  }

  void forward_impl(TensorView<T> x, const std::vector<std::int64_t>& t, const std::vector<std::int64_t>* classes,
                    Tensor<T>& y, nn::ForwardMode mode) {
    check_input(x, t, classes);
    input_.view = TensorView<T>();  // backward may run only after a training forward that completed
    init_conv_->forward(x, x0_);
    const Tensor<T>* temb = conditioning_.forward(t, classes);
    const Tensor<T>* cur = &x0_;
    for (auto& s : downs_) cur = &s.forward(*cur, temb, ws_, mode);
    cur = &middle_.forward(*cur, temb, ws_, mode);
    for (std::size_t i = 0; i < ups_.size(); ++i) cur = &ups_[i].forward(*cur, skip_of(i).skip, temb, ws_, mode);
    head_.forward(*cur, y, ws_, mode);
    if (mode == nn::ForwardMode::Training) input_.view = x;
  }

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
    const auto linear = [&params](const LinearPlan& p) {
      return std::make_unique<nn::Linear<T>>(params, p.name, p.in, p.out);
    };
    UnetConditioning<T>& cond = conditioning_;
    if (plan.time_dim > 0) {
      cond.sinusoidal = std::make_unique<nn::SinusoidalTimeEmbedding<T>>(plan.time_embedding_dim);
      cond.time_mlp.linear1 = linear(plan.time_linear1);
      cond.time_mlp.linear2 = linear(plan.time_linear2);
    }
    if (plan.classes_dim > 0) {
      cond.classes_embedding = std::make_unique<nn::ClassEmbedding<T>>(params, "classes_emb", "null_classes_emb",
                                                                       c.num_classes, c.dim);
      cond.classes_mlp.linear1 = linear(plan.classes_linear1);
      cond.classes_mlp.linear2 = linear(plan.classes_linear2);
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
    middle_.block1 = block(plan.mid.block1);
    middle_.attn = attention(plan.mid.attn);
    middle_.block2 = block(plan.mid.block2);
    head_.block = block(plan.final_block);
    head_.conv = conv(plan.final_conv);
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
      conditioning_.classes_embedding->check_ids(*classes, "Unet");
    }
    const Index factor = Index(1) << (config_.levels() - 1);
    DIFFUSION_CHECK(x.dim(2) % factor == 0 && x.dim(3) % factor == 0,
                    "Unet: image size " << x.dim(2) << "x" << x.dim(3) << " must be divisible by " << factor
                                        << " (2^(levels-1)) to survive the down- and up-sampling");
  }

  UnetConfig config_;
  std::unique_ptr<ParameterStore<T>> params_;  // on the heap: the layers hold a reference, which a move keeps valid
  // The stages, in forward order.
  std::unique_ptr<nn::Conv2d<T>> init_conv_;
  UnetConditioning<T> conditioning_;
  std::vector<UnetDownStage<T>> downs_;
  UnetMiddleStage<T> middle_;
  std::vector<UnetUpStage<T>> ups_;  // ups_[i] takes the skip of skip_of(i)
  UnetHead<T> head_;

  // The down stage whose skip feeds up stage i.
  UnetDownStage<T>& skip_of(std::size_t i) { return downs_[downs_.size() - 1 - i]; }

  // The input of the last forward, the mark that backward may run. A copy or a move does not carry it: the stages'
  // saved inputs point at activations of the network they were saved in (x0_, the stages' outputs are members).
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
  Tensor<T> x0_;  // (N, init_dim, H, W) init_conv's output: the first down stage's input
  // predict in parts (set_predict_chunk): images per part (0: whole batch), a part's timesteps, ids and output.
  Index predict_chunk_ = 0;
  std::vector<std::int64_t> chunk_t_, chunk_classes_;
  Tensor<T> chunk_y_;
  // Temporaries shared by the stages, and the gradient flowing between them.
  UnetStageWorkspace<T> ws_;
  GradientRelay relay_;
};

}  // namespace diffusion
