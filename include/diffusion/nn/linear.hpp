#pragma once
// Linear: PyTorch's nn.Linear on x (N, in) -> y (N, out) = x W^T + b.
// Parameters: `<name>.weight` (out, in), `<name>.bias` (out); init uniform(+-1/sqrt(in)).
// Contract as in conv2d.hpp: y assigned, dx and parameter gradients accumulated.

#include <cmath>
#include <string>

#include "diffusion/core/parameters.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/kernels/linear.hpp"

namespace diffusion::nn {

template <class T>
class Linear {
 public:
  Linear(ParameterStore<T>& params, const std::string& name, Index in_features, Index out_features, bool bias = true)
      : params_(params), name_(name), in_(in_features), out_(out_features) {
    DIFFUSION_CHECK(in_ > 0 && out_ > 0, "Linear '" << name << "': invalid sizes " << in_ << " -> " << out_);
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_));
    weight_ = params.add(join_name(name, "weight"), Shape{out_, in_}, Init::uniform(bound));
    if (bias) bias_ = params.add(join_name(name, "bias"), Shape{out_}, Init::uniform(bound));
  }

  Shape output_shape(const Shape& x) const {
    DIFFUSION_CHECK(x.rank() == 2 && x[1] == in_, "Linear '" << name_ << "': input " << x
                                                              << " does not match weight (" << out_ << ", " << in_
                                                              << ") (expected (N, " << in_ << "))");
    return Shape{x[0], out_};
  }

  void forward(const Tensor<T>& x, Tensor<T>& y) {
    y.resize(output_shape(x.shape()));
    kernels::linear_forward(x.dim(0), in_, out_, x.data(), params_.value(weight_),
                            bias_.valid() ? params_.value(bias_) : nullptr, y.data());
  }

  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) {
    check_shape(dy, output_shape(x.shape()), "Linear", name_, "backward: dy");
    const Index N = x.dim(0);
    if (dx) {
      check_shape(*dx, x.shape(), "Linear", name_, "backward: dx");
      kernels::linear_backward_data(N, in_, out_, dy.data(), params_.value(weight_), dx->data());
    }
    kernels::linear_backward_weight(N, out_, in_, dy.data(), x.data(), params_.grad(weight_));
    if (bias_.valid()) kernels::linear_backward_bias(N, out_, dy.data(), params_.grad(bias_));
  }

  const std::string& name() const { return name_; }

 private:
  ParameterStore<T>& params_;
  std::string name_;
  Index in_, out_;
  typename ParameterStore<T>::Ref weight_, bias_;
};

}  // namespace diffusion::nn
