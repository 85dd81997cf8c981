// The samplers on the Gaussian oracle (exact MMSE model, oracle.hpp):
//  - the ODE solvers (Euler, DDIM, Heun, DPM-Solver++(2M), UniPC) converge to the exact probability-flow ODE solution at
//    their order: the log-log slope of the error against the step count is fitted and asserted;
//  - the stochastic samplers (Euler ancestral, DPM-Solver++(2M) SDE, reverse diffusion, Euler-Maruyama, the
//    predictor-corrector sampler) produce samples whose mean and variance equal the exact ones of the discretised
//    sampler (exact_moments.hpp) within bounds derived from the sample count, and are close to N(mu, s^2).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "diffusion/core/random.hpp"
#include "diffusion/samplers/sample.hpp"
#include "samplers/exact_moments.hpp"
#include "samplers/oracle.hpp"

using namespace diffusion;
using sampler_test::Affine;
using sampler_test::combine;

namespace {

// Least-squares slope of log(err) against log(n).
double loglog_slope(const std::vector<int>& ns, const std::vector<double>& errs) {
  double sx = 0.0, sy = 0.0, sxx = 0.0, sxy = 0.0;
  const double m = static_cast<double>(ns.size());
  for (std::size_t i = 0; i < ns.size(); ++i) {
    const double x = std::log(static_cast<double>(ns[i])), y = std::log(errs[i]);
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
  }
  return (m * sxy - sx * sy) / (m * sxx - sx * sx);
}

// The error of a run of N steps at the last noisy level, sigma_min (before the final step to the clean image, the
// same map for every N, which would add an N-independent error floor): max over x_T values of |x - exact|.
double ode_error(SamplerKind kind, TimestepSpacing spacing, int N, const NoiseSchedule& s,
                 const sampler_test::GaussianOracle& oracle) {
  SamplerOptions o;
  o.sampler = kind;
  o.steps = N;
  o.spacing = spacing;
  o.clip = ClipX0::None;
  const std::vector<double> xs = {-2.0, -0.5, 0.7, 1.9};
  Tensor<double> x(Shape{static_cast<Index>(xs.size()), 1, 1, 1});
  for (std::size_t i = 0; i < xs.size(); ++i) x[static_cast<Index>(i)] = xs[i];
  const std::vector<SamplingPoint> points = sampling_plan(s, o);
  Tensor<double> at_min;
  Rng rng(0);
  sample(oracle, s, x, rng, o, [&](int step, std::int64_t, const Tensor<double>& xt) {
    if (step == N - 2) at_min.copy_from(xt);
  });
  REQUIRE(rng.state().position == 0);  // deterministic
  double err = 0.0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double want = sampler_test::pf_ode_solution(oracle, xs[i], points.front(), points[points.size() - 2]);
    err = std::max(err, std::fabs(at_min[static_cast<Index>(i)] - want));
  }
  return err;
}

}  // namespace

TEST_CASE("ODE solvers converge to the probability-flow ODE solution at their order") {
  const NoiseSchedule s(BetaSchedule::Linear, 1000);
  const sampler_test::GaussianOracle oracle{&s, 0.3, 0.5};
  struct Case {
    SamplerKind kind;
    TimestepSpacing spacing;
    std::vector<int> ns;
    double order;
  };
  // Measured slopes: see the notes. The asymptotic order shows from these step counts on; DPM-Solver++(2M) on
  // linspace timesteps needs more, its first steps in lambda are very long. UniPC (third order with its corrector)
  // is fitted below 64 steps: beyond that the Karras sigmas near sigma_min are denser than the training grid, its
  // bottom timesteps become 0, 1, 2, ... whatever the step count, and that part of the error stops shrinking
  // (an error floor of ~4e-5 at 320 steps, below the second-order methods' errors).
  const std::vector<int> karras = {20, 40, 80, 160, 320};
  for (const Case& c : {Case{SamplerKind::Euler, TimestepSpacing::Karras, karras, 1.0},
                        Case{SamplerKind::Euler, TimestepSpacing::Linspace, {10, 20, 40, 80, 160}, 1.0},
                        Case{SamplerKind::Ddim, TimestepSpacing::Karras, karras, 1.0},
                        Case{SamplerKind::Ddim, TimestepSpacing::Linspace, {10, 20, 40, 80, 160}, 1.0},
                        Case{SamplerKind::Heun, TimestepSpacing::Karras, karras, 2.0},
                        Case{SamplerKind::Heun, TimestepSpacing::Linspace, {10, 20, 40, 80, 160}, 2.0},
                        Case{SamplerKind::DpmPp2M, TimestepSpacing::Karras, karras, 2.0},
                        Case{SamplerKind::DpmPp2M, TimestepSpacing::Linspace, {40, 80, 160, 320, 640}, 2.0},
                        Case{SamplerKind::UniPc, TimestepSpacing::Karras, {16, 24, 32, 48, 64}, 3.0}}) {
    std::vector<double> errs;
    for (int n : c.ns) errs.push_back(ode_error(c.kind, c.spacing, n, s, oracle));
    const double order = -loglog_slope(c.ns, errs);
    std::string table;
    for (std::size_t i = 0; i < c.ns.size(); ++i) table += " " + std::to_string(c.ns[i]) + ":" + std::to_string(errs[i]);
    INFO(sampler_name(c.kind) << " " << spacing_name(c.spacing) << ": errors" << table << ", fitted order " << order);
    WARN(sampler_name(c.kind) << " " << spacing_name(c.spacing) << ": fitted order " << order << " (errors" << table
                              << ")");
    for (std::size_t i = 1; i < errs.size(); ++i) REQUIRE(errs[i] < errs[i - 1]);
    REQUIRE(std::isfinite(order));
    REQUIRE(order >= c.order - 0.1);
    REQUIRE(order <= c.order + 0.25);
  }
}

TEST_CASE("Euler on the probability-flow ODE is DDIM with eta = 0") {
  const NoiseSchedule s(BetaSchedule::Cosine, 300);
  const sampler_test::GaussianOracle oracle{&s, -0.2, 0.6};
  Tensor<double> x_T(Shape{2, 1, 4, 4});
  Rng(5).normal(x_T.data(), x_T.numel());
  for (TimestepSpacing spacing : {TimestepSpacing::Trailing, TimestepSpacing::Karras}) {
    for (ClipX0 clip : {ClipX0::None, ClipX0::RederiveEps}) {
      SamplerOptions o;
      o.steps = 12;
      o.spacing = spacing;
      o.clip = clip;
      Rng r1(1), r2(1);
      Tensor<double> a, b;
      a.copy_from(x_T);
      b.copy_from(x_T);
      o.sampler = SamplerKind::Ddim;
      sample(oracle, s, a, r1, o);
      o.sampler = SamplerKind::Euler;
      sample(oracle, s, b, r2, o);
      double worst = 0.0;
      for (Index i = 0; i < a.numel(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
      INFO(spacing_name(spacing) << ", clip " << clip_x0_name(clip) << ": max difference " << worst);
      REQUIRE(worst <= 1e-12);
    }
  }
}

namespace {

using sampler_test::GaussianOracle;
using sampler_test::Moments;

// Exact moments of each stochastic sampler over `points`, written from the reference formulas on affine forms.
// Langevin's step size uses the expected norms, step_scale multiplies it (the sensitivity check).
Moments exact_moments(SamplerKind kind, const GaussianOracle& o, const NoiseSchedule& s,
                      const std::vector<SamplingPoint>& points, double eta, double snr, int corrector_steps,
                      double step_scale = 1.0) {
  sampler_test::Forms forms;
  Affine x = forms.x_T();
  Affine prev_D;
  double h_last = 0.0;
  for (std::size_t i = 0; i + 1 < points.size(); ++i) {
    const SamplingPoint& p = points[i];
    const SamplingPoint& q = points[i + 1];
    const double ab = p.alpha_bar, a = std::sqrt(ab), b = std::sqrt(1.0 - ab);
    const double a2 = std::sqrt(q.alpha_bar);
    const double sig = b / a, sig2 = q.clean() ? 0.0 : std::sqrt(1.0 - q.alpha_bar) / a2;
    switch (kind) {
      case SamplerKind::EulerAncestral: {  // k-diffusion sample_euler_ancestral, in x / a
        const Affine D = sampler_test::oracle_x0(o, ab, x);
        const Affine xv = combine(1.0 / a, x, 0.0, x);
        double up = 0.0, down = sig2;
        if (eta > 0.0) {
          up = std::min(sig2, eta * std::sqrt(sig2 * sig2 * (sig * sig - sig2 * sig2) / (sig * sig)));
          down = std::sqrt(sig2 * sig2 - up * up);
        }
        const Affine d = combine(1.0 / sig, xv, -1.0 / sig, D);
        Affine y = combine(1.0, xv, down - sig, d);
        if (q.clean() == false && up > 0.0) y = combine(1.0, y, up, forms.noise());
        x = combine(a2, y, 0.0, y);
        break;
      }
      case SamplerKind::DpmPp2MSde: {  // Lu et al. 2022 SDE-DPM-Solver++(2M), k-diffusion's midpoint form
        const Affine D = sampler_test::oracle_x0(o, ab, x);
        if (q.clean()) {
          x = D;
        } else {
          const double lam = std::log(a / b), lam2 = std::log(a2 / std::sqrt(1.0 - q.alpha_bar));
          const double h = lam2 - lam, eh = eta * h;
          Affine y = combine(sig2 / sig * std::exp(-eh) / a, x, -std::expm1(-h - eh), D);
          if (i > 0) y = combine(1.0, y, 0.5 * -std::expm1(-h - eh) * (h / h_last), combine(1.0, D, -1.0, prev_D));
          if (eta > 0.0) y = combine(1.0, y, sig2 * std::sqrt(-std::expm1(-2.0 * eh)), forms.noise());
          x = combine(a2, y, 0.0, y);
          h_last = h;
        }
        prev_D = D;
        break;
      }
      case SamplerKind::PredictorCorrector:
        for (int k = 0; k < corrector_steps; ++k) {  // score_sde LangevinCorrector, expected norms
          double A, B;
          o.coefficients(ab, A, B);
          const double m = x.mean(), v = x.var();
          const double g2 = (A * A * (v + m * m) + 2.0 * A * B * m + B * B) / (b * b);  // E[score^2]
          const double alpha = s.alphas[static_cast<std::size_t>(p.t)];
          const double step = step_scale * 2.0 * alpha * snr * snr / g2;
          const Affine g = combine(-A / b, x, 0.0, x, -B / b);
          x = combine(1.0, x, step, g);
          x = combine(1.0, x, std::sqrt(2.0 * step), forms.noise());
        }
        [[fallthrough]];
      case SamplerKind::ReverseDiffusion:
      case SamplerKind::EulerMaruyama: {  // score_sde predictors, score = -E / b
        double A, B;
        o.coefficients(ab, A, B);
        const Affine score = combine(-A / b, x, 0.0, x, -B / b);
        if (kind == SamplerKind::EulerMaruyama) {
          const double Bs = std::log(q.alpha_bar / ab);  // beta(t) dt of the step
          x = combine(1.0 + 0.5 * Bs, x, Bs, score);
          if (!q.clean()) x = combine(1.0, x, std::sqrt(Bs), forms.noise());
        } else {
          const double beta = 1.0 - ab / q.alpha_bar;  // VPSDE.discretize of the step
          x = combine(2.0 - std::sqrt(1.0 - beta), x, beta, score);
          if (!q.clean()) x = combine(1.0, x, std::sqrt(beta), forms.noise());
        }
        break;
      }
      default: FAIL("no exact moments for " << sampler_name(kind));
    }
  }
  Moments m;
  m.mean = x.mean();
  m.var = x.var();
  return m;
}

}  // namespace

TEST_CASE("stochastic samplers with the exact MMSE predictor sample their exact moments") {
  const NoiseSchedule s(BetaSchedule::Linear, 1000);
  const double mu = 0.3, sd = 0.5;
  const GaussianOracle oracle{&s, mu, sd};
  const Shape shape{16, 1, 64, 64};  // 65536 independent pixels
  const double n = static_cast<double>(shape.numel());
  struct Case {
    SamplerKind kind;
    int steps;
    TimestepSpacing spacing;
    double eta;
    double mean_bias, var_bias;  // bounds on |exact - target|: the discretisation bias, measured (see below)
  };
  // Exact biases (mean / variance) at these settings: euler_ancestral -3.0e-6 / -0.0550 and -2.7e-4 / -0.0595,
  // dpmpp_2m_sde -3.0e-6 / +0.0393 and -3.1e-5 / +0.0306, reverse_diffusion -1.7e-3 / +0.0152, euler_maruyama
  // -8.1e-4 / +0.0120, pc -1.8e-3 / +0.0170. They shrink with the step count (checked below at 4x the steps):
  // like 1/N for Euler ancestral and the score-SDE predictors, like 1/N^2 for DPM-Solver++(2M) SDE; the
  // predictor-corrector sampler levels off at +0.006 on the variance from 200 steps on, the bias of the unadjusted
  // Langevin corrector at snr 0.16 (about s^2 snr^2 = 0.0064 at the last level).
  int cases = 0;
  for (const Case& c : {Case{SamplerKind::EulerAncestral, 50, TimestepSpacing::Karras, 1.0, 1e-4, 0.06},
                        Case{SamplerKind::EulerAncestral, 25, TimestepSpacing::Linspace, 0.5, 5e-4, 0.065},
                        Case{SamplerKind::DpmPp2MSde, 25, TimestepSpacing::Karras, 1.0, 1e-4, 0.045},
                        Case{SamplerKind::DpmPp2MSde, 25, TimestepSpacing::Karras, 0.6, 1e-4, 0.035},
                        Case{SamplerKind::ReverseDiffusion, 100, TimestepSpacing::Linspace, 0.0, 2e-3, 0.017},
                        Case{SamplerKind::EulerMaruyama, 100, TimestepSpacing::Linspace, 0.0, 1e-3, 0.013},
                        Case{SamplerKind::PredictorCorrector, 50, TimestepSpacing::Linspace, 0.0, 2e-3, 0.02}}) {
    SamplerOptions o;
    o.sampler = c.kind;
    o.steps = c.steps;
    o.spacing = c.spacing;
    o.eta = c.eta;
    o.clip = ClipX0::None;
    const std::vector<SamplingPoint> points = sampling_plan(s, o);
    const Moments exact = exact_moments(c.kind, oracle, s, points, c.eta, o.snr, o.corrector_steps);
    const std::string what = std::string(sampler_name(c.kind)) + " " + spacing_name(c.spacing) + " " +
                             std::to_string(c.steps) + " steps, eta " + std::to_string(c.eta);
    INFO(what << ": exact mean " << exact.mean << " var " << exact.var);
    REQUIRE(std::fabs(exact.mean - mu) <= c.mean_bias);
    REQUIRE(std::fabs(exact.var - sd * sd) <= c.var_bias);
    {  // the bias shrinks with the step count (the Langevin corrector's own bias stays: see above)
      SamplerOptions fine = o;
      fine.steps = 4 * c.steps;
      const Moments e = exact_moments(c.kind, oracle, s, sampling_plan(s, fine), c.eta, o.snr, o.corrector_steps);
      INFO("at " << fine.steps << " steps: exact mean " << e.mean << " var " << e.var);
      REQUIRE(std::fabs(e.var - sd * sd) < (c.kind == SamplerKind::PredictorCorrector ? 0.5 : 0.35) *
                                               std::fabs(exact.var - sd * sd));
    }

    Tensor<float> x(shape);
    Rng rng(4242);
    rng.normal(x.data(), x.numel());
    sample(oracle, s, x, rng, o);
    const Moments got = sampler_test::sample_moments(x);
    sampler_test::Tolerance tol = sampler_test::moment_tolerance(exact, n);
    if (c.kind == SamplerKind::PredictorCorrector) {
      // The Langevin step uses the batch's mean norms (random, relative sd ~0.3% here); the exact moments above use
      // their expectations. Allow the change of the exact moments over step sizes 2% off either way, and require it
      // to be small against the statistical tolerance.
      double dm = 0.0, dv = 0.0;
      for (double scale : {0.98, 1.02}) {
        const Moments e = exact_moments(c.kind, oracle, s, points, c.eta, o.snr, o.corrector_steps, scale);
        dm = std::max(dm, std::fabs(e.mean - exact.mean));
        dv = std::max(dv, std::fabs(e.var - exact.var));
      }
      INFO("step-size sensitivity: mean " << dm << ", var " << dv);
      REQUIRE(dm <= 0.2 * tol.mean);
      REQUIRE(dv <= 0.2 * tol.var);
      tol.mean += dm;
      tol.var += dv;
    }
    CAPTURE(got.mean, got.var, tol.mean, tol.var);
    WARN(what << ": sample mean " << got.mean << " var " << got.var << "; exact " << exact.mean << " / " << exact.var
              << " (bias " << exact.mean - mu << " / " << exact.var - sd * sd << "); tolerance " << tol.mean << " / "
              << tol.var);
    REQUIRE(std::fabs(got.mean - exact.mean) <= tol.mean);
    REQUIRE(std::fabs(got.var - exact.var) <= tol.var);
    ++cases;
  }
  REQUIRE(cases == 7);
}
