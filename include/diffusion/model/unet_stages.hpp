#pragma once
// The pieces a U-Net stage is assembled from, chosen at run time by UnetConfig:
//   UnetBlock      a ResnetBlock or a ConvNextBlock (the reference's `block_klass`)
//   UnetAttention  Residual(PreNorm(LinearAttention or Attention)), or nothing (identity)
// Both expose the nn/ forward/backward contract.

#include <memory>
#include <string>

#include "diffusion/model/unet_config.hpp"
#include "diffusion/nn/attention.hpp"
#include "diffusion/nn/convnext_block.hpp"
#include "diffusion/nn/linear_attention.hpp"
#include "diffusion/nn/prenorm_residual.hpp"
#include "diffusion/nn/resnet_block.hpp"

namespace diffusion {

template <class T>
class UnetBlock {
 public:
  UnetBlock(ParameterStore<T>& params, const std::string& name, const UnetConfig& config, Index dim, Index dim_out,
            Index time_emb_dim) {
    if (config.use_convnext)
      convnext_ = std::make_unique<nn::ConvNextBlock<T>>(params, name, dim, dim_out, time_emb_dim, config.convnext_mult);
    else
      resnet_ = std::make_unique<nn::ResnetBlock<T>>(params, name, dim, dim_out, time_emb_dim,
                                                      config.resnet_block_groups);
  }
  void forward(const Tensor<T>& x, const Tensor<T>* t_emb, Tensor<T>& y) {
    if (convnext_) convnext_->forward(x, t_emb, y);
    else resnet_->forward(x, t_emb, y);
  }
  void backward(const Tensor<T>& x, const Tensor<T>* t_emb, const Tensor<T>& dy, Tensor<T>* dx, Tensor<T>* dt_emb) {
    if (convnext_) convnext_->backward(x, t_emb, dy, dx, dt_emb);
    else resnet_->backward(x, t_emb, dy, dx, dt_emb);
  }

 private:
  std::unique_ptr<nn::ConvNextBlock<T>> convnext_;
  std::unique_ptr<nn::ResnetBlock<T>> resnet_;
};

template <class T>
class UnetAttention {
 public:
  UnetAttention(ParameterStore<T>& params, const std::string& name, AttentionKind kind, Index dim, Index heads,
                Index dim_head) {
    if (kind == AttentionKind::Linear)
      linear_ = std::make_unique<Linear>(params, name, dim, heads, dim_head);
    else if (kind == AttentionKind::Full)
      full_ = std::make_unique<Full>(params, name, dim, heads, dim_head);
  }
  void forward(const Tensor<T>& x, Tensor<T>& y) {
    if (linear_) linear_->forward(x, y);
    else if (full_) full_->forward(x, y);
    else y.copy_from(x);
  }
  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) {
    if (linear_) linear_->backward(x, dy, dx);
    else if (full_) full_->backward(x, dy, dx);
    else if (dx) nn::add_into(*dx, dy);
  }

 private:
  using Linear = nn::PreNormResidual<T, nn::LinearAttention<T>>;
  using Full = nn::PreNormResidual<T, nn::Attention<T>>;
  std::unique_ptr<Linear> linear_;
  std::unique_ptr<Full> full_;
};

}  // namespace diffusion
