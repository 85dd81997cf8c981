// Beta schedules and derived tables against the PyTorch reference (tests/golden/schedules.safetensors, computed in
// float64 by make_process_fixtures.py from reference.py), plus argument checks.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "diffusion/process/schedule.hpp"
#include "process/process_test_util.hpp"

using namespace diffusion;
using process_test::compare;

namespace {

const std::vector<double>& table(const NoiseSchedule& s, const std::string& name) {
  if (name == "betas") return s.betas;
  if (name == "alphas") return s.alphas;
  if (name == "alphas_cumprod") return s.alphas_cumprod;
  if (name == "alphas_cumprod_prev") return s.alphas_cumprod_prev;
  if (name == "sqrt_recip_alphas") return s.sqrt_recip_alphas;
  if (name == "sqrt_alphas_cumprod") return s.sqrt_alphas_cumprod;
  if (name == "sqrt_one_minus_alphas_cumprod") return s.sqrt_one_minus_alphas_cumprod;
  if (name == "posterior_variance") return s.posterior_variance;
  if (name == "posterior_log_variance_clipped") return s.posterior_log_variance_clipped;
  if (name == "posterior_mean_coef1") return s.posterior_mean_coef1;
  if (name == "posterior_mean_coef2") return s.posterior_mean_coef2;
  FAIL("unknown table " << name);
  return s.betas;
}

const char* const kTables[] = {"betas",
                               "alphas",
                               "alphas_cumprod",
                               "alphas_cumprod_prev",
                               "sqrt_recip_alphas",
                               "sqrt_alphas_cumprod",
                               "sqrt_one_minus_alphas_cumprod",
                               "posterior_variance",
                               "posterior_log_variance_clipped",
                               "posterior_mean_coef1",
                               "posterior_mean_coef2"};

}  // namespace

TEST_CASE("every schedule table matches the float64 PyTorch reference at T = 200 and T = 1000") {
  io::SafetensorsReader fx(process_test::golden("schedules.safetensors"));
  double worst = 0.0, worst_rel_all = 0.0;
  for (const char* name : {"linear", "cosine", "quadratic", "sigmoid"}) {
    for (int T : {200, 1000}) {
      const NoiseSchedule s(parse_beta_schedule(name), T);
      REQUIRE(s.num_timesteps() == T);
      for (const char* tab : kTables) {
        const std::string key = std::string("sched.") + name + "." + std::to_string(T) + "." + tab;
        const Tensor<double> want = fx.read<double>(key);
        const std::vector<double>& got = table(s, tab);
        REQUIRE(static_cast<Index>(got.size()) == want.numel());
        const auto m = compare(got, want);
        INFO(key << ": " << m.str());
        // The brief's bound. Both sides are double evaluations of the same formulas, so the measured error is a few
        // ulps (printed below); 1e-6 would catch any formula, constant or indexing mistake (the smallest beta is 1e-4).
        REQUIRE(m.max_abs <= 1e-6);
        worst = std::max(worst, m.max_abs);
        // Element-wise relative error as well, since some tables are tiny (posterior_variance ~ 1e-4 and less). The
        // cosine betas are 1 - cos^2 ratios: a 1-ulp difference between PyTorch's cos and libm's, amplified by
        // 1/beta <= 1e4, gives ~1e-12 (measured 2e-12); 1e-10 keeps a margin of 50.
        double worst_rel = 0.0;
        std::size_t at = 0;
        for (std::size_t i = 0; i < got.size(); ++i) {
          if (want[static_cast<Index>(i)] == 0.0) {
            REQUIRE(got[i] == 0.0);
            continue;
          }
          const double r = diffusion::testing::element_error(got[i], want[static_cast<Index>(i)]) /
                           std::fabs(want[static_cast<Index>(i)]);
          if (!(r <= worst_rel)) worst_rel = r, at = i;  // a NaN becomes the worst and fails below
        }
        INFO("worst element-wise relative error " << worst_rel << " at t = " << at);
        REQUIRE(worst_rel <= 1e-10);
        worst_rel_all = std::max(worst_rel_all, worst_rel);
      }
    }
  }
  WARN("schedule tables: worst abs error over all schedules, T and tables = " << worst << ", worst relative "
                                                                               << worst_rel_all);
}

TEST_CASE("schedule tables have the structure the samplers rely on") {
  for (BetaSchedule b : {BetaSchedule::Linear, BetaSchedule::Cosine, BetaSchedule::Quadratic, BetaSchedule::Sigmoid}) {
    const NoiseSchedule s(b, 300);
    INFO(beta_schedule_name(b));
    REQUIRE(s.alphas_cumprod_prev[0] == 1.0);
    REQUIRE(s.posterior_variance[0] == 0.0);
    REQUIRE(s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1]);
    for (int t = 1; t < s.T; ++t) {
      REQUIRE(s.alphas_cumprod[t] < s.alphas_cumprod[t - 1]);
      REQUIRE(s.alphas_cumprod_prev[t] == s.alphas_cumprod[t - 1]);
      // the posterior variance never exceeds beta_t (beta tilde <= beta)
      REQUIRE(s.posterior_variance[t] <= s.betas[t]);
    }
  }
  // the first and last linear betas are the primer's constants exactly (torch.linspace ends are exact)
  const NoiseSchedule lin(BetaSchedule::Linear, 1000);
  REQUIRE(lin.betas.front() == 0.0001);
  REQUIRE(lin.betas.back() == 0.02);
  // T = 1 is a valid (degenerate) schedule
  const NoiseSchedule one(BetaSchedule::Linear, 1);
  REQUIRE(one.betas.size() == 1);
  REQUIRE(one.betas[0] == 0.0001);
  REQUIRE(std::isfinite(one.posterior_log_variance_clipped[0]));
}

TEST_CASE("a schedule built from explicit betas equals the named one") {
  const NoiseSchedule named(BetaSchedule::Cosine, 50);
  const NoiseSchedule explicit_betas(make_betas(BetaSchedule::Cosine, 50));
  REQUIRE(explicit_betas.alphas_cumprod == named.alphas_cumprod);
  REQUIRE(explicit_betas.posterior_mean_coef2 == named.posterior_mean_coef2);
}

TEST_CASE("bad schedule arguments throw errors that name the argument") {
  REQUIRE_THROWS_WITH(parse_beta_schedule("cosin"),
                      Catch::Contains("'cosin'") && Catch::Contains("linear, cosine, quadratic, sigmoid"));
  REQUIRE(parse_beta_schedule("quadratic") == BetaSchedule::Quadratic);
  REQUIRE_THROWS_WITH(make_betas(BetaSchedule::Linear, 0), Catch::Contains("T must be >= 1") && Catch::Contains("0"));
  REQUIRE_THROWS_WITH(NoiseSchedule(BetaSchedule::Sigmoid, -5), Catch::Contains("T must be >= 1"));
  REQUIRE_THROWS_WITH(NoiseSchedule(std::vector<double>{}), Catch::Contains("betas must not be empty"));
  REQUIRE_THROWS_WITH(NoiseSchedule(std::vector<double>{0.1, 1.0}),
                      Catch::Contains("betas[1]") && Catch::Contains("outside (0, 1)"));
  REQUIRE_THROWS_WITH(NoiseSchedule(std::vector<double>{0.0}), Catch::Contains("betas[0]"));
  REQUIRE_THROWS_WITH(NoiseSchedule(std::vector<double>{NAN}), Catch::Contains("betas[0]"));
  const NoiseSchedule s(BetaSchedule::Linear, 10);
  REQUIRE_THROWS_WITH(s.check_timestep(10, "caller"), Catch::Contains("caller") && Catch::Contains("[0, 10)"));
  REQUIRE_THROWS_WITH(s.check_timestep(-1, "caller"), Catch::Contains("timestep -1"));
}
