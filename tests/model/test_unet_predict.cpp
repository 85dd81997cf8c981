// Unet::predict, the inference pass (the model call of the samplers): the same numbers as forward, bit for bit,
// keeping nothing for backward, in a fraction of forward's memory.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "diffusion/diffusion.hpp"
#include "support/peak_memory.hpp"
#include "support/tiny_unet.hpp"

using namespace diffusion;

namespace {

// Every kind of stage: ConvNeXt or ResNet blocks, linear and full attention, and a class-conditional network.
std::vector<std::pair<std::string, UnetConfig>> predict_configs() {
  std::vector<std::pair<std::string, UnetConfig>> out;
  UnetConfig convnext = testing::tiny_unet_config(2);  // linear attention in the levels, full in the middle
  out.emplace_back("ConvNeXt, linear + full attention", convnext);
  UnetConfig resnet = convnext;
  resnet.use_convnext = false;
  resnet.resnet_block_groups = 4;
  resnet.dim_mults = {1, 2, 2};
  resnet.level_attention = {AttentionKind::Full, AttentionKind::None, AttentionKind::Linear};
  out.emplace_back("ResNet, attention full / none / linear, 3 levels", resnet);
  UnetConfig conditional = convnext;
  conditional.num_classes = 3;
  out.emplace_back("class-conditional", conditional);
  return out;
}

}  // namespace

TEST_CASE("predict gives forward's output bit for bit and leaves no pass for backward") {
  for (const auto& [name, config] : predict_configs()) {
    INFO(name);
    Unet<float> net(config, 11);
    // 11 images: linear attention predicts in parts of 8 (nn/linear_attention.hpp), here 8 + 3.
    const Tensor<float> x = Tensor<float>::normal(Shape{11, 2, 8, 8}, Rng(4));
    const std::vector<std::int64_t> t{0, 250, 999, 3, 17, 400, 401, 998, 1, 500, 64};
    const std::vector<std::int64_t> classes{2, kNullClass, 0, 1, 1, 2, kNullClass, 0, 0, 2, 1};
    const bool conditional = net.is_conditional();
    const auto run = [&](bool keep, Tensor<float>& y) {
      if (conditional && keep) net.forward(x, t, classes, y);
      else if (conditional) net.predict(x, t, classes, y);
      else if (keep) net.forward(x, t, y);
      else net.predict(x, t, y);
    };
    Tensor<float> first, kept, again;
    run(false, first);  // on a fresh network: predict sizes its own buffers
    run(true, kept);
    run(false, again);  // after a forward: the saved activations must not leak into predict
    REQUIRE(testing::bits_equal(first, kept));
    REQUIRE(testing::bits_equal(again, kept));

    // The model call is predict: backward after it is refused, naming predict; after forward it runs.
    Tensor<float> dy(kept.shape());
    dy.fill(1.0f);
    REQUIRE_THROWS_WITH(net.backward(dy), Catch::Contains("predict"));
    run(true, kept);
    REQUIRE_NOTHROW(net.backward(dy));
    if (!conditional) {
      net(x, t, again);
      REQUIRE(testing::bits_equal(again, kept));
      REQUIRE_THROWS_WITH(net.backward(dy), Catch::Contains("predict"));
    }

    // In parts of 4 images (4 + 4 + 3) and of 1: the same bits as the whole batch.
    for (Index chunk : {4, 1}) {
      INFO("predict in parts of " << chunk);
      net.set_predict_chunk(chunk);
      Tensor<float> parts;
      run(false, parts);
      REQUIRE(testing::bits_equal(parts, kept));
    }
    net.set_predict_chunk(0);
  }
  Unet<float> net(testing::tiny_unet_config(1), 1);
  REQUIRE_THROWS_WITH(net.set_predict_chunk(-1), Catch::Contains("must be >= 0"));
}

TEST_CASE("predict on the Fashion-MNIST U-Net needs well under half of forward's memory") {
  UnetConfig c;  // the primer's Unet(dim=28, channels=1, dim_mults=(1, 2, 4)), ConvNeXt blocks
  c.dim = 28;
  c.channels = 1;
  c.dim_mults = {1, 2, 4};
  const Index batch = 32;
  const Tensor<float> x = Tensor<float>::normal(Shape{batch, 1, 28, 28}, Rng(8));
  std::vector<std::int64_t> t(static_cast<std::size_t>(batch));
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<std::int64_t>(31 * i % 1000);
  Tensor<float> y_predict, y_forward;
  y_predict.resize(Shape{batch, 1, 28, 28});
  y_forward.resize(Shape{batch, 1, 28, 28});
  y_predict.fill(0.0f);
  y_forward.fill(0.0f);

  Unet<float> for_predict(c, 1), for_forward(c, 1);  // two networks: neither sees the other's buffers
  testing::PeakMemory predict_peak;
  for_predict.predict(x, t, y_predict);
  const long long predict_bytes = predict_peak.growth_bytes();
  testing::PeakMemory forward_peak;
  for_forward.forward(x, t, y_forward);
  const long long forward_bytes = forward_peak.growth_bytes();
  REQUIRE(testing::bits_equal(y_predict, y_forward));
  INFO("peak memory growth at batch " << batch << ": predict " << predict_bytes / 1e6 << " MB, forward "
                                      << forward_bytes / 1e6 << " MB (reset of the high-water mark "
                                      << (predict_peak.reset_worked() ? "worked" : "unavailable") << ")");
  REQUIRE(predict_bytes > 0);
  REQUIRE(forward_bytes > 0);
  // Measured (Release, 2026-12-01): predict 47 MB (with the threads' kernel scratch, paid first), forward 298 MB
  // (0.16). The issue asks for well under half.
  REQUIRE(static_cast<double>(predict_bytes) < 0.5 * static_cast<double>(forward_bytes));

  // In parts of 4 images (set_predict_chunk): the same bits. (Its memory is not measured here: after forward's,
  // the allocator serves a small network's buffers from pages already resident.)
  Unet<float> chunked(c, 1);
  chunked.set_predict_chunk(4);
  Tensor<float> y_chunked;
  chunked.predict(x, t, y_chunked);
  REQUIRE(testing::bits_equal(y_chunked, y_forward));
}
