// Preconditions of process/ not covered by the schedule and loss tests: per-timestep lookups, parameterization
// conversions and the timestep draw reject out-of-range timesteps, mismatched batches and negative sizes, naming
// the function and the argument. An empty batch (N = 0) is a valid no-op for the element-wise functions.
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <vector>

#include "diffusion/core/random.hpp"
#include "diffusion/process/forward_process.hpp"
#include "diffusion/process/losses.hpp"
#include "diffusion/process/parameterization.hpp"
#include "diffusion/process/schedule.hpp"

using namespace diffusion;

TEST_CASE("NoiseLevel::at and the parameterization conversions reject timesteps outside 0 to T-1") {
  const NoiseSchedule s(BetaSchedule::Linear, 10);
  REQUIRE_THROWS_WITH(NoiseLevel::at(s, 10), Catch::Contains("NoiseLevel::at") && Catch::Contains("timestep 10"));
  REQUIRE_THROWS_WITH(NoiseLevel::at(s, -1), Catch::Contains("timestep -1 outside [0, 10)"));
  REQUIRE(NoiseLevel::at(s, 9).a == s.sqrt_alphas_cumprod[9]);

  Tensor<float> x(Shape{2, 1, 2, 2}), out(Shape{2, 1, 2, 2}), y;
  for (Prediction p : {Prediction::Epsilon, Prediction::X0, Prediction::V}) {
    INFO("prediction " << prediction_name(p));
    REQUIRE_THROWS_WITH(eps_from_output(p, s, x, {0, 10}, out, y),
                        Catch::Contains("eps_from_output") && Catch::Contains("timestep 10"));
    REQUIRE_THROWS_WITH(x0_from_output(p, s, x, {0}, out, y),
                        Catch::Contains("x0_from_output") && Catch::Contains("t has 1 timesteps for a batch of 2"));
    REQUIRE_THROWS_WITH(training_target(p, s, x, {-3, 0}, out, y),
                        Catch::Contains("training_target") && Catch::Contains("timestep -3"));
    Tensor<float> wrong(Shape{2, 1, 2, 3});
    REQUIRE_THROWS_WITH(eps_from_output(p, s, x, {0, 1}, wrong, y), Catch::Contains("model output"));
    REQUIRE_THROWS_WITH(training_target(p, s, x, {0, 1}, wrong, y), Catch::Contains("noise"));
  }
  Tensor<float> scalar(Shape{});
  REQUIRE_THROWS_WITH(q_sample(s, scalar, {}, scalar, y), Catch::Contains("expected a batch (N, ...)"));
}

TEST_CASE("sample_timesteps rejects a negative batch size and empty batches are no-ops") {
  const NoiseSchedule s(BetaSchedule::Cosine, 5);
  Rng rng(3);
  std::vector<std::int64_t> t = {1, 2};
  REQUIRE_THROWS_WITH(sample_timesteps(rng, s, -1, t), Catch::Contains("batch size N must be >= 0, got -1"));
  sample_timesteps(rng, s, 0, t);
  REQUIRE(t.empty());
  Tensor<float> x0(Shape{0, 1, 4, 4}), noise(Shape{0, 1, 4, 4}), out;
  q_sample(s, x0, t, noise, out);
  REQUIRE(out.shape() == x0.shape());
  // ...but a loss over nothing is undefined.
  REQUIRE_THROWS_WITH(loss_forward(LossType::Huber, out, out), Catch::Contains("empty"));
}

TEST_CASE("parse functions name the bad value and the valid ones") {
  REQUIRE_THROWS_WITH(parse_prediction("noise"), Catch::Contains("'noise'") && Catch::Contains("eps, x0, v"));
  REQUIRE(parse_prediction("epsilon") == Prediction::Epsilon);
  REQUIRE_THROWS_WITH(parse_loss_type(""), Catch::Contains("''"));
  REQUIRE_THROWS_WITH(parse_beta_schedule("Linear"), Catch::Contains("'Linear'"));  // names are case-sensitive
  REQUIRE_THROWS_WITH(NoiseSchedule(std::vector<double>{0.1, -0.2}), Catch::Contains("betas[1] = -0.2"));
  REQUIRE_THROWS_WITH(NoiseSchedule(std::vector<double>{std::numeric_limits<double>::infinity()}),
                      Catch::Contains("betas[0]"));
}

TEST_CASE("NoiseSchedule rejects schedules whose tables would divide by zero in double") {
  // beta so small that 1 - beta == 1: abar_0 = 1 and the posterior variance at t = 0 would be 0 / 0.
  REQUIRE_THROWS_WITH(NoiseSchedule(std::vector<double>{1e-17, 0.1}),
                      Catch::Contains("betas[0] = 1e-17") && Catch::Contains("rounds to 1"));
  // abar underflows to 0 (0.5^1100 < 2^-1074): x0 = (x_t - b eps) / a would divide by 0.
  REQUIRE_THROWS_WITH(NoiseSchedule(std::vector<double>(1100, 0.5)),
                      Catch::Contains("alphas_cumprod underflows to 0 at t = 1074") && Catch::Contains("T = 1100"));
  // What still works: a beta just large enough that 1 - beta < 1, and a long linear schedule (abar_T ~ 1e-88).
  REQUIRE_NOTHROW(NoiseSchedule(std::vector<double>{1.2e-16}));
  REQUIRE_NOTHROW(NoiseSchedule(BetaSchedule::Linear, 20000));
}
