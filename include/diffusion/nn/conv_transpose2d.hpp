#pragma once
// ConvTranspose2d: PyTorch's nn.ConvTranspose2d (the U-Net's Upsample is ConvTranspose2d(C, C, 4, 2, 1)).
// Parameters: `<name>.weight` (C_in, C_out / groups, K, K), `<name>.bias` (C_out).
// Output size: (H - 1) * stride - 2 * padding + K. Its forward pass is the data-gradient of the convolution
// that maps the output back to the input, so it reuses those kernels (geometry with input and output swapped).
// PyTorch's default init computes fan_in from weight.size(1) * K * K = C_out / groups * K * K; so do we.
// Same forward/backward contract as Conv2d (conv2d.hpp).

#include <cmath>
#include <string>

#include "diffusion/core/parameters.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/kernels/conv2d.hpp"

namespace diffusion::nn {

template <class T>
class ConvTranspose2d {
 public:
  ConvTranspose2d(ParameterStore<T>& params, const std::string& name, Index in_channels, Index out_channels,
                  Index kernel_size, Index stride = 1, Index padding = 0, Index groups = 1, bool bias = true)
      : params_(params), name_(name), in_(in_channels), out_(out_channels), kernel_(kernel_size), stride_(stride),
        padding_(padding), groups_(groups) {
    DIFFUSION_CHECK(in_ > 0 && out_ > 0 && kernel_ > 0 && stride_ > 0 && padding_ >= 0 && groups_ > 0,
                    "ConvTranspose2d '" << name << "': invalid arguments in_channels=" << in_ << " out_channels="
                                        << out_ << " kernel_size=" << kernel_ << " stride=" << stride_
                                        << " padding=" << padding_ << " groups=" << groups_);
    DIFFUSION_CHECK(in_ % groups_ == 0 && out_ % groups_ == 0,
                    "ConvTranspose2d '" << name << "': channels " << in_ << " -> " << out_
                                        << " are not divisible by groups " << groups_);
    const double bound = 1.0 / std::sqrt(static_cast<double>(out_ / groups_ * kernel_ * kernel_));
    weight_ = params.add(join_name(name, "weight"), Shape{in_, out_ / groups_, kernel_, kernel_}, Init::uniform(bound));
    if (bias) bias_ = params.add(join_name(name, "bias"), Shape{out_}, Init::uniform(bound));
  }

  Shape output_shape(const Shape& x) const {
    DIFFUSION_CHECK(x.rank() == 4 && x[1] == in_,
                    "ConvTranspose2d '" << name_ << "': input " << x << " does not match weight "
                                        << params_.entry(weight_).shape << " (expected (N, " << in_ << ", H, W))");
    const Index oh = (x[2] - 1) * stride_ - 2 * padding_ + kernel_;
    const Index ow = (x[3] - 1) * stride_ - 2 * padding_ + kernel_;
    DIFFUSION_CHECK(oh > 0 && ow > 0, "ConvTranspose2d '" << name_ << "': input " << x << " gives an empty output");
    return Shape{x[0], out_, oh, ow};
  }

  void forward(const Tensor<T>& x, Tensor<T>& y) {
    y.resize(output_shape(x.shape()));
    const kernels::Conv2dGeometry g = geometry(x.shape());
    const Index P = g.in_pixels();  // output pixels of the transposed convolution
    if (bias_.valid()) {
      const T* b = params_.value(bias_);
      for (Index n = 0; n < g.batch; ++n)
        for (Index c = 0; c < out_; ++c) std::fill(y.data() + (n * out_ + c) * P, y.data() + (n * out_ + c + 1) * P, b[c]);
    } else {
      y.zero();
    }
    kernels::conv2d_backward_data(g, x.data(), params_.value(weight_), y.data());
  }

  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) {
    check_shape(dy, output_shape(x.shape()), "ConvTranspose2d", name_, "backward: dy");
    const kernels::Conv2dGeometry g = geometry(x.shape());
    if (dx) {
      check_shape(*dx, x.shape(), "ConvTranspose2d", name_, "backward: dx");
      kernels::conv2d_forward_add(g, dy.data(), params_.value(weight_), dx->data());  // dx += conv(dy, w)
    }
    kernels::conv2d_backward_weight(g, dy.data(), x.data(), params_.grad(weight_));
    if (bias_.valid()) kernels::channel_sum(g.batch, out_, g.in_pixels(), dy.data(), params_.grad(bias_));
  }

  const std::string& name() const { return name_; }

 private:
  // The convolution mapping this layer's output (C_out, OH, OW) back to its input (C_in, H, W).
  kernels::Conv2dGeometry geometry(const Shape& x) const {
    kernels::Conv2dGeometry g;
    const Shape y = output_shape(x);
    g.batch = x[0];
    g.in_channels = out_, g.in_height = y[2], g.in_width = y[3];
    g.out_channels = in_, g.out_height = x[2], g.out_width = x[3];
    g.kernel_h = g.kernel_w = kernel_, g.stride = stride_, g.padding = padding_, g.groups = groups_;
    return g;
  }

  ParameterStore<T>& params_;
  std::string name_;
  Index in_, out_, kernel_, stride_, padding_, groups_;
  typename ParameterStore<T>::Ref weight_, bias_;
};

}  // namespace diffusion::nn
