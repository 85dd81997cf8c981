#pragma once
// Mini-batches from an in-memory image set, the way the primer's DataLoader(shuffle=True) + RandomHorizontalFlip
// makes them, but reproducible and resumable: the batch of global step s is a pure function of (seed, s).
//   epoch e = s / batches_per_epoch: a permutation of the images drawn from Rng(seed).fork(e)
//   batch b = s % batches_per_epoch: images perm[b * B, ...) (the last batch is smaller unless drop_last)
//   each image is flipped left-right with probability 1/2, drawn from Rng(seed).fork(e).fork(b + 1)
// The images are either values of T in [-1, 1] (e.g. io::load_idx_images) or bytes in [0, 255] (e.g.
// io::ImageFolder::images(): a quarter of the memory of floats), converted per batch as p / 255 * 2 - 1 computed
// in T (torchvision's ToTensor() then t * 2 - 1; the IDX loader's mapping, so 0 -> -1 and 255 -> 1 exactly).
// Optional labels (N) (e.g. io::ImageFolder::labels()) come back with each batch, in the batch's order.
// Both kinds of storage draw the same permutation and flips: a byte set and its conversion to T give the same
// batches, bit for bit.

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

  // images: (N, C, H, W) in [-1, 1]; labels (N) or null. Both kept by reference: they must outlive the sampler.
  BatchSampler(const Tensor<T>& images, const BatchOptions& options,
               const std::vector<std::int64_t>* labels = nullptr)
      : values_(&images), shape_(images.shape()), labels_(labels), options_(options) {
    check("BatchSampler");
  }
  // images: (N, C, H, W) bytes in [0, 255], converted per batch; labels (N) or null. Kept by reference.
  BatchSampler(const Tensor<std::uint8_t>& images, const BatchOptions& options,
               const std::vector<std::int64_t>* labels = nullptr)
      : bytes_(&images), shape_(images.shape()), labels_(labels), options_(options) {
    for (int p = 0; p < 256; ++p) table_[p] = static_cast<T>(p) / static_cast<T>(255) * static_cast<T>(2) - static_cast<T>(1);
    check("BatchSampler");
  }
  // A temporary would dangle.
  BatchSampler(const Tensor<T>&&, const BatchOptions&, const std::vector<std::int64_t>* = nullptr) = delete;
  BatchSampler(const Tensor<std::uint8_t>&&, const BatchOptions&, const std::vector<std::int64_t>* = nullptr) = delete;

  Index dataset_size() const { return shape_[0]; }
  bool has_labels() const { return labels_ != nullptr; }
  Index batches_per_epoch() const {
    const Index n = shape_[0], b = options_.batch_size;
    return options_.drop_last ? n / b : (n + b - 1) / b;
  }
  std::int64_t epoch_of(std::int64_t step) const { return step / batches_per_epoch(); }

  // The number of images B of global step `step`'s batch (batch_size, or fewer for an epoch's last one).
  Index batch_size_of(std::int64_t step) const {
    DIFFUSION_CHECK(step >= 0, "BatchSampler: step must be >= 0, got " << step);
    const Index begin = static_cast<Index>(step % batches_per_epoch()) * options_.batch_size;
    return std::min(options_.batch_size, shape_[0] - begin);
  }

  // Fills `out` (resized to (B, C, H, W)) with the images of global step `step`.
  void batch(std::int64_t step, Tensor<T>& out) { fill(step, 0, batch_size_of(step), out, nullptr); }

  // The same, and the images' labels into `labels` (resized to B); requires labels.
  void batch(std::int64_t step, Tensor<T>& out, std::vector<std::int64_t>& labels) {
    check_has_labels();
    fill(step, 0, batch_size_of(step), out, &labels);
  }

  // Images [begin, end) of step `step`'s batch (and their labels): exactly those images of batch(step, ...), read
  // without the others (a data-parallel rank's share). 0 <= begin <= end <= batch_size_of(step).
  void batch_part(std::int64_t step, Index begin, Index end, Tensor<T>& out) { fill(step, begin, end, out, nullptr); }
  void batch_part(std::int64_t step, Index begin, Index end, Tensor<T>& out, std::vector<std::int64_t>& labels) {
    check_has_labels();
    fill(step, begin, end, out, &labels);
  }

 private:
  void check(const char* what) const {
    DIFFUSION_CHECK(shape_.rank() == 4, what << ": images must be (N, C, H, W), got " << shape_);
    DIFFUSION_CHECK(shape_[0] > 0, what << ": the dataset is empty");
    DIFFUSION_CHECK(options_.batch_size > 0, what << ": batch_size must be positive, got " << options_.batch_size);
    DIFFUSION_CHECK(!options_.drop_last || shape_[0] >= options_.batch_size,
                    what << ": drop_last with " << shape_[0] << " images and batch_size " << options_.batch_size
                         << " leaves no batch");
    DIFFUSION_CHECK(!labels_ || static_cast<Index>(labels_->size()) == shape_[0],
                    what << ": " << labels_->size() << " labels for " << shape_[0] << " images");
  }

  void check_has_labels() const {
    DIFFUSION_CHECK(labels_ != nullptr, "BatchSampler::batch: labels asked for, but the sampler was given none");
  }

  // Images [part_begin, part_end) of the batch.
  void fill(std::int64_t step, Index part_begin, Index part_end, Tensor<T>& out, std::vector<std::int64_t>* labels) {
    DIFFUSION_CHECK(step >= 0, "BatchSampler::batch: step must be >= 0, got " << step);
    // The images must not have changed shape since construction (they are kept by reference).
    DIFFUSION_CHECK((values_ ? values_->shape() : bytes_->shape()) == shape_,
                    "BatchSampler::batch: the images changed shape since the sampler was made (" << shape_ << ")");
    const std::int64_t epoch = epoch_of(step);
    const Index b = static_cast<Index>(step % batches_per_epoch());
    prepare_epoch(epoch);
    const Index begin = b * options_.batch_size, batch = batch_size_of(step);
    DIFFUSION_CHECK(0 <= part_begin && part_begin <= part_end && part_end <= batch,
                    "BatchSampler::batch_part: images [" << part_begin << ", " << part_end << ") of step " << step
                                                         << "'s batch of " << batch << " asked for");
    const Index count = part_end - part_begin;
    const Index C = shape_[1], H = shape_[2], W = shape_[3], per = C * H * W;
    out.resize(Shape{count, C, H, W});
    if (labels) labels->resize(static_cast<std::size_t>(count));
    Rng flips = Rng(options_.seed).fork(kDataStream).fork(static_cast<std::uint64_t>(epoch)).fork(static_cast<std::uint64_t>(b) + 1);
    if (options_.horizontal_flip)  // one draw per image in batch order: skip the part's predecessors'
      for (Index i = 0; i < part_begin; ++i) flips.next_u32();
    for (Index i = 0; i < count; ++i) {
      const Index index = order_[static_cast<std::size_t>(begin + part_begin + i)];
      if (labels) (*labels)[static_cast<std::size_t>(i)] = (*labels_)[static_cast<std::size_t>(index)];
      T* dst = out.data() + i * per;
      const bool flip = options_.horizontal_flip && (flips.next_u32() & 1u);
      if (values_) copy_image(values_->data() + index * per, dst, per, W, flip, [](T v) { return v; });
      else copy_image(bytes_->data() + index * per, dst, per, W, flip, [this](std::uint8_t v) { return table_[v]; });
    }
  }

  // dst (C, H, W) = convert(src), mirrored left-right when flip.
  template <class S, class Convert>
  static void copy_image(const S* src, T* dst, Index per, Index W, bool flip, Convert convert) {
    if (!flip) {
      for (Index i = 0; i < per; ++i) dst[i] = convert(src[i]);
      return;
    }
    for (Index row = 0; row < per / W; ++row)
      for (Index w = 0; w < W; ++w) dst[row * W + w] = convert(src[row * W + (W - 1 - w)]);
  }

  void prepare_epoch(std::int64_t epoch) {
    if (epoch == prepared_epoch_) return;
    const Index n = shape_[0];
    order_.resize(static_cast<std::size_t>(n));
    std::iota(order_.begin(), order_.end(), Index(0));
    if (options_.shuffle) {  // Fisher-Yates
      Rng rng = Rng(options_.seed).fork(kDataStream).fork(static_cast<std::uint64_t>(epoch));
      for (Index i = n - 1; i > 0; --i)
        std::swap(order_[static_cast<std::size_t>(i)], order_[static_cast<std::size_t>(rng.uniform_int(i + 1))]);
    }
    prepared_epoch_ = epoch;
  }

  const Tensor<T>* values_ = nullptr;             // one of values_ and bytes_
  const Tensor<std::uint8_t>* bytes_ = nullptr;
  Shape shape_;                                   // (N, C, H, W)
  const std::vector<std::int64_t>* labels_ = nullptr;
  BatchOptions options_;
  T table_[256] = {};                             // byte -> [-1, 1]
  std::vector<Index> order_;
  std::int64_t prepared_epoch_ = -1;
};

}  // namespace diffusion
