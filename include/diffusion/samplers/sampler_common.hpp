#pragma once
// Pieces shared by the samplers. The network is any callable
//   model(const Tensor<T>& x_t /* (N, ...) */, const std::vector<std::int64_t>& t /* (N,) */, Tensor<T>& out)
// that writes its output (interpreted per Prediction) into `out`, resizing it to x_t's shape. Samplers know nothing
// of the U-Net. A callback(int step_index, std::int64_t t, const Tensor<T>& x) sees x after every step.

#include <cstdint>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/tensor.hpp"

namespace diffusion {

// The default callback: does nothing.
struct NoCallback {
  template <class T>
  void operator()(int, std::int64_t, const Tensor<T>&) const {}
};

namespace detail {

// Keeps a parameter out of template argument deduction (C++20's std::type_identity_t), so that nullptr can be
// passed for an optional `const Tensor<T>*`.
template <class U>
struct NonDeduced {
  using type = U;
};
template <class U>
using non_deduced_t = typename NonDeduced<U>::type;

// Calls the model and checks that it produced an output shaped like x.
template <class T, class Model>
void run_model(Model& model, const Tensor<T>& x, const std::vector<std::int64_t>& t, Tensor<T>& out,
               const char* sampler) {
  model(x, t, out);
  DIFFUSION_CHECK(out.shape() == x.shape(), sampler << ": the model returned an output of shape " << out.shape()
                                                    << " for x_t of shape " << x.shape());
}

}  // namespace detail

}  // namespace diffusion
