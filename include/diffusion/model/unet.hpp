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

  void build() {
    const UnetConfig& c = config_;
    const Index init_dim = c.resolved_init_dim();
    init_conv_ = std::make_unique<nn::Conv2d<T>>(params_, "init_conv", c.channels, init_dim, 7, 1, 3);
    std::vector<Index> dims = {init_dim};
    for (Index m : c.dim_mults) dims.push_back(c.dim * m);
    Index time_dim = 0;
    if (c.with_time_emb) {
      time_dim = c.dim * 4;
      time_embedding_ = std::make_unique<nn::SinusoidalTimeEmbedding<T>>(c.dim);
      time_linear1_ = std::make_unique<nn::Linear<T>>(params_, "time_mlp.1", c.dim, time_dim);
      time_linear2_ = std::make_unique<nn::Linear<T>>(params_, "time_mlp.3", time_dim, time_dim);
    }
    const Index L = c.levels();
    downs_.resize(static_cast<std::size_t>(L));
    for (Index l = 0; l < L; ++l) {
      const Index din = dims[static_cast<std::size_t>(l)], dout = dims[static_cast<std::size_t>(l + 1)];
      const std::string p = "downs." + std::to_string(l);
      auto& s = downs_[static_cast<std::size_t>(l)];
      s.block1 = std::make_unique<UnetBlock<T>>(params_, p + ".0", c, din, dout, time_dim);
      s.block2 = std::make_unique<UnetBlock<T>>(params_, p + ".1", c, dout, dout, time_dim);
      s.attn = std::make_unique<UnetAttention<T>>(params_, p + ".2", c.attention_at(l), dout, c.attention_heads,
                                                  c.attention_dim_head);
      if (l < L - 1) s.downsample = std::make_unique<nn::Conv2d<T>>(params_, p + ".3", dout, dout, 4, 2, 1);
    }
    // The reference creates the up stages before the middle: the same registration order keeps listings aligned.
    ups_.resize(static_cast<std::size_t>(L - 1));
    for (Index i = 0; i < L - 1; ++i) {
      const Index level = L - 1 - i;  // reversed(in_out[1:])
      const Index din = dims[static_cast<std::size_t>(level)], dout = dims[static_cast<std::size_t>(level + 1)];
      const std::string p = "ups." + std::to_string(i);
      auto& s = ups_[static_cast<std::size_t>(i)];
      s.block1 = std::make_unique<UnetBlock<T>>(params_, p + ".0", c, dout * 2, din, time_dim);
      s.block2 = std::make_unique<UnetBlock<T>>(params_, p + ".1", c, din, din, time_dim);
      s.attn = std::make_unique<UnetAttention<T>>(params_, p + ".2", c.attention_at(level), din, c.attention_heads,
                                                  c.attention_dim_head);
      s.upsample = std::make_unique<nn::ConvTranspose2d<T>>(params_, p + ".3", din, din, 4, 2, 1);
    }
    const Index mid = dims.back();
    mid_block1_ = std::make_unique<UnetBlock<T>>(params_, "mid_block1", c, mid, mid, time_dim);
    mid_attn_ = std::make_unique<UnetAttention<T>>(params_, "mid_attn", c.mid_attention, mid, c.attention_heads,
                                                   c.attention_dim_head);
    mid_block2_ = std::make_unique<UnetBlock<T>>(params_, "mid_block2", c, mid, mid, time_dim);
    // After the up path the channel count is dims[1] = dim * dim_mults[0]; the reference's final block takes `dim`,
    // so dim_mults[0] must be 1 for the reference architecture to be consistent.
    DIFFUSION_CHECK(L == 1 || dims[1] == c.dim,
                    "UnetConfig: dim_mults[0] must be 1 (the final block expects " << c.dim << " channels, the up path gives "
                                                                                 << dims[1] << ")");
    final_block_ = std::make_unique<UnetBlock<T>>(params_, "final_conv.0", c, c.dim, c.dim, 0);
    final_conv_ = std::make_unique<nn::Conv2d<T>>(params_, "final_conv.1", c.dim, c.resolved_out_dim(), 1);
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
