// BatchSampler over images kept as bytes (an image folder's storage) with labels: the same batches as over the
// images converted to [-1, 1] beforehand, bit for bit; step s's batch a pure function of (seed, s); labels that
// follow their images through shuffling.
#include <catch2/catch.hpp>

#include <cstring>
#include <type_traits>
#include <vector>

#include "diffusion/train/dataset.hpp"

using namespace diffusion;

namespace {

// n images (C, H, W) = (3, 2, 5) of distinct bytes; image i's first byte is i, so a batch says which images it holds.
Tensor<std::uint8_t> byte_images(Index n) {
  Tensor<std::uint8_t> t(Shape{n, 3, 2, 5});
  Rng rng(5);
  for (Index i = 0; i < t.numel(); ++i) t[i] = static_cast<std::uint8_t>(rng.uniform_int(256));
  for (Index i = 0; i < n; ++i) t[i * 30] = static_cast<std::uint8_t>(i);
  t[1] = 0;  // the extremes map exactly
  t[2] = 255;
  return t;
}

bool same(const Tensor<float>& a, const Tensor<float>& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.numel())) == 0;
}

}  // namespace

TEST_CASE("BatchSampler over bytes gives the batches of the converted images bit for bit, labels included") {
  const Tensor<std::uint8_t> bytes = byte_images(11);
  Tensor<float> values(bytes.shape());
  for (Index i = 0; i < bytes.numel(); ++i) values[i] = static_cast<float>(bytes[i]) / 255.0f * 2.0f - 1.0f;
  std::vector<std::int64_t> labels(11);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::int64_t>(i % 4);
  BatchOptions o;
  o.batch_size = 4;
  o.seed = 9;
  BatchSampler<float> from_bytes(bytes, o, &labels), from_values(values, o, &labels);
  REQUIRE(from_bytes.has_labels());
  REQUIRE(from_bytes.batches_per_epoch() == 3);
  Tensor<float> a, b;
  std::vector<std::int64_t> la, lb;
  int flipped = 0, total = 0;
  for (std::int64_t step = 0; step < 12; ++step) {
    CAPTURE(step);
    from_bytes.batch(step, a, la);
    from_values.batch(step, b, lb);
    REQUIRE(same(a, b));
    REQUIRE(la == lb);
    REQUIRE(a.dim(0) == (step % 3 == 2 ? 3 : 4));
    for (Index i = 0; i < a.dim(0); ++i) {
      // Image i of the batch is image k of the set: its first byte (or, flipped, the last of its first row).
      const float first = a.at(i, 0, 0, 0), last = a.at(i, 0, 0, 4);
      bool found = false;
      for (Index k = 0; k < 11; ++k) {
        const float id = static_cast<float>(k) / 255.0f * 2.0f - 1.0f;
        const bool plain = first == id && a.at(i, 0, 0, 4) == values.at(k, 0, 0, 4);
        const bool flip = last == id && a.at(i, 0, 0, 0) == values.at(k, 0, 0, 4);
        if (plain || flip) {
          REQUIRE(la[static_cast<std::size_t>(i)] == labels[static_cast<std::size_t>(k)]);
          flipped += flip && !plain;
          found = true;
          break;
        }
      }
      REQUIRE(found);
      ++total;
    }
  }
  REQUIRE(flipped > total / 5);
  REQUIRE(flipped < total * 4 / 5);
  // The extremes: 0 -> -1 and 255 -> 1 exactly (the IDX loader's mapping).
  BatchOptions plain = o;
  plain.shuffle = plain.horizontal_flip = false;
  BatchSampler<float> ordered(bytes, plain);
  ordered.batch(0, a);
  REQUIRE(a[1] == -1.0f);
  REQUIRE(a[2] == 1.0f);
}

TEST_CASE("BatchSampler over bytes: step s's batch is a pure function of the seed and s") {
  const Tensor<std::uint8_t> bytes = byte_images(10);
  std::vector<std::int64_t> labels(10, 1);
  BatchOptions o;
  o.batch_size = 3;
  o.seed = 4;
  BatchSampler<double> walked(bytes, o, &labels);
  Tensor<double> x, y;
  std::vector<std::int64_t> lx, ly;
  for (std::int64_t s = 0; s <= 9; ++s) walked.batch(s, x, lx);  // through three epochs
  BatchSampler<double> fresh(bytes, o, &labels);
  fresh.batch(9, y, ly);  // straight to step 9
  REQUIRE(x.shape() == y.shape());
  REQUIRE(std::memcmp(x.data(), y.data(), sizeof(double) * std::size_t(x.numel())) == 0);
  REQUIRE(lx == ly);
  o.seed = 5;
  BatchSampler<double> other(bytes, o, &labels);
  other.batch(9, y, ly);
  REQUIRE(std::memcmp(x.data(), y.data(), sizeof(double) * std::size_t(std::min(x.numel(), y.numel()))) != 0);
}

TEST_CASE("BatchSampler checks labels and shapes") {
  const Tensor<std::uint8_t> bytes = byte_images(6);
  BatchOptions o;
  o.batch_size = 2;
  std::vector<std::int64_t> five(5, 0);
  REQUIRE_THROWS_WITH(BatchSampler<float>(bytes, o, &five), Catch::Contains("5 labels for 6 images"));
  BatchSampler<float> unlabelled(bytes, o);
  Tensor<float> batch;
  std::vector<std::int64_t> labels;
  REQUIRE_THROWS_WITH(unlabelled.batch(0, batch, labels), Catch::Contains("given none"));
  const Tensor<std::uint8_t> empty(Shape{0, 1, 2, 2});
  REQUIRE_THROWS_WITH(BatchSampler<float>(empty, o), Catch::Contains("empty"));
  // A temporary would dangle: BatchSampler<float>(Tensor<std::uint8_t>(...), o) does not compile (deleted).
  STATIC_REQUIRE_FALSE(std::is_constructible<BatchSampler<float>, Tensor<std::uint8_t>&&, const BatchOptions&>::value);
  STATIC_REQUIRE_FALSE(std::is_constructible<BatchSampler<float>, Tensor<float>&&, const BatchOptions&>::value);
  STATIC_REQUIRE(std::is_constructible<BatchSampler<float>, const Tensor<std::uint8_t>&, const BatchOptions&>::value);
}
