#pragma once
// What the network predicts, and how to turn its output into the noise eps and the clean image x0 (Ho et al. 2020
// predict eps; Salimans & Ho 2022, "Progressive distillation", define v). With a = sqrt(abar_t), b = sqrt(1-abar_t)
// and x_t = a x0 + b eps:
//   Epsilon: out = eps          eps = out                 x0 = (x_t - b out) / a
//   X0:      out = x0           eps = (x_t - a out) / b   x0 = out
//   V:       out = a eps - b x0 eps = a out + b x_t       x0 = a x_t - b out
// The training target of each is the quantity it predicts.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "diffusion/core/enum_names.hpp"
#include "diffusion/core/error.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/process/forward_process.hpp"
#include "diffusion/process/schedule.hpp"

namespace diffusion {

enum class Prediction { Epsilon, X0, V };

namespace detail {
// "epsilon" is an alias (last, so that the list reads "eps, x0, v, epsilon"): printed as "eps", parsed either way.
inline constexpr NameEntry<Prediction> kPredictionNames[] = {
    {Prediction::Epsilon, "eps"}, {Prediction::X0, "x0"}, {Prediction::V, "v"}, {Prediction::Epsilon, "epsilon"}};
}  // namespace detail

inline const char* prediction_name(Prediction p) { return detail::enum_name(detail::kPredictionNames, p); }
// "eps" (or "epsilon") | "x0" | "v".
inline Prediction parse_prediction(const std::string& name) {
  return detail::parse_enum(detail::kPredictionNames, name, "prediction type");
}

// The coefficients a = sqrt(abar), b = sqrt(1 - abar) of one timestep, and the scalar conversions. Samplers call
// these in their element loops (double in, double out).
struct NoiseLevel {
  double a;  // sqrt(abar_t)
  double b;  // sqrt(1 - abar_t)
  static NoiseLevel from_alpha_bar(double alpha_bar) { return {std::sqrt(alpha_bar), std::sqrt(1.0 - alpha_bar)}; }
  static NoiseLevel at(const NoiseSchedule& s, std::int64_t t) {
    s.check_timestep(t, "NoiseLevel::at");
    const std::size_t i = static_cast<std::size_t>(t);
    return {s.sqrt_alphas_cumprod[i], s.sqrt_one_minus_alphas_cumprod[i]};
  }
};

inline double eps_from_output(Prediction p, NoiseLevel k, double x_t, double out) {
  switch (p) {
    case Prediction::Epsilon: return out;
    case Prediction::X0: return (x_t - k.a * out) / k.b;
    case Prediction::V: return k.a * out + k.b * x_t;
  }
  return out;
}

inline double x0_from_output(Prediction p, NoiseLevel k, double x_t, double out) {
  switch (p) {
    case Prediction::Epsilon: return (x_t - k.b * out) / k.a;
    case Prediction::X0: return out;
    case Prediction::V: return k.a * x_t - k.b * out;
  }
  return out;
}

inline double target_from(Prediction p, NoiseLevel k, double x0, double noise) {
  switch (p) {
    case Prediction::Epsilon: return noise;
    case Prediction::X0: return x0;
    case Prediction::V: return k.a * noise - k.b * x0;
  }
  return noise;
}

namespace detail {

// y[n, ...] = f(NoiseLevel(t_n), u[n, ...], v[n, ...]) for every image n; y may alias u or v.
template <class T, class F>
void per_image_map(const NoiseSchedule& schedule, const std::vector<std::int64_t>& t, TensorView<T> u,
                   TensorView<T> v, Tensor<T>& y, F f) {
  y.ensure_shape(u.shape());
  const Index N = u.dim(0);
  const Index per_image = N > 0 ? u.numel() / N : 0;
  for (Index n = 0; n < N; ++n) {
    const NoiseLevel k = NoiseLevel::at(schedule, t[static_cast<std::size_t>(n)]);
    const T* pu = u.data() + n * per_image;
    const T* pv = v.data() + n * per_image;
    T* py = y.data() + n * per_image;
    for (Index i = 0; i < per_image; ++i)
      py[i] = static_cast<T>(f(k, static_cast<double>(pu[i]), static_cast<double>(pv[i])));
  }
}

}  // namespace detail

// eps implied by the model output `out` at x_t (both (N, ...)), timesteps t (N,). eps: assigned, may alias out.
template <class T>
void eps_from_output(Prediction p, const NoiseSchedule& schedule, TensorView<T> x_t,
                     const std::vector<std::int64_t>& t, TensorView<T> out, Tensor<T>& eps) {
  check_batch_timesteps(schedule, x_t, t, "eps_from_output: x_t");
  check_shape(out, x_t.shape(), "eps_from_output: model output");
  detail::per_image_map(schedule, t, x_t, out, eps,
                        [p](NoiseLevel k, double x, double o) { return eps_from_output(p, k, x, o); });
}

// x0 implied by the model output `out` at x_t (both (N, ...)), timesteps t (N,). x0: assigned, may alias out.
template <class T>
void x0_from_output(Prediction p, const NoiseSchedule& schedule, TensorView<T> x_t,
                    const std::vector<std::int64_t>& t, TensorView<T> out, Tensor<T>& x0) {
  check_batch_timesteps(schedule, x_t, t, "x0_from_output: x_t");
  check_shape(out, x_t.shape(), "x0_from_output: model output");
  detail::per_image_map(schedule, t, x_t, out, x0,
                        [p](NoiseLevel k, double x, double o) { return x0_from_output(p, k, x, o); });
}

// The regression target for a model predicting `p`, given the clean images x0 (N, ...), the noise that made x_t and
// the timesteps t (N,): eps -> noise, x0 -> x0, v -> sqrt(abar) noise - sqrt(1-abar) x0. target: assigned.
template <class T>
void training_target(Prediction p, const NoiseSchedule& schedule, TensorView<T> x0,
                     const std::vector<std::int64_t>& t, TensorView<T> noise, Tensor<T>& target) {
  check_batch_timesteps(schedule, x0, t, "training_target: x0");
  check_shape(noise, x0.shape(), "training_target: noise");
  detail::per_image_map(schedule, t, x0, noise, target,
                        [p](NoiseLevel k, double x, double e) { return target_from(p, k, x, e); });
}

}  // namespace diffusion
