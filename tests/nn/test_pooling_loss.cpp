// The layers the classifier and Inception add: MaxPool2d, AvgPool2d (both count_include_pad rules),
// GlobalAvgPool2d, ReLU and the cross-entropy loss; and Inception's forward-only kernels: the bilinear resize and the
// rectangular-kernel convolution.
//  - golden: against PyTorch (tests/golden/pool_loss.safetensors from make_pool_fixtures.py: float64 results on
//    float32 inputs, stored as float32), forward and backward, in float and double, fast and reference kernels;
//  - gradients: double finite differences (support/gradcheck.hpp, five-point stencil, step 1e-3), every element,
//    pre-filled gradient buffers, required error <= 1e-6 as in test_gradients.cpp.
// Max pooling and ReLU are piecewise linear: a finite difference across a kink or a tie is meaningless, so their
// inputs are spaced further apart than the stencil's reach (2 * 1e-3).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/kernels/conv2d_rect.hpp"
#include "diffusion/kernels/dispatch.hpp"
#include "diffusion/kernels/resize.hpp"
#include "diffusion/nn/cross_entropy.hpp"
#include "diffusion/nn/pooling.hpp"
#include "diffusion/nn/relu.hpp"
#include "support/compare.hpp"
#include "support/gradcheck.hpp"
#include "support/threads.hpp"

using namespace diffusion;
using diffusion::testing::GradCheck;

namespace {

const io::SafetensorsReader& pooling_fixtures() {
  static const io::SafetensorsReader reader(std::string(DIFFUSION_GOLDEN_DIR) + "/pool_loss.safetensors");
  return reader;
}

template <class T>
void require_close(const Tensor<T>& got, const Tensor<float>& ref, double rel, const std::string& what) {
  REQUIRE(got.shape() == ref.shape());
  const auto cmp = diffusion::testing::compare(got, ref);
  INFO(cmp.describe(what));
  REQUIRE(std::isfinite(cmp.max_abs_error));
  REQUIRE(cmp.max_abs_error <= rel * cmp.max_abs_reference + 1e-7);
}

// Runs a layer's forward and backward on the fixture case and compares both.
template <class T, class Layer>
void check_golden(const std::string& c, const Layer& layer) {
  const Tensor<T> x = pooling_fixtures().read<T>(c + ".x");
  const Tensor<T> dy = pooling_fixtures().read<T>(c + ".dy");
  Tensor<T> y;
  layer.forward(x, y);
  // float: the sums of up to 25 terms round at ~1e-7; double: only the fixture's float32 rounding (6e-8) remains.
  const double rel = std::is_same_v<T, float> ? 1e-6 : 2e-7;
  require_close(y, pooling_fixtures().read<float>(c + ".y"), rel, c + " forward");
  Tensor<T> dx(x.shape());
  dx.fill(T(0.25));  // backward accumulates: start from a non-zero buffer and subtract it
  layer.backward(x, dy, &dx);
  for (T& v : dx) v -= T(0.25);
  require_close(dx, pooling_fixtures().read<float>(c + ".dx"), rel * 4, c + " backward");
}

template <class T>
void golden_cases() {
  for (bool reference : {false, true}) {
    kernels::ReferenceKernelsScope scope(reference);
    INFO((reference ? "reference" : "fast") << " kernels");
    check_golden<T>("maxpool_k2", nn::MaxPool2d<T>(2));
    check_golden<T>("maxpool_k3s2", nn::MaxPool2d<T>(3, 2));
    check_golden<T>("maxpool_k3s1p1", nn::MaxPool2d<T>(3, 1, 1));
    check_golden<T>("maxpool_ties", nn::MaxPool2d<T>(3, 2, 1));
    check_golden<T>("avgpool_k3s1p1_exclude_pad", nn::AvgPool2d<T>(3, 1, 1, false));
    check_golden<T>("avgpool_k3s1p1_include_pad", nn::AvgPool2d<T>(3, 1, 1, true));
    check_golden<T>("avgpool_k5s3", nn::AvgPool2d<T>(5, 3));
    check_golden<T>("avgpool_k2", nn::AvgPool2d<T>(2));
    check_golden<T>("global_avgpool", nn::GlobalAvgPool2d<T>());
    check_golden<T>("relu", nn::ReLU<T>());
  }
}

// x with distinct values spaced >= 0.01 apart (a shuffled grid), so no max-pool window ties and no value sits
// within the stencil's reach of another or of 0.
Tensor<double> spaced_input(const Shape& shape, std::uint64_t seed) {
  Tensor<double> x(shape);
  std::vector<Index> order(static_cast<std::size_t>(x.numel()));
  std::iota(order.begin(), order.end(), Index{0});
  Rng rng(seed);
  for (Index i = x.numel() - 1; i > 0; --i) std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(rng.uniform_int(i + 1))]);
  for (Index i = 0; i < x.numel(); ++i) x[i] = 0.01 * (double(order[static_cast<std::size_t>(i)]) - double(x.numel()) / 2.0) + 0.005;
  return x;
}

template <class Layer>
void gradcheck_layer(const Layer& layer, Tensor<double> x) {
  GradCheck check;
  check.inputs = {&x};
  check.floor = 1e-3;
  check.forward = [&](Tensor<double>& y) { layer.forward(x, y); };
  check.backward = [&](const Tensor<double>& dy, std::vector<Tensor<double>*>& dx) { layer.backward(x, dy, dx[0]); };
  const auto r = check.run();
  INFO("worst: " << r.worst << " (" << r.checked << " elements)");
  REQUIRE(r.checked == static_cast<std::size_t>(x.numel()));
  REQUIRE(r.max_error <= 1e-6);
}

}  // namespace

TEST_CASE("pooling layers and ReLU match PyTorch in float") { golden_cases<float>(); }
TEST_CASE("pooling layers and ReLU match PyTorch in double") { golden_cases<double>(); }

TEST_CASE("cross-entropy matches PyTorch forward and backward") {
  const Tensor<double> x = pooling_fixtures().read<double>("cross_entropy.x");
  const Tensor<std::int64_t> l = pooling_fixtures().read<std::int64_t>("cross_entropy.labels");
  const std::vector<std::int64_t> labels(l.begin(), l.end());
  nn::CrossEntropyLoss<double> loss;
  const double value = loss.forward(x, labels);
  const double want = pooling_fixtures().read<double>("cross_entropy.y")[0];
  INFO("loss " << value << " vs " << want);
  REQUIRE(std::fabs(value - want) <= 1e-7 * std::fabs(want));
  Tensor<double> dx(x.shape());
  dx.fill(1.0);
  loss.backward(x, labels, dx, pooling_fixtures().read<double>("cross_entropy.dy")[0]);
  for (double& v : dx) v -= 1.0;
  require_close(dx, pooling_fixtures().read<float>("cross_entropy.dx"), 2e-7, "cross_entropy backward");
}

TEST_CASE("pooling layers and ReLU pass the finite-difference gradient check") {
  gradcheck_layer(nn::MaxPool2d<double>(2), spaced_input(Shape{2, 3, 6, 7}, 1));
  gradcheck_layer(nn::MaxPool2d<double>(3, 2), spaced_input(Shape{2, 3, 7, 8}, 2));
  gradcheck_layer(nn::MaxPool2d<double>(3, 1, 1), spaced_input(Shape{2, 2, 5, 6}, 3));
  gradcheck_layer(nn::AvgPool2d<double>(3, 1, 1, false), spaced_input(Shape{2, 2, 5, 6}, 4));
  gradcheck_layer(nn::AvgPool2d<double>(3, 1, 1, true), spaced_input(Shape{2, 2, 5, 6}, 5));
  gradcheck_layer(nn::AvgPool2d<double>(5, 3), spaced_input(Shape{1, 2, 11, 9}, 6));
  gradcheck_layer(nn::GlobalAvgPool2d<double>(), spaced_input(Shape{2, 3, 4, 5}, 7));
  gradcheck_layer(nn::ReLU<double>(), spaced_input(Shape{2, 3, 4, 5}, 8));
}

TEST_CASE("cross-entropy passes the finite-difference gradient check") {
  Tensor<double> logits(Shape{5, 7});
  diffusion::testing::randomize(logits, 21, 3.0);
  const std::vector<std::int64_t> labels = {0, 6, 3, 3, 1};
  nn::CrossEntropyLoss<double> loss;
  GradCheck check;
  check.inputs = {&logits};
  check.floor = 1e-3;
  check.forward = [&](Tensor<double>& y) {
    y.resize(Shape{1});
    y[0] = loss.forward(logits, labels);
  };
  check.backward = [&](const Tensor<double>& dy, std::vector<Tensor<double>*>& dx) {
    loss.backward(logits, labels, *dx[0], dy[0]);
  };
  const auto r = check.run();
  INFO("worst: " << r.worst << " (" << r.checked << " elements)");
  REQUIRE(r.checked == 35);
  REQUIRE(r.max_error <= 1e-6);
}

TEST_CASE("pooling results do not depend on the thread count") {
  const Tensor<double> x = spaced_input(Shape{3, 4, 9, 9}, 11);
  Tensor<double> dy(Shape{3, 4, 9, 9});
  diffusion::testing::randomize(dy, 12);
  auto run = [&](int threads) {
    diffusion::testing::ScopedThreads scoped(threads);
    nn::AvgPool2d<double> avg(3, 1, 1, false);
    nn::MaxPool2d<double> mx(3, 1, 1);
    Tensor<double> y1, y2, dx(x.shape());
    dx.zero();
    avg.forward(x, y1);
    mx.forward(x, y2);
    avg.backward(x, dy, &dx);
    mx.backward(x, dy, &dx);
    std::vector<double> all(y1.begin(), y1.end());
    all.insert(all.end(), y2.begin(), y2.end());
    all.insert(all.end(), dx.begin(), dx.end());
    return all;
  };
  REQUIRE(run(1) == run(3));
}

TEST_CASE("pooling and cross-entropy refuse bad arguments") {
  REQUIRE_THROWS_WITH(nn::MaxPool2d<float>(3, 1, 2), Catch::Contains("padding <= kernel_size / 2"));
  REQUIRE_THROWS_WITH(nn::AvgPool2d<float>(0), Catch::Contains("invalid kernel_size 0"));
  Tensor<float> small(Shape{1, 1, 2, 2}), y;
  REQUIRE_THROWS_WITH(nn::MaxPool2d<float>(3).forward(small, y), Catch::Contains("smaller than the window"));
  Tensor<float> logits(Shape{2, 3});
  nn::CrossEntropyLoss<float> loss;
  REQUIRE_THROWS_WITH(loss.forward(logits, {0, 3}), Catch::Contains("label 3 of sample 1 is outside [0, 3)"));
  REQUIRE_THROWS_WITH(loss.forward(logits, {0}), Catch::Contains("1 labels for logits (2, 3)"));
}

TEST_CASE("bilinear resize matches F.interpolate with align_corners False") {
  const Tensor<float> x = pooling_fixtures().read<float>("resize_bilinear.x");  // (2, 3, 5, 7)
  const Tensor<float> want = pooling_fixtures().read<float>("resize_bilinear.y");  // (2, 3, 11, 4)
  Tensor<float> y(Shape{2, 3, 11, 4});
  kernels::bilinear_resize(6, 5, 7, x.data(), 11, 4, y.data());
  require_close(y, want, 1e-6, "resize (5, 7) -> (11, 4)");
}

TEST_CASE("rectangular-kernel convolution matches PyTorch's Conv2d") {
  // Forward only (Inception's 1x7 / 7x1 / strided kernels); float sums of up to 28 products: 1e-5 of max |y|.
  for (bool reference : {false, true}) {
    kernels::ReferenceKernelsScope scope(reference);
    for (const char* name : {"conv_rect_1x7", "conv_rect_7x1", "conv_rect_strided"}) {
      const std::string c = name;
      const auto meta = nlohmann::json::parse(pooling_fixtures().metadata().at(c));
      const auto& k = meta.at("kwargs");
      const Index kh = k.at("kernel_size")[0], kw = k.at("kernel_size")[1];
      const Index sh = k.contains("stride") ? k.at("stride")[0].get<Index>() : 1;
      const Index sw = k.contains("stride") ? k.at("stride")[1].get<Index>() : 1;
      const Index ph = k.at("padding")[0], pw = k.at("padding")[1];
      const Tensor<float> x = pooling_fixtures().read<float>(c + ".x"), w = pooling_fixtures().read<float>(c + ".weight"),
                          b = pooling_fixtures().read<float>(c + ".bias"), want = pooling_fixtures().read<float>(c + ".y");
      const auto g = kernels::Conv2dRectGeometry::make(x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), kh, kw, sh,
                                                       sw, ph, pw);
      Tensor<float> y(Shape{g.batch, g.out_channels, g.out_height, g.out_width});
      std::vector<float> workspace;
      kernels::conv2d_rect_forward(g, x.data(), w.data(), b.data(), y.data(), workspace);
      INFO((reference ? "reference" : "fast") << " kernels");
      require_close(y, want, 1e-5, c);
    }
  }
}
