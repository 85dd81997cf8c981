// Preconditions of samplers/ not covered by the DDPM/DDIM tests: sequence lengths 0, negative or above T for every
// spacing, NaN eta and alpha_bar, empty inputs, models that answer with the wrong shape. Each message names the
// function and the argument.
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <vector>

#include "diffusion/core/random.hpp"
#include "diffusion/samplers/ddim.hpp"
#include "diffusion/samplers/ddpm.hpp"

using namespace diffusion;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// eps = 0: enough to drive the loops.
struct ZeroModel {
  void operator()(const Tensor<float>& x, const std::vector<std::int64_t>&, Tensor<float>& out) const {
    out.resize(x.shape());
    out.zero();
  }
};

}  // namespace

TEST_CASE("ddim_timesteps rejects T < 1 and S outside [1, T] for every spacing") {
  for (DdimSpacing sp : {DdimSpacing::Linspace, DdimSpacing::Leading, DdimSpacing::Trailing}) {
    INFO("spacing " << ddim_spacing_name(sp));
    REQUIRE_THROWS_WITH(ddim_timesteps(0, 1, sp), Catch::Contains("T must be >= 1, got 0"));
    REQUIRE_THROWS_WITH(ddim_timesteps(-4, 1, sp), Catch::Contains("T must be >= 1"));
    REQUIRE_THROWS_WITH(ddim_timesteps(10, 0, sp), Catch::Contains("S must be in [1, T = 10], got 0"));
    REQUIRE_THROWS_WITH(ddim_timesteps(10, -2, sp), Catch::Contains("got -2"));
    REQUIRE_THROWS_WITH(ddim_timesteps(10, 11, sp), Catch::Contains("got 11"));
    REQUIRE(ddim_timesteps(1, 1, sp) == std::vector<std::int64_t>{0});
    REQUIRE(ddim_timesteps(10, 10, sp).size() == 10);
  }
  REQUIRE_THROWS_WITH(parse_ddim_spacing("uniform"), Catch::Contains("'uniform'") && Catch::Contains("linspace"));
}

TEST_CASE("DDIM rejects NaN eta and alpha_bar, empty inputs and bad explicit sequences") {
  const NoiseSchedule s(BetaSchedule::Linear, 20);
  Tensor<float> x(Shape{1, 1, 2, 2}), out(Shape{1, 1, 2, 2}), y;
  DdimOptions o;
  o.eta = kNaN;
  REQUIRE_THROWS_WITH(ddim_step(x, out, 0.5, 0.9, o, &x, y), Catch::Contains("eta must be >= 0, got nan"));
  o.eta = 0.0;
  REQUIRE_THROWS_WITH(ddim_step(x, out, kNaN, 0.9, o, &x, y), Catch::Contains("alpha_bar_t"));
  REQUIRE_THROWS_WITH(ddim_step(x, out, 0.5, kNaN, o, &x, y), Catch::Contains("alpha_bar_prev"));
  REQUIRE_THROWS_WITH(ddim_step(x, out, 1.0, 1.0, o, &x, y), Catch::Contains("alpha_bar_t must be in (0, 1)"));
  Rng rng(1);
  Tensor<float> empty(Shape{0, 1, 2, 2}), scalar(Shape{});
  REQUIRE_THROWS_WITH(ddim_sample(ZeroModel{}, s, empty, rng, o), Catch::Contains("non-empty batch"));
  REQUIRE_THROWS_WITH(ddim_sample(ZeroModel{}, s, scalar, rng, o), Catch::Contains("non-empty batch"));
  o.eta = kNaN;
  REQUIRE_THROWS_WITH(ddim_sample(ZeroModel{}, s, x, rng, o), Catch::Contains("ddim_sample: eta"));
  o.eta = 0.0;
  o.steps = 0;
  REQUIRE_THROWS_WITH(ddim_sample(ZeroModel{}, s, x, rng, o), Catch::Contains("S must be in [1, T = 20], got 0"));
  o.timesteps = {3, 3};
  REQUIRE_THROWS_WITH(ddim_sample(ZeroModel{}, s, x, rng, o), Catch::Contains("strictly ascending"));
  o.timesteps = {-1, 3};
  REQUIRE_THROWS_WITH(ddim_sample(ZeroModel{}, s, x, rng, o), Catch::Contains("DdimOptions::timesteps") &&
                                                                   Catch::Contains("timestep -1"));
  o.timesteps.clear();
  o.steps = 5;
  auto shrinking = [](const Tensor<float>&, const std::vector<std::int64_t>&, Tensor<float>& r) { r.resize(Shape{1}); };
  REQUIRE_THROWS_WITH(ddim_sample(shrinking, s, x, rng, o),
                      Catch::Contains("ddim_sample: the model returned an output of shape (1)"));
}

TEST_CASE("DDPM rejects empty inputs and mismatched timesteps") {
  const NoiseSchedule s(BetaSchedule::Linear, 20);
  Rng rng(1);
  Tensor<float> empty(Shape{0, 1, 2, 2});
  REQUIRE_THROWS_WITH(ddpm_sample(ZeroModel{}, s, empty, rng), Catch::Contains("ddpm_sample") &&
                                                                   Catch::Contains("non-empty batch"));
  Tensor<float> x(Shape{2, 1, 2, 2}), out(Shape{2, 1, 2, 2}), y;
  REQUIRE_THROWS_WITH(ddpm_step(s, x, {1, 1, 1}, out, &x, y), Catch::Contains("t has 3 timesteps for a batch of 2"));
  REQUIRE_THROWS_WITH(ddpm_step(s, x, {-1, 1}, out, &x, y), Catch::Contains("timestep -1"));
}
