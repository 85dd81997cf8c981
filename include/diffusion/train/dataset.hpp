#pragma once
// Mini-batches from an in-memory image set, the way the primer's DataLoader(shuffle=True) + RandomHorizontalFlip
// makes them, but reproducible and resumable: the batch of global step s is a pure function of (seed, s).
//   epoch e = s / batches_per_epoch: a permutation of the images drawn from Rng(seed).fork(e)
//   batch b = s % batches_per_epoch: images perm[b * B, ...) (the last batch is smaller unless drop_last)
//   each image is flipped left-right with probability 1/2, drawn from Rng(seed).fork(e).fork(b + 1)

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"

namespace diffusion {

struct BatchOptions {
  Index batch_size = 128;
  bool shuffle = true;
  bool horizontal_flip = true;
  bool drop_last = false;
  std::uint64_t seed = 0;
};

template <class T>
class BatchSampler {
 public:
  static constexpr std::uint64_t kDataStream = 0x44415441ull;  // "DATA"

  // images: (N, C, H, W), kept by reference; must outlive the sampler.
  BatchSampler(const Tensor<T>& images, const BatchOptions& options) : images_(images), options_(options) {
    DIFFUSION_CHECK(images.rank() == 4, "BatchSampler: images must be (N, C, H, W), got " << images.shape());
    DIFFUSION_CHECK(images.dim(0) > 0, "BatchSampler: the dataset is empty");
    DIFFUSION_CHECK(options.batch_size > 0, "BatchSampler: batch_size must be positive, got " << options.batch_size);
    DIFFUSION_CHECK(!options.drop_last || images.dim(0) >= options.batch_size,
                    "BatchSampler: drop_last with " << images.dim(0) << " images and batch_size "
                                                    << options.batch_size << " leaves no batch");
  }
  BatchSampler(const Tensor<T>&& images, const BatchOptions& options) = delete;  // a temporary would dangle

  Index dataset_size() const { return images_.dim(0); }
  Index batches_per_epoch() const {
    const Index n = images_.dim(0), b = options_.batch_size;
    return options_.drop_last ? n / b : (n + b - 1) / b;
  }
  std::int64_t epoch_of(std::int64_t step) const { return step / batches_per_epoch(); }

  // Fills `batch` (resized to (B, C, H, W)) with the images of global step `step`.
  void batch(std::int64_t step, Tensor<T>& out) {
    DIFFUSION_CHECK(step >= 0, "BatchSampler::batch: step must be >= 0, got " << step);
    const std::int64_t epoch = epoch_of(step);
    const Index b = static_cast<Index>(step % batches_per_epoch());
    prepare_epoch(epoch);
    const Index n = images_.dim(0), begin = b * options_.batch_size;
    const Index count = std::min(options_.batch_size, n - begin);
    const Index C = images_.dim(1), H = images_.dim(2), W = images_.dim(3), per = C * H * W;
    out.resize(Shape{count, C, H, W});
    Rng flips = Rng(options_.seed).fork(kDataStream).fork(static_cast<std::uint64_t>(epoch)).fork(static_cast<std::uint64_t>(b) + 1);
    for (Index i = 0; i < count; ++i) {
      const T* src = images_.data() + order_[static_cast<std::size_t>(begin + i)] * per;
      T* dst = out.data() + i * per;
      const bool flip = options_.horizontal_flip && (flips.next_u32() & 1u);
      if (!flip) {
        std::copy(src, src + per, dst);
        continue;
      }
      for (Index row = 0; row < C * H; ++row)
        for (Index w = 0; w < W; ++w) dst[row * W + w] = src[row * W + (W - 1 - w)];
    }
  }

 private:
  void prepare_epoch(std::int64_t epoch) {
    if (epoch == prepared_epoch_) return;
    const Index n = images_.dim(0);
    order_.resize(static_cast<std::size_t>(n));
    std::iota(order_.begin(), order_.end(), Index(0));
    if (options_.shuffle) {  // Fisher-Yates
      Rng rng = Rng(options_.seed).fork(kDataStream).fork(static_cast<std::uint64_t>(epoch));
      for (Index i = n - 1; i > 0; --i)
        std::swap(order_[static_cast<std::size_t>(i)], order_[static_cast<std::size_t>(rng.uniform_int(i + 1))]);
    }
    prepared_epoch_ = epoch;
  }

  const Tensor<T>& images_;
  BatchOptions options_;
  std::vector<Index> order_;
  std::int64_t prepared_epoch_ = -1;
};

}  // namespace diffusion
