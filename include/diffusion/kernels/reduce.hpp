#pragma once
// Reductions over long arrays (the optimizer's gradient norm): sum of squares accumulated in double over fixed
// chunks of kReduceChunk elements, the chunks' sums added in chunk order, so the result is the same for any thread
// count. Scratch: ChunkSums (scratch.hpp), one double per chunk on the calling thread.

#include <cstddef>

#include "diffusion/core/parallel.hpp"
#include "diffusion/kernels/scratch.hpp"

namespace diffusion::kernels {

inline constexpr std::size_t kReduceChunk = 8192;

// sum over i < n of x[i]^2, in double.
template <class T>
double sum_squares(const T* x, std::size_t n) {
  const std::size_t chunks = (n + kReduceChunk - 1) / kReduceChunk;
  const ScratchBuffer<double, Scratch::ChunkSums> partial(chunks);
  double* sums = partial.data();
  parallel_for(0, static_cast<Index>(chunks), double(kReduceChunk), [&](Index c) {
    const std::size_t begin = static_cast<std::size_t>(c) * kReduceChunk;
    const std::size_t end = begin + kReduceChunk < n ? begin + kReduceChunk : n;
    double s = 0.0;
    for (std::size_t i = begin; i < end; ++i) s += static_cast<double>(x[i]) * static_cast<double>(x[i]);
    sums[static_cast<std::size_t>(c)] = s;
  });
  double total = 0.0;
  for (std::size_t c = 0; c < chunks; ++c) total += sums[c];
  return total;
}

}  // namespace diffusion::kernels
