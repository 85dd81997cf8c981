#pragma once
// Running a batch in parts. Every layer of the library treats each image of a batch alone and in the same order
// whatever the batch size, so a forward over images [a, b) computes the same bits as rows [a, b) of the whole
// batch's forward; running a large batch as parts of at most `part` images bounds memory by one part's activations.
// The U-Net's predict, LinearAttention's inference forward and the evaluators' feature extraction all split that way.

#include <algorithm>

#include "diffusion/core/error.hpp"
#include "diffusion/core/tensor.hpp"

namespace diffusion {

// Calls body(start, count) for the consecutive parts [start, start + count) of n items, in order, each of at most
// `part` items; part 0 means one part holding everything. n = 0 calls body(0, 0) once, so that a body that sizes
// its output on the first part still does so for an empty batch.
template <class Body>
void for_each_part(Index n, Index part, Body&& body) {
  DIFFUSION_CHECK(n >= 0 && part >= 0, "for_each_part: need n >= 0 and part >= 0, got n = " << n << ", part = " << part);
  if (part == 0 || n <= part) {
    body(Index(0), n);
    return;
  }
  for (Index start = 0; start < n; start += part) body(start, std::min(part, n - start));
}

// Items [start, start + count) along dimension 0 of x, as a view of the same memory.
template <class T>
TensorView<T> batch_part(TensorView<T> x, Index start, Index count) {
  DIFFUSION_CHECK(x.rank() >= 1 && start >= 0 && count >= 0 && start + count <= x.dim(0),
                  "batch_part: items [" << start << ", " << start + count << ") of a tensor " << x.shape());
  Shape shape = x.shape();
  shape[0] = count;
  const Index per_item = x.dim(0) == 0 ? 0 : x.numel() / x.dim(0);
  return TensorView<T>(x.data() + start * per_item, shape);
}

// Copies `part` (count items) into items [start, start + count) of `whole`, whose other dimensions must match.
template <class T>
void copy_into_part(TensorView<T> part, Tensor<T>& whole, Index start) {
  const Index count = part.rank() >= 1 ? part.dim(0) : 0;
  bool same_item = part.rank() == whole.rank();
  for (int i = 1; same_item && i < part.rank(); ++i) same_item = part.dim(i) == whole.dim(i);
  DIFFUSION_CHECK(same_item && start >= 0 && start + count <= whole.dim(0),
                  "copy_into_part: items of " << part.shape() << " at " << start << " in a tensor " << whole.shape());
  std::copy(part.begin(), part.end(), whole.data() + start * (part.numel() / std::max<Index>(count, 1)));
}

}  // namespace diffusion
