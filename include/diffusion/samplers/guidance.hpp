#pragma once
// Classifier-free guidance (Ho & Salimans 2022) as a model the samplers take (samplers/sample.hpp): it holds a
// class-conditional network, the class id of every image, the guidance scale w and optionally rescaled_phi, and
// returns the primer's guided prediction
//   eps~ = (1 + w) eps(x, c) - w eps(x, null)      computed as eps(c) + w (eps(c) - eps(null)), the form of
//                                                  classifier_free_guidance.py (its cond_scale is 1 + w)
// w = 0 is the plain conditional prediction (one forward of N images); for w != 0 the conditional and the
// unconditional passes run as ONE forward of 2N images (x twice; the ids, then kNullClass for every image), which
// keeps the network's batch-level work (GEMMs, threads) as wide as possible.
//
// rescaled_phi (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", section 3.4; as in
// classifier_free_guidance.py): per image n, with std over all non-batch elements,
//   rescaled = eps~ * std(eps(c)) / std(eps~);   out = rescaled_phi * rescaled + (1 - rescaled_phi) * eps~
// which undoes the over-exposure large w causes. The file's torch.std is the unbiased one; the ratio of two stds over
// the same element count is the same either way, so the population std is used here. When std(eps~) is 0 (a constant
// prediction) the ratio is taken as 1 rather than 0/0.
//
// The network is any callable net(TensorView<T> x, const std::vector<std::int64_t>& t,
// const std::vector<std::int64_t>& classes, Tensor<T>& out) -- e.g. a conditional Unet<T>; it is borrowed (held by
// pointer: it must outlive the guided model, and a temporary does not compile). Buffers (the doubled batch, its
// timesteps and ids, the network's output) are allocated on the first call and reused: no allocation after it for
// the same batch size. Every output element is computed the same way on any thread count; the per-image stds are
// summed in a fixed order in double.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/nn/class_embedding.hpp"

namespace diffusion {

struct GuidanceOptions {
  double scale = 0.0;         // w: 0 = conditional, larger = more class-typical samples, less diversity
  double rescaled_phi = 0.0;  // in [0, 1]: 0 = plain guidance, 1 = fully rescaled to the conditional's std
};

template <class T, class Net>
class ClassifierFreeGuidance {
 public:
  // classes (N): the class id of every image the sampler will pass (kNullClass allowed: then both passes are the
  // unconditional one). The network checks the ids' range on every call.
  ClassifierFreeGuidance(Net& net, std::vector<std::int64_t> classes, GuidanceOptions options = {})
      : net_(&net), classes_(std::move(classes)) {
    set_options(options);
  }
  ClassifierFreeGuidance(Net&& net, std::vector<std::int64_t> classes, GuidanceOptions options = {}) = delete;

  void set_options(const GuidanceOptions& options) {
    DIFFUSION_CHECK(std::isfinite(options.scale),
                    "ClassifierFreeGuidance: guidance scale w must be finite, got " << options.scale);
    DIFFUSION_CHECK(options.rescaled_phi >= 0.0 && options.rescaled_phi <= 1.0,
                    "ClassifierFreeGuidance: rescaled_phi must be in [0, 1], got " << options.rescaled_phi);
    options_ = options;
  }
  const GuidanceOptions& options() const { return options_; }
  const std::vector<std::int64_t>& classes() const { return classes_; }
  // New ids for the next calls (the same batch size keeps the buffers; another one reallocates them once).
  void set_classes(std::vector<std::int64_t> classes) { classes_ = std::move(classes); }

  // out (N, ...) = the guided prediction at x (N, ...) and timesteps t (N).
  void operator()(TensorView<T> x, const std::vector<std::int64_t>& t, Tensor<T>& out) {
    const Index N = x.rank() > 0 ? x.dim(0) : 0;
    DIFFUSION_CHECK(N > 0 && static_cast<Index>(classes_.size()) == N,
                    "ClassifierFreeGuidance: " << classes_.size() << " class ids for a batch of shape " << x.shape());
    DIFFUSION_CHECK(static_cast<Index>(t.size()) == N,
                    "ClassifierFreeGuidance: " << t.size() << " timesteps for a batch of " << N << " images");
    if (options_.scale == 0.0) {  // eps~ = eps(c): the unconditional pass has weight 0 (and rescaling is identity)
      (*net_)(x, t, classes_, out);
      return;
    }
    double_batch(x, t);
    (*net_)(TensorView<T>(x2_), t2_, ids2_, eps2_);
    DIFFUSION_CHECK(eps2_.rank() >= 1 && eps2_.dim(0) == 2 * N,
                    "ClassifierFreeGuidance: the network returned " << eps2_.shape() << " for " << 2 * N << " images");
    Shape shape = eps2_.shape();
    shape[0] = N;
    out.resize(shape);
    combine(N, eps2_.numel() / (2 * N), out);
  }
  void operator()(const Tensor<T>&& x, const std::vector<std::int64_t>& t, Tensor<T>& out) = delete;

 private:
  // x2_ (2N, ...) = [x; x]; t2_ (2N) = [t; t]; ids2_ (2N) = [classes; kNullClass ...]. Assigned in place.
  void double_batch(const TensorView<T>& x, const std::vector<std::int64_t>& t) {
    const Index N = x.dim(0);
    Shape shape = x.shape();
    shape[0] = 2 * N;
    x2_.ensure_shape(shape);
    const std::size_t bytes = sizeof(T) * static_cast<std::size_t>(x.numel());
    std::memcpy(x2_.data(), x.data(), bytes);
    std::memcpy(x2_.data() + x.numel(), x.data(), bytes);
    t2_.resize(static_cast<std::size_t>(2 * N));
    ids2_.resize(static_cast<std::size_t>(2 * N));
    for (std::size_t n = 0; n < static_cast<std::size_t>(N); ++n) {
      t2_[n] = t2_[n + static_cast<std::size_t>(N)] = t[n];
      ids2_[n] = classes_[n];
      ids2_[n + static_cast<std::size_t>(N)] = kNullClass;
    }
  }

  // out[n] = c + w (c - u) for the conditional c = eps2_[n] and unconditional u = eps2_[N + n] (each P elements),
  // then the rescaling when rescaled_phi > 0. In double, rounded once.
  void combine(Index N, Index P, Tensor<T>& out) const {
    const double w = options_.scale, phi = options_.rescaled_phi;
    const T* cond = eps2_.data();
    const T* uncond = eps2_.data() + N * P;
    T* o = out.data();
    parallel_for(0, N, double(P) * 8.0, [&](Index n) {
      const T* c = cond + n * P;
      const T* u = uncond + n * P;
      T* on = o + n * P;
      double factor = 1.0;
      if (phi > 0.0) {
        const double std_cond = std_of(P, [&](Index i) { return static_cast<double>(c[i]); });
        const double std_scaled = std_of(P, [&](Index i) { return guided(c[i], u[i], w); });
        const double ratio = std_scaled > 0.0 ? std_cond / std_scaled : 1.0;
        factor = phi * ratio + (1.0 - phi);
      }
      for (Index i = 0; i < P; ++i) on[i] = static_cast<T>(guided(c[i], u[i], w) * factor);
    });
  }
  static double guided(T c, T u, double w) {
    const double cd = static_cast<double>(c);
    return cd + w * (cd - static_cast<double>(u));
  }
  // Population standard deviation of value(0..P-1), two passes in double, in index order.
  template <class F>
  static double std_of(Index P, F value) {
    double mean = 0.0;
    for (Index i = 0; i < P; ++i) mean += value(i);
    mean /= static_cast<double>(P);
    double var = 0.0;
    for (Index i = 0; i < P; ++i) {
      const double d = value(i) - mean;
      var += d * d;
    }
    return std::sqrt(var / static_cast<double>(P));
  }

  Net* net_;
  std::vector<std::int64_t> classes_;  // (N)
  GuidanceOptions options_;
  Tensor<T> x2_;                       // (2N, ...) the doubled batch
  std::vector<std::int64_t> t2_, ids2_;  // (2N)
  Tensor<T> eps2_;                     // (2N, ...) the network's output: conditional rows, then unconditional
};

// ClassifierFreeGuidance(unet, classes, options) for a Unet<T> (any Net<T>): T deduced from the network's type.
template <template <class> class Net, class T>
ClassifierFreeGuidance(Net<T>&, std::vector<std::int64_t>, GuidanceOptions) -> ClassifierFreeGuidance<T, Net<T>>;
template <template <class> class Net, class T>
ClassifierFreeGuidance(Net<T>&, std::vector<std::int64_t>) -> ClassifierFreeGuidance<T, Net<T>>;

}  // namespace diffusion
