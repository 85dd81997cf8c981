#include <catch2/catch.hpp>

#include <cmath>
#include <set>
#include <vector>

#include "diffusion/core/parameters.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"

using namespace diffusion;

TEST_CASE("Tensor has aligned storage, NCHW indexing and reuses memory") {
  Tensor<float> t(Shape{2, 3, 7, 5});
  REQUIRE(t.numel() == 210);
  REQUIRE(reinterpret_cast<std::uintptr_t>(t.data()) % kAlignment == 0);
  for (float v : t) REQUIRE(v == 0.0f);
  t.at(1, 2, 6, 4) = 5.0f;
  REQUIRE(t[209] == 5.0f);
  t.at(0, 1, 2, 3) = 7.0f;
  REQUIRE(t[((0 * 3 + 1) * 7 + 2) * 5 + 3] == 7.0f);
  const float* before = t.data();
  t.resize(Shape{1, 3, 7, 5});
  REQUIRE(t.data() == before);  // shrinking keeps the allocation
  REQUIRE_THROWS_WITH(t.reshape(Shape{4, 4}), Catch::Contains("(1, 3, 7, 5)") && Catch::Contains("(4, 4)"));
}

TEST_CASE("Shape prints like the error messages expect") {
  REQUIRE(Shape{2, 3, 7, 7}.str() == "(2, 3, 7, 7)");
  REQUIRE(Shape{}.numel() == 1);
  REQUIRE_THROWS_AS((Shape{1, 2, 3, 4, 5}), Error);
}

TEST_CASE("Rng matches the Philox4x32-10 known-answer vectors") {
  // Random123 kat_vectors: philox4x32 10 rounds, counter 0 key 0 -> 6627e8d5 e169c58d bc57ac4c 9b00dbd8;
  // counter/key all ones -> 408f276d 41c83b0e a20bc7c6 6d5451fd.
  Rng zero(0, 0);
  const auto a = zero.block(0);
  REQUIRE(a[0] == 0x6627e8d5u);
  REQUIRE(a[1] == 0xe169c58du);
  REQUIRE(a[2] == 0xbc57ac4cu);
  REQUIRE(a[3] == 0x9b00dbd8u);
  Rng ones(~0ull, ~0ull);
  const auto b = ones.block(~0ull);
  REQUIRE(b[0] == 0x408f276du);
  REQUIRE(b[1] == 0x41c83b0eu);
  REQUIRE(b[2] == 0xa20bc7c6u);
  REQUIRE(b[3] == 0x6d5451fdu);
}

TEST_CASE("Rng normal draws have mean 0 and variance 1, and are reproducible") {
  const Index n = 200000;
  std::vector<double> x(n);
  Rng rng(42);
  rng.normal(x.data(), n);
  double mean = 0, m2 = 0;
  for (double v : x) mean += v;
  mean /= n;
  for (double v : x) m2 += (v - mean) * (v - mean);
  const double var = m2 / (n - 1);
  // Standard error of the mean is 1/sqrt(n) = 0.0022; of the variance sqrt(2/n) = 0.0032. Allow 5 sigma.
  REQUIRE(std::abs(mean) < 5 * 0.0023);
  REQUIRE(std::abs(var - 1.0) < 5 * 0.0032);

  std::vector<double> y(n);
  Rng again(42);
  again.normal(y.data(), n);
  REQUIRE(x == y);
  REQUIRE(rng.state().position == again.state().position);

  // Drawing in two pieces gives the same numbers as one draw when the first piece is even-sized.
  std::vector<double> z(n);
  Rng pieces(42);
  pieces.normal(z.data(), 1000);
  pieces.normal(z.data() + 1000, n - 1000);
  REQUIRE(x == z);
}

TEST_CASE("Rng forks are independent streams and uniform_int covers its range") {
  Rng root(7);
  Rng a = root.fork(1), b = root.fork(2);
  REQUIRE(a.state().stream != b.state().stream);
  REQUIRE(a.next_u32() != b.next_u32());
  std::vector<int> counts(10, 0);
  for (int i = 0; i < 100000; ++i) {
    const auto k = root.uniform_int(10);
    REQUIRE(k >= 0);
    REQUIRE(k < 10);
    ++counts[static_cast<std::size_t>(k)];
  }
  // Each bin expects 10000 with sd ~95; allow 6 sd.
  for (int c : counts) REQUIRE(std::abs(c - 10000) < 600);
  REQUIRE_THROWS_AS(root.uniform_int(0), Error);
}

TEST_CASE("ParameterStore keeps names, aligned offsets and initialisation keyed by name") {
  ParameterStore<float> store(3);
  auto w = store.add("conv.weight", Shape{4, 3, 3, 3}, Init::uniform(0.5));
  auto g = store.add("norm.weight", Shape{5}, Init::ones());
  auto z = store.add("norm.bias", Shape{5}, Init::zeros());
  REQUIRE(store.entries().size() == 3);
  for (const auto& e : store.entries()) REQUIRE(e.offset % (kAlignment / sizeof(float)) == 0);
  for (int i = 0; i < 108; ++i) {
    REQUIRE(std::abs(store.value(w)[i]) <= 0.5f);
  }
  for (int i = 0; i < 5; ++i) {
    REQUIRE(store.value(g)[i] == 1.0f);
    REQUIRE(store.value(z)[i] == 0.0f);
  }
  REQUIRE(store.count() == 118);
  REQUIRE_THROWS_WITH(store.add("norm.bias", Shape{5}, Init::zeros()), Catch::Contains("norm.bias"));

  // Same seed and name, other registration order: the same values.
  ParameterStore<float> other(3);
  other.add("norm.weight", Shape{5}, Init::ones());
  auto w2 = other.add("conv.weight", Shape{4, 3, 3, 3}, Init::uniform(0.5));
  for (int i = 0; i < 108; ++i) REQUIRE(other.value(w2)[i] == store.value(w)[i]);
  REQUIRE(store.find("norm.weight") != nullptr);
  REQUIRE(store.find("nope") == nullptr);
}

TEST_CASE("parallel_for visits every index once") {
  std::vector<int> hits(1000, 0);
  parallel_for(0, 1000, kDefaultParallelMinWork, [&](Index i) { hits[static_cast<std::size_t>(i)] += 1; });
  for (int h : hits) REQUIRE(h == 1);
}

TEST_CASE("parallel_zero clears every value of a buffer of several chunks and a partial one, and nothing past it") {
  const int saved = max_threads();
  set_num_threads(2);
  const std::size_t n = 3 * (std::size_t(1) << 16) + 5;  // three whole chunks and 5 values
  std::vector<float> buffer(n + 1, 1.0f);
  parallel_zero(buffer.data(), n);
  std::size_t nonzero = 0;
  for (std::size_t i = 0; i < n; ++i) nonzero += buffer[i] != 0.0f;
  REQUIRE(nonzero == 0);
  REQUIRE(buffer[n] == 1.0f);  // the value after the buffer is left alone
  set_num_threads(saved);
}

TEST_CASE("parallel_for runs loops too small to pay for a thread team on the calling thread") {
  const int saved = max_threads();
  set_num_threads(2);
  std::vector<int> in_region(100, -1);
  parallel_for(0, 100, kDefaultParallelMinWork / 200, [&](Index i) { in_region[static_cast<std::size_t>(i)] = in_parallel_region(); });
  for (int r : in_region) REQUIRE(r == 0);
#ifdef _OPENMP
  parallel_for(0, 100, kDefaultParallelMinWork / 50, [&](Index i) { in_region[static_cast<std::size_t>(i)] = in_parallel_region(); });
  for (int r : in_region) REQUIRE(r == 1);
#endif
  set_num_threads(saved);
}
