#pragma once
// Exact output distributions of the stochastic samplers on the Gaussian oracle (oracle.hpp), and the exact solution
// of the probability-flow ODE there.
//
// With the exact MMSE predictor eps = A x + B (per pixel), every sampler step is affine in the current (and, for
// multistep methods, previous) x plus fresh independent noise. So each x is an affine form c + sum_k w_k xi_k over
// independent standard normals (xi_0 = the pixel of x_T, xi_k = the k-th noise draw): its mean is c and its
// variance sum_k w_k^2. The recursions below write each step from its paper / reference formula (not from the
// library's code) on such forms.
//
// Probability-flow ODE for x0 ~ N(mu, s^2), in Karras' form x = x_t / a, sigma = b / a: the denoiser is
// D(x; sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu), dx/dsigma = (x - D) / sigma = (x - mu) sigma / (s^2 + sigma^2),
// so x(sigma) - mu = (x(sigma_0) - mu) sqrt((s^2 + sigma^2) / (s^2 + sigma_0^2)).

#include <cmath>
#include <cstddef>
#include <vector>

#include "diffusion/samplers/sampler_common.hpp"
#include "samplers/oracle.hpp"

namespace sampler_test {

struct Affine {
  double c = 0.0;
  std::vector<double> w;  // coefficients of xi_0 (x_T), xi_1, ...

  double mean() const { return c; }
  double var() const {
    double v = 0.0;
    for (double x : w) v += x * x;
    return v;
  }
};

// p X + q Y + r
inline Affine combine(double p, const Affine& X, double q, const Affine& Y, double r = 0.0) {
  Affine out;
  out.c = p * X.c + q * Y.c + r;
  out.w.assign(std::max(X.w.size(), Y.w.size()), 0.0);
  for (std::size_t k = 0; k < X.w.size(); ++k) out.w[k] += p * X.w[k];
  for (std::size_t k = 0; k < Y.w.size(); ++k) out.w[k] += q * Y.w[k];
  return out;
}

// The generator of the forms: x_T, and a fresh standard normal on every call of noise().
class Forms {
 public:
  Affine x_T() {
    Affine x;
    x.w = {1.0};
    n_ = 1;
    return x;
  }
  Affine noise() {
    Affine z;
    z.w.assign(n_ + 1, 0.0);
    z.w[n_++] = 1.0;
    return z;
  }

 private:
  std::size_t n_ = 1;
};

// The oracle's eps and x0 predictions of a form X at abar: E = A X + B, D = (X - b E) / a.
inline Affine oracle_eps(const GaussianOracle& o, double ab, const Affine& X) {
  double A, B;
  o.coefficients(ab, A, B);
  return combine(A, X, 0.0, X, B);
}
inline Affine oracle_x0(const GaussianOracle& o, double ab, const Affine& X) {
  const Affine E = oracle_eps(o, ab, X);
  const double a = std::sqrt(ab), b = std::sqrt(1.0 - ab);
  return combine(1.0 / a, X, -b / a, E);
}

// The exact PF-ODE solution from x_T (at level `from`, variance-preserving) to level `to`, variance-preserving.
inline double pf_ode_solution(const GaussianOracle& o, double x_T, const diffusion::SamplingPoint& from,
                              const diffusion::SamplingPoint& to) {
  const double s2 = o.s * o.s;
  const double sigma0 = from.sigma(), sigma1 = to.clean() ? 0.0 : to.sigma();
  const double x0 = x_T / from.a();
  const double x1 = o.mu + (x0 - o.mu) * std::sqrt((s2 + sigma1 * sigma1) / (s2 + sigma0 * sigma0));
  return to.a() * x1;
}

}  // namespace sampler_test
