// GaussianDiffusion<T>, the one-object API: it is exactly the library's parts put together (a Unet, a schedule, a
// Trainer, a sampler), so each of its calls is checked bit for bit against the same run written with the parts.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "diffusion/diffusion.hpp"
#include "support/tiny_unet.hpp"

using namespace diffusion;

namespace {

UnetConfig tiny() { return testing::tiny_unet_config(1); }

GaussianDiffusionOptions small_options() {
  GaussianDiffusionOptions o;
  o.timesteps = 50;
  o.seed = 3;
  o.trainer.seed = 4;
  o.sampler.steps = 5;
  return o;
}

using testing::bits_equal;

Tensor<float> images() { return Tensor<float>::uniform(Shape{4, 1, 8, 8}, Rng(9), -1.0, 1.0); }

std::string scratch(const std::string& name) { return std::string(DIFFUSION_TEST_BINARY_DIR) + "/" + name; }

}  // namespace

TEST_CASE("GaussianDiffusion trains and samples exactly as the parts it is built from") {
  const GaussianDiffusionOptions o = small_options();
  GaussianDiffusion<float> diffusion(tiny(), 8, o);

  Unet<float> net(tiny(), o.seed);
  Trainer<float> trainer(net, NoiseSchedule(o.beta_schedule, o.timesteps), o.trainer);
  const Tensor<float> x0 = images();
  for (int i = 0; i < 3; ++i) REQUIRE(diffusion.train_step(x0) == trainer.step(x0).loss);
  REQUIRE(std::equal(net.params().values(), net.params().values() + net.params().size(),
                     diffusion.model().params().values()));

  Rng a(11), b(11);
  const Tensor<float> drawn = diffusion.sample(3, a);
  Tensor<float> x = Tensor<float>::normal(Shape{3, 1, 8, 8}, b);
  sample(trainer.sampling_model(), trainer.schedule(), x, b, o.sampler);
  REQUIRE(bits_equal(drawn, x));
  REQUIRE(std::all_of(drawn.begin(), drawn.end(), [](float v) { return v >= -1.5f && v <= 1.5f; }));
}

TEST_CASE("GaussianDiffusion save and load continue the run exactly") {
  const GaussianDiffusionOptions o = small_options();
  const Tensor<float> x0 = images();
  GaussianDiffusion<float> first(tiny(), 8, o);
  first.train_step(x0);
  first.train_step(x0);
  const std::string path = scratch("gaussian_diffusion.safetensors");
  first.save(path);

  GaussianDiffusionOptions other_seed = o;
  other_seed.seed = 77;  // other initial weights: load must replace them all
  GaussianDiffusion<float> second(tiny(), 8, other_seed);
  second.load(path);
  REQUIRE(second.trainer().step_count() == 2);
  Rng a(5), b(5);
  REQUIRE(bits_equal(first.sample(2, a), second.sample(2, b)));
  REQUIRE(first.train_step(x0) == second.train_step(x0));

  // A moved object keeps working (its model and trainer live on the heap).
  GaussianDiffusion<float> moved(std::move(second));
  REQUIRE(first.train_step(x0) == moved.train_step(x0));

  GaussianDiffusionOptions longer = o;
  longer.timesteps = 60;
  GaussianDiffusion<float> mismatched(tiny(), 8, longer);
  REQUIRE_THROWS_WITH(mismatched.load(path), Catch::Contains(path) && Catch::Contains("noise schedule"));
}

TEST_CASE("GaussianDiffusion refuses images and sizes that do not fit its network") {
  REQUIRE_THROWS_WITH(GaussianDiffusion<float>(tiny(), 7, small_options()),
                      Catch::Contains("image_size 7 must be a positive multiple of 2"));
  GaussianDiffusionOptions bad_sampler = small_options();
  bad_sampler.sampler.steps = 0;
  REQUIRE_THROWS(GaussianDiffusion<float>(tiny(), 8, bad_sampler));
  GaussianDiffusion<float> diffusion(tiny(), 8, small_options());
  const Tensor<float> wrong = Tensor<float>::zeros(Shape{2, 1, 16, 16});
  REQUIRE_THROWS_WITH(diffusion.train_step(wrong),
                      Catch::Contains("GaussianDiffusion::train_step: images (2, 1, 16, 16) do not match (N, 1, 8, 8)"));
  Rng rng(1);
  REQUIRE_THROWS_WITH(diffusion.sample(0, rng), Catch::Contains("n must be positive"));
}
