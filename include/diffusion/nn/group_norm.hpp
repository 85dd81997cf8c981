#pragma once
// GroupNorm: PyTorch's nn.GroupNorm(num_groups, num_channels, eps = 1e-5, affine = True) on (N, C, H, W).
// Parameters: `<name>.weight` (C) = 1, `<name>.bias` (C) = 0 at init. GroupNorm(1, C) normalises each image over all
// of (C, H, W), as the ConvNeXt block and PreNorm use it. Contract as in conv2d.hpp; the per-group mean and
// 1/std are saved by forward for backward.

#include <string>

#include "diffusion/core/aligned_buffer.hpp"
#include "diffusion/core/parameters.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/kernels/group_norm.hpp"

namespace diffusion::nn {

template <class T>
class GroupNorm {
 public:
  GroupNorm(ParameterStore<T>& params, const std::string& name, Index num_groups, Index num_channels,
            double eps = 1e-5)
      : params_(params), name_(name), groups_(num_groups), channels_(num_channels), eps_(eps) {
    DIFFUSION_CHECK(groups_ > 0 && channels_ > 0, "GroupNorm '" << name << "': invalid groups " << groups_
                                                                << " or channels " << channels_);
    DIFFUSION_CHECK(channels_ % groups_ == 0, "GroupNorm '" << name << "': channels " << channels_
                                                            << " are not divisible by groups " << groups_);
    weight_ = params.add(join_name(name, "weight"), Shape{channels_}, Init::ones());
    bias_ = params.add(join_name(name, "bias"), Shape{channels_}, Init::zeros());
  }

  void check_input(const Shape& x) const {
    DIFFUSION_CHECK(x.rank() == 4 && x[1] == channels_,
                    "GroupNorm '" << name_ << "': input " << x << " does not match its " << channels_
                                  << " channels (weight (" << channels_ << "))");
  }

  void forward(const Tensor<T>& x, Tensor<T>& y) {
    check_input(x.shape());
    y.resize(x.shape());
    const Index N = x.dim(0), P = x.dim(2) * x.dim(3);
    mean_.resize(static_cast<std::size_t>(N * groups_));
    rstd_.resize(static_cast<std::size_t>(N * groups_));
    kernels::group_norm_forward(N, channels_, P, groups_, eps_, x.data(), params_.value(weight_),
                                params_.value(bias_), y.data(), mean_.data(), rstd_.data());
  }

  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) {
    check_input(x.shape());
    check_shape(dy, x.shape(), "GroupNorm", name_, "backward: dy");
    DIFFUSION_CHECK(mean_.size() == static_cast<std::size_t>(x.dim(0) * groups_),
                    "GroupNorm '" << name_ << "': backward without a matching forward");
    const Index N = x.dim(0), P = x.dim(2) * x.dim(3);
    if (dx) check_shape(*dx, x.shape(), "GroupNorm", name_, "backward: dx");
    kernels::group_norm_backward(N, channels_, P, groups_, x.data(), params_.value(weight_), mean_.data(),
                                 rstd_.data(), dy.data(), dx ? dx->data() : nullptr, params_.grad(weight_),
                                 params_.grad(bias_));
  }

  const std::string& name() const { return name_; }

 private:
  ParameterStore<T>& params_;
  std::string name_;
  Index groups_, channels_;
  double eps_;
  typename ParameterStore<T>::Ref weight_, bias_;
  AlignedBuffer<double> mean_, rstd_;  // (N, G) saved statistics
};

}  // namespace diffusion::nn
