#pragma once
// Small pieces shared by the tests of whole networks: a tiny U-Net configuration, images it learns easily and a
// bitwise tensor comparison.

#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/model/unet_config.hpp"

namespace diffusion::testing {

// dim 8, dim_mults (1, 2), ConvNeXt blocks, the default attention: a U-Net of a few thousand parameters that takes
// images of any even size.
inline diffusion::UnetConfig tiny_unet_config(diffusion::Index channels) {
  diffusion::UnetConfig c;
  c.dim = 8;
  c.channels = channels;
  c.dim_mults = {1, 2};
  return c;
}

// n images 8x8 of background -1 with a bright 3x3 square at a place drawn from Rng(seed): easy structure for a tiny
// U-Net.
inline diffusion::Tensor<float> bright_squares(diffusion::Index n, std::uint64_t seed) {
  diffusion::Tensor<float> images(diffusion::Shape{n, 1, 8, 8}, -1.0f);
  diffusion::Rng rng(seed);
  for (diffusion::Index i = 0; i < n; ++i) {
    const diffusion::Index r = rng.uniform_int(6), c = rng.uniform_int(6);
    for (diffusion::Index y = r; y < r + 3; ++y)
      for (diffusion::Index x = c; x < c + 3; ++x) images.at(i, 0, y, x) = 1.0f;
  }
  return images;
}

// Same shape and every element bit-equal (a NaN never equals).
template <class T>
bool bits_equal(const diffusion::TensorView<T>& a, const diffusion::TensorView<T>& b) {
  if (a.shape() != b.shape()) return false;
  for (diffusion::Index i = 0; i < a.numel(); ++i)
    if (!(a[i] == b[i])) return false;
  return true;
}

}  // namespace diffusion::testing
