#pragma once
// Small pieces shared by the tests of whole networks: a tiny U-Net configuration and a bitwise tensor comparison.

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

// Same shape and every element bit-equal (a NaN never equals).
template <class T>
bool bits_equal(const diffusion::TensorView<T>& a, const diffusion::TensorView<T>& b) {
  if (a.shape() != b.shape()) return false;
  for (diffusion::Index i = 0; i < a.numel(); ++i)
    if (!(a[i] == b[i])) return false;
  return true;
}

}  // namespace diffusion::testing
