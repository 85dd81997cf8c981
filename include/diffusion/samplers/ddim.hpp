#pragma once
// DDIM sampling (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12) over a subsequence
// tau_1 < ... < tau_S of the T training timesteps, visited from tau_S down to tau_1:
//   x0    = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)          [optionally clipped to [-1, 1]; eps is then
//                                                                  recomputed from the clipped x0]
//   sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)
//   x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z
// where abar_prev is alphas_cumprod at the previous timestep of the sequence (1 after the last one). eta = 0 is the
// deterministic DDIM sampler, eta = 1 DDPM-like ancestral sampling on the subsequence. The step's arithmetic is
// solvers::DdimStep; ddim_sample is sample() with SamplerKind::Ddim (sample.hpp).

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/process/parameterization.hpp"
#include "diffusion/process/schedule.hpp"
#include "diffusion/samplers/sample.hpp"
#include "diffusion/samplers/sampler_common.hpp"
#include "diffusion/samplers/solvers.hpp"
#include "diffusion/samplers/timesteps.hpp"

namespace diffusion {

// DdimSpacing (= TimestepSpacing), ddim_timesteps, ddim_spacing_name and parse_ddim_spacing are in timesteps.hpp.

struct DdimOptions {
  int steps = 50;                                // S, used when `timesteps` is empty
  DdimSpacing spacing = DdimSpacing::Linspace;   // used when `timesteps` is empty
  std::vector<std::int64_t> timesteps;           // an explicit ascending sequence (overrides steps / spacing)
  double eta = 0.0;                              // >= 0; 0: deterministic
  bool clip_x0 = true;                           // clip the predicted x0 to [-1, 1] and re-derive eps from it
                                                 // (images live in [-1, 1]; SamplerOptions::clip has the other
                                                 // convention)
  Prediction prediction = Prediction::Epsilon;
};

// sigma of a step from abar_t to abar_prev.
inline double ddim_sigma(double eta, double alpha_bar_t, double alpha_bar_prev) {
  return solvers::ddim_sigma(eta, alpha_bar_t, alpha_bar_prev);
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
  const solvers::DdimStep c = solvers::DdimStep::make(options.eta, alpha_bar_t, alpha_bar_prev);
  DIFFUSION_CHECK(c.sigma == 0.0 || noise != nullptr, "ddim_step: noise is required when sigma > 0 (eta = "
                                                          << options.eta << ")");
  if (c.sigma > 0.0) check_shape(*noise, x.shape(), "ddim_step: noise");
  x_prev.ensure_shape(x.shape());

  const NoiseLevel k = NoiseLevel::from_alpha_bar(alpha_bar_t);
  const ClipX0 clip = options.clip_x0 ? ClipX0::RederiveEps : ClipX0::None;
  const Index n = x.numel();
  const T* px = x.data();
  const T* po = model_out.data();
  const T* pz = c.sigma > 0.0 ? noise->data() : nullptr;
  T* py = x_prev.data();
  for (Index i = 0; i < n; ++i) {
    const Denoised d = denoise_element(options.prediction, clip, k, static_cast<double>(px[i]), static_cast<double>(po[i]));
    const double z = pz != nullptr ? static_cast<double>(pz[i]) : 0.0;
    py[i] = static_cast<T>(c.apply(d, pz != nullptr ? &z : nullptr));
  }
}

// The sequence DdimOptions selects for a schedule: options.timesteps if given (validated), else ddim_timesteps (or
// karras_timesteps for the karras spacing).
inline std::vector<std::int64_t> ddim_sequence(const NoiseSchedule& schedule, const DdimOptions& options) {
  if (!options.timesteps.empty()) {
    detail::check_timestep_sequence(options.timesteps, schedule.num_timesteps(), "DdimOptions::timesteps");
    return options.timesteps;
  }
  if (options.spacing == TimestepSpacing::Karras) return karras_timesteps(schedule, options.steps);
  return ddim_timesteps(schedule.num_timesteps(), options.steps, options.spacing);
}

// The SamplerOptions of the DDIM sampler with these options over `timesteps` (ddim_sequence).
inline SamplerOptions sampler_options(const DdimOptions& o, std::vector<std::int64_t> timesteps) {
  SamplerOptions s;
  s.sampler = SamplerKind::Ddim;
  s.timesteps = std::move(timesteps);
  s.eta = o.eta;
  s.clip = o.clip_x0 ? ClipX0::RederiveEps : ClipX0::None;
  s.prediction = o.prediction;
  return s;
}

// Runs the S DDIM steps in place (sample() with SamplerKind::Ddim): x holds x_T (N, ...) on entry and x_0 on return.
// A step with sigma > 0 draws x.numel() standard normals from rng (in element order); eta = 0 never touches rng.
// After each step, callback(step_index, t, x) with step_index = 0 .. S-1 and t the timestep just denoised
// (descending).
template <class T, class Model, class Callback = NoCallback>
void ddim_sample(Model&& model, const NoiseSchedule& schedule, Tensor<T>& x, Rng& rng,
                 const DdimOptions& options = {}, Callback&& callback = Callback{}) {
  DIFFUSION_CHECK(x.rank() >= 1 && x.numel() > 0, "ddim_sample: x_T must be a non-empty batch (N, ...), got shape "
                                                      << x.shape());
  DIFFUSION_CHECK(options.eta >= 0.0, "ddim_sample: eta must be >= 0, got " << options.eta);
  Sampler<T> sampler(schedule, sampler_options(options, ddim_sequence(schedule, options)));
  detail::run_sampler(model, sampler, 0, x, rng, callback, static_cast<const detail::InpaintInputs<T>*>(nullptr),
                      "ddim_sample");
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
