// Finite-difference gradient checks, in double, for every layer: input gradient and every parameter gradient,
// every element, one fixed step (1e-3 with the five-point stencil of support/gradcheck.hpp, never retried), on shapes
// with odd sizes (7x7), batch > 1 and groups > 1.
// Error measure: |analytic - numeric| / max(|analytic|, |numeric|, 1e-3); the required maximum is 1e-6.
// Why these numbers: with |f| ~ 100 and double rounding 1e-16, the stencil's absolute error is about
// 1e-16 |f| / h + h^4 |f^(5)| / 30 ~ 1e-11, so gradients below 1e-3 are compared absolutely (1e-11 / 1e-3 << 1e-6)
// and larger ones relatively.
#include <catch2/catch.hpp>

#include "diffusion/nn/activations.hpp"
#include "diffusion/nn/attention.hpp"
#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/conv_transpose2d.hpp"
#include "diffusion/nn/convnext_block.hpp"
#include "diffusion/nn/group_norm.hpp"
#include "diffusion/nn/linear.hpp"
#include "diffusion/nn/linear_attention.hpp"
#include "diffusion/nn/prenorm_residual.hpp"
#include "diffusion/nn/resnet_block.hpp"
#include "diffusion/nn/tensor_ops.hpp"
#include "support/gradcheck.hpp"

using namespace diffusion;
using diffusion::testing::GradCheck;
using diffusion::testing::randomize;

namespace {

constexpr double kMaxError = 1e-6;

void randomize_params(ParameterStore<double>& store, std::uint64_t seed, double scale = 0.5) {
  Rng rng(seed);
  for (const auto& e : store.entries()) {
    rng.normal(store.values() + e.offset, e.shape.numel());
    for (Index i = 0; i < e.shape.numel(); ++i) store.values()[e.offset + static_cast<std::size_t>(i)] *= scale;
  }
}

// Checks a layer with forward(x, y) / backward(x, dy, dx).
template <class Layer>
void check_layer(Layer& layer, ParameterStore<double>* store, const Shape& input, double input_scale = 1.0) {
  Tensor<double> x(input);
  randomize(x, 77, input_scale);
  GradCheck check;
  check.params = store;
  check.inputs = {&x};
  check.floor = 1e-3;
  check.forward = [&](Tensor<double>& y) { layer.forward(x, y); };
  check.backward = [&](const Tensor<double>& dy, std::vector<Tensor<double>*>& dx) {
    layer.backward(x, dy, dx[0]);
  };
  const auto r = check.run();
  INFO("worst: " << r.worst << " (" << r.checked << " elements)");
  CHECK(r.checked > 0);
  REQUIRE(r.max_error <= kMaxError);
}

// Checks a block with forward(x, t_emb, y) / backward(x, t_emb, dy, dx, dt_emb).
template <class Block>
void check_block(Block& block, ParameterStore<double>& store, const Shape& input, Index time_dim) {
  Tensor<double> x(input), t(Shape{input[0], time_dim > 0 ? time_dim : 1});
  randomize(x, 78);
  randomize(t, 79);
  GradCheck check;
  check.params = &store;
  check.inputs = {&x};
  if (time_dim > 0) check.inputs.push_back(&t);
  check.floor = 1e-3;
  const Tensor<double>* temb = time_dim > 0 ? &t : nullptr;
  check.forward = [&](Tensor<double>& y) { block.forward(x, temb, y); };
  check.backward = [&](const Tensor<double>& dy, std::vector<Tensor<double>*>& dx) {
    block.backward(x, temb, dy, dx[0], time_dim > 0 ? dx[1] : nullptr);
  };
  const auto r = check.run();
  INFO("worst: " << r.worst << " (" << r.checked << " elements)");
  REQUIRE(r.max_error <= kMaxError);
}

}  // namespace

TEST_CASE("gradient check: Conv2d 3x3, padding 1, odd map") {
  ParameterStore<double> store(1);
  nn::Conv2d<double> conv(store, "conv", 4, 6, 3, 1, 1);
  randomize_params(store, 2);
  check_layer(conv, &store, Shape{2, 4, 7, 7});
}

TEST_CASE("gradient check: Conv2d 4x4 stride 2 (Downsample) with groups 2") {
  ParameterStore<double> store(1);
  nn::Conv2d<double> conv(store, "down", 4, 6, 4, 2, 1, 2);
  randomize_params(store, 3);
  check_layer(conv, &store, Shape{3, 4, 7, 7});
}

TEST_CASE("gradient check: Conv2d depthwise 7x7 padding 3 (ConvNeXt)") {
  ParameterStore<double> store(1);
  nn::Conv2d<double> conv(store, "ds", 3, 3, 7, 1, 3, 3);
  randomize_params(store, 4);
  check_layer(conv, &store, Shape{2, 3, 7, 7});
}

TEST_CASE("gradient check: Conv2d 7x7 padding 3 (init conv), 1x1 without bias, grouped 3x3") {
  ParameterStore<double> store(1);
  nn::Conv2d<double> init(store, "init", 2, 3, 7, 1, 3);
  nn::Conv2d<double> point(store, "point", 3, 5, 1, 1, 0, 1, false);
  nn::Conv2d<double> grouped(store, "grouped", 4, 6, 3, 1, 1, 2);
  randomize_params(store, 5);
  SECTION("7x7") { check_layer(init, &store, Shape{2, 2, 5, 6}); }
  SECTION("1x1") { check_layer(point, &store, Shape{2, 3, 5, 3}); }
  SECTION("grouped") { check_layer(grouped, &store, Shape{2, 4, 5, 5}); }
}

TEST_CASE("gradient check: ConvTranspose2d 4x4 stride 2 (Upsample) and 3x3 stride 2 grouped") {
  ParameterStore<double> store(1);
  nn::ConvTranspose2d<double> up(store, "up", 3, 4, 4, 2, 1);
  nn::ConvTranspose2d<double> odd(store, "odd", 4, 6, 3, 2, 1, 2);
  randomize_params(store, 6);
  SECTION("4x4") { check_layer(up, &store, Shape{2, 3, 7, 7}); }
  SECTION("3x3 grouped") { check_layer(odd, &store, Shape{2, 4, 5, 5}); }
}

TEST_CASE("gradient check: Linear") {
  ParameterStore<double> store(1);
  nn::Linear<double> linear(store, "lin", 7, 5);
  randomize_params(store, 7);
  check_layer(linear, &store, Shape{3, 7});
}

TEST_CASE("gradient check: GroupNorm with 1 and 3 groups") {
  ParameterStore<double> store(1);
  nn::GroupNorm<double> one(store, "g1", 1, 6);
  nn::GroupNorm<double> three(store, "g3", 3, 6);
  randomize_params(store, 8, 1.0);
  SECTION("1 group") { check_layer(one, &store, Shape{2, 6, 7, 7}, 2.0); }
  SECTION("3 groups") { check_layer(three, &store, Shape{2, 6, 7, 7}, 2.0); }
}

TEST_CASE("gradient check: SiLU and GELU") {
  nn::SiLU<double> silu;
  nn::GELU<double> gelu;
  SECTION("SiLU") { check_layer(silu, nullptr, Shape{2, 3, 7, 7}, 3.0); }
  SECTION("GELU") { check_layer(gelu, nullptr, Shape{2, 3, 7, 7}, 3.0); }
}

TEST_CASE("gradient check: Attention (full softmax attention)") {
  ParameterStore<double> store(1);
  nn::Standalone<nn::Attention<double>> attn(store, "attn", 4, 2, 3);
  randomize_params(store, 9);
  check_layer(attn, &store, Shape{2, 4, 5, 3});
}

TEST_CASE("gradient check: LinearAttention") {
  ParameterStore<double> store(1);
  nn::Standalone<nn::LinearAttention<double>> attn(store, "lattn", 4, 2, 3);
  randomize_params(store, 10);
  check_layer(attn, &store, Shape{2, 4, 5, 3});
}

TEST_CASE("gradient check: Residual(PreNorm(LinearAttention)) with the default 4 heads of 32") {
  ParameterStore<double> store(1);
  nn::Standalone<nn::PreNormResidual<double, nn::LinearAttention<double>>> block(store, "res", 3);
  randomize_params(store, 11, 0.3);
  check_layer(block, &store, Shape{2, 3, 3, 3});
}

TEST_CASE("gradient check: Residual(PreNorm(Attention))") {
  ParameterStore<double> store(1);
  nn::Standalone<nn::PreNormResidual<double, nn::Attention<double>>> block(store, "res", 4, 2, 4);
  randomize_params(store, 12, 0.3);
  check_layer(block, &store, Shape{2, 4, 3, 3});
}

TEST_CASE("gradient check: ResnetBlock with and without time embedding") {
  SECTION("with time embedding, channels change") {
    ParameterStore<double> store(1);
    nn::Standalone<nn::ResnetBlock<double>> block(store, "rb", 3, 4, 5, 2);
    randomize_params(store, 13);
    check_block(block, store, Shape{2, 3, 5, 5}, 5);
  }
  SECTION("no time embedding, same channels") {
    ParameterStore<double> store(1);
    nn::Standalone<nn::ResnetBlock<double>> block(store, "rb", 4, 4, 0, 2);
    randomize_params(store, 14);
    check_block(block, store, Shape{2, 4, 5, 5}, 0);
  }
}

TEST_CASE("gradient check: ConvNextBlock with and without time embedding") {
  SECTION("with time embedding, channels change") {
    ParameterStore<double> store(1);
    nn::Standalone<nn::ConvNextBlock<double>> block(store, "cb", 3, 4, 5, 2);
    randomize_params(store, 15);
    check_block(block, store, Shape{2, 3, 7, 7}, 5);
  }
  SECTION("no time embedding, no first norm") {
    ParameterStore<double> store(1);
    nn::Standalone<nn::ConvNextBlock<double>> block(store, "cb", 3, 3, 0, 2, false);
    randomize_params(store, 16);
    check_block(block, store, Shape{2, 3, 5, 5}, 0);
  }
}

TEST_CASE("gradient check: channel concatenation") {
  Tensor<double> a(Shape{2, 2, 3, 3}), b(Shape{2, 3, 3, 3});
  randomize(a, 1);
  randomize(b, 2);
  GradCheck check;
  check.inputs = {&a, &b};
  check.floor = 1e-3;
  check.forward = [&](Tensor<double>& y) { nn::concat_channels(a, b, y); };
  check.backward = [&](const Tensor<double>& dy, std::vector<Tensor<double>*>& d) {
    nn::concat_channels_backward(dy, d[0], d[1], 2);
  };
  const auto r = check.run();
  INFO(r.worst);
  REQUIRE(r.max_error <= kMaxError);
}
