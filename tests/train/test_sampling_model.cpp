// The EMA weights go into a network through ema.apply_to(model), checked by parameter names and shapes, and the
// trainer hands out the network to sample with: the EMA network when EMA is on, the model itself otherwise.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "diffusion/diffusion.hpp"
#include "support/tiny_unet.hpp"

using namespace diffusion;

namespace {

UnetConfig sampling_tiny() { return testing::tiny_unet_config(1); }

bool same_values(const ParameterStore<float>& p, const float* values) {
  return std::equal(p.values(), p.values() + p.size(), values);
}

}  // namespace

TEST_CASE("ema.apply_to writes the average into a network of the same parameters") {
  Unet<float> net(sampling_tiny(), 1);
  Ema<float> ema(net.params(), EmaOptions{0.5, false});
  std::vector<float> moved(net.params().values(), net.params().values() + net.params().size());
  for (auto& v : moved) v += 1.0f;
  ema.update(moved.data(), moved.size());

  Unet<float> target(sampling_tiny(), 2);
  ema.apply_to(target);
  REQUIRE(same_values(target.params(), ema.shadow()));
  REQUIRE_FALSE(same_values(target.params(), net.params().values()));
}

TEST_CASE("ema.apply_to refuses a network with other parameters and names the difference") {
  Unet<float> net(sampling_tiny(), 1);
  Ema<float> ema(net.params());

  UnetConfig resnet = sampling_tiny();
  resnet.use_convnext = false;
  Unet<float> other_blocks(resnet, 1);
  REQUIRE_THROWS_WITH(ema.apply_to(other_blocks), Catch::Contains("Ema::apply_to") && Catch::Contains("parameter"));

  UnetConfig wider = sampling_tiny();
  wider.dim = 12;
  Unet<float> other_width(wider, 1);
  REQUIRE_THROWS_WITH(ema.apply_to(other_width),
                      Catch::Contains("Ema::apply_to: parameter 'init_conv.weight' has shape (8, 1, 7, 7) here but "
                                      "(4, 1, 7, 7) in the source"));

  UnetConfig deeper = sampling_tiny();
  deeper.dim_mults = {1, 2, 2};
  Unet<float> other_depth(deeper, 1);
  REQUIRE_THROWS_WITH(ema.apply_to(other_depth), Catch::Contains("Ema::apply_to"));

  // An average over raw values (no names) is still checked by size.
  Ema<float> unnamed(net.params().values(), net.params().size() - 1);
  REQUIRE_THROWS_WITH(unnamed.apply_to(net), Catch::Contains("Ema::apply_to: the average holds"));
}

TEST_CASE("trainer.sampling_model is the EMA network with EMA on and the model without") {
  Tensor<float> images = Tensor<float>::uniform(Shape{4, 1, 8, 8}, Rng(3), -1.0, 1.0);
  for (const bool use_ema : {true, false}) {
    Unet<float> net(sampling_tiny(), 1);
    TrainerOptions options;
    options.use_ema = use_ema;
    Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 50), options);
    for (int i = 0; i < 3; ++i) trainer.step(images);
    Unet<float>& sampler = trainer.sampling_model();
    if (!use_ema) {
      REQUIRE(&sampler == &net);
      continue;
    }
    REQUIRE(&sampler != &net);
    REQUIRE(same_values(sampler.params(), trainer.ema()->shadow()));
    REQUIRE_FALSE(same_values(sampler.params(), net.params().values()));
    trainer.step(images);  // the next call follows the average
    REQUIRE(&trainer.sampling_model() == &sampler);
    REQUIRE(same_values(sampler.params(), trainer.ema()->shadow()));
    // And it samples: the callable form goes straight into the loop.
    Tensor<float> x = Tensor<float>::normal(Shape{2, 1, 8, 8}, Rng(4));
    Rng rng(5);
    SamplerOptions so;
    so.steps = 3;
    sample(trainer.sampling_model(), trainer.schedule(), x, rng, so);
    REQUIRE(std::all_of(x.begin(), x.end(), [](float v) { return std::isfinite(v); }));
  }
}
