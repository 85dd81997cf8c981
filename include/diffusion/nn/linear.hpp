#pragma once
// Linear: PyTorch's nn.Linear on x (N, in) -> y (N, out) = x W^T + b.
// Parameters: `<name>.weight` (out, in), `<name>.bias` (out); init uniform(+-1/sqrt(in)).
// Contract as in conv2d.hpp: y assigned, dx and parameter gradients accumulated.

#include <cmath>
#include <string>

#include "diffusion/core/parameters.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/kernels/gemm.hpp"

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
    const Index N = x.dim(0);
    T beta = T(0);
    if (bias_.valid()) {
      const T* b = params_.value(bias_);
      for (Index n = 0; n < N; ++n) std::copy(b, b + out_, y.data() + n * out_);
      beta = T(1);
    }
    kernels::gemm(kernels::Op::NoTrans, kernels::Op::Trans, N, out_, in_, T(1), x.data(), in_, params_.value(weight_),
                  in_, beta, y.data(), out_);
  }

  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) {
    check_shape(dy, output_shape(x.shape()), "Linear", name_, "backward: dy");
    const Index N = x.dim(0);
    if (dx) {
      check_shape(*dx, x.shape(), "Linear", name_, "backward: dx");
      kernels::gemm(kernels::Op::NoTrans, kernels::Op::NoTrans, N, in_, out_, T(1), dy.data(), out_,
                    params_.value(weight_), in_, T(1), dx->data(), in_);
    }
    kernels::gemm(kernels::Op::Trans, kernels::Op::NoTrans, out_, in_, N, T(1), dy.data(), out_, x.data(), in_, T(1),
                  params_.grad(weight_), in_);
    if (bias_.valid()) {
      T* db = params_.grad(bias_);
      for (Index o = 0; o < out_; ++o) {
        double sum = 0.0;  // fixed order over the batch
        for (Index n = 0; n < N; ++n) sum += static_cast<double>(dy[n * out_ + o]);
        db[o] += static_cast<T>(sum);
      }
    }
  }

  const std::string& name() const { return name_; }

 private:
  ParameterStore<T>& params_;
  std::string name_;
  Index in_, out_;
  typename ParameterStore<T>::Ref weight_, bias_;
};

}  // namespace diffusion::nn
