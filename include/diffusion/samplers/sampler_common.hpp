#pragma once
// Pieces shared by the samplers. The network is any callable
//   model(const Tensor<T>& x_t /* (N, ...) */, const std::vector<std::int64_t>& t /* (N,) */, Tensor<T>& out)
// that writes its output (interpreted per Prediction) into `out`, resizing it to x_t's shape. Samplers know nothing
// of the U-Net. A callback(int step_index, std::int64_t t, const Tensor<T>& x) sees x after every step.
//
// Also here: the name tables of the samplers' enums, the x0 clipping conventions, the noise level of a point of a
// sampling plan, and the element loop every update runs in.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "diffusion/core/enum_names.hpp"
#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/process/parameterization.hpp"

namespace diffusion {

// The default callback: does nothing.
struct NoCallback {
  template <class T>
  void operator()(int, std::int64_t, const Tensor<T>&) const {}
};

namespace detail {

// Keeps a parameter out of template argument deduction (C++20's std::type_identity_t), so that nullptr can be
// passed for an optional `const Tensor<T>*`.
template <class U>
struct NonDeduced {
  using type = U;
};
template <class U>
using non_deduced_t = typename NonDeduced<U>::type;

// Whether Model can be called as the samplers call it.
template <class Model, class T>
inline constexpr bool is_model_v =
    std::is_invocable_v<Model&, const Tensor<T>&, const std::vector<std::int64_t>&, Tensor<T>&>;

// Calls the model and checks that it produced an output shaped like x.
template <class T, class Model>
void run_model(Model& model, const Tensor<T>& x, const std::vector<std::int64_t>& t, Tensor<T>& out,
               const char* sampler) {
  model(x, t, out);
  DIFFUSION_CHECK(out.shape() == x.shape(), sampler << ": the model returned an output of shape " << out.shape()
                                                    << " for x_t of shape " << x.shape());
}

// Runs f(begin, end) over [0, n) in fixed chunks, spread over the threads; `work` is the multiply-adds per element.
// The chunks do not depend on the thread count, and every element is computed the same way on any thread.
template <class F>
void for_each_chunk(Index n, double work, F f) {
  constexpr Index kChunk = Index(1) << 14;
  const Index chunks = (n + kChunk - 1) / kChunk;
  parallel_for(0, chunks, work * double(kChunk), [&](Index c) {
    const Index begin = c * kChunk;
    f(begin, std::min(n, begin + kChunk));
  });
}

}  // namespace detail

// Clipping the predicted x0 to the pixel range [-1, 1], and which eps the update then uses. Samplers whose update
// reads only x0 (DDPM's posterior mean, Euler, Heun, DPM-Solver++) are the same under both conventions; DDIM reads
// both; the score-based samplers read only eps (so KeepModelEps leaves them unclipped).
enum class ClipX0 {
  None,          // x0 and eps as the model predicts them
  RederiveEps,   // x0 clipped; eps re-derived from the clipped x0, eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)
                 // (GLIDE, denoising-diffusion-pytorch; the library's behaviour before the choice existed)
  KeepModelEps,  // x0 clipped; the eps the model predicted is kept (diffusers' use_clipped_model_output=False)
};

namespace detail {
inline constexpr NameEntry<ClipX0> kClipNames[] = {
    {ClipX0::None, "none"},
    {ClipX0::RederiveEps, "rederive_eps"},
    {ClipX0::KeepModelEps, "keep_model_eps"},
};
}  // namespace detail

inline const char* clip_x0_name(ClipX0 c) { return detail::enum_name(detail::kClipNames, c); }
// "none" | "rederive_eps" | "keep_model_eps".
inline ClipX0 parse_clip_x0(const std::string& name) { return detail::parse_enum(detail::kClipNames, name, "x0 clipping"); }

// The model's x0 and eps at one element, after clipping (double in, double out).
struct Denoised {
  double x0;
  double eps;
};

inline Denoised denoise_element(Prediction p, ClipX0 clip, NoiseLevel k, double x_t, double out) {
  double x0 = x0_from_output(p, k, x_t, out);
  if (clip == ClipX0::None) return {x0, eps_from_output(p, k, x_t, out)};
  x0 = x0 < -1.0 ? -1.0 : x0 > 1.0 ? 1.0 : x0;
  if (clip == ClipX0::RederiveEps) return {x0, (x_t - k.a * x0) / k.b};
  return {x0, eps_from_output(p, k, x_t, out)};
}

// A noise level a sampler visits: the model's timestep t and abar_t; the clean end of a plan is t = -1, abar = 1.
// With x_t = a x0 + b eps: a = sqrt(abar), b = sqrt(1 - abar); Karras' sigma = b / a; DPM-Solver's
// lambda = log(a / b) = -log(sigma).
struct SamplingPoint {
  std::int64_t t = -1;
  double alpha_bar = 1.0;

  bool clean() const { return t < 0; }
  double a() const { return std::sqrt(alpha_bar); }
  double b() const { return std::sqrt(1.0 - alpha_bar); }
  double sigma() const { return b() / a(); }
  double lambda() const { return std::log(a()) - std::log(b()); }
  NoiseLevel level() const { return NoiseLevel::from_alpha_bar(alpha_bar); }
};

}  // namespace diffusion
