#pragma once
// The update of every sampler, one element at a time: the coefficients of a step (computed once per step, in
// double, from the noise levels it joins) and the scalar formula. Samplers (sampler.hpp) run these over tensors;
// ddpm_step / ddim_step call the first two directly. x is the variance-preserving x_t = a x0 + b eps of the rest of
// the library (a = sqrt(abar), b = sqrt(1 - abar)); the Karras-form solvers work on x / a (the "variance exploding"
// x = x0 + sigma eps, sigma = b / a) inside the formula and multiply back. `from` is the noise level of x, `to` the
// next one (to.clean(): abar = 1, sigma = 0). D and E are the model's x0 and eps (Denoised, after clipping).
//
// Sources, formula by formula:
//   DDPM            Ho et al. 2020, Algorithm 2 / eq. 11; with clipping, the posterior mean eq. 7 of the clipped x0
//   DDIM            Song et al. 2021 (DDIM), eq. 12
//   Euler, Heun     Karras et al. 2022, Algorithm 1 (no churn); k-diffusion's sample_euler / sample_heun
//   Euler ancestral k-diffusion's sample_euler_ancestral and get_ancestral_step
//   DPM-Solver++(2M)     Lu et al. 2022 ("DPM-Solver++"), Algorithm 2; k-diffusion's sample_dpmpp_2m
//   DPM-Solver++(2M) SDE Lu et al. 2022, sec. 5 (SDE-DPM-Solver++(2M)); k-diffusion's sample_dpmpp_2m_sde, midpoint
//   UniPC-2 (bh2)        Zhao et al. 2023; diffusers' UniPCMultistepScheduler (multistep_uni_p/c_bh_update)
//   reverse diffusion    Song et al. 2021 (score SDE), ReverseDiffusionPredictor with VPSDE.discretize
//   Euler-Maruyama       score_sde's EulerMaruyamaPredictor on the VP SDE
//   Langevin corrector   score_sde's LangevinCorrector (VP: step scaled by alpha_t)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "diffusion/core/error.hpp"
#include "diffusion/process/schedule.hpp"
#include "diffusion/samplers/sampler_common.hpp"

namespace diffusion {

// DDPM's variance choice.
enum class DdpmVariance {
  Posterior,  // posterior_variance_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) (the primer's choice)
  Beta,       // beta_t (the upper bound of Ho et al. sec. 3.2)
};

namespace detail {
inline constexpr NameEntry<DdpmVariance> kDdpmVarianceNames[] = {
    {DdpmVariance::Posterior, "posterior"},
    {DdpmVariance::Beta, "beta"},
};
}  // namespace detail

inline const char* ddpm_variance_name(DdpmVariance v) { return detail::enum_name(detail::kDdpmVarianceNames, v); }
inline DdpmVariance parse_ddpm_variance(const std::string& name) {
  return detail::parse_enum(detail::kDdpmVarianceNames, name, "DDPM variance");
}

namespace solvers {

// ---- DDPM: x_{t-1} = sqrt(1/alpha_t) (x - beta_t / sqrt(1 - abar_t) E) + sigma z       (no clipping, eq. 11)
//                    = coef1_t D + coef2_t x + sigma z                                     (clipped x0, eq. 7)
// sigma = sqrt(posterior_variance_t or beta_t), 0 at t = 0.
struct DdpmStep {
  double sqrt_recip_alpha, eps_coef, coef1, coef2, sigma;

  static DdpmStep at(const NoiseSchedule& s, std::int64_t t, DdpmVariance variance) {
    const std::size_t i = static_cast<std::size_t>(t);
    const double var = variance == DdpmVariance::Posterior ? s.posterior_variance[i] : s.betas[i];
    return {s.sqrt_recip_alphas[i], s.betas[i] / s.sqrt_one_minus_alphas_cumprod[i], s.posterior_mean_coef1[i],
            s.posterior_mean_coef2[i], t > 0 ? std::sqrt(var) : 0.0};
  }
  // z: nullptr for no noise (t = 0).
  double apply(bool posterior_mean, double x, Denoised d, const double* z) const {
    const double mean = posterior_mean ? coef1 * d.x0 + coef2 * x : sqrt_recip_alpha * (x - eps_coef * d.eps);
    return z != nullptr ? mean + sigma * *z : mean;
  }
};

// ---- DDIM: x' = sqrt(abar') D + sqrt(1 - abar' - s^2) E + s z,
// s = eta sqrt((1 - abar') / (1 - abar)) sqrt(1 - abar / abar').
inline double ddim_sigma(double eta, double alpha_bar_t, double alpha_bar_prev) {
  return eta * std::sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)) * std::sqrt(1.0 - alpha_bar_t / alpha_bar_prev);
}

struct DdimStep {
  double a_prev, c_eps, sigma;

  static DdimStep make(double eta, double alpha_bar_t, double alpha_bar_prev) {
    const double sigma = ddim_sigma(eta, alpha_bar_t, alpha_bar_prev);
    // 1 - abar_prev - sigma^2 >= 0 for eta <= 1 (it is (1 - abar_prev) abar_t (1/abar_prev - 1) / (1 - abar_t) at
    // eta = 1); clamped at 0 so that rounding, or eta > 1, cannot produce a NaN.
    return {std::sqrt(alpha_bar_prev), std::sqrt(std::max(0.0, 1.0 - alpha_bar_prev - sigma * sigma)), sigma};
  }
  double apply(Denoised d, const double* z) const {
    double y = a_prev * d.x0 + c_eps * d.eps;
    if (z != nullptr) y += sigma * *z;
    return y;
  }
};

// ---- Karras form: with x = x_t / a, d = (x - D) / sigma (k-diffusion's to_d), one Euler step to sigma_to is
// x + d (sigma_to - sigma). KarrasStep holds the two levels; the result goes back to x_t by multiplying by a'.
struct KarrasStep {
  double a, sigma;        // the level of x
  double a_to, sigma_to;  // the next level (sigma_to = 0: clean)

  static KarrasStep make(const SamplingPoint& from, const SamplingPoint& to) {
    return {from.a(), from.sigma(), to.a(), to.clean() ? 0.0 : to.sigma()};
  }
  double derivative(double x, double D) const { return (x / a - D) / sigma; }
  // Euler (sample_euler): a' (x/a + d (sigma' - sigma)).
  double euler(double x, double d) const { return a_to * (x / a + d * (sigma_to - sigma)); }
  // Heun's correction (sample_heun): from the saved x and d at sigma and d2 at sigma' (evaluated at Euler's x),
  // a' (x/a + (d + d2)/2 (sigma' - sigma)).
  double heun(double x_saved, double d, double d2) const {
    return a_to * (x_saved / a + 0.5 * (d + d2) * (sigma_to - sigma));
  }
  // d at the next level, of an x_t there (Heun's second evaluation).
  double derivative_to(double x_to, double D) const { return (x_to / a_to - D) / sigma_to; }
};

// ---- Euler ancestral (sample_euler_ancestral): sigma_up = min(sigma', eta sqrt(sigma'^2 (sigma^2 - sigma'^2) /
// sigma^2)), sigma_down = sqrt(sigma'^2 - sigma_up^2); x' = a' (x/a + d (sigma_down - sigma) + sigma_up z), no noise
// when sigma' = 0.
struct AncestralStep {
  KarrasStep k;
  double sigma_down, sigma_up;

  static AncestralStep make(const SamplingPoint& from, const SamplingPoint& to, double eta) {
    const KarrasStep k = KarrasStep::make(from, to);
    if (eta == 0.0) return {k, k.sigma_to, 0.0};
    const double s = k.sigma, s2 = k.sigma_to;
    const double up = std::min(s2, eta * std::sqrt(s2 * s2 * (s * s - s2 * s2) / (s * s)));
    return {k, std::sqrt(s2 * s2 - up * up), up};
  }
  bool noisy() const { return k.sigma_to > 0.0 && sigma_up > 0.0; }
  double apply(double x, double D, const double* z) const {
    double y = x / k.a + k.derivative(x, D) * (sigma_down - k.sigma);
    if (z != nullptr) y += *z * sigma_up;
    return k.a_to * y;
  }
};

// ---- DPM-Solver++(2M) (sample_dpmpp_2m): in lambda = -log sigma, h = lambda' - lambda; with r = h_last / h,
// D_d = (1 + 1/(2r)) D - 1/(2r) D_prev (D_d = D on the first step and on the last one to sigma' = 0);
// x' = a' ((sigma'/sigma) x/a - expm1(-h) D_d); x' = D_d when sigma' = 0.
struct DpmPp2MStep {
  double a, a_to, ratio, phi;  // ratio = sigma'/sigma, phi = -expm1(-h)
  double w_cur, w_prev;        // D_d = w_cur D + w_prev D_prev
  bool clean;

  // h_last: lambda - lambda of the previous step's start (ignored when !has_prev).
  static DpmPp2MStep make(const SamplingPoint& from, const SamplingPoint& to, bool has_prev, double h_last) {
    DpmPp2MStep s{from.a(), to.a(), 0.0, 1.0, 1.0, 0.0, to.clean()};
    if (s.clean) return s;
    const double h = to.lambda() - from.lambda();
    s.ratio = to.sigma() / from.sigma();
    s.phi = -std::expm1(-h);
    if (has_prev) {
      const double r = h_last / h;
      s.w_cur = 1.0 + 1.0 / (2.0 * r);
      s.w_prev = -1.0 / (2.0 * r);
    }
    return s;
  }
  double apply(double x, double D, double D_prev) const {
    if (clean) return D;  // first order: the last step lands on the denoised image
    const double Dd = w_prev != 0.0 ? w_cur * D + w_prev * D_prev : D;
    return a_to * (ratio * (x / a) + phi * Dd);
  }
};

// ---- DPM-Solver++(2M) SDE, midpoint (sample_dpmpp_2m_sde): eta_h = eta h;
// x' = a' ((sigma'/sigma) e^{-eta_h} x/a + (-expm1(-h - eta_h)) D
//          [+ 0.5 (-expm1(-h - eta_h)) (1/r) (D - D_prev)] + sigma' sqrt(-expm1(-2 eta_h)) z); x' = D when sigma' = 0.
struct DpmPp2MSdeStep {
  double a, a_to, c_x, c_d, c_diff, c_z;
  bool clean;

  static DpmPp2MSdeStep make(const SamplingPoint& from, const SamplingPoint& to, double eta, bool has_prev,
                             double h_last) {
    DpmPp2MSdeStep s{from.a(), to.a(), 0.0, 1.0, 0.0, 0.0, to.clean()};
    if (s.clean) return s;
    const double h = to.lambda() - from.lambda(), eta_h = eta * h;
    const double sigma = from.sigma(), sigma_to = to.sigma();
    s.c_x = sigma_to / sigma * std::exp(-eta_h);
    s.c_d = -std::expm1(-h - eta_h);
    s.c_diff = has_prev ? 0.5 * s.c_d * (h / h_last) : 0.0;  // 0.5 (-expm1(-h - eta_h)) (1 / r), r = h_last / h
    s.c_z = eta > 0.0 ? sigma_to * std::sqrt(-std::expm1(-2.0 * eta_h)) : 0.0;
    return s;
  }
  bool noisy() const { return !clean && c_z > 0.0; }
  double apply(double x, double D, double D_prev, const double* z) const {
    if (clean) return D;
    double y = c_x * (x / a) + c_d * D;
    if (c_diff != 0.0) y += c_diff * (D - D_prev);
    if (z != nullptr) y += *z * c_z;
    return a_to * y;
  }
};

// ---- UniPC-2 (Zhao et al. 2023, "UniPC"), B(h) = expm1(h) ("bh2"), on the data prediction: diffusers'
// UniPCMultistepScheduler with its defaults (predict_x0, solver_order 2, lower_order_final, every corrector on).
// In lambda = log(a / b), from level s0 to t, h = lambda_t - lambda_s0, phi = expm1(-h), B = expm1(-h):
//   predictor UniP-p:  x_t = (b_t / b_s0) x - a_t phi m0 [- a_t B (1/2) (m1 - m0) / r1]          (p = 2)
//   corrector UniC-q:  x_t = (b_t / b_s0) x_last - a_t phi m0 - a_t B ([rho_0 (m1 - m0) / r1] + rho_q (m_t - m0))
// with m0, m1 the x0 predictions at s0 and at the level before (r1 = (lambda_s1 - lambda_s0) / h), m_t the one at
// the predicted x_t, x_last the x the predictor started from; rho = (1/2) for q = 1, for q = 2 the solution of
// [[1, 1], [r1, 1]] rho = (g1, g2), g1 = (phi / (-h) - 1) / B, g2 = 2 ((phi / (-h) - 1) / (-h) - 1/2) / B.
// The corrector refines the x the model was just evaluated at, using that evaluation (no extra model call); the
// predictor then starts from the corrected x. The order is 1 on the first step and on the last one.
// UniPcUpdate holds one such update as coefficients of (x, m0, m1, m_t).
struct UniPcUpdate {
  double c_x = 0.0, c_m0 = 0.0, c_m1 = 0.0, c_mt = 0.0;

  // The predictor of order p (1 or 2) from s0 to t (s1: the level before s0, read when p = 2).
  static UniPcUpdate predictor(const SamplingPoint* s1, const SamplingPoint& s0, const SamplingPoint& t, int p) {
    UniPcUpdate u;
    if (t.clean()) {  // order 1 to sigma = 0: x_t = m0
      u.c_m0 = 1.0;
      return u;
    }
    const double h = t.lambda() - s0.lambda(), phi = std::expm1(-h), B = phi, a_t = t.a();
    u.c_x = t.b() / s0.b();
    u.c_m0 = -a_t * phi;
    if (p == 2) {
      const double r1 = (s1->lambda() - s0.lambda()) / h;
      u.c_m0 += a_t * B * 0.5 / r1;
      u.c_m1 = -a_t * B * 0.5 / r1;
    }
    return u;
  }
  // The corrector of order q (1 or 2) of the step s0 -> t just taken (s1 read when q = 2).
  static UniPcUpdate corrector(const SamplingPoint* s1, const SamplingPoint& s0, const SamplingPoint& t, int q) {
    UniPcUpdate u;
    const double h = t.lambda() - s0.lambda(), hh = -h, phi = std::expm1(hh), B = phi, a_t = t.a();
    double rho0 = 0.0, rho_last = 0.5, r1 = 1.0;
    if (q == 2) {
      r1 = (s1->lambda() - s0.lambda()) / h;
      const double k1 = phi / hh - 1.0;
      const double g1 = k1 / B, g2 = (k1 / hh - 0.5) * 2.0 / B;
      rho0 = (g1 - g2) / (1.0 - r1);
      rho_last = g1 - rho0;
    }
    u.c_x = t.b() / s0.b();
    u.c_m0 = -a_t * phi + a_t * B * (rho0 / r1 + rho_last);
    u.c_m1 = -a_t * B * rho0 / r1;
    u.c_mt = -a_t * B * rho_last;
    return u;
  }
  double apply(double x, double m0, double m1, double mt) const { return c_x * x + c_m0 * m0 + c_m1 * m1 + c_mt * mt; }
};

// ---- Score-based samplers on the VP SDE (Song et al. 2021). score = -E / b. A step from abar to abar' > abar is
// one step of the discretised SDE with beta = 1 - abar / abar' (= beta_t between consecutive timesteps: score_sde's
// VPSDE.discretize, which is DDPM's discretisation).
//   reverse diffusion: f = sqrt(1 - beta) x - x, G = sqrt(beta); x' = x - (f - G^2 score) + G z
//   Euler-Maruyama:    reverse drift -beta(t)/2 x - beta(t) score over the step, with beta(t) dt = B, the integrated
//                      beta of the step, B = log(abar' / abar) (= -log(1 - beta_t) ~ beta_t between consecutive
//                      timesteps); x' = x + (B/2) x + B score + sqrt(B) z
// Both add no noise on the last step, to the clean end (score_sde's denoise=True: the last step returns x_mean).
struct ScoreStep {
  double b, c_x, c_score, c_z;

  static ScoreStep reverse_diffusion(const SamplingPoint& from, const SamplingPoint& to) {
    const double beta = 1.0 - from.alpha_bar / to.alpha_bar;
    return {from.b(), 2.0 - std::sqrt(1.0 - beta), beta, to.clean() ? 0.0 : std::sqrt(beta)};
  }
  static ScoreStep euler_maruyama(const SamplingPoint& from, const SamplingPoint& to) {
    const double B = std::log(to.alpha_bar / from.alpha_bar);
    return {from.b(), 1.0 + 0.5 * B, B, to.clean() ? 0.0 : std::sqrt(B)};
  }
  bool noisy() const { return c_z > 0.0; }
  double apply(double x, double E, const double* z) const {
    const double score = -E / b;
    double y = c_x * x + c_score * score;
    if (z != nullptr) y += c_z * *z;
    return y;
  }
};

// ---- Langevin corrector at one noise level (score_sde's LangevinCorrector, VP SDE): with g = score and z ~ N(0, I),
// step = 2 alpha_t (snr * mean_n ||z_n|| / mean_n ||g_n||)^2 (norms per image, averaged over the batch: the step is
// shared by the batch, as in score_sde), x' = x + step g + sqrt(2 step) z.
inline double langevin_step_size(double snr, double alpha_t, double mean_grad_norm, double mean_noise_norm) {
  const double ratio = snr * mean_noise_norm / mean_grad_norm;
  return ratio * ratio * 2.0 * alpha_t;
}

}  // namespace solvers
}  // namespace diffusion
