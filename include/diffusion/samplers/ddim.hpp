#pragma once
// DDIM sampling (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12) over a subsequence
// tau_1 < ... < tau_S of the T training timesteps, visited from tau_S down to tau_1:
//   x0    = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)          [optionally clipped to [-1, 1]; eps is then
//                                                                  recomputed from the clipped x0]
//   sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)
//   x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z
// where abar_prev is alphas_cumprod at the previous timestep of the sequence (1 after the last one). eta = 0 is the
// deterministic DDIM sampler, eta = 1 DDPM-like ancestral sampling on the subsequence.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/process/parameterization.hpp"
#include "diffusion/process/schedule.hpp"
#include "diffusion/samplers/sampler_common.hpp"

namespace diffusion {

// How the S sampling timesteps are spread over [0, T) (the conventions of common implementations):
enum class DdimSpacing {
  Linspace,  // round(linspace(0, T - 1, S))         (numpy's linspace, round half to even)
  Leading,   // i * (T / S), i = 0 .. S-1             (integer division; the DDIM paper's uniform skip)
  Trailing,  // round(arange(T, 0, -T / S)) - 1       (ends at T - 1)
};

inline const char* ddim_spacing_name(DdimSpacing s) {
  switch (s) {
    case DdimSpacing::Linspace: return "linspace";
    case DdimSpacing::Leading: return "leading";
    case DdimSpacing::Trailing: return "trailing";
  }
  return "?";
}

inline DdimSpacing parse_ddim_spacing(const std::string& name) {
  for (DdimSpacing s : {DdimSpacing::Linspace, DdimSpacing::Leading, DdimSpacing::Trailing})
    if (name == ddim_spacing_name(s)) return s;
  DIFFUSION_CHECK(false, "parse_ddim_spacing: unknown spacing '" << name << "' (valid: linspace, leading, trailing)");
  return DdimSpacing::Linspace;
}

namespace detail {

// numpy.round: to the nearest integer, halves to even.
inline double round_half_even(double v) {
  const double r = std::round(v);  // halves away from zero
  if (std::fabs(v - std::trunc(v)) == 0.5) return 2.0 * std::round(v / 2.0);
  return r;
}

// Throws unless ts is ascending, distinct and within [0, T).
inline void check_timestep_sequence(const std::vector<std::int64_t>& ts, int T, const char* what) {
  DIFFUSION_CHECK(!ts.empty(), what << ": empty timestep sequence");
  for (std::size_t i = 0; i < ts.size(); ++i) {
    DIFFUSION_CHECK(ts[i] >= 0 && ts[i] < T, what << ": timestep " << ts[i] << " (entry " << i << ") outside [0, "
                                                  << T << ")");
    DIFFUSION_CHECK(i == 0 || ts[i] > ts[i - 1], what << ": timesteps must be strictly ascending, entry " << i
                                                      << " is " << ts[i] << " after " << ts[i - 1]);
  }
}

}  // namespace detail

// The S sampling timesteps out of T, ascending and distinct, within [0, T) (sampling visits them in descending
// order). Matches tests/golden/reference.py's ddim_timesteps, which evaluates them in float64 numpy; where numpy's
// float arange yields one element too many for Trailing (a trailing -1, e.g. T = 200, S = 29) exactly S are kept.
inline std::vector<std::int64_t> ddim_timesteps(int T, int S, DdimSpacing spacing) {
  DIFFUSION_CHECK(T >= 1, "ddim_timesteps: number of timesteps T must be >= 1, got " << T);
  DIFFUSION_CHECK(S >= 1 && S <= T, "ddim_timesteps: number of sampling steps S must be in [1, T = " << T
                                                                                                   << "], got " << S);
  std::vector<std::int64_t> ts(static_cast<std::size_t>(S));
  switch (spacing) {
    case DdimSpacing::Linspace: {
      // numpy.linspace(0, T-1, S): i * ((T-1) / (S-1)), the last entry exactly T-1
      const double step = S > 1 ? static_cast<double>(T - 1) / (S - 1) : 0.0;
      for (int i = 0; i < S; ++i) {
        const double v = i == S - 1 && S > 1 ? static_cast<double>(T - 1) : i * step;
        ts[static_cast<std::size_t>(i)] = static_cast<std::int64_t>(detail::round_half_even(v));
      }
      break;
    }
    case DdimSpacing::Leading:
      for (int i = 0; i < S; ++i) ts[static_cast<std::size_t>(i)] = static_cast<std::int64_t>(i) * (T / S);
      break;
    case DdimSpacing::Trailing: {
      // numpy.arange(T, 0, -T/S) fills start + i * ((start + delta) - start)
      const double start = static_cast<double>(T);
      const double delta = (start + (-static_cast<double>(T) / S)) - start;
      for (int i = 0; i < S; ++i)  // descending; stored ascending
        ts[static_cast<std::size_t>(S - 1 - i)] =
            static_cast<std::int64_t>(detail::round_half_even(start + i * delta)) - 1;
      break;
    }
  }
  detail::check_timestep_sequence(ts, T, "ddim_timesteps");
  return ts;
}

struct DdimOptions {
  int steps = 50;                                // S, used when `timesteps` is empty
  DdimSpacing spacing = DdimSpacing::Linspace;   // used when `timesteps` is empty
  std::vector<std::int64_t> timesteps;           // an explicit ascending sequence (overrides steps / spacing)
  double eta = 0.0;                              // >= 0; 0: deterministic
  bool clip_x0 = false;                          // clip the predicted x0 to [-1, 1]
  Prediction prediction = Prediction::Epsilon;
};

// sigma of a step from abar_t to abar_prev.
inline double ddim_sigma(double eta, double alpha_bar_t, double alpha_bar_prev) {
  return eta * std::sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)) * std::sqrt(1.0 - alpha_bar_t / alpha_bar_prev);
}

// One DDIM step for the whole batch (every image at the same timestep).
//   x: (N, ...) x_t; model_out: (N, ...) the model's output at x_t; alpha_bar_t, alpha_bar_prev: abar at t and at
//   the previous timestep of the sequence (1 after the last); options: eta, clip_x0, prediction (the sequence fields
//   are ignored); noise: (N, ...) z, read only when sigma > 0 (may be nullptr otherwise);
//   x_prev: resized to x's shape and assigned; may be x itself.
template <class T>
void ddim_step(TensorView<T> x, TensorView<T> model_out, double alpha_bar_t, double alpha_bar_prev,
               const DdimOptions& options, const detail::non_deduced_t<Tensor<T>>* noise, Tensor<T>& x_prev) {
  check_shape(model_out, x.shape(), "ddim_step: model output");
  DIFFUSION_CHECK(alpha_bar_t > 0.0 && alpha_bar_t < 1.0,
                  "ddim_step: alpha_bar_t must be in (0, 1), got " << alpha_bar_t);
  DIFFUSION_CHECK(alpha_bar_prev > 0.0 && alpha_bar_prev <= 1.0,
                  "ddim_step: alpha_bar_prev must be in (0, 1], got " << alpha_bar_prev);
  DIFFUSION_CHECK(options.eta >= 0.0, "ddim_step: eta must be >= 0, got " << options.eta);
  const double sigma = ddim_sigma(options.eta, alpha_bar_t, alpha_bar_prev);
  DIFFUSION_CHECK(sigma == 0.0 || noise != nullptr, "ddim_step: noise is required when sigma > 0 (eta = "
                                                        << options.eta << ")");
  if (sigma > 0.0) check_shape(*noise, x.shape(), "ddim_step: noise");
  x_prev.ensure_shape(x.shape());

  const NoiseLevel k = NoiseLevel::from_alpha_bar(alpha_bar_t);
  const double a_prev = std::sqrt(alpha_bar_prev);
  // 1 - abar_prev - sigma^2 >= 0 for eta <= 1 (it is (1 - abar_prev) abar_t (1/abar_prev - 1) / (1 - abar_t) at
  // eta = 1); clamped at 0 so that rounding, or eta > 1, cannot produce a NaN.
  const double c_eps = std::sqrt(std::max(0.0, 1.0 - alpha_bar_prev - sigma * sigma));
  const Index n = x.numel();
  const T* px = x.data();
  const T* po = model_out.data();
  const T* pz = sigma > 0.0 ? noise->data() : nullptr;
  T* py = x_prev.data();
  for (Index i = 0; i < n; ++i) {
    const double xv = static_cast<double>(px[i]), ov = static_cast<double>(po[i]);
    double x0 = x0_from_output(options.prediction, k, xv, ov);
    double eps;
    if (options.clip_x0) {
      x0 = x0 < -1.0 ? -1.0 : x0 > 1.0 ? 1.0 : x0;
      eps = (xv - k.a * x0) / k.b;
    } else {
      eps = eps_from_output(options.prediction, k, xv, ov);
    }
    double y = a_prev * x0 + c_eps * eps;
    if (pz != nullptr) y += sigma * static_cast<double>(pz[i]);
    py[i] = static_cast<T>(y);
  }
}

// The sequence DdimOptions selects for a schedule: options.timesteps if given (validated), else ddim_timesteps.
inline std::vector<std::int64_t> ddim_sequence(const NoiseSchedule& schedule, const DdimOptions& options) {
  if (!options.timesteps.empty()) {
    detail::check_timestep_sequence(options.timesteps, schedule.num_timesteps(), "DdimOptions::timesteps");
    return options.timesteps;
  }
  return ddim_timesteps(schedule.num_timesteps(), options.steps, options.spacing);
}

// Runs the S DDIM steps in place: x holds x_T (N, ...) on entry and x_0 on return. A step with sigma > 0 draws
// x.numel() standard normals from rng (in element order); eta = 0 never touches rng. After each step,
// callback(step_index, t, x) with step_index = 0 .. S-1 and t the timestep just denoised (descending).
template <class T, class Model, class Callback = NoCallback>
void ddim_sample(Model&& model, const NoiseSchedule& schedule, Tensor<T>& x, Rng& rng,
                 const DdimOptions& options = {}, Callback&& callback = Callback{}) {
  DIFFUSION_CHECK(x.rank() >= 1 && x.numel() > 0, "ddim_sample: x_T must be a non-empty batch (N, ...), got shape "
                                                      << x.shape());
  DIFFUSION_CHECK(options.eta >= 0.0, "ddim_sample: eta must be >= 0, got " << options.eta);
  const std::vector<std::int64_t> ts = ddim_sequence(schedule, options);
  Tensor<T> out(x.shape());    // (N, ...) model output
  Tensor<T> noise(x.shape());  // (N, ...) z
  std::vector<std::int64_t> t(static_cast<std::size_t>(x.dim(0)));
  const int S = static_cast<int>(ts.size());
  for (int step = 0; step < S; ++step) {
    const std::size_t i = static_cast<std::size_t>(S - 1 - step);
    const std::int64_t tn = ts[i];
    const double ab_t = schedule.alphas_cumprod[static_cast<std::size_t>(tn)];
    const double ab_prev = i > 0 ? schedule.alphas_cumprod[static_cast<std::size_t>(ts[i - 1])] : 1.0;
    for (std::int64_t& v : t) v = tn;
    detail::run_model(model, x, t, out, "ddim_sample");
    const bool noisy = ddim_sigma(options.eta, ab_t, ab_prev) > 0.0;
    if (noisy) rng.normal(noise.data(), noise.numel());
    ddim_step(x, out, ab_t, ab_prev, options, noisy ? &noise : nullptr, x);
    callback(step, tn, static_cast<const Tensor<T>&>(x));
  }
}

// ddim_sample from x_T (left unchanged), returning x after every step: S tensors, the last one is x_0.
template <class T, class Model>
std::vector<Tensor<T>> ddim_sample_trajectory(Model&& model, const NoiseSchedule& schedule, TensorView<T> x_T,
                                              Rng& rng, const DdimOptions& options = {}) {
  std::vector<Tensor<T>> trajectory;
  Tensor<T> x;
  x.copy_from(x_T);
  ddim_sample(model, schedule, x, rng, options, [&trajectory](int, std::int64_t, const Tensor<T>& xt) {
    trajectory.emplace_back();
    trajectory.back().copy_from(xt);
  });
  return trajectory;
}

}  // namespace diffusion
