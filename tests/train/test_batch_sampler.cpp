// BatchSampler's numbers: the flip rate (1/2, independent per image), what a flip does to a whole image (every
// channel and row mirrored), no flips when they are off, the order without shuffling, and drop_last.
#include <catch2/catch.hpp>

#include <cmath>
#include <set>
#include <vector>

#include "diffusion/train/dataset.hpp"

using namespace diffusion;

namespace {

// n images (C=2, H=3, W=5) whose pixels all differ: value = 1000 i + 100 c + 10 h + w.
Tensor<float> numbered(Index n) {
  Tensor<float> images(Shape{n, 2, 3, 5});
  for (Index i = 0; i < n; ++i)
    for (Index c = 0; c < 2; ++c)
      for (Index h = 0; h < 3; ++h)
        for (Index w = 0; w < 5; ++w) images.at(i, c, h, w) = float(1000 * i + 100 * c + 10 * h + w);
  return images;
}

// Which image a batch entry is, and whether it is mirrored; fails unless it is exactly one of the two.
struct Seen {
  Index image;
  bool flipped;
};
Seen identify(const Tensor<float>& batch, Index k) {
  const Index image = static_cast<Index>(batch.at(k, 0, 0, 0)) / 1000;
  const bool flipped = static_cast<Index>(batch.at(k, 0, 0, 0)) % 10 == 4;
  for (Index c = 0; c < 2; ++c)
    for (Index h = 0; h < 3; ++h)
      for (Index w = 0; w < 5; ++w) {
        const Index src_w = flipped ? 4 - w : w;
        REQUIRE(batch.at(k, c, h, w) == float(1000 * image + 100 * c + 10 * h + src_w));
      }
  return {image, flipped};
}

}  // namespace

TEST_CASE("BatchSampler flips each image with probability one half and mirrors every channel and row") {
  // 10 images, batch 4 (4 + 4 + 2), 400 epochs: 4000 draws. Flips ~ Binomial(4000, 1/2): sd 31.6, bound 5 sd.
  // Each image: Binomial(400, 1/2), sd 10, bound 5 sd. Consecutive draws of one image agree half the time.
  const Tensor<float> images = numbered(10);
  BatchOptions o;
  o.batch_size = 4;
  o.seed = 17;
  BatchSampler<float> s(images, o);
  const int epochs = 400;
  int flips = 0, draws = 0, same_as_last = 0, pairs = 0;
  std::vector<int> per_image(10, 0);
  std::vector<int> last(10, -1);
  Tensor<float> batch;
  for (std::int64_t step = 0; step < epochs * s.batches_per_epoch(); ++step) {
    s.batch(step, batch);
    for (Index k = 0; k < batch.dim(0); ++k) {
      const Seen seen = identify(batch, k);
      flips += seen.flipped ? 1 : 0;
      per_image[static_cast<std::size_t>(seen.image)] += seen.flipped ? 1 : 0;
      int& previous = last[static_cast<std::size_t>(seen.image)];
      if (previous >= 0) same_as_last += (previous == int(seen.flipped)) ? 1 : 0, ++pairs;
      previous = int(seen.flipped);
      ++draws;
    }
  }
  REQUIRE(draws == epochs * 10);
  CAPTURE(flips, same_as_last, pairs);
  REQUIRE(std::fabs(flips - draws / 2.0) <= 5.0 * std::sqrt(draws / 4.0));
  for (int f : per_image) REQUIRE(std::fabs(f - epochs / 2.0) <= 5.0 * std::sqrt(epochs / 4.0));
  REQUIRE(std::fabs(same_as_last - pairs / 2.0) <= 5.0 * std::sqrt(pairs / 4.0));

  o.horizontal_flip = false;
  BatchSampler<float> plain(images, o);
  for (std::int64_t step = 0; step < 30; ++step) {
    plain.batch(step, batch);
    for (Index k = 0; k < batch.dim(0); ++k) REQUIRE_FALSE(identify(batch, k).flipped);
  }
}

TEST_CASE("BatchSampler without shuffling keeps the order and drop_last drops the short batch") {
  const Tensor<float> images = numbered(10);
  BatchOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  o.horizontal_flip = false;
  BatchSampler<float> ordered(images, o);
  Tensor<float> batch;
  for (std::int64_t step = 0; step < 6; ++step) {  // two epochs of 4 + 4 + 2
    ordered.batch(step, batch);
    const Index first = (step % 3) * 4;
    REQUIRE(batch.dim(0) == (step % 3 == 2 ? 2 : 4));
    for (Index k = 0; k < batch.dim(0); ++k) REQUIRE(identify(batch, k).image == first + k);
  }

  o.shuffle = true;
  o.drop_last = true;
  o.seed = 4;
  BatchSampler<float> dropping(images, o);
  REQUIRE(dropping.batches_per_epoch() == 2);
  std::set<Index> left_out_sets;
  for (std::int64_t epoch = 0; epoch < 20; ++epoch) {
    std::set<Index> seen;
    for (std::int64_t b = 0; b < 2; ++b) {
      dropping.batch(epoch * 2 + b, batch);
      REQUIRE(batch.dim(0) == 4);  // never the short batch
      for (Index k = 0; k < 4; ++k) seen.insert(identify(batch, k).image);
    }
    REQUIRE(seen.size() == 8);  // 8 distinct images per epoch; the 2 left out change from epoch to epoch
    Index left_out = 0;
    for (Index i = 0; i < 10; ++i) left_out = seen.count(i) ? left_out : left_out * 10 + i + 1;
    left_out_sets.insert(left_out);
  }
  REQUIRE(left_out_sets.size() > 5);
  BatchOptions too_big = o;
  too_big.batch_size = 11;
  REQUIRE_THROWS_WITH(BatchSampler<float>(images, too_big), Catch::Contains("drop_last"));
}
