// Whole-network finite-difference check of the U-Net in double (tiny configurations, both block types, every
// parameter and the input; and the options the reference leaves at their defaults: no time embedding, init_dim,
// out_dim, attention none / full per level and linear / none in the middle). Same measure and step as
// tests/nn/test_gradients.cpp.
#include <catch2/catch.hpp>

#include "diffusion/model/unet.hpp"
#include "support/gradcheck.hpp"

using namespace diffusion;

namespace {

void check_unet(const UnetConfig& config, const Shape& input) {
  Unet<double> net(config, 5);
  // Random GroupNorm parameters too (they start at 1 and 0), so that every path carries signal.
  Rng rng(6);
  auto& store = net.params();
  for (const auto& e : store.entries()) {
    rng.normal(store.values() + e.offset, e.shape.numel());
    for (Index i = 0; i < e.shape.numel(); ++i) store.values()[e.offset + static_cast<std::size_t>(i)] *= 0.4;
  }
  Tensor<double> x(input);
  testing::randomize(x, 7);
  const std::vector<std::int64_t> t = {3, 17};
  testing::GradCheck check;
  check.params = &store;
  check.inputs = {&x};
  check.floor = 1e-3;
  // Under the sanitizers: 6 elements of every tensor (every layer's forward and backward still run 4 times per
  // element, through the same code), not all of them.
  if (testing::kSanitizedBuild) check.max_per_tensor = 6;
  check.forward = [&](Tensor<double>& y) { net.forward(x, t, y); };
  check.backward = [&](const Tensor<double>& dy, std::vector<Tensor<double>*>& dx) { net.backward(dy, dx[0]); };
  const auto r = check.run();
  INFO("worst: " << r.worst << " (" << r.checked << " elements)");
  REQUIRE(r.checked > (testing::kSanitizedBuild ? store.entries().size() : 1000));
  REQUIRE(r.max_error <= 1e-6);
}

}  // namespace

TEST_CASE("gradient check: whole U-Net, ConvNeXt blocks, linear + full attention") {
  UnetConfig c;
  c.dim = 4;
  c.channels = 1;
  c.dim_mults = {1, 2};
  c.attention_heads = 2;
  c.attention_dim_head = 3;
  check_unet(c, Shape{2, 1, 4, 4});
}

TEST_CASE("gradient check: whole U-Net, ResNet blocks") {
  UnetConfig c;
  c.dim = 4;
  c.channels = 2;
  c.dim_mults = {1, 2};
  c.use_convnext = false;
  c.resnet_block_groups = 2;
  c.attention_heads = 1;
  c.attention_dim_head = 4;
  check_unet(c, Shape{2, 2, 4, 4});
}

TEST_CASE("gradient check: U-Net without time embedding with init_dim and out_dim and attention none then full") {
  UnetConfig c;
  c.dim = 4;
  c.channels = 1;
  c.init_dim = 3;
  c.out_dim = 3;
  c.dim_mults = {1, 2};
  c.with_time_emb = false;
  c.convnext_mult = 1;
  c.level_attention = {AttentionKind::None, AttentionKind::Full};
  c.mid_attention = AttentionKind::Linear;
  c.attention_heads = 1;
  c.attention_dim_head = 2;
  check_unet(c, Shape{2, 1, 4, 4});
}

TEST_CASE("gradient check: U-Net with ResNet blocks and attention full then none and none in the middle") {
  UnetConfig c;
  c.dim = 4;
  c.channels = 1;
  c.init_dim = 5;
  c.out_dim = 2;
  c.dim_mults = {1, 2};
  c.use_convnext = false;
  c.resnet_block_groups = 2;
  c.level_attention = {AttentionKind::Full, AttentionKind::None};
  c.mid_attention = AttentionKind::None;
  c.attention_heads = 1;
  c.attention_dim_head = 2;
  check_unet(c, Shape{2, 1, 4, 4});
}
