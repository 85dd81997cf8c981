#pragma once
// Every sampler behind one interface (diffusers' set_timesteps / step): a Sampler is a plan, the noise levels it
// visits from x_T to the clean image, plus a step that maps the model output at the current x to the next x, with
// the state that multistep and multi-stage methods keep between calls. The loop that drives it (model calls, noise
// draws, callbacks, editing) is written once, in sample.hpp.
//
//   Sampler<float> s(schedule, options);      // the plan: s.points() = N + 1 levels, the last one clean
//   s.begin(x.shape());
//   while (!s.done()) {
//     model(x, t = s.model_timestep() for every image, out);
//     s.step(x, out, s.needs_noise() ? &z : nullptr);   // x updated in place; true when a step is complete
//   }
//
// A step may take several model calls: Heun evaluates the model again at its Euler prediction (x then holds that
// prediction between the two calls, and the sampler keeps the x it started from), the predictor-corrector sampler
// runs its Langevin corrector steps at the same level before the predictor. Noise z is x.numel() standard normals
// for each call that needs_noise().

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/process/parameterization.hpp"
#include "diffusion/process/schedule.hpp"
#include "diffusion/samplers/sampler_common.hpp"
#include "diffusion/samplers/solvers.hpp"
#include "diffusion/samplers/timesteps.hpp"

namespace diffusion {

enum class SamplerKind {
  Ddpm,                // ancestral sampling over every training timestep (Ho et al. 2020)
  Ddim,                // DDIM, eta = 0 deterministic (Song et al. 2021)
  Euler,               // Euler on the probability-flow ODE (Karras et al. 2022)
  EulerAncestral,      // Euler steps with ancestral noise (k-diffusion)
  Heun,                // Heun's second-order method on the probability-flow ODE (Karras et al. 2022)
  DpmPp2M,             // DPM-Solver++(2M) (Lu et al. 2022)
  DpmPp2MSde,          // SDE-DPM-Solver++(2M) (Lu et al. 2022)
  UniPc,               // UniPC-2 predictor-corrector, bh2 (Zhao et al. 2023)
  ReverseDiffusion,    // reverse-diffusion predictor on the VP SDE (Song et al. 2021)
  EulerMaruyama,       // Euler-Maruyama predictor on the VP SDE (Song et al. 2021)
  PredictorCorrector,  // reverse-diffusion predictor + Langevin corrector (Song et al. 2021)
};

namespace detail {
inline constexpr NameEntry<SamplerKind> kSamplerNames[] = {
    {SamplerKind::Ddpm, "ddpm"},
    {SamplerKind::Ddim, "ddim"},
    {SamplerKind::Euler, "euler"},
    {SamplerKind::EulerAncestral, "euler_ancestral"},
    {SamplerKind::Heun, "heun"},
    {SamplerKind::DpmPp2M, "dpmpp_2m"},
    {SamplerKind::DpmPp2MSde, "dpmpp_2m_sde"},
    {SamplerKind::UniPc, "uni_pc"},
    {SamplerKind::ReverseDiffusion, "reverse_diffusion"},
    {SamplerKind::EulerMaruyama, "euler_maruyama"},
    {SamplerKind::PredictorCorrector, "pc"},
};
}  // namespace detail

inline const char* sampler_name(SamplerKind k) { return detail::enum_name(detail::kSamplerNames, k); }
// The names parse_sampler accepts, "ddpm, ddim, ..." (for help texts).
inline std::string sampler_names() { return detail::enum_names(detail::kSamplerNames); }
// "ddpm" | "ddim" | "euler" | "euler_ancestral" | "heun" | "dpmpp_2m" | "dpmpp_2m_sde" | "uni_pc" |
// "reverse_diffusion" | "euler_maruyama" | "pc" (k-diffusion's / ComfyUI's names, and score_sde's predictor names).
inline SamplerKind parse_sampler(const std::string& name) {
  return detail::parse_enum(detail::kSamplerNames, name, "sampler");
}

// Whether a sampler draws noise (otherwise it is a deterministic map of x_T).
inline bool sampler_is_stochastic(SamplerKind k, double eta) {
  switch (k) {
    case SamplerKind::Ddim:
    case SamplerKind::EulerAncestral:
    case SamplerKind::DpmPp2MSde: return eta > 0.0;
    case SamplerKind::Euler:
    case SamplerKind::Heun:
    case SamplerKind::DpmPp2M:
    case SamplerKind::UniPc: return false;
    default: return true;
  }
}

struct SamplerOptions {
  SamplerKind sampler = SamplerKind::Ddim;
  int steps = 50;                                        // N; ddpm always takes every one of the T timesteps
  TimestepSpacing spacing = TimestepSpacing::Linspace;   // used when `timesteps` is empty (not by ddpm)
  double karras_rho = 7.0;                               // rho of the karras spacing
  std::vector<std::int64_t> timesteps;                   // an explicit ascending sequence (overrides steps, spacing)
  Prediction prediction = Prediction::Epsilon;           // what the model outputs
  ClipX0 clip = ClipX0::RederiveEps;                     // x0 clipped to [-1, 1] by default (images live there)
  std::optional<double> eta;                             // noise scale: default 0 for ddim, 1 for euler_ancestral and
                                                         // dpmpp_2m_sde; other samplers ignore it
  DdpmVariance ddpm_variance = DdpmVariance::Posterior;  // ddpm
  double snr = 0.16;                                     // pc: the Langevin corrector's signal-to-noise ratio
  int corrector_steps = 1;                               // pc: Langevin steps before each predictor step
};

// The eta a sampler runs with: options.eta, or the sampler's default.
inline double effective_eta(const SamplerOptions& o) {
  if (o.eta) return *o.eta;
  return o.sampler == SamplerKind::EulerAncestral || o.sampler == SamplerKind::DpmPp2MSde ? 1.0 : 0.0;
}

// The noise levels a sampler visits for a schedule: points[i] is the level of x before step i (i = 0 .. N-1) and
// points[N] the clean end. ddpm: t = T-1, ..., 0; every other sampler: options.timesteps (validated) or
// sampling_timesteps(schedule, steps, spacing, karras_rho), visited in descending order.
inline std::vector<SamplingPoint> sampling_plan(const NoiseSchedule& schedule, const SamplerOptions& o) {
  const int T = schedule.num_timesteps();
  std::vector<std::int64_t> ts;
  if (o.sampler == SamplerKind::Ddpm) {
    DIFFUSION_CHECK(o.timesteps.empty(), "SamplerOptions::timesteps: ddpm visits every timestep; for a subsequence "
                                         "use ddim (eta = 1 is ancestral sampling on it)");
    ts.resize(static_cast<std::size_t>(T));
    for (int t = 0; t < T; ++t) ts[static_cast<std::size_t>(t)] = t;
  } else if (!o.timesteps.empty()) {
    detail::check_timestep_sequence(o.timesteps, T, "SamplerOptions::timesteps");
    ts = o.timesteps;
  } else {
    ts = sampling_timesteps(schedule, o.steps, o.spacing, o.karras_rho);
  }
  std::vector<SamplingPoint> points;
  points.reserve(ts.size() + 1);
  for (std::size_t i = ts.size(); i-- > 0;) points.push_back({ts[i], schedule.alphas_cumprod[static_cast<std::size_t>(ts[i])]});
  points.push_back(SamplingPoint{});
  return points;
}

template <class T>
class Sampler {
 public:
  Sampler(const NoiseSchedule& schedule, SamplerOptions options) : options_(std::move(options)) {
    const SamplerOptions& o = options_;
    eta_ = effective_eta(o);
    DIFFUSION_CHECK(std::isfinite(eta_) && eta_ >= 0.0, "SamplerOptions::eta must be >= 0, got " << eta_);
    DIFFUSION_CHECK(std::isfinite(o.karras_rho) && o.karras_rho > 0.0,
                    "SamplerOptions::karras_rho must be > 0, got " << o.karras_rho);
    DIFFUSION_CHECK(std::isfinite(o.snr) && o.snr > 0.0, "SamplerOptions::snr must be > 0, got " << o.snr);
    DIFFUSION_CHECK(o.corrector_steps >= 0, "SamplerOptions::corrector_steps must be >= 0, got " << o.corrector_steps);
    points_ = sampling_plan(schedule, o);
    if (o.sampler == SamplerKind::Ddpm || o.sampler == SamplerKind::PredictorCorrector) {
      per_step_.resize(points_.size() - 1);
      for (std::size_t i = 0; i + 1 < points_.size(); ++i) {
        const std::int64_t t = points_[i].t;
        per_step_[i].ddpm = solvers::DdpmStep::at(schedule, t, o.ddpm_variance);
        per_step_[i].alpha = schedule.alphas[static_cast<std::size_t>(t)];
      }
    }
  }

  SamplerKind kind() const { return options_.sampler; }
  const SamplerOptions& options() const { return options_; }
  double eta() const { return eta_; }
  // N + 1 levels: points()[i] is the level of x before step i, points().back() the clean end.
  const std::vector<SamplingPoint>& points() const { return points_; }
  int num_steps() const { return static_cast<int>(points_.size()) - 1; }

  // Model calls of a run from step `first` on: one per step; Heun two (one on the last step, to sigma = 0); pc
  // corrector_steps + 1.
  int model_calls(int first = 0) const {
    int calls = 0;
    for (int i = first; i < num_steps(); ++i) calls += stages(i);
    return calls;
  }

  // SDEdit's start at a strength in (0, 1]: run the last floor(N * strength) steps (diffusers' img2img:
  // init_timestep = int(N * strength), t_start = N - init_timestep). Throws when no step would remain.
  int first_step_for_strength(double strength) const {
    DIFFUSION_CHECK(strength > 0.0 && strength <= 1.0, "strength must be in (0, 1], got " << strength);
    const int run = static_cast<int>(num_steps() * strength);
    DIFFUSION_CHECK(run >= 1, "strength " << strength << " leaves no step of the " << num_steps()
                                          << "-step plan to run (need strength >= 1/" << num_steps() << ")");
    return num_steps() - run;
  }

  // Starts a run at step `first` (x is at points()[first]); sizes the state for x's shape, clears the history.
  void begin(const Shape& shape, int first = 0) {
    DIFFUSION_CHECK(first >= 0 && first < num_steps(),
                    "Sampler::begin: first step " << first << " outside [0, " << num_steps() << ")");
    step_ = first;
    stage_ = 0;
    has_prev_ = false;
    h_last_ = 0.0;
    shape_ = shape;
    const SamplerKind k = kind();
    if (k == SamplerKind::Heun) {
      saved_x_.resize(shape);
      saved_d_.resize(shape);
    }
    // The multistep history starts at zero, not at whatever the buffers held: the first steps multiply it by a
    // weight of 0, and 0 times a stale NaN or infinity is NaN (a UniPC run failed that way, now and then).
    if (k == SamplerKind::DpmPp2M || k == SamplerKind::DpmPp2MSde || k == SamplerKind::UniPc) {
      prev_x0_.resize(shape);
      prev_x0_.zero();
    }
    if (k == SamplerKind::UniPc) {
      prev2_x0_.resize(shape);
      prev2_x0_.zero();
      saved_x_.resize(shape);
      saved_x_.zero();
      unipc_orders_ = 0;
      unipc_last_order_ = 0;
    }
    if (k == SamplerKind::PredictorCorrector) {
      norms_.resize(2 * static_cast<std::size_t>(shape.rank() >= 1 ? shape[0] : 0));
    }
  }

  bool done() const { return step_ >= num_steps(); }
  int step_index() const { return step_; }           // the step in progress
  const SamplingPoint& from() const { return points_[static_cast<std::size_t>(step_)]; }
  const SamplingPoint& to() const { return points_[static_cast<std::size_t>(step_) + 1]; }

  // The timestep of the next model call (every image at the same one).
  std::int64_t model_timestep() const {
    return kind() == SamplerKind::Heun && stage_ == 1 ? to().t : from().t;
  }

  // Whether the next step() reads noise.
  bool needs_noise() const {
    switch (kind()) {
      case SamplerKind::Ddpm: return from().t > 0;
      case SamplerKind::Ddim: return solvers::ddim_sigma(eta_, from().alpha_bar, to().alpha_bar) > 0.0;
      case SamplerKind::Euler:
      case SamplerKind::Heun:
      case SamplerKind::DpmPp2M:
      case SamplerKind::UniPc: return false;
      case SamplerKind::EulerAncestral: return solvers::AncestralStep::make(from(), to(), eta_).noisy();
      case SamplerKind::DpmPp2MSde: return !to().clean() && eta_ > 0.0;
      case SamplerKind::ReverseDiffusion:
      case SamplerKind::EulerMaruyama: return !to().clean();
      case SamplerKind::PredictorCorrector: return stage_ < options_.corrector_steps || !to().clean();
    }
    return false;
  }

  // Consumes the model output at (x, model_timestep()) and updates x in place. noise: (shape of x) standard
  // normals when needs_noise(), else ignored (may be nullptr). Returns true when the call completed a step (x is
  // then at points()[step_index()], the new step), false after an intermediate call of a multi-call step.
  bool step(Tensor<T>& x, const Tensor<T>& model_out, const detail::non_deduced_t<Tensor<T>>* noise) {
    DIFFUSION_CHECK(!done(), "Sampler::step: the plan's " << num_steps() << " steps are done");
    DIFFUSION_CHECK(x.shape() == shape_, "Sampler::step: x has shape " << x.shape() << ", begin() was given "
                                                                       << shape_);
    check_shape(model_out, x.shape(), "Sampler::step: model output");
    const bool noisy = needs_noise();
    DIFFUSION_CHECK(!noisy || noise != nullptr, "Sampler::step: " << sampler_name(kind()) << " needs noise at step "
                                                                   << step_ << " (t = " << from().t << ")");
    if (noisy) check_shape(*noise, x.shape(), "Sampler::step: noise");
    const T* pz = noisy ? noise->data() : nullptr;
    switch (kind()) {
      case SamplerKind::Ddpm: step_ddpm(x, model_out, pz); break;
      case SamplerKind::Ddim: step_ddim(x, model_out, pz); break;
      case SamplerKind::Euler: step_euler(x, model_out); break;
      case SamplerKind::EulerAncestral: step_euler_ancestral(x, model_out, pz); break;
      case SamplerKind::Heun:
        if (!step_heun(x, model_out)) return false;
        break;
      case SamplerKind::DpmPp2M: step_dpmpp_2m(x, model_out); break;
      case SamplerKind::DpmPp2MSde: step_dpmpp_2m_sde(x, model_out, pz); break;
      case SamplerKind::UniPc: step_unipc(x, model_out); break;
      case SamplerKind::ReverseDiffusion:
        step_score(x, model_out, pz, solvers::ScoreStep::reverse_diffusion(from(), to()));
        break;
      case SamplerKind::EulerMaruyama:
        step_score(x, model_out, pz, solvers::ScoreStep::euler_maruyama(from(), to()));
        break;
      case SamplerKind::PredictorCorrector:
        if (stage_ < options_.corrector_steps) {
          step_langevin(x, model_out, pz);
          ++stage_;
          return false;
        }
        step_score(x, model_out, pz, solvers::ScoreStep::reverse_diffusion(from(), to()));
        break;
    }
    ++step_;
    stage_ = 0;
    return true;
  }

 private:
  struct PerStep {
    solvers::DdpmStep ddpm{};
    double alpha = 1.0;  // alpha_t = 1 - beta_t (the Langevin corrector's scale)
  };

  int stages(int i) const {
    switch (kind()) {
      case SamplerKind::Heun: return points_[static_cast<std::size_t>(i) + 1].clean() ? 1 : 2;
      case SamplerKind::PredictorCorrector: return options_.corrector_steps + 1;
      default: return 1;
    }
  }

  // x[i] = f(i, x[i], out[i]) for every element, in double, in fixed chunks over the threads.
  template <class F>
  static void update(Tensor<T>& x, const Tensor<T>& out, F f) {
    T* px = x.data();
    const T* po = out.data();
    detail::for_each_chunk(x.numel(), 20.0, [&](Index begin, Index end) {
      for (Index i = begin; i < end; ++i)
        px[i] = static_cast<T>(f(i, static_cast<double>(px[i]), static_cast<double>(po[i])));
    });
  }

  Denoised denoised(NoiseLevel k, double x, double out) const {
    return denoise_element(options_.prediction, options_.clip, k, x, out);
  }

  void step_ddpm(Tensor<T>& x, const Tensor<T>& out, const T* pz) {
    const solvers::DdpmStep c = per_step_[static_cast<std::size_t>(step_)].ddpm;
    const NoiseLevel k = from().level();
    const bool posterior = options_.clip != ClipX0::None;
    update(x, out, [&](Index i, double xv, double ov) {
      const double z = pz != nullptr ? static_cast<double>(pz[i]) : 0.0;
      return c.apply(posterior, xv, denoised(k, xv, ov), pz != nullptr ? &z : nullptr);
    });
  }

  void step_ddim(Tensor<T>& x, const Tensor<T>& out, const T* pz) {
    const solvers::DdimStep c = solvers::DdimStep::make(eta_, from().alpha_bar, to().alpha_bar);
    const NoiseLevel k = from().level();
    update(x, out, [&](Index i, double xv, double ov) {
      const double z = pz != nullptr ? static_cast<double>(pz[i]) : 0.0;
      return c.apply(denoised(k, xv, ov), pz != nullptr ? &z : nullptr);
    });
  }

  void step_euler(Tensor<T>& x, const Tensor<T>& out) {
    const solvers::KarrasStep c = solvers::KarrasStep::make(from(), to());
    const NoiseLevel k = from().level();
    update(x, out, [&](Index, double xv, double ov) { return c.euler(xv, c.derivative(xv, denoised(k, xv, ov).x0)); });
  }

  void step_euler_ancestral(Tensor<T>& x, const Tensor<T>& out, const T* pz) {
    const solvers::AncestralStep c = solvers::AncestralStep::make(from(), to(), eta_);
    const NoiseLevel k = from().level();
    update(x, out, [&](Index i, double xv, double ov) {
      const double z = pz != nullptr ? static_cast<double>(pz[i]) : 0.0;
      return c.apply(xv, denoised(k, xv, ov).x0, pz != nullptr ? &z : nullptr);
    });
  }

  // Stage 0: Euler to the next level, keeping x and d; stage 1 (the model at Euler's x): Heun's average.
  // Returns true when the step is complete.
  bool step_heun(Tensor<T>& x, const Tensor<T>& out) {
    const solvers::KarrasStep c = solvers::KarrasStep::make(from(), to());
    if (stage_ == 0) {
      const NoiseLevel k = from().level();
      T* sx = saved_x_.data();
      T* sd = saved_d_.data();
      update(x, out, [&](Index i, double xv, double ov) {
        const double d = c.derivative(xv, denoised(k, xv, ov).x0);
        sx[i] = static_cast<T>(xv);
        sd[i] = static_cast<T>(d);
        return c.euler(xv, d);
      });
      if (to().clean()) return true;  // the last step is Euler's (k-diffusion: sigma' = 0)
      stage_ = 1;
      return false;
    }
    const NoiseLevel k = to().level();
    const T* sx = saved_x_.data();
    const T* sd = saved_d_.data();
    update(x, out, [&](Index i, double xv, double ov) {
      const double d2 = c.derivative_to(xv, denoised(k, xv, ov).x0);
      return c.heun(static_cast<double>(sx[i]), static_cast<double>(sd[i]), d2);
    });
    return true;
  }

  void step_dpmpp_2m(Tensor<T>& x, const Tensor<T>& out) {
    const solvers::DpmPp2MStep c = solvers::DpmPp2MStep::make(from(), to(), has_prev_, h_last_);
    const NoiseLevel k = from().level();
    T* prev = prev_x0_.data();
    update(x, out, [&](Index i, double xv, double ov) {
      const double D = denoised(k, xv, ov).x0;
      const double y = c.apply(xv, D, static_cast<double>(prev[i]));
      prev[i] = static_cast<T>(D);
      return y;
    });
    remember_step();
  }

  void step_dpmpp_2m_sde(Tensor<T>& x, const Tensor<T>& out, const T* pz) {
    const solvers::DpmPp2MSdeStep c = solvers::DpmPp2MSdeStep::make(from(), to(), eta_, has_prev_, h_last_);
    const NoiseLevel k = from().level();
    T* prev = prev_x0_.data();
    update(x, out, [&](Index i, double xv, double ov) {
      const double D = denoised(k, xv, ov).x0;
      const double z = pz != nullptr ? static_cast<double>(pz[i]) : 0.0;
      const double y = c.apply(xv, D, static_cast<double>(prev[i]), pz != nullptr ? &z : nullptr);
      prev[i] = static_cast<T>(D);
      return y;
    });
    remember_step();
  }

  // UniPC: correct the x the model was evaluated at (when a predictor step came before in this run), then predict
  // from the corrected x. History: prev_x0_ / prev2_x0_ the x0 predictions at the two previous levels, saved_x_
  // the x the previous predictor started from.
  void step_unipc(Tensor<T>& x, const Tensor<T>& out) {
    const std::size_t i = static_cast<std::size_t>(step_);
    const int q = unipc_last_order_;  // the previous predictor's order; 0: no correction
    const int p = std::min({2, num_steps() - step_, unipc_orders_ + 1});
    const solvers::UniPcUpdate corr =
        q > 0 ? solvers::UniPcUpdate::corrector(q == 2 ? &points_[i - 2] : nullptr, points_[i - 1], points_[i], q)
              : solvers::UniPcUpdate{};
    const solvers::UniPcUpdate pred =
        solvers::UniPcUpdate::predictor(p == 2 ? &points_[i - 1] : nullptr, points_[i], points_[i + 1], p);
    const NoiseLevel k = from().level();
    T* m1 = prev_x0_.data();
    T* m2 = prev2_x0_.data();
    T* last = saved_x_.data();
    update(x, out, [&](Index e, double xv, double ov) {
      const double D = denoised(k, xv, ov).x0;
      const double m_prev = static_cast<double>(m1[e]);
      const double xc = q > 0 ? corr.apply(static_cast<double>(last[e]), m_prev, static_cast<double>(m2[e]), D) : xv;
      m2[e] = m1[e];
      m1[e] = static_cast<T>(D);
      last[e] = static_cast<T>(xc);
      return pred.apply(xc, D, m_prev, 0.0);
    });
    unipc_last_order_ = p;
    unipc_orders_ = std::min(2, unipc_orders_ + 1);
  }

  // The multistep solvers' history: h of the step just taken (lambda' - lambda), for r = h_last / h next time.
  void remember_step() {
    if (!to().clean()) h_last_ = to().lambda() - from().lambda();
    has_prev_ = true;
  }

  void step_score(Tensor<T>& x, const Tensor<T>& out, const T* pz, const solvers::ScoreStep c) {
    const NoiseLevel k = from().level();
    update(x, out, [&](Index i, double xv, double ov) {
      const double z = pz != nullptr ? static_cast<double>(pz[i]) : 0.0;
      return c.apply(xv, denoised(k, xv, ov).eps, pz != nullptr ? &z : nullptr);
    });
  }

  // One Langevin corrector step at the current level: the per-image norms of the score and of the noise (each image
  // summed in order, in double), their batch means, then the update.
  void step_langevin(Tensor<T>& x, const Tensor<T>& out, const T* pz) {
    const NoiseLevel k = from().level();
    const Index N = x.dim(0), per = x.numel() / N;
    const T* px = x.data();
    const T* po = out.data();
    double* norms = norms_.data();  // [grad_0 .. grad_{N-1}, noise_0 .. noise_{N-1}]
    parallel_for(0, N, 20.0 * double(per), [&](Index n) {
      double g2 = 0.0, z2 = 0.0;
      for (Index i = n * per; i < (n + 1) * per; ++i) {
        const double xv = static_cast<double>(px[i]);
        const double g = -denoised(k, xv, static_cast<double>(po[i])).eps / k.b;
        const double z = static_cast<double>(pz[i]);
        g2 += g * g;
        z2 += z * z;
      }
      norms[n] = std::sqrt(g2);
      norms[N + n] = std::sqrt(z2);
    });
    double grad_norm = 0.0, noise_norm = 0.0;
    for (Index n = 0; n < N; ++n) {
      grad_norm += norms[n];
      noise_norm += norms[N + n];
    }
    grad_norm /= static_cast<double>(N);
    noise_norm /= static_cast<double>(N);
    const double alpha = per_step_[static_cast<std::size_t>(step_)].alpha;
    const double step_size = solvers::langevin_step_size(options_.snr, alpha, grad_norm, noise_norm);
    const double noise_scale = std::sqrt(2.0 * step_size);
    update(x, out, [&](Index i, double xv, double ov) {
      const double g = -denoised(k, xv, ov).eps / k.b;
      return xv + step_size * g + noise_scale * static_cast<double>(pz[i]);
    });
  }

  SamplerOptions options_;
  double eta_ = 0.0;
  std::vector<SamplingPoint> points_;
  std::vector<PerStep> per_step_;  // ddpm and pc: per-step tables
  Shape shape_;
  int step_ = 0, stage_ = 0;
  bool has_prev_ = false;  // dpmpp_2m(_sde): prev_x0_ holds the previous step's x0
  double h_last_ = 0.0;
  Tensor<T> saved_x_, saved_d_;  // heun: x and d at the start of the step; uni_pc: saved_x_ = the corrected x
  Tensor<T> prev_x0_;            // dpmpp_2m(_sde), uni_pc: D of the previous step
  Tensor<T> prev2_x0_;           // uni_pc: D of the step before
  int unipc_orders_ = 0;         // uni_pc: predictor steps taken (diffusers' lower_order_nums, at most 2)
  int unipc_last_order_ = 0;     // uni_pc: the order of the last predictor step (0: none yet)
  std::vector<double> norms_;    // pc: per-image norms
};

}  // namespace diffusion
