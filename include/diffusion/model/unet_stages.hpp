#pragma once
// The pieces a U-Net stage is assembled from, chosen at run time by UnetConfig:
//   UnetBlock      a ResnetBlock or a ConvNextBlock (the reference's `block_klass`)
//   UnetAttention  Residual(PreNorm(LinearAttention or Attention)), or nothing (identity)
// Both expose the nn/ forward/backward contract with a Workspace (nn/workspace.hpp) that one network shares between
// all its blocks, and one between all its attention layers.

#include <memory>
#include <string>
#include <type_traits>

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

}  // namespace diffusion
