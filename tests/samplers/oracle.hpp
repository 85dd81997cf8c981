#pragma once
// The exact MMSE noise predictor for Gaussian data and the exact moments of what a sampler makes of it.
//
// Data x0 ~ N(mu, s^2) independently per pixel. Then x_t = sqrt(ab) x0 + sqrt(1-ab) eps ~ N(sqrt(ab) mu,
// ab s^2 + 1 - ab), and E[eps | x_t] = Cov(eps, x_t) / Var(x_t) (x_t - E x_t)
//                                    = sqrt(1-ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab).
// With this predictor every sampler step is affine in x plus independent Gaussian noise, so starting from
// x_T ~ N(0, 1) the output is exactly Gaussian, with a mean and variance that the recursions below compute from the
// step equations (independently of the library's sampler code). Their distance to (mu, s^2) is the sampler's
// discretisation bias; the sample moments of a run must match them up to sampling error.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "diffusion/core/tensor.hpp"
#include "diffusion/process/schedule.hpp"

namespace sampler_test {

struct GaussianOracle {
  const diffusion::NoiseSchedule* schedule;
  double mu, s;
  // eps = A x + B at abar = ab
  void coefficients(double ab, double& A, double& B) const {
    A = std::sqrt(1.0 - ab) / (ab * s * s + 1.0 - ab);
    B = -A * std::sqrt(ab) * mu;
  }
  template <class T>
  void operator()(const diffusion::Tensor<T>& x, const std::vector<std::int64_t>& t, diffusion::Tensor<T>& out) const {
    out.ensure_shape(x.shape());
    const diffusion::Index N = x.dim(0), per = x.numel() / N;
    for (diffusion::Index n = 0; n < N; ++n) {
      double A, B;
      coefficients(schedule->alphas_cumprod[static_cast<std::size_t>(t[static_cast<std::size_t>(n)])], A, B);
      for (diffusion::Index i = n * per; i < (n + 1) * per; ++i)
        out[i] = static_cast<T>(A * static_cast<double>(x[i]) + B);
    }
  }
};

struct Moments {
  double mean = 0.0, var = 1.0;
};

// DDPM (the primer's p_sample, no clipping) from x_T ~ N(0, 1): x_{t-1} = r (x - k eps) + sigma z with
// r = 1/sqrt(alpha_t), k = beta_t / sqrt(1 - ab_t), sigma^2 = posterior variance or beta_t, 0 at t = 0.
inline Moments ddpm_moments(const GaussianOracle& o, bool posterior_variance) {
  const diffusion::NoiseSchedule& s = *o.schedule;
  Moments m;
  for (int t = s.T - 1; t >= 0; --t) {
    double A, B;
    o.coefficients(s.alphas_cumprod[t], A, B);
    const double r = 1.0 / std::sqrt(1.0 - s.betas[t]);
    const double k = s.betas[t] / std::sqrt(1.0 - s.alphas_cumprod[t]);
    const double a = r * (1.0 - k * A), b = -r * k * B;
    const double var_z = t == 0 ? 0.0 : posterior_variance ? s.posterior_variance[t] : s.betas[t];
    m.mean = a * m.mean + b;
    m.var = a * a * m.var + var_z;
  }
  return m;
}

// DDIM (Song et al. eq. 12, no clipping) over ascending timesteps ts from x_T ~ N(0, 1).
inline Moments ddim_moments(const GaussianOracle& o, const std::vector<std::int64_t>& ts, double eta) {
  const diffusion::NoiseSchedule& s = *o.schedule;
  Moments m;
  for (std::size_t j = ts.size(); j-- > 0;) {
    const double ab = s.alphas_cumprod[static_cast<std::size_t>(ts[j])];
    const double ab_prev = j > 0 ? s.alphas_cumprod[static_cast<std::size_t>(ts[j - 1])] : 1.0;
    double A, B;
    o.coefficients(ab, A, B);
    // x0 = (x - sqrt(1-ab) eps) / sqrt(ab) = x0a x + x0b
    const double x0a = (1.0 - std::sqrt(1.0 - ab) * A) / std::sqrt(ab);
    const double x0b = -std::sqrt(1.0 - ab) * B / std::sqrt(ab);
    const double sigma = eta * std::sqrt((1.0 - ab_prev) / (1.0 - ab)) * std::sqrt(1.0 - ab / ab_prev);
    const double c = std::sqrt(std::max(0.0, 1.0 - ab_prev - sigma * sigma));
    const double a = std::sqrt(ab_prev) * x0a + c * A, b = std::sqrt(ab_prev) * x0b + c * B;
    m.mean = a * m.mean + b;
    m.var = a * a * m.var + sigma * sigma;
  }
  return m;
}

// Sample mean and unbiased sample variance, two passes in double.
template <class T>
Moments sample_moments(const diffusion::Tensor<T>& x) {
  const double n = static_cast<double>(x.numel());
  double sum = 0.0;
  for (T v : x) sum += static_cast<double>(v);
  Moments m;
  m.mean = sum / n;
  double ss = 0.0;
  for (T v : x) ss += (static_cast<double>(v) - m.mean) * (static_cast<double>(v) - m.mean);
  m.var = ss / (n - 1.0);
  return m;
}

// Tolerances for the sample moments of n independent N(m, v) draws: z standard errors, with
// SE(mean) = sqrt(v / n) and SE(variance) = v sqrt(2 / (n - 1)) (the sample variance of Gaussian data has variance
// 2 v^2 / (n - 1)). z = 5: a correct sampler fails with probability ~6e-7 per check (and the seeds are fixed).
struct Tolerance {
  double mean, var;
};
inline Tolerance moment_tolerance(const Moments& expected, double n, double z = 5.0) {
  return {z * std::sqrt(expected.var / n), z * expected.var * std::sqrt(2.0 / (n - 1.0))};
}

}  // namespace sampler_test
