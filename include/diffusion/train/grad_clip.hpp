#pragma once
// Gradient clipping by global L2 norm, as torch.nn.utils.clip_grad_norm_(parameters, max_norm) (norm_type 2):
//   total = ||g||_2 over every gradient;  coef = max_norm / (total + 1e-6);  if coef < 1: g *= coef.
// The sum of squares is accumulated in double over fixed chunks, reduced in chunk order: the same bits for any
// thread count.

#include <cmath>
#include <cstddef>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parameters.hpp"
#include "diffusion/kernels/activations.hpp"
#include "diffusion/kernels/reduce.hpp"

namespace diffusion {

// ||grads[0..n)||_2, in double.
template <class T>
double grad_norm(const T* grads, std::size_t n) {
  return std::sqrt(kernels::sum_squares(grads, n));
}

// Scales grads[0..n) in place so that their global norm is at most max_norm (> 0), as PyTorch does, and returns
// the norm before clipping. A non-finite norm is returned as is and leaves the gradients unchanged (the caller
// decides whether to skip the step).
template <class T>
double clip_grad_norm(T* grads, std::size_t n, double max_norm) {
  DIFFUSION_CHECK(max_norm > 0.0, "clip_grad_norm: max_norm must be > 0, got " << max_norm);
  const double total = grad_norm(grads, n);
  const double coef = max_norm / (total + 1e-6);
  if (std::isfinite(total) && coef < 1.0) {
    const T c = static_cast<T>(coef);
    kernels::for_each_chunk(static_cast<Index>(n), [&](Index begin, Index count) {
      for (Index i = begin; i < begin + count; ++i) grads[i] = grads[i] * c;
    });
  }
  return total;
}

// Every gradient of a store (padding is zero and stays zero).
template <class T>
double clip_grad_norm(ParameterStore<T>& store, double max_norm) {
  return clip_grad_norm(store.grads(), store.size(), max_norm);
}

}  // namespace diffusion
