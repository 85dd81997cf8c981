#pragma once
// Ancestral sampling (DDPM; Ho et al. 2020, Algorithm 2; the primer's p_sample / p_sample_loop): from x_T ~ N(0, I)
// through t = T-1, ..., 0:
//   mean = sqrt(1/alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps)                     (eq. 11)
//     or, with the x0 prediction clipped to [-1, 1]:  mean = coef1_t clip(x0) + coef2_t x_t   (posterior mean, eq. 7)
//   x_{t-1} = mean + sqrt(var_t) z,  z ~ N(0, I),  only for t > 0;  var_t = posterior_variance_t (beta tilde) or beta_t
// The step's arithmetic is solvers::DdpmStep; ddpm_sample is sample() with SamplerKind::Ddpm (sample.hpp).

#include <cmath>
#include <cstdint>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/process/forward_process.hpp"
#include "diffusion/process/parameterization.hpp"
#include "diffusion/process/schedule.hpp"
#include "diffusion/samplers/sample.hpp"
#include "diffusion/samplers/sampler_common.hpp"
#include "diffusion/samplers/solvers.hpp"

namespace diffusion {

// DdpmVariance (posterior | beta) is declared in solvers.hpp.

struct DdpmOptions {
  DdpmVariance variance = DdpmVariance::Posterior;
  bool clip_x0 = true;  // clip the predicted x0 to [-1, 1] and use the posterior mean (images live in [-1, 1])
  Prediction prediction = Prediction::Epsilon;
};

// The SamplerOptions of the DDPM sampler with these options.
inline SamplerOptions sampler_options(const DdpmOptions& o) {
  SamplerOptions s;
  s.sampler = SamplerKind::Ddpm;
  s.ddpm_variance = o.variance;
  s.clip = o.clip_x0 ? ClipX0::RederiveEps : ClipX0::None;
  s.prediction = o.prediction;
  return s;
}

// One ancestral step, image by image.
//   x: (N, ...) x_t; t: (N,) in [0, T); model_out: (N, ...) the model's output at (x, t);
//   noise: (N, ...) z ~ N(0, I), read only for images with t_n > 0 (may be nullptr when every t_n is 0);
//   x_prev: resized to x's shape and assigned; may be x itself (element-wise update).
template <class T>
void ddpm_step(const NoiseSchedule& schedule, TensorView<T> x, const std::vector<std::int64_t>& t,
               TensorView<T> model_out, const detail::non_deduced_t<Tensor<T>>* noise, Tensor<T>& x_prev,
               const DdpmOptions& options = {}) {
  check_batch_timesteps(schedule, x, t, "ddpm_step: x");
  check_shape(model_out, x.shape(), "ddpm_step: model output");
  bool needs_noise = false;
  for (std::int64_t tn : t) needs_noise = needs_noise || tn > 0;
  DIFFUSION_CHECK(!needs_noise || noise != nullptr, "ddpm_step: noise is required when some timestep t > 0");
  if (needs_noise) check_shape(*noise, x.shape(), "ddpm_step: noise");
  x_prev.ensure_shape(x.shape());

  const ClipX0 clip = options.clip_x0 ? ClipX0::RederiveEps : ClipX0::None;
  const Index N = x.dim(0);
  const Index per_image = N > 0 ? x.numel() / N : 0;
  for (Index n = 0; n < N; ++n) {
    const std::int64_t tn = t[static_cast<std::size_t>(n)];
    const NoiseLevel k = NoiseLevel::at(schedule, tn);
    const solvers::DdpmStep c = solvers::DdpmStep::at(schedule, tn, options.variance);
    const T* px = x.data() + n * per_image;
    const T* po = model_out.data() + n * per_image;
    const T* pz = tn > 0 ? noise->data() + n * per_image : nullptr;
    T* py = x_prev.data() + n * per_image;
    for (Index j = 0; j < per_image; ++j) {
      const double xv = static_cast<double>(px[j]);
      const Denoised d = denoise_element(options.prediction, clip, k, xv, static_cast<double>(po[j]));
      const double z = pz != nullptr ? static_cast<double>(pz[j]) : 0.0;
      py[j] = static_cast<T>(c.apply(options.clip_x0, xv, d, pz != nullptr ? &z : nullptr));
    }
  }
}

// Runs the T ancestral steps in place (sample() with SamplerKind::Ddpm): x holds x_T (N, ...) on entry and x_0 on
// return. Noise for step t > 0 is x.numel() standard normals drawn from rng (in element order); the last step draws
// none. After each step, callback(step_index, t, x) with step_index = 0 .. T-1 and t = T-1-step_index. The model
// output and noise buffers are allocated once, before the first step.
template <class T, class Model, class Callback = NoCallback>
void ddpm_sample(Model&& model, const NoiseSchedule& schedule, Tensor<T>& x, Rng& rng,
                 const DdpmOptions& options = {}, Callback&& callback = Callback{}) {
  Sampler<T> sampler(schedule, sampler_options(options));
  detail::run_sampler(model, sampler, 0, x, rng, callback, static_cast<const detail::InpaintInputs<T>*>(nullptr),
                      "ddpm_sample");
}

// ddpm_sample from x_T (left unchanged), returning x after every step: T tensors, the last one is x_0 (the primer's
// p_sample_loop returning every image).
template <class T, class Model>
std::vector<Tensor<T>> ddpm_sample_trajectory(Model&& model, const NoiseSchedule& schedule, TensorView<T> x_T,
                                              Rng& rng, const DdpmOptions& options = {}) {
  std::vector<Tensor<T>> trajectory;
  trajectory.reserve(static_cast<std::size_t>(schedule.num_timesteps()));
  Tensor<T> x;
  x.copy_from(x_T);
  ddpm_sample(model, schedule, x, rng, options, [&trajectory](int, std::int64_t, const Tensor<T>& xt) {
    trajectory.emplace_back();
    trajectory.back().copy_from(xt);
  });
  return trajectory;
}

}  // namespace diffusion
