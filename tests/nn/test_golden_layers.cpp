// Every layer, in float, against the PyTorch reference (tests/golden/layers.safetensors, made by
// tests/golden/make_layer_fixtures.py; reference values evaluated in float64 and stored as float32).
// Forward: max |y - y_ref| <= 1e-5 * max |y_ref| + 1e-6 (the bound). The backward pass is checked against
// the same fixtures with a bound scaled to each gradient's size: 1e-5 * max |g_ref| + 1e-6 for dx, and
// 2e-5 * max|g_ref| + 1e-5 * G for parameter gradients, G the largest reference gradient of any parameter of the
// case: they sum up to N*H*W products in float, so their rounding error scales with the size of the terms, not of
// the result. That matters for the bias of a convolution followed by a normalisation, whose exact gradient is 0
// (8e-15 in the fixture) while float sums of its O(G) terms leave ~1e-6.
#include <catch2/catch.hpp>

#include <functional>
#include <memory>

#include "diffusion/io/safetensors.hpp"
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
#include "diffusion/nn/time_embedding.hpp"
#include "support/compare.hpp"

using namespace diffusion;
using testing::compare;

namespace {

const io::SafetensorsReader& fixtures() {
  static const io::SafetensorsReader reader(std::string(DIFFUSION_GOLDEN_DIR) + "/layers.safetensors");
  return reader;
}

// Loads the case's parameters into the store (names relative to the module) and checks none is missing.
void load_params(const std::string& c, ParameterStore<float>& store) {
  for (const auto& e : store.entries()) {
    const std::string key = c + ".param." + e.name;
    INFO("parameter " << key);
    REQUIRE(fixtures().contains(key));
    fixtures().read_into(key, e.shape, store.values() + e.offset);
  }
  std::size_t stored = 0;
  for (const auto& name : fixtures().names())
    if (name.rfind(c + ".param.", 0) == 0) ++stored;
  REQUIRE(stored == store.entries().size());
}

void require_close(const Tensor<float>& got, const Tensor<float>& ref, double rel, double abs, const std::string& what) {
  REQUIRE(got.shape() == ref.shape());
  const auto cmp = compare(got, ref);
  INFO(cmp.describe(what));
  REQUIRE(cmp.max_abs_error <= rel * cmp.max_abs_reference + abs);
}

void check_param_grads(const std::string& c, ParameterStore<float>& store) {
  double largest = 0.0;  // G: the largest reference gradient over the case's parameters
  for (const auto& e : store.entries())
    for (float v : fixtures().read<float>(c + ".grad." + e.name)) largest = std::max(largest, std::abs(double(v)));
  for (const auto& e : store.entries()) {
    Tensor<float> got(e.shape);
    std::copy(store.grads() + e.offset, store.grads() + e.offset + e.shape.numel(), got.data());
    require_close(got, fixtures().read<float>(c + ".grad." + e.name), 2e-5, 1e-5 * largest, c + ".grad." + e.name);
  }
}

// A layer with forward(x, y) / backward(x, dy, dx).
template <class Layer>
void check_case(const std::string& c, Layer& layer, ParameterStore<float>* store) {
  if (store) load_params(c, *store);
  const Tensor<float> x = fixtures().read<float>(c + ".x");
  Tensor<float> y;
  layer.forward(x, y);
  require_close(y, fixtures().read<float>(c + ".y"), 1e-5, 1e-6, c + ".y");
  const Tensor<float> dy = fixtures().read<float>(c + ".dy");
  Tensor<float> dx(x.shape());
  if (store) store->zero_grad();
  layer.backward(x, dy, &dx);
  require_close(dx, fixtures().read<float>(c + ".dx"), 1e-5, 1e-6, c + ".dx");
  if (store) check_param_grads(c, *store);
}

// A block with a time embedding input.
template <class Block>
void check_block_case(const std::string& c, Block& block, ParameterStore<float>& store, bool with_time) {
  load_params(c, store);
  const Tensor<float> x = fixtures().read<float>(c + ".x");
  Tensor<float> temb;
  if (with_time) temb = fixtures().read<float>(c + ".temb");
  Tensor<float> y;
  block.forward(x, with_time ? &temb : nullptr, y);
  require_close(y, fixtures().read<float>(c + ".y"), 1e-5, 1e-6, c + ".y");
  const Tensor<float> dy = fixtures().read<float>(c + ".dy");
  Tensor<float> dx(x.shape()), dtemb(temb.shape());
  store.zero_grad();
  block.backward(x, with_time ? &temb : nullptr, dy, &dx, with_time ? &dtemb : nullptr);
  require_close(dx, fixtures().read<float>(c + ".dx"), 1e-5, 1e-6, c + ".dx");
  if (with_time) require_close(dtemb, fixtures().read<float>(c + ".dtemb"), 1e-5, 1e-6, c + ".dtemb");
  check_param_grads(c, store);
}

}  // namespace

TEST_CASE("golden: Conv2d cases match PyTorch") {
  struct Case {
    const char* name;
    Index in, out, k, stride, pad, groups;
    bool bias;
  };
  const Case cases[] = {{"conv3x3", 5, 8, 3, 1, 1, 1, true},        {"conv7x7_pad3", 3, 6, 7, 1, 3, 1, true},
                        {"conv_down", 6, 6, 4, 2, 1, 1, true},      {"conv_depthwise", 8, 8, 7, 1, 3, 8, true},
                        {"conv_grouped", 8, 12, 3, 1, 1, 4, true},  {"conv1x1_nobias", 6, 12, 1, 1, 0, 1, false}};
  for (const Case& k : cases) {
    SECTION(k.name) {
      ParameterStore<float> store;
      nn::Conv2d<float> conv(store, "", k.in, k.out, k.k, k.stride, k.pad, k.groups, k.bias);
      check_case(k.name, conv, &store);
    }
  }
}

TEST_CASE("golden: ConvTranspose2d cases match PyTorch") {
  SECTION("4x4 stride 2 (Upsample)") {
    ParameterStore<float> store;
    nn::ConvTranspose2d<float> up(store, "", 6, 6, 4, 2, 1);
    check_case("conv_transpose", up, &store);
  }
  SECTION("3x3 stride 2") {
    ParameterStore<float> store;
    nn::ConvTranspose2d<float> up(store, "", 4, 5, 3, 2, 1);
    check_case("conv_transpose_k3", up, &store);
  }
}

TEST_CASE("golden: Linear, GroupNorm, SiLU, GELU match PyTorch") {
  SECTION("linear") {
    ParameterStore<float> store;
    nn::Linear<float> layer(store, "", 10, 7);
    check_case("linear", layer, &store);
  }
  SECTION("group_norm_1") {
    ParameterStore<float> store;
    nn::GroupNorm<float> layer(store, "", 1, 6);
    check_case("group_norm_1", layer, &store);
  }
  SECTION("group_norm_3") {
    ParameterStore<float> store;
    nn::GroupNorm<float> layer(store, "", 3, 6);
    check_case("group_norm_3", layer, &store);
  }
  SECTION("silu") {
    nn::SiLU<float> layer;
    check_case("silu", layer, nullptr);
  }
  SECTION("gelu") {
    nn::GELU<float> layer;
    check_case("gelu", layer, nullptr);
  }
}

TEST_CASE("golden: Attention and LinearAttention match PyTorch") {
  SECTION("attention") {
    ParameterStore<float> store;
    nn::Standalone<nn::Attention<float>> layer(store, "", 8);
    check_case("attention", layer, &store);
  }
  SECTION("attention_small") {
    ParameterStore<float> store;
    nn::Standalone<nn::Attention<float>> layer(store, "", 6, 2, 8);
    check_case("attention_small", layer, &store);
  }
  SECTION("linear_attention") {
    ParameterStore<float> store;
    nn::Standalone<nn::LinearAttention<float>> layer(store, "", 8);
    check_case("linear_attention", layer, &store);
  }
  SECTION("linear_attention_small") {
    ParameterStore<float> store;
    nn::Standalone<nn::LinearAttention<float>> layer(store, "", 6, 2, 8);
    check_case("linear_attention_small", layer, &store);
  }
  SECTION("prenorm_linear_attention") {
    ParameterStore<float> store;
    nn::Standalone<nn::PreNormResidual<float, nn::LinearAttention<float>>> layer(store, "", 8);
    check_case("prenorm_linear_attention", layer, &store);
  }
}

TEST_CASE("golden: sinusoidal time embedding matches PyTorch") {
  const Tensor<double> t = fixtures().read<double>("time_embedding.x");
  std::vector<std::int64_t> steps;
  for (Index i = 0; i < t.numel(); ++i) steps.push_back(static_cast<std::int64_t>(t[i]));
  nn::SinusoidalTimeEmbedding<float> emb(28);
  Tensor<float> y;
  emb.forward(steps, y);
  require_close(y, fixtures().read<float>("time_embedding.y"), 1e-5, 1e-6, "time_embedding.y");
}

TEST_CASE("golden: ResnetBlock and ConvNextBlock match PyTorch") {
  SECTION("resnet_block") {
    ParameterStore<float> store;
    nn::Standalone<nn::ResnetBlock<float>> block(store, "", 8, 16, 12, 4);
    check_block_case("resnet_block", block, store, true);
  }
  SECTION("resnet_block_same") {
    ParameterStore<float> store;
    nn::Standalone<nn::ResnetBlock<float>> block(store, "", 8, 8, 0, 8);
    check_block_case("resnet_block_same", block, store, false);
  }
  SECTION("convnext_block") {
    ParameterStore<float> store;
    nn::Standalone<nn::ConvNextBlock<float>> block(store, "", 8, 16, 12, 2);
    check_block_case("convnext_block", block, store, true);
  }
  SECTION("convnext_block_same") {
    ParameterStore<float> store;
    nn::Standalone<nn::ConvNextBlock<float>> block(store, "", 8, 8, 0, 2);
    check_block_case("convnext_block_same", block, store, false);
  }
}
