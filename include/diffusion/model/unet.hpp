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
// Like the reference, every up stage upsamples and the first level's skip is never used; H and W must be
// divisible by 2^(levels - 1). Activations are kept per stage (allocated on the first batch, reused after) for
// backward; backward(dy) accumulates every parameter gradient into params().

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
  explicit Unet(const UnetConfig& config, std::uint64_t seed = 0) : config_(config), params_(seed) {
    config_.validate();
    build();
  }
  Unet(const Unet&) = delete;
  Unet& operator=(const Unet&) = delete;

  const UnetConfig& config() const { return config_; }
  ParameterStore<T>& params() { return params_; }
  const ParameterStore<T>& params() const { return params_; }

  // y (N, out_dim, H, W) = eps_theta(x (N, channels, H, W), t). Keeps what backward needs.
  void forward(const Tensor<T>& x, const std::vector<std::int64_t>& t, Tensor<T>& y) {
    check_input(x, t);
    input_ = &x;
    t_ = t;
    init_conv_->forward(x, x0_);
    const Tensor<T>* temb = nullptr;
    if (config_.with_time_emb) {
      time_embedding_->forward(t, t_sin_);
      time_linear1_->forward(t_sin_, t_h1_);
      gelu_.forward(t_h1_, t_g_);
      time_linear2_->forward(t_g_, temb_);
      temb = &temb_;
    }
    const Tensor<T>* cur = &x0_;
    for (auto& s : downs_) {
      s.input = cur;
      s.block1->forward(*cur, temb, s.b1);
      s.block2->forward(s.b1, temb, s.b2);
      s.attn->forward(s.b2, s.skip);
      cur = &s.skip;
      if (s.downsample) {
        s.downsample->forward(s.skip, s.down);
        cur = &s.down;
      }
    }
    mid_input_ = cur;
    mid_block1_->forward(*cur, temb, m1_);
    mid_attn_->forward(m1_, m_attn_);
    mid_block2_->forward(m_attn_, temb, m2_);
    cur = &m2_;
    for (std::size_t i = 0; i < ups_.size(); ++i) {
      auto& s = ups_[i];
      s.input = cur;
      nn::concat_channels(*cur, downs_[downs_.size() - 1 - i].skip, s.cat);
      s.block1->forward(s.cat, temb, s.b1);
      s.block2->forward(s.b1, temb, s.b2);
      s.attn->forward(s.b2, s.attn_out);
      s.upsample->forward(s.attn_out, s.up);
      cur = &s.up;
    }
    final_input_ = cur;
    final_block_->forward(*cur, nullptr, final_h_);
    final_conv_->forward(final_h_, y);
  }

  // Accumulates d(loss)/d(parameters) into params().grads() given dy = d(loss)/d(y) for the last forward.
  // dx (optional) accumulates d(loss)/d(x).
  void backward(const Tensor<T>& dy, Tensor<T>* dx = nullptr) {
    DIFFUSION_CHECK(input_ != nullptr, "Unet::backward called before forward");
    const Tensor<T>* temb = config_.with_time_emb ? &temb_ : nullptr;
    Tensor<T>* dtemb = nullptr;
    if (temb) {
      nn::zero_like(dtemb_, temb_);
      dtemb = &dtemb_;
    }
    nn::zero_like(d_final_h_, final_h_);
    final_conv_->backward(final_h_, dy, &d_final_h_);
    nn::zero_like(d_cur_, *final_input_);
    final_block_->backward(*final_input_, nullptr, d_final_h_, &d_cur_, nullptr);
    // d_cur_ holds d(loss)/d(current stage output), walking back. Skip gradients accumulate into each down
    // stage's d_skip before that stage's backward runs.
    for (auto& s : downs_) nn::zero_like(s.d_skip, s.skip);
    for (std::size_t k = ups_.size(); k-- > 0;) {
      auto& s = ups_[k];
      nn::zero_like(d_attn_out_, s.attn_out);
      s.upsample->backward(s.attn_out, d_cur_, &d_attn_out_);
      nn::zero_like(d_b2_, s.b2);
      s.attn->backward(s.b2, d_attn_out_, &d_b2_);
      nn::zero_like(d_b1_, s.b1);
      s.block2->backward(s.b1, temb, d_b2_, &d_b1_, dtemb);
      nn::zero_like(d_cat_, s.cat);
      s.block1->backward(s.cat, temb, d_b1_, &d_cat_, dtemb);
      nn::zero_like(d_cur_, *s.input);
      nn::concat_channels_backward(d_cat_, &d_cur_, &downs_[downs_.size() - 1 - k].d_skip, s.input->dim(1));
    }
    nn::zero_like(d_m_attn_, m_attn_);
    mid_block2_->backward(m_attn_, temb, d_cur_, &d_m_attn_, dtemb);
    nn::zero_like(d_m1_, m1_);
    mid_attn_->backward(m1_, d_m_attn_, &d_m1_);
    nn::zero_like(d_next_, *mid_input_);
    mid_block1_->backward(*mid_input_, temb, d_m1_, &d_next_, dtemb);
    for (std::size_t k = downs_.size(); k-- > 0;) {
      auto& s = downs_[k];
      // d(skip) = skip-connection gradient + (downsample's input gradient, or the gradient flowing from above)
      if (s.downsample) s.downsample->backward(s.skip, d_next_, &s.d_skip);
      else nn::add_into(s.d_skip, d_next_);
      nn::zero_like(d_b2_, s.b2);
      s.attn->backward(s.b2, s.d_skip, &d_b2_);
      nn::zero_like(d_b1_, s.b1);
      s.block2->backward(s.b1, temb, d_b2_, &d_b1_, dtemb);
      nn::zero_like(d_next_, *s.input);
      s.block1->backward(*s.input, temb, d_b1_, &d_next_, dtemb);
    }
    init_conv_->backward(*input_, d_next_, dx);
    if (temb) {
      nn::zero_like(d_t_g_, t_g_);
      time_linear2_->backward(t_g_, dtemb_, &d_t_g_);
      nn::zero_like(d_t_h1_, t_h1_);
      gelu_.backward(t_h1_, d_t_g_, &d_t_h1_);
      time_linear1_->backward(t_sin_, d_t_h1_, nullptr);
    }
  }

 private:
  struct DownStage {
    std::unique_ptr<UnetBlock<T>> block1, block2;
    std::unique_ptr<UnetAttention<T>> attn;
    std::unique_ptr<nn::Conv2d<T>> downsample;  // null on the last level (the reference's nn.Identity)
    const Tensor<T>* input = nullptr;
    Tensor<T> b1, b2, skip, down;             // block outputs, attention output (= skip), downsampled
    Tensor<T> d_skip;                         // gradient of skip: filled by the up path, then by this stage
  };
  struct UpStage {
    std::unique_ptr<UnetBlock<T>> block1, block2;
    std::unique_ptr<UnetAttention<T>> attn;
    std::unique_ptr<nn::ConvTranspose2d<T>> upsample;
    const Tensor<T>* input = nullptr;
    Tensor<T> cat, b1, b2, attn_out, up;
  };

  // Constructs every layer with the names and widths of the plan (model/unet_plan.hpp), in its registration order.
  void build() {
    const UnetPlan plan = plan_unet(config_);
    const UnetConfig& c = config_;
    const auto conv = [this](const ConvPlan& p) {
      return std::make_unique<nn::Conv2d<T>>(params_, p.name, p.in, p.out, p.kernel, p.stride, p.padding);
    };
    const auto block = [&](const BlockPlan& b) {
      return std::make_unique<UnetBlock<T>>(params_, b.name, c, b.in, b.out, b.time_dim);
    };
    const auto attention = [this](const AttentionPlan& a) {
      return std::make_unique<UnetAttention<T>>(params_, a.name, a.kind, a.channels, a.heads, a.dim_head);
    };
    init_conv_ = conv(plan.init_conv);
    if (plan.time_dim > 0) {
      time_embedding_ = std::make_unique<nn::SinusoidalTimeEmbedding<T>>(plan.time_embedding_dim);
      time_linear1_ = std::make_unique<nn::Linear<T>>(params_, plan.time_linear1.name, plan.time_linear1.in,
                                                      plan.time_linear1.out);
      time_linear2_ = std::make_unique<nn::Linear<T>>(params_, plan.time_linear2.name, plan.time_linear2.in,
                                                      plan.time_linear2.out);
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
      s.upsample = std::make_unique<nn::ConvTranspose2d<T>>(params_, p.upsample.name, p.upsample.in, p.upsample.out,
                                                            p.upsample.kernel, p.upsample.stride, p.upsample.padding);
    }
    mid_block1_ = block(plan.mid.block1);
    mid_attn_ = attention(plan.mid.attn);
    mid_block2_ = block(plan.mid.block2);
    final_block_ = block(plan.final_block);
    final_conv_ = conv(plan.final_conv);
    check_parameters_match(params_, plan);  // the layers registered what the plan (and so the weight loaders) expect
  }

  void check_input(const Tensor<T>& x, const std::vector<std::int64_t>& t) const {
    DIFFUSION_CHECK(x.rank() == 4 && x.dim(1) == config_.channels && x.dim(0) > 0,
                    "Unet: input " << x.shape() << " does not match (N > 0, " << config_.channels << ", H, W)");
    DIFFUSION_CHECK(static_cast<Index>(t.size()) == x.dim(0),
                    "Unet: " << t.size() << " timesteps for a batch of " << x.dim(0) << " images");
    const Index factor = Index(1) << (config_.levels() - 1);
    DIFFUSION_CHECK(x.dim(2) % factor == 0 && x.dim(3) % factor == 0,
                    "Unet: image size " << x.dim(2) << "x" << x.dim(3) << " must be divisible by " << factor
                                        << " (2^(levels-1)) to survive the down- and up-sampling");
  }

  UnetConfig config_;
  ParameterStore<T> params_;
  std::unique_ptr<nn::Conv2d<T>> init_conv_;
  std::unique_ptr<nn::SinusoidalTimeEmbedding<T>> time_embedding_;
  std::unique_ptr<nn::Linear<T>> time_linear1_, time_linear2_;
  nn::GELU<T> gelu_;
  std::vector<DownStage> downs_;
  std::vector<UpStage> ups_;
  std::unique_ptr<UnetBlock<T>> mid_block1_, mid_block2_;
  std::unique_ptr<UnetAttention<T>> mid_attn_;
  std::unique_ptr<UnetBlock<T>> final_block_;
  std::unique_ptr<nn::Conv2d<T>> final_conv_;

  // Activations of the last forward. Shapes: x0_ (N, init_dim, H, W); t_sin_ (N, dim); t_h1_, t_g_, temb_ (N, 4 dim);
  // m1_, m_attn_, m2_ (N, mid, H', W'); final_h_ (N, dim, H, W).
  const Tensor<T>* input_ = nullptr;
  const Tensor<T>* mid_input_ = nullptr;
  const Tensor<T>* final_input_ = nullptr;
  std::vector<std::int64_t> t_;
  Tensor<T> x0_, t_sin_, t_h1_, t_g_, temb_, m1_, m_attn_, m2_, final_h_;
  // Gradient buffers, same shapes as their activations; the per-stage ones are shared by all stages, since a
  // stage's backward finishes before the next begins.
  Tensor<T> dtemb_, d_t_g_, d_t_h1_, d_m_attn_, d_m1_, d_final_h_, d_cur_, d_next_;
  Tensor<T> d_attn_out_, d_b1_, d_b2_, d_cat_;
};

}  // namespace diffusion
