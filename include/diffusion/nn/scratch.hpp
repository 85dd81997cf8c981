#pragma once
// Scratch tensors shared by all layers of a network during backward (and for forward temporaries that backward
// does not need). A layer's input-gradient buffers live only inside its backward call, so one buffer per nesting
// level serves every block: gradient memory is one block's worth instead of the whole network's. Buffers are per
// calling thread and keep their size, so after the first step there is no allocation.
//
// Slots are assigned by nesting level, so that no two buffers live at the same time share a slot:
//   blocks (ResnetBlock, ConvNextBlock)       kBlock0 .. kBlock0 + 7, kResidual
//   PreNormResidual                           kPreNorm
//   Attention, LinearAttention                kAttention0 .. kAttention0 + 3
//   ConvTranspose2d, GroupNorm (inner)        kConvTranspose, kNormInputGrad
// A forward pass may use the same slots for temporaries that backward recomputes or does not need.

#include <array>

#include "diffusion/core/tensor.hpp"

namespace diffusion::nn {

enum ScratchSlot : int {
  kBlock0 = 0,
  kResidual = 8,
  kPreNorm = 9,
  kAttention0 = 10,
  kConvTranspose = 14,
  kNormInputGrad = 15,
  kScratchSlots = 16
};

template <class T>
Tensor<T>& scratch_tensor(int slot) {
  thread_local std::array<Tensor<T>, kScratchSlots> tensors;
  return tensors[static_cast<std::size_t>(slot)];
}

}  // namespace diffusion::nn
