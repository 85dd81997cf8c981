#pragma once
// Noise schedules of the diffusion process (Ho et al. 2020; the primer's "Implementing the Original Paper"):
// beta_t for t = 0 .. T-1 and every table derived from it, in double.
//
//   alphas_t              = 1 - beta_t
//   alphas_cumprod_t      = prod_{s <= t} alpha_s                    (abar_t)
//   alphas_cumprod_prev_t = abar_{t-1}, 1 at t = 0
//   posterior_variance_t  = beta_t (1 - abar_{t-1}) / (1 - abar_t)   (variance of q(x_{t-1} | x_t, x_0))
//   posterior_mean_coef1_t = beta_t sqrt(abar_{t-1}) / (1 - abar_t) (weight of x_0 in its mean)
//   posterior_mean_coef2_t = (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t) (weight of x_t)
//
// Tables are the ones of tests/golden/reference.py's tables(betas), computed in double so that the float build
// only rounds once, when a coefficient meets a float tensor.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "diffusion/core/enum_names.hpp"
#include "diffusion/core/error.hpp"

namespace diffusion {

enum class BetaSchedule { Linear, Cosine, Quadratic, Sigmoid };

namespace detail {
// The primer's function names without "_beta_schedule".
inline constexpr NameEntry<BetaSchedule> kBetaScheduleNames[] = {{BetaSchedule::Linear, "linear"},
                                                                 {BetaSchedule::Cosine, "cosine"},
                                                                 {BetaSchedule::Quadratic, "quadratic"},
                                                                 {BetaSchedule::Sigmoid, "sigmoid"}};
}  // namespace detail

inline const char* beta_schedule_name(BetaSchedule s) { return detail::enum_name(detail::kBetaScheduleNames, s); }
// "linear" | "cosine" | "quadratic" | "sigmoid".
inline BetaSchedule parse_beta_schedule(const std::string& name) {
  return detail::parse_enum(detail::kBetaScheduleNames, name, "beta schedule");
}

namespace detail {

// torch.linspace(start, end, steps) in double, with PyTorch's CPU kernel formula: the first half counts up from
// start, the second half down from end (so both ends are exact).
inline std::vector<double> torch_linspace(double start, double end, int steps) {
  std::vector<double> out(static_cast<std::size_t>(steps));
  if (steps == 1) {
    out[0] = start;
    return out;
  }
  const double step = (end - start) / (steps - 1);
  const int halfway = steps / 2;
  for (int i = 0; i < steps; ++i)
    out[static_cast<std::size_t>(i)] = i < halfway ? start + step * i : end - step * (steps - i - 1);
  return out;
}

}  // namespace detail

// beta_0 .. beta_{T-1} of the primer's schedules (linear, cosine with s = 0.008 (Nichol & Dhariwal 2021), quadratic,
// sigmoid), evaluated in double. Requires T >= 1.
inline std::vector<double> make_betas(BetaSchedule schedule, int T) {
  DIFFUSION_CHECK(T >= 1, "make_betas: number of timesteps T must be >= 1, got " << T);
  constexpr double kBetaStart = 0.0001, kBetaEnd = 0.02;
  std::vector<double> betas;
  switch (schedule) {
    case BetaSchedule::Linear:
      betas = detail::torch_linspace(kBetaStart, kBetaEnd, T);
      break;
    case BetaSchedule::Quadratic:
      betas = detail::torch_linspace(std::pow(kBetaStart, 0.5), std::pow(kBetaEnd, 0.5), T);
      for (double& b : betas) b = b * b;
      break;
    case BetaSchedule::Sigmoid:
      betas = detail::torch_linspace(-6.0, 6.0, T);
      for (double& b : betas) b = 1.0 / (1.0 + std::exp(-b)) * (kBetaEnd - kBetaStart) + kBetaStart;
      break;
    case BetaSchedule::Cosine: {
      // abar(x) = cos^2(((x / T) + s) / (1 + s) * pi / 2), normalised by abar(0); beta_t = 1 - abar(t+1)/abar(t)
      constexpr double s = 0.008, kPi = 3.141592653589793;
      const std::vector<double> x = detail::torch_linspace(0.0, static_cast<double>(T), T + 1);
      std::vector<double> ab(x.size());
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double c = std::cos(((x[i] / T) + s) / (1 + s) * kPi * 0.5);
        ab[i] = c * c;
      }
      const double ab0 = ab[0];
      for (double& a : ab) a = a / ab0;
      betas.resize(static_cast<std::size_t>(T));
      for (std::size_t i = 0; i < betas.size(); ++i)
        betas[i] = std::min(std::max(1.0 - ab[i + 1] / ab[i], 0.0001), 0.9999);  // torch.clip(betas, 1e-4, 0.9999)
      break;
    }
  }
  return betas;
}

// The schedule and its derived tables, each of length T, indexed by the timestep t in [0, T). Built once and
// then read-only by convention: the tables are public for the samplers and the trainer, not for editing.
class NoiseSchedule {
 public:
  NoiseSchedule(BetaSchedule schedule, int num_timesteps) : NoiseSchedule(make_betas(schedule, num_timesteps)) {}

  // From explicit betas: requires at least one, each in (0, 1), with 1 - beta_t < 1 and abar_t > 0 in double.
  explicit NoiseSchedule(std::vector<double> betas_in) : betas(std::move(betas_in)) {
    DIFFUSION_CHECK(!betas.empty(), "NoiseSchedule: betas must not be empty (number of timesteps T >= 1)");
    for (std::size_t i = 0; i < betas.size(); ++i)
      DIFFUSION_CHECK(betas[i] > 0.0 && betas[i] < 1.0,
                      "NoiseSchedule: betas[" << i << "] = " << betas[i] << " is outside (0, 1)");
    T = static_cast<int>(betas.size());
    const std::size_t n = betas.size();
    alphas.resize(n);
    alphas_cumprod.resize(n);
    alphas_cumprod_prev.resize(n);
    sqrt_recip_alphas.resize(n);
    sqrt_alphas_cumprod.resize(n);
    sqrt_one_minus_alphas_cumprod.resize(n);
    posterior_variance.resize(n);
    posterior_log_variance_clipped.resize(n);
    posterior_mean_coef1.resize(n);
    posterior_mean_coef2.resize(n);
    double cumprod = 1.0;
    for (std::size_t t = 0; t < n; ++t) {
      alphas[t] = 1.0 - betas[t];
      alphas_cumprod_prev[t] = cumprod;
      cumprod *= alphas[t];  // torch.cumprod: sequential product
      alphas_cumprod[t] = cumprod;
      // Both ends would divide by zero below and in every sampler: abar_t = 1 (1 - abar_t = 0) and abar_t = 0.
      DIFFUSION_CHECK(alphas[t] < 1.0, "NoiseSchedule: betas[" << t << "] = " << betas[t]
                                                               << " is too small: 1 - beta rounds to 1 in double");
      DIFFUSION_CHECK(cumprod > 0.0, "NoiseSchedule: alphas_cumprod underflows to 0 at t = "
                                         << t << " of T = " << n << " (the schedule destroys the signal in double "
                                         << "precision; use fewer timesteps or smaller betas)");
      sqrt_recip_alphas[t] = std::sqrt(1.0 / alphas[t]);
      sqrt_alphas_cumprod[t] = std::sqrt(alphas_cumprod[t]);
      sqrt_one_minus_alphas_cumprod[t] = std::sqrt(1.0 - alphas_cumprod[t]);
      posterior_variance[t] = betas[t] * (1.0 - alphas_cumprod_prev[t]) / (1.0 - alphas_cumprod[t]);
      posterior_mean_coef1[t] = betas[t] * std::sqrt(alphas_cumprod_prev[t]) / (1.0 - alphas_cumprod[t]);
      posterior_mean_coef2[t] = (1.0 - alphas_cumprod_prev[t]) * std::sqrt(alphas[t]) / (1.0 - alphas_cumprod[t]);
    }
    // posterior_variance[0] is 0: its log is clipped by repeating entry 1 (as the original implementation). With
    // T = 1 there is no entry 1; beta_0, the other variance choice, stands in.
    for (std::size_t t = 0; t < n; ++t)
      posterior_log_variance_clipped[t] = std::log(t > 0 ? posterior_variance[t] : n > 1 ? posterior_variance[1] : betas[0]);
  }

  int num_timesteps() const { return T; }

  // Throws unless 0 <= t < T; `what` names the caller and argument.
  void check_timestep(long long t, const char* what) const {
    DIFFUSION_CHECK(t >= 0 && t < T, what << ": timestep " << t << " outside [0, " << T << ")");
  }

  int T = 0;
  std::vector<double> betas;                           // (T,)
  std::vector<double> alphas;                          // (T,)
  std::vector<double> alphas_cumprod;                  // (T,)
  std::vector<double> alphas_cumprod_prev;             // (T,)
  std::vector<double> sqrt_recip_alphas;               // (T,)
  std::vector<double> sqrt_alphas_cumprod;             // (T,)
  std::vector<double> sqrt_one_minus_alphas_cumprod;   // (T,)
  std::vector<double> posterior_variance;              // (T,)
  std::vector<double> posterior_log_variance_clipped;  // (T,)
  std::vector<double> posterior_mean_coef1;            // (T,)
  std::vector<double> posterior_mean_coef2;            // (T,)
};

}  // namespace diffusion
