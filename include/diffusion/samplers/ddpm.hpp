#pragma once
// Ancestral sampling (DDPM; Ho et al. 2020, Algorithm 2; the primer's p_sample / p_sample_loop): from x_T ~ N(0, I)
// through t = T-1, ..., 0:
//   mean = sqrt(1/alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps)                     (eq. 11)
//     or, with the x0 prediction clipped to [-1, 1]:  mean = coef1_t clip(x0) + coef2_t x_t   (posterior mean, eq. 7)
//   x_{t-1} = mean + sqrt(var_t) z,  z ~ N(0, I),  only for t > 0;  var_t = posterior_variance_t (beta tilde) or beta_t

#include <cmath>
#include <cstdint>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/process/forward_process.hpp"
#include "diffusion/process/parameterization.hpp"
#include "diffusion/process/schedule.hpp"
#include "diffusion/samplers/sampler_common.hpp"

namespace diffusion {

enum class DdpmVariance {
  Posterior,  // posterior_variance_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) (the primer's choice)
  Beta,       // beta_t (the upper bound of Ho et al. sec. 3.2)
};

struct DdpmOptions {
  DdpmVariance variance = DdpmVariance::Posterior;
  bool clip_x0 = false;  // clip the predicted x0 to [-1, 1] and use the posterior mean
  Prediction prediction = Prediction::Epsilon;
};

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

  const Index N = x.dim(0);
  const Index per_image = N > 0 ? x.numel() / N : 0;
  for (Index n = 0; n < N; ++n) {
    const std::int64_t tn = t[static_cast<std::size_t>(n)];
    const std::size_t i = static_cast<std::size_t>(tn);
    const NoiseLevel k = NoiseLevel::at(schedule, tn);
    const double variance =
        options.variance == DdpmVariance::Posterior ? schedule.posterior_variance[i] : schedule.betas[i];
    const double sigma = tn > 0 ? std::sqrt(variance) : 0.0;  // no noise on the last step (t = 0)
    const double sqrt_recip_alpha = schedule.sqrt_recip_alphas[i];
    const double eps_coef = schedule.betas[i] / schedule.sqrt_one_minus_alphas_cumprod[i];
    const double coef1 = schedule.posterior_mean_coef1[i], coef2 = schedule.posterior_mean_coef2[i];
    const T* px = x.data() + n * per_image;
    const T* po = model_out.data() + n * per_image;
    const T* pz = tn > 0 ? noise->data() + n * per_image : nullptr;
    T* py = x_prev.data() + n * per_image;
    for (Index j = 0; j < per_image; ++j) {
      const double xv = static_cast<double>(px[j]), ov = static_cast<double>(po[j]);
      double mean;
      if (options.clip_x0) {
        double x0 = x0_from_output(options.prediction, k, xv, ov);
        x0 = x0 < -1.0 ? -1.0 : x0 > 1.0 ? 1.0 : x0;
        mean = coef1 * x0 + coef2 * xv;
      } else {
        mean = sqrt_recip_alpha * (xv - eps_coef * eps_from_output(options.prediction, k, xv, ov));
      }
      py[j] = static_cast<T>(pz != nullptr ? mean + sigma * static_cast<double>(pz[j]) : mean);
    }
  }
}

// Runs the T ancestral steps in place: x holds x_T (N, ...) on entry and x_0 on return. Noise for step t > 0 is
// x.numel() standard normals drawn from rng (in element order); the last step draws none. After each step,
// callback(step_index, t, x) with step_index = 0 .. T-1 and t = T-1-step_index. The model output and noise buffers
// are allocated once, before the first step.
template <class T, class Model, class Callback = NoCallback>
void ddpm_sample(Model&& model, const NoiseSchedule& schedule, Tensor<T>& x, Rng& rng,
                 const DdpmOptions& options = {}, Callback&& callback = Callback{}) {
  DIFFUSION_CHECK(x.rank() >= 1 && x.numel() > 0, "ddpm_sample: x_T must be a non-empty batch (N, ...), got shape "
                                                      << x.shape());
  Tensor<T> out(x.shape());    // (N, ...) model output
  Tensor<T> noise(x.shape());  // (N, ...) z
  std::vector<std::int64_t> t(static_cast<std::size_t>(x.dim(0)));
  for (int step = 0; step < schedule.num_timesteps(); ++step) {
    const std::int64_t tn = schedule.num_timesteps() - 1 - step;
    for (std::int64_t& v : t) v = tn;
    detail::run_model(model, x, t, out, "ddpm_sample");
    if (tn > 0) rng.normal(noise.data(), noise.numel());
    ddpm_step(schedule, x, t, out, tn > 0 ? &noise : nullptr, x, options);
    callback(step, tn, static_cast<const Tensor<T>&>(x));
  }
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
