#pragma once
// Conv2d: PyTorch's nn.Conv2d (cross-correlation), any kernel size, stride, padding and groups.
// Parameters: `<name>.weight` (C_out, C_in / groups, K, K), `<name>.bias` (C_out) unless bias = false.
// Initialisation as PyTorch: uniform(+-1/sqrt(fan_in)) for both, fan_in = C_in / groups * K * K.
//
// Contract (shared by every layer in nn/):
//   forward(x, y):        y is resized and ASSIGNED; x must stay unchanged until backward.
//                         (Conv2d reads x through a TensorView: a network's first layer reads the caller's buffer.)
//   backward(x, dy, dx):  x is the forward input; parameter gradients and *dx are ACCUMULATED (+=), so
//                         callers zero them once and branches that meet simply add. dx may be null when the
//                         input gradient is not needed (the first layer of a network).

#include <cmath>
#include <string>

#include "diffusion/core/parameters.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/kernels/conv2d.hpp"

namespace diffusion::nn {

template <class T>
class Conv2d {
 public:
  Conv2d(ParameterStore<T>& params, const std::string& name, Index in_channels, Index out_channels,
         Index kernel_size, Index stride = 1, Index padding = 0, Index groups = 1, bool bias = true)
      : params_(params), name_(name), in_(in_channels), out_(out_channels), kernel_(kernel_size), stride_(stride),
        padding_(padding), groups_(groups) {
    DIFFUSION_CHECK(in_ > 0 && out_ > 0 && kernel_ > 0 && stride_ > 0 && padding_ >= 0 && groups_ > 0,
                    "Conv2d '" << name << "': invalid arguments in_channels=" << in_ << " out_channels=" << out_
                               << " kernel_size=" << kernel_ << " stride=" << stride_ << " padding=" << padding_
                               << " groups=" << groups_);
    DIFFUSION_CHECK(in_ % groups_ == 0, "Conv2d '" << name << "': in_channels " << in_
                                                   << " is not divisible by groups " << groups_);
    DIFFUSION_CHECK(out_ % groups_ == 0, "Conv2d '" << name << "': out_channels " << out_
                                                    << " is not divisible by groups " << groups_);
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_ / groups_ * kernel_ * kernel_));
    weight_ = params.add(join_name(name, "weight"), Shape{out_, in_ / groups_, kernel_, kernel_}, Init::uniform(bound));
    if (bias) bias_ = params.add(join_name(name, "bias"), Shape{out_}, Init::uniform(bound));
  }

  // (N, C_out, OH, OW) for an input (N, C_in, H, W); throws naming the layer and both shapes if x doesn't fit.
  Shape output_shape(const Shape& x) const {
    DIFFUSION_CHECK(x.rank() == 4 && x[1] == in_,
                    "Conv2d '" << name_ << "': input " << x << " does not match weight "
                               << params_.entry(weight_).shape << " (expected (N, " << in_ << ", H, W))");
    const Index oh = kernels::Conv2dGeometry::output_size(x[2], kernel_, stride_, padding_);
    const Index ow = kernels::Conv2dGeometry::output_size(x[3], kernel_, stride_, padding_);
    DIFFUSION_CHECK(oh > 0 && ow > 0, "Conv2d '" << name_ << "': input " << x << " is smaller than the kernel "
                                                 << kernel_ << " with padding " << padding_);
    return Shape{x[0], out_, oh, ow};
  }

  void forward(TensorView<T> x, Tensor<T>& y) {
    y.resize(output_shape(x.shape()));
    kernels::conv2d_forward(geometry(x.shape()), x.data(), params_.value(weight_),
                            bias_.valid() ? params_.value(bias_) : nullptr, y.data());
  }

  void backward(TensorView<T> x, const Tensor<T>& dy, Tensor<T>* dx) {
    check_shape(dy, output_shape(x.shape()), "Conv2d", name_, "backward: dy");
    const kernels::Conv2dGeometry g = geometry(x.shape());
    if (dx) {
      check_shape(*dx, x.shape(), "Conv2d", name_, "backward: dx");
      kernels::conv2d_backward_data(g, dy.data(), params_.value(weight_), dx->data());
    }
    kernels::conv2d_backward_weight(g, x.data(), dy.data(), params_.grad(weight_));
    if (bias_.valid()) kernels::channel_sum(g.batch, out_, g.out_pixels(), dy.data(), params_.grad(bias_));
  }

  const std::string& name() const { return name_; }
  Index in_channels() const { return in_; }
  Index out_channels() const { return out_; }
  typename ParameterStore<T>::Ref weight() const { return weight_; }
  typename ParameterStore<T>::Ref bias() const { return bias_; }

 private:
  kernels::Conv2dGeometry geometry(const Shape& x) const {
    return kernels::Conv2dGeometry::make(x[0], in_, x[2], x[3], out_, kernel_, stride_, padding_, groups_);
  }

  ParameterStore<T>& params_;
  std::string name_;
  Index in_, out_, kernel_, stride_, padding_, groups_;
  typename ParameterStore<T>::Ref weight_, bias_;
};

}  // namespace diffusion::nn
