#pragma once
// The sampling loop, written once for every sampler (sampler.hpp), and the editing modes that run through it.
//
//   sample(model, schedule, x, rng, options, callback)      x: x_T ~ N(0, I) in, x_0 out
//   img2img(model, schedule, image, strength, x, rng, ...)   SDEdit (Meng et al. 2022): x = q(x_t | image) at the
//                                                            level where the last floor(N strength) steps start,
//                                                            then those steps
//   inpaint(model, schedule, image, keep, x, rng, ...)       RePaint's simple form (Lugmayr et al. 2022, without
//                                                            resampling): after every step the pixels with keep = 1
//                                                            are replaced by image forward-noised to the new level
//
// The model is any callable model(const Tensor<T>& x, const std::vector<std::int64_t>& t, Tensor<T>& out) (out:
// the prediction of SamplerOptions::prediction, resized to x's shape). Guidance belongs there: a callable with the
// same signature that calls the network (twice, or once on a doubled batch) and combines the outputs is a model to
// the loop, so classifier-free guidance needs nothing from it. The loop:
//   - calls the model at the sampler's timestep for every image (one (N,) vector, reused);
//   - draws x.numel() standard normals from rng, in element order, for each call that needs noise (and, when
//     inpainting, for the forward noise of each step that does not end clean);
//   - calls callback(step_index, t, x) after every completed step (t: the timestep the step started from);
//   - allocates its buffers (model output, noise, the sampler's state) once, before the first call.
// Results are bitwise identical for any thread count, and reproducible from the rng's state.

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/process/schedule.hpp"
#include "diffusion/samplers/sampler.hpp"
#include "diffusion/samplers/sampler_common.hpp"

namespace diffusion {

namespace detail {

// What inpainting needs: the known image and the mask that says where it is known.
template <class T>
struct InpaintInputs {
  const Tensor<T>* image = nullptr;  // (N, ...) like x
  const Tensor<T>* keep = nullptr;   // (N, ...) like x, or (1, ...) for every image; in [0, 1]
};

template <class Model, class T>
void check_model_signature() {
  static_assert(is_model_v<Model, T>,
                "diffusion samplers: the model must be callable as model(const Tensor<T>& x, const "
                "std::vector<std::int64_t>& t, Tensor<T>& out) (x: (N, ...) at noise level t, t: (N,) timesteps, "
                "out: the model's prediction, resized to x's shape)");
}

template <class T>
void check_keep_mask(const Tensor<T>& keep, const Shape& x_shape, const char* what) {
  const bool per_image = keep.shape() == x_shape;
  bool shared = keep.rank() == x_shape.rank() && keep.rank() >= 1 && keep.dim(0) == 1;
  for (int d = 1; shared && d < keep.rank(); ++d) shared = keep.dim(d) == x_shape[d];
  DIFFUSION_CHECK(per_image || shared, what << ": keep mask has shape " << keep.shape() << ", expected x's shape "
                                            << x_shape << " or one image of it (1, ...)");
  for (Index i = 0; i < keep.numel(); ++i) {
    const double m = static_cast<double>(keep[i]);
    DIFFUSION_CHECK(m >= 0.0 && m <= 1.0, what << ": keep mask element " << i << " is " << m << ", outside [0, 1]");
  }
}

// x = keep * (a image + b z) + (1 - keep) * x at level p (z unused when p is clean).
template <class T>
void paste_known(const InpaintInputs<T>& in, const SamplingPoint& p, const Tensor<T>* z, Tensor<T>& x) {
  const double a = p.a(), b = p.clean() ? 0.0 : p.b();
  const Index per_mask = in.keep->numel();
  const T* pk = in.keep->data();
  const T* pi = in.image->data();
  const T* pz = z != nullptr ? z->data() : nullptr;
  T* px = x.data();
  for_each_chunk(x.numel(), 6.0, [&](Index begin, Index end) {
    for (Index i = begin; i < end; ++i) {
      const double m = static_cast<double>(pk[i % per_mask]);
      if (m == 0.0) continue;
      double known = a * static_cast<double>(pi[i]);
      if (pz != nullptr) known += b * static_cast<double>(pz[i]);
      px[i] = static_cast<T>(m * known + (1.0 - m) * static_cast<double>(px[i]));
    }
  });
}

// x = a image + b z at level p, z: x.numel() normals drawn from rng (SDEdit's start). x: resized to image's shape.
template <class T>
void sdedit_start(const Tensor<T>& image, const SamplingPoint& p, Rng& rng, Tensor<T>& x) {
  x.resize(image.shape());
  rng.normal(x.data(), x.numel());
  const double a = p.a(), b = p.b();
  const T* pi = image.data();
  T* px = x.data();
  for_each_chunk(x.numel(), 2.0, [&](Index begin, Index end) {
    for (Index i = begin; i < end; ++i)
      px[i] = static_cast<T>(a * static_cast<double>(pi[i]) + b * static_cast<double>(px[i]));
  });
}

// Runs sampler from step `first` to the end: x holds x at points()[first] on entry and x_0 on return.
template <class T, class Model, class Callback>
void run_sampler_checked(Model& model, Sampler<T>& sampler, int first, Tensor<T>& x, Rng& rng, Callback& callback,
                         const InpaintInputs<T>* inpaint, const char* what) {
  DIFFUSION_CHECK(x.rank() >= 1 && x.numel() > 0, what << ": x_T must be a non-empty batch (N, ...), got shape "
                                                       << x.shape());
  Tensor<T> out(x.shape());    // (N, ...) model output
  Tensor<T> noise(x.shape());  // (N, ...) z
  std::vector<std::int64_t> t(static_cast<std::size_t>(x.dim(0)));
  sampler.begin(x.shape(), first);
  while (!sampler.done()) {
    const int step = sampler.step_index();
    const std::int64_t step_t = sampler.from().t;
    const std::int64_t call_t = sampler.model_timestep();
    for (std::int64_t& v : t) v = call_t;
    run_model(model, x, t, out, what);
    const bool noisy = sampler.needs_noise();
    if (noisy) rng.normal(noise.data(), noise.numel());
    if (!sampler.step(x, out, noisy ? &noise : nullptr)) continue;
    if (inpaint != nullptr) {
      const SamplingPoint& p = sampler.points()[static_cast<std::size_t>(sampler.step_index())];
      if (!p.clean()) rng.normal(noise.data(), noise.numel());
      paste_known(*inpaint, p, p.clean() ? nullptr : &noise, x);
    }
    callback(step, step_t, static_cast<const Tensor<T>&>(x));
  }
}

template <class T, class Model, class Callback>
void run_sampler(Model& model, Sampler<T>& sampler, int first, Tensor<T>& x, Rng& rng, Callback& callback,
                 const InpaintInputs<T>* inpaint, const char* what) {
  check_model_signature<Model, T>();
  // A wrong model stops at the static_assert above, without a cascade of errors from the calls below.
  if constexpr (is_model_v<Model, T>) run_sampler_checked(model, sampler, first, x, rng, callback, inpaint, what);
}

}  // namespace detail

// Samples in place: x holds x_T (N, ...) on entry, x_0 on return. See the header comment for the loop's contract.
template <class T, class Model, class Callback = NoCallback>
void sample(Model&& model, const NoiseSchedule& schedule, Tensor<T>& x, Rng& rng, const SamplerOptions& options = {},
            Callback&& callback = Callback{}) {
  Sampler<T> sampler(schedule, options);
  detail::run_sampler(model, sampler, 0, x, rng, callback, static_cast<const detail::InpaintInputs<T>*>(nullptr),
                      "sample");
}

// sample from x_T (left unchanged), returning x after every step: N tensors, the last one is x_0.
template <class T, class Model>
std::vector<Tensor<T>> sample_trajectory(Model&& model, const NoiseSchedule& schedule, const Tensor<T>& x_T, Rng& rng,
                                         const SamplerOptions& options = {}) {
  std::vector<Tensor<T>> trajectory;
  Tensor<T> x;
  x.copy_from(x_T);
  sample(model, schedule, x, rng, options, [&trajectory](int, std::int64_t, const Tensor<T>& xt) {
    trajectory.emplace_back();
    trajectory.back().copy_from(xt);
  });
  return trajectory;
}

// SDEdit: x = a_s image + b_s z (z: x.numel() normals from rng, drawn first) at the level s where the last
// floor(N * strength) steps of the plan start, then those steps. image: (N, ...) in [-1, 1]; strength in (0, 1]
// (1: from (almost) pure noise, small: close to the image); x: resized to image's shape, x_0 on return.
template <class T, class Model, class Callback = NoCallback>
void img2img(Model&& model, const NoiseSchedule& schedule, const Tensor<T>& image, double strength, Tensor<T>& x,
             Rng& rng, const SamplerOptions& options = {}, Callback&& callback = Callback{}) {
  DIFFUSION_CHECK(image.rank() >= 1 && image.numel() > 0,
                  "img2img: image must be a non-empty batch (N, ...), got shape " << image.shape());
  DIFFUSION_CHECK(&image != &x, "img2img: x must be another tensor than image (x is overwritten first)");
  Sampler<T> sampler(schedule, options);
  const int first = sampler.first_step_for_strength(strength);
  detail::sdedit_start(image, sampler.points()[static_cast<std::size_t>(first)], rng, x);
  detail::run_sampler(model, sampler, first, x, rng, callback, static_cast<const detail::InpaintInputs<T>*>(nullptr),
                      "img2img");
}

// Inpainting in place: x holds x_T (N, ...) on entry (N(0, I), or SDEdit's start when strength < 1, see below) and
// x_0 on return, equal to `image` where keep = 1. keep: x's shape or (1, ...) for every image, values in [0, 1]
// (fractional values blend). After every step, x = keep (a' image + b' z) + (1 - keep) x at the step's new level
// (z: x.numel() normals from rng; at the clean end x = keep image + (1 - keep) x). strength < 1 starts like img2img
// from `image` (x's content on entry is then ignored).
template <class T, class Model, class Callback = NoCallback>
void inpaint(Model&& model, const NoiseSchedule& schedule, const Tensor<T>& image,
             const detail::non_deduced_t<Tensor<T>>& keep, Tensor<T>& x, Rng& rng, const SamplerOptions& options = {},
             Callback&& callback = Callback{}, double strength = 1.0) {
  DIFFUSION_CHECK(&image != &x && &keep != &x, "inpaint: x must be another tensor than image and keep (x changes "
                                              "at every step)");
  Sampler<T> sampler(schedule, options);
  const int first = sampler.first_step_for_strength(strength);
  if (strength < 1.0) x.resize(image.shape());
  check_shape(image, x.shape(), "inpaint: image");
  detail::check_keep_mask(keep, x.shape(), "inpaint");
  const detail::InpaintInputs<T> in{&image, &keep};
  // SDEdit's start: the whole image forward-noised (the kept pixels too)
  if (strength < 1.0) detail::sdedit_start(image, sampler.points()[static_cast<std::size_t>(first)], rng, x);
  detail::run_sampler(model, sampler, first, x, rng, callback, &in, "inpaint");
}

}  // namespace diffusion
