#pragma once
// The forward (noising) process q(x_t | x_0) in closed form, "the nice property" of Ho et al. (2020), eq. 4:
//   x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,   eps ~ N(0, I),
// applied image by image with each image's own timestep t_n (the primer's q_sample), and the uniform timestep draw
// of Algorithm 1, line 3.

#include <cstdint>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/process/schedule.hpp"

namespace diffusion {

// Throws unless x is (N, ...) with rank >= 1 and t holds N timesteps in [0, T). `what` names the caller.
template <class T>
void check_batch_timesteps(const NoiseSchedule& schedule, TensorView<T> x, const std::vector<std::int64_t>& t,
                           const char* what) {
  DIFFUSION_CHECK(x.rank() >= 1, what << ": expected a batch (N, ...), got shape " << x.shape());
  DIFFUSION_CHECK(static_cast<Index>(t.size()) == x.dim(0),
                  what << ": t has " << t.size() << " timesteps for a batch of " << x.dim(0) << " (shape "
                       << x.shape() << ")");
  for (std::int64_t tn : t) schedule.check_timestep(tn, what);
}

// out = sqrt(abar_{t_n}) x0 + sqrt(1 - abar_{t_n}) noise, image by image.
//   x0, noise: (N, ...) same shape; t: (N,) in [0, T); out: resized to x0's shape (assigned; may be x0 or noise).
// Coefficients and arithmetic in double, rounded once to T.
template <class T>
void q_sample(const NoiseSchedule& schedule, TensorView<T> x0, const std::vector<std::int64_t>& t,
              TensorView<T> noise, Tensor<T>& out) {
  check_batch_timesteps(schedule, x0, t, "q_sample: x0");
  check_shape(noise, x0.shape(), "q_sample: noise");
  out.ensure_shape(x0.shape());
  const Index N = x0.dim(0);
  const Index per_image = N > 0 ? x0.numel() / N : 0;
  for (Index n = 0; n < N; ++n) {
    const std::size_t tn = static_cast<std::size_t>(t[static_cast<std::size_t>(n)]);
    const double a = schedule.sqrt_alphas_cumprod[tn];
    const double b = schedule.sqrt_one_minus_alphas_cumprod[tn];
    const T* x = x0.data() + n * per_image;
    const T* e = noise.data() + n * per_image;
    T* y = out.data() + n * per_image;
    for (Index i = 0; i < per_image; ++i)
      y[i] = static_cast<T>(a * static_cast<double>(x[i]) + b * static_cast<double>(e[i]));
  }
}

// Algorithm 1, line 3: t_n ~ Uniform{0, ..., T-1} for n < N, drawn in order from rng. `t` is resized to N.
inline void sample_timesteps(Rng& rng, const NoiseSchedule& schedule, Index N, std::vector<std::int64_t>& t) {
  DIFFUSION_CHECK(N >= 0, "sample_timesteps: batch size N must be >= 0, got " << N);
  t.resize(static_cast<std::size_t>(N));
  for (std::int64_t& tn : t) tn = rng.uniform_int(schedule.num_timesteps());
}

}  // namespace diffusion
