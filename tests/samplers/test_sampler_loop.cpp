// The sampling loop and the Sampler interface: names, bitwise thread-count independence, the three prediction
// types, the x0 clipping conventions, model calls and noise draws per sampler, editing (img2img, inpainting),
// guidance as a model wrapper, and argument checks.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "diffusion/core/parallel.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/samplers/sample.hpp"
#include "process/process_test_util.hpp"
#include "samplers/oracle.hpp"
#include "support/threads.hpp"

using namespace diffusion;

namespace {

const SamplerKind kAllSamplers[] = {SamplerKind::Ddpm,       SamplerKind::Ddim,
                                    SamplerKind::Euler,      SamplerKind::EulerAncestral,
                                    SamplerKind::Heun,       SamplerKind::DpmPp2M,
                                    SamplerKind::DpmPp2MSde, SamplerKind::UniPc,
                                    SamplerKind::ReverseDiffusion, SamplerKind::EulerMaruyama,
                                    SamplerKind::PredictorCorrector};

// An eps model whose x0 prediction leaves [-1, 1] (so that clipping matters): the oracle of N(0.3, 0.9^2) data.
struct WideOracle {
  const NoiseSchedule* s;
  template <class T>
  void operator()(const Tensor<T>& x, const std::vector<std::int64_t>& t, Tensor<T>& out) const {
    sampler_test::GaussianOracle{s, 0.3, 0.9}(x, t, out);
  }
};

// The same model answering in terms of x0 or v.
template <class Eps>
struct AsPrediction {
  Eps eps_model;
  const NoiseSchedule* s;
  Prediction p;
  void operator()(const Tensor<double>& x, const std::vector<std::int64_t>& t, Tensor<double>& out) const {
    Tensor<double> eps;
    eps_model(x, t, eps);
    out.ensure_shape(x.shape());
    const Index per = x.numel() / x.dim(0);
    for (Index i = 0; i < x.numel(); ++i) {
      const NoiseLevel k = NoiseLevel::at(*s, t[static_cast<std::size_t>(i / per)]);
      const double x0 = x0_from_output(Prediction::Epsilon, k, x[i], eps[i]);
      out[i] = p == Prediction::X0 ? x0 : k.a * eps[i] - k.b * x0;
    }
  }
};

SamplerOptions options_for(SamplerKind kind, int steps = 12) {
  SamplerOptions o;
  o.sampler = kind;
  o.steps = steps;
  o.spacing = TimestepSpacing::Trailing;
  return o;
}

}  // namespace

TEST_CASE("sampler and spacing and clipping and variance names have one table each for parsing and printing") {
  int n = 0;
  for (SamplerKind k : kAllSamplers) {
    REQUIRE(parse_sampler(sampler_name(k)) == k);
    ++n;
  }
  REQUIRE(n == 11);
  REQUIRE(sampler_names() == "ddpm, ddim, euler, euler_ancestral, heun, dpmpp_2m, dpmpp_2m_sde, uni_pc, "
                             "reverse_diffusion, euler_maruyama, pc");
  REQUIRE_THROWS_WITH(parse_sampler("dpm++"), Catch::Contains("unknown sampler 'dpm++'") &&
                                                  Catch::Contains("(valid: ddpm, ddim, euler,"));
  for (TimestepSpacing s : {TimestepSpacing::Linspace, TimestepSpacing::Leading, TimestepSpacing::Trailing,
                            TimestepSpacing::Karras})
    REQUIRE(parse_spacing(spacing_name(s)) == s);
  REQUIRE_THROWS_WITH(parse_spacing("uniform"), Catch::Contains("linspace, leading, trailing, karras"));
  for (ClipX0 c : {ClipX0::None, ClipX0::RederiveEps, ClipX0::KeepModelEps}) REQUIRE(parse_clip_x0(clip_x0_name(c)) == c);
  REQUIRE_THROWS_WITH(parse_clip_x0("yes"), Catch::Contains("none, rederive_eps, keep_model_eps"));
  REQUIRE(parse_ddpm_variance("beta") == DdpmVariance::Beta);
  REQUIRE_THROWS_WITH(parse_ddpm_variance("learned"), Catch::Contains("posterior, beta"));
}

TEST_CASE("every sampler and editing mode gives the same bits with 1 or 2 or 3 threads") {
  const NoiseSchedule s(BetaSchedule::Linear, 30);  // ddpm: 30 steps
  const WideOracle model{&s};
  // 36288 elements: three chunks of the element loops; 7 images, so that sums over the batch (the Langevin step
  // size) split over threads would round differently; double, where such a difference cannot hide in the
  // rounding to the storage type
  const Shape shape{7, 1, 72, 72};
  Tensor<double> x_T(shape), image(shape), keep(Shape{1, 1, 72, 72});
  Rng init(11);
  init.normal(x_T.data(), x_T.numel());
  init.uniform(image.data(), image.numel(), -1.0, 1.0);
  for (Index i = 0; i < keep.numel(); ++i) keep[i] = i % 72 < 30 ? 1.0 : i % 72 < 40 ? 0.5 : 0.0;
  for (SamplerKind kind : kAllSamplers) {
    INFO(sampler_name(kind));
    SamplerOptions o = options_for(kind, 6);
    Tensor<double> ref[3];
    for (int threads = 1; threads <= 3; ++threads) {
      testing::ScopedThreads scoped(threads);
      Tensor<double> x, y, z;
      x.copy_from(x_T);
      Rng rng(5);
      sample(model, s, x, rng, o);
      Rng rng2(6);
      img2img(model, s, image, 0.5, y, rng2, o);
      z.copy_from(x_T);
      Rng rng3(7);
      inpaint(model, s, image, keep, z, rng3, o);
      if (threads == 1) {
        ref[0].copy_from(x);
        ref[1].copy_from(y);
        ref[2].copy_from(z);
        continue;
      }
      INFO(threads << " threads");
      REQUIRE(process_test::bitwise_equal(x, ref[0]));
      REQUIRE(process_test::bitwise_equal(y, ref[1]));
      REQUIRE(process_test::bitwise_equal(z, ref[2]));
    }
  }
}

TEST_CASE("every sampler gives the same samples from eps and x0 and v models") {
  const NoiseSchedule s(BetaSchedule::Cosine, 300);
  const WideOracle eps_model{&s};
  Tensor<double> x_T(Shape{2, 1, 5, 5});
  Rng(8).normal(x_T.data(), x_T.numel());
  for (SamplerKind kind : kAllSamplers) {
    for (ClipX0 clip : {ClipX0::None, ClipX0::RederiveEps, ClipX0::KeepModelEps}) {
      SamplerOptions o = options_for(kind, 10);
      o.clip = clip;
      Rng r0(3);
      Tensor<double> want;
      want.copy_from(x_T);
      sample(eps_model, s, want, r0, o);
      for (Prediction p : {Prediction::X0, Prediction::V}) {
        INFO(sampler_name(kind) << ", clip " << clip_x0_name(clip) << ", prediction " << prediction_name(p));
        o.prediction = p;
        Rng r(3);
        Tensor<double> x;
        x.copy_from(x_T);
        sample(AsPrediction<WideOracle>{eps_model, &s, p}, s, x, r, o);
        const auto m = process_test::compare(x, want);
        INFO(m.str());
        // double conversions through a, b >= 4e-3 (cosine T = 300 at t = 299); the Langevin step size divides by
        // the score norm
        REQUIRE(m.max_abs <= 1e-8);
        REQUIRE(r.state().position == r0.state().position);
      }
    }
  }
}

TEST_CASE("x0 clipping conventions and the samplers each one affects") {
  const NoiseSchedule s(BetaSchedule::Linear, 100);
  const WideOracle model{&s};
  Tensor<double> x_T(Shape{2, 1, 6, 6});
  Rng(9).normal(x_T.data(), x_T.numel());
  auto run = [&](SamplerKind kind, ClipX0 clip) {
    SamplerOptions o = options_for(kind, 8);
    o.clip = clip;
    Tensor<double> x;
    x.copy_from(x_T);
    Rng rng(1);
    sample(model, s, x, rng, o);
    return x;
  };
  for (SamplerKind kind : kAllSamplers) {
    INFO(sampler_name(kind));
    const Tensor<double> none = run(kind, ClipX0::None), rederive = run(kind, ClipX0::RederiveEps),
                         keep = run(kind, ClipX0::KeepModelEps);
    REQUIRE_FALSE(process_test::bitwise_equal(none, rederive));  // the x0 predictions leave [-1, 1]
    switch (kind) {
      case SamplerKind::Ddim:  // reads x0 and eps: three different results
        REQUIRE_FALSE(process_test::bitwise_equal(keep, rederive));
        REQUIRE_FALSE(process_test::bitwise_equal(keep, none));
        break;
      case SamplerKind::ReverseDiffusion:
      case SamplerKind::EulerMaruyama:
      case SamplerKind::PredictorCorrector:  // read only eps: keeping the model's eps is no clipping
        REQUIRE(process_test::bitwise_equal(keep, none));
        break;
      default:  // read only x0 (DDPM with clipping uses the posterior mean of the clipped x0)
        REQUIRE(process_test::bitwise_equal(keep, rederive));
    }
  }

  // DDIM with the model's eps kept is diffusers' step with use_clipped_model_output=False, one element by hand:
  // x' = sqrt(ab') clip(x0) + sqrt(1 - ab') eps (eta 0).
  Tensor<double> x(Shape{1, 1, 1, 1}, 2.5), out(Shape{1, 1, 1, 1}, -0.4);
  SamplerOptions o;
  o.timesteps = {10, 60};
  o.clip = ClipX0::KeepModelEps;
  Sampler<double> sampler(s, o);
  sampler.begin(x.shape());
  const double ab = s.alphas_cumprod[60], ab_prev = s.alphas_cumprod[10];
  const double x0 = std::min(1.0, (2.5 - std::sqrt(1.0 - ab) * -0.4) / std::sqrt(ab));
  REQUIRE(x0 == 1.0);
  REQUIRE(sampler.step(x, out, nullptr));
  REQUIRE(x[0] == Approx(std::sqrt(ab_prev) * 1.0 + std::sqrt(1.0 - ab_prev) * -0.4).epsilon(1e-14));
}

TEST_CASE("model calls and timesteps and callbacks and noise draws of each sampler") {
  const NoiseSchedule s(BetaSchedule::Linear, 50);
  const Shape shape{2, 1, 4, 4};  // 32 normals = 16 Philox blocks per draw
  struct Case {
    SamplerKind kind;
    int calls;  // with 8 steps
    int draws;  // noise tensors drawn
  };
  for (const Case& c : {Case{SamplerKind::Ddpm, 50, 49}, Case{SamplerKind::Ddim, 8, 0}, Case{SamplerKind::Euler, 8, 0},
                        Case{SamplerKind::EulerAncestral, 8, 7}, Case{SamplerKind::Heun, 15, 0},
                        Case{SamplerKind::DpmPp2M, 8, 0}, Case{SamplerKind::DpmPp2MSde, 8, 7},
                        Case{SamplerKind::UniPc, 8, 0},
                        Case{SamplerKind::ReverseDiffusion, 8, 7}, Case{SamplerKind::EulerMaruyama, 8, 7},
                        Case{SamplerKind::PredictorCorrector, 24, 8 * 2 + 7}}) {
    INFO(sampler_name(c.kind));
    SamplerOptions o = options_for(c.kind, 8);
    o.corrector_steps = 2;
    const Sampler<float> plan(s, o);
    const std::vector<SamplingPoint>& points = plan.points();
    REQUIRE(plan.model_calls() == c.calls);
    std::vector<std::int64_t> model_t, callback_t;
    std::vector<const float*> buffers;
    auto model = [&](const Tensor<float>& x, const std::vector<std::int64_t>& t, Tensor<float>& out) {
      REQUIRE(t.size() == 2);
      REQUIRE(t[0] == t[1]);
      model_t.push_back(t[0]);
      out.ensure_shape(x.shape());
      for (Index i = 0; i < x.numel(); ++i) out[i] = 0.1f * x[i];
      buffers.push_back(out.data());
    };
    Tensor<float> x(shape);
    Rng rng(2);
    int steps = 0;
    sample(model, s, x, rng, o, [&](int step, std::int64_t t, const Tensor<float>&) {
      REQUIRE(step == steps++);
      callback_t.push_back(t);
    });
    REQUIRE(static_cast<int>(model_t.size()) == c.calls);
    REQUIRE(steps == plan.num_steps());
    for (int i = 0; i < steps; ++i) REQUIRE(callback_t[static_cast<std::size_t>(i)] == points[static_cast<std::size_t>(i)].t);
    REQUIRE(rng.state().position == static_cast<std::uint64_t>(c.draws) * 16u);
    for (const float* b : buffers) REQUIRE(b == buffers[0]);  // one output buffer for the run
    if (c.kind == SamplerKind::Heun) {  // t_i, t_{i+1} for each step, then the last step's single call
      for (int i = 0; i + 1 < steps; ++i) {
        REQUIRE(model_t[static_cast<std::size_t>(2 * i)] == points[static_cast<std::size_t>(i)].t);
        REQUIRE(model_t[static_cast<std::size_t>(2 * i + 1)] == points[static_cast<std::size_t>(i + 1)].t);
      }
      REQUIRE(model_t.back() == points[static_cast<std::size_t>(steps - 1)].t);
    }
    if (c.kind == SamplerKind::PredictorCorrector)  // corrector_steps + 1 calls at each level
      for (std::size_t i = 0; i < model_t.size(); ++i) REQUIRE(model_t[i] == points[i / 3].t);
  }
}

TEST_CASE("img2img starts from the image forward-noised to the level where the last steps begin") {
  const NoiseSchedule s(BetaSchedule::Linear, 1000);
  const sampler_test::GaussianOracle model{&s, 0.0, 0.5};
  const Shape shape{2, 1, 8, 8};
  Tensor<double> image(shape);
  Rng(4).uniform(image.data(), image.numel(), -0.8, 0.8);
  for (SamplerKind kind : {SamplerKind::Ddim, SamplerKind::DpmPp2M, SamplerKind::Heun, SamplerKind::Ddpm}) {
    SamplerOptions o;
    o.sampler = kind;
    o.steps = 20;
    const Sampler<double> plan(s, o);
    const int N = plan.num_steps();
    for (double strength : {1.0, 0.5, 0.26, 0.05}) {
      INFO(sampler_name(kind) << ", strength " << strength);
      const int first = N - static_cast<int>(N * strength);
      REQUIRE(plan.first_step_for_strength(strength) == first);
      // the start by hand: x = a image + b z, then the sampler from `first`
      Rng r1(10);
      Tensor<double> want(shape), out;
      r1.normal(want.data(), want.numel());
      const SamplingPoint& p = plan.points()[static_cast<std::size_t>(first)];
      for (Index i = 0; i < want.numel(); ++i) want[i] = p.a() * image[i] + p.b() * want[i];
      Sampler<double> manual(s, o);
      manual.begin(shape, first);
      Tensor<double> noise(shape);
      while (!manual.done()) {
        model(want, std::vector<std::int64_t>(2, manual.model_timestep()), out);
        const bool noisy = manual.needs_noise();
        if (noisy) r1.normal(noise.data(), noise.numel());
        manual.step(want, out, noisy ? &noise : nullptr);
      }
      Rng r2(10);
      Tensor<double> got;
      int steps = 0;
      std::int64_t first_t = -2;
      img2img(model, s, image, strength, got, r2, o, [&](int step, std::int64_t t, const Tensor<double>&) {
        if (steps++ == 0) first_t = t;
        REQUIRE(step == first + steps - 1);
      });
      REQUIRE(steps == N - first);
      REQUIRE(first_t == p.t);
      // the same arithmetic, but compiled at another place (the compiler may fuse multiply-adds differently)
      const auto m = process_test::compare(got, want);
      INFO(m.str());
      REQUIRE(m.rel() <= 1e-13);
    }
    // a small strength keeps the picture (one step from t = 0 for the linspace plan of DDIM and DPM-Solver++)
    if (kind == SamplerKind::Ddim || kind == SamplerKind::DpmPp2M) {
      Rng r(1);
      Tensor<double> got;
      img2img(model, s, image, 1.0 / N, got, r, o);
      const auto m = process_test::compare(got, image);
      INFO(m.str());
      REQUIRE(m.max_abs <= 0.05);
    }
  }
  Tensor<double> got;
  Rng r(1);
  SamplerOptions o;
  o.steps = 20;
  REQUIRE_THROWS_WITH(img2img(model, s, image, 0.04, got, r, o), Catch::Contains("leaves no step") &&
                                                                   Catch::Contains("1/20"));
  REQUIRE_THROWS_WITH(img2img(model, s, image, 1.5, got, r, o), Catch::Contains("strength must be in (0, 1]"));
  REQUIRE_THROWS_WITH(img2img(model, s, image, 0.0, got, r, o), Catch::Contains("strength must be in (0, 1]"));
  REQUIRE_THROWS_WITH(img2img(model, s, image, 0.5, image, r, o), Catch::Contains("x must be another tensor"));
}

TEST_CASE("inpainting keeps the known pixels and forward-noises them at every level") {
  const NoiseSchedule s(BetaSchedule::Linear, 200);
  const sampler_test::GaussianOracle model{&s, 0.2, 0.5};
  const Shape shape{4, 1, 32, 32};
  Tensor<double> image(shape), x_T(shape), keep(shape), ones(Shape{1, 1, 32, 32}, 1.0), zeros(shape, 0.0);
  Rng init(3);
  init.uniform(image.data(), image.numel(), -1.0, 1.0);
  init.normal(x_T.data(), x_T.numel());
  for (Index i = 0; i < keep.numel(); ++i) keep[i] = (i / 32) % 2 == 0 ? 1.0 : 0.0;  // every other row known
  for (SamplerKind kind : kAllSamplers) {
    INFO(sampler_name(kind));
    SamplerOptions o = options_for(kind, 10);
    o.clip = ClipX0::None;
    const Sampler<double> plan(s, o);
    // known pixels: after each step, (x - a' image) / b' is a fresh N(0, 1) draw; at the end exactly the image
    Tensor<double> x;
    x.copy_from(x_T);
    Rng rng(5);
    inpaint(model, s, image, keep, x, rng, o, [&](int step, std::int64_t, const Tensor<double>& xt) {
      const SamplingPoint& p = plan.points()[static_cast<std::size_t>(step) + 1];
      if (p.clean()) return;
      double sum = 0.0, sum2 = 0.0, n = 0.0;
      for (Index i = 0; i < xt.numel(); ++i) {
        if (keep[i] != 1.0) continue;
        const double z = (xt[i] - p.a() * image[i]) / p.b();
        sum += z;
        sum2 += z * z;
        n += 1.0;
      }
      // 2048 draws: 5 standard errors
      REQUIRE(std::fabs(sum / n) <= 5.0 * std::sqrt(1.0 / n));
      REQUIRE(std::fabs(sum2 / n - 1.0) <= 5.0 * std::sqrt(2.0 / n));
    });
    for (Index i = 0; i < x.numel(); ++i)
      if (keep[i] == 1.0) REQUIRE(x[i] == image[i]);
    // keep = 1 everywhere (one mask for the batch) returns the image; keep = 0 is plain sampling for a
    // deterministic sampler (inpainting's extra draws do not touch x)
    Tensor<double> all;
    all.copy_from(x_T);
    Rng r1(5);
    inpaint(model, s, image, ones, all, r1, o);
    REQUIRE(process_test::bitwise_equal(all, image));
    if (!sampler_is_stochastic(kind, effective_eta(o))) {
      Tensor<double> a, b;
      a.copy_from(x_T);
      b.copy_from(x_T);
      Rng r2(5), r3(5);
      inpaint(model, s, image, zeros, a, r2, o);
      sample(model, s, b, r3, o);
      REQUIRE(process_test::bitwise_equal(a, b));
    }
  }
  // strength < 1: SDEdit's start; keep = 0 with a deterministic sampler is img2img, keep = 1 the image
  for (SamplerKind kind : {SamplerKind::Ddim, SamplerKind::UniPc}) {
    INFO(sampler_name(kind) << " from strength 0.5");
    const SamplerOptions o = options_for(kind, 10);
    Tensor<double> a, b, c;
    Rng r1(9), r2(9), r3(9);
    inpaint(model, s, image, zeros, a, r1, o, NoCallback{}, 0.5);
    img2img(model, s, image, 0.5, b, r2, o);
    REQUIRE(process_test::bitwise_equal(a, b));
    inpaint(model, s, image, ones, c, r3, o, NoCallback{}, 0.5);
    REQUIRE(process_test::bitwise_equal(c, image));
  }
  Tensor<double> x;
  x.copy_from(x_T);
  Rng rng(1);
  REQUIRE_THROWS_WITH(inpaint(model, s, image, Tensor<double>(Shape{2, 1, 32, 32}, 1.0), x, rng),
                      Catch::Contains("keep mask has shape (2, 1, 32, 32)"));
  REQUIRE_THROWS_WITH(inpaint(model, s, image, Tensor<double>(shape, 1.5), x, rng), Catch::Contains("outside [0, 1]"));
  REQUIRE_THROWS_WITH(inpaint(model, s, image, keep, image, rng), Catch::Contains("x must be another tensor"));
  REQUIRE_THROWS_WITH(inpaint(model, s, Tensor<double>(Shape{4, 1, 32, 31}), keep, x, rng),
                      Catch::Contains("inpaint: image"));
}

TEST_CASE("guidance is a model wrapper: the loop samples with a combination of two model outputs") {
  // Classifier-free guidance combines a conditional and an unconditional prediction, eps = u + w (c - u). With
  // two Gaussian oracles and eps linear in them the result is the oracle of the combined coefficients, so the
  // guided run must equal a run with that single model.
  const NoiseSchedule s(BetaSchedule::Linear, 100);
  const sampler_test::GaussianOracle cond{&s, 0.5, 0.4}, uncond{&s, 0.0, 0.6};
  const double w = 2.5;
  Tensor<double> scratch;  // the guidance wrapper's own buffer
  auto guided = [&](const Tensor<double>& x, const std::vector<std::int64_t>& t, Tensor<double>& out) {
    uncond(x, t, out);
    cond(x, t, scratch);
    for (Index i = 0; i < out.numel(); ++i) out[i] = out[i] + w * (scratch[i] - out[i]);
  };
  auto combined = [&](const Tensor<double>& x, const std::vector<std::int64_t>& t, Tensor<double>& out) {
    out.ensure_shape(x.shape());
    const Index per = x.numel() / x.dim(0);
    for (Index i = 0; i < x.numel(); ++i) {
      double Ac, Bc, Au, Bu;
      const double ab = s.alphas_cumprod[static_cast<std::size_t>(t[static_cast<std::size_t>(i / per)])];
      cond.coefficients(ab, Ac, Bc);
      uncond.coefficients(ab, Au, Bu);
      out[i] = (Au + w * (Ac - Au)) * x[i] + (Bu + w * (Bc - Bu));
    }
  };
  for (SamplerKind kind : {SamplerKind::DpmPp2M, SamplerKind::EulerAncestral}) {
    SamplerOptions o = options_for(kind, 10);
    Tensor<double> a(Shape{2, 1, 3, 3}), b;
    Rng(1).normal(a.data(), a.numel());
    b.copy_from(a);
    Rng r1(2), r2(2);
    sample(guided, s, a, r1, o);
    sample(combined, s, b, r2, o);
    const auto m = process_test::compare(a, b);
    INFO(sampler_name(kind) << ": " << m.str());
    REQUIRE(m.max_abs <= 1e-12);
  }
}

TEST_CASE("Sampler and the loop check their arguments") {
  const NoiseSchedule s(BetaSchedule::Linear, 20);
  const sampler_test::GaussianOracle model{&s, 0.0, 0.5};
  SamplerOptions o;
  o.eta = -0.5;
  REQUIRE_THROWS_WITH(Sampler<float>(s, o), Catch::Contains("SamplerOptions::eta must be >= 0, got -0.5"));
  o.eta = std::nan("");
  REQUIRE_THROWS_WITH(Sampler<float>(s, o), Catch::Contains("eta must be >= 0, got nan"));
  o = SamplerOptions{};
  o.karras_rho = 0.0;
  REQUIRE_THROWS_WITH(Sampler<float>(s, o), Catch::Contains("karras_rho must be > 0"));
  o = SamplerOptions{};
  o.sampler = SamplerKind::PredictorCorrector;
  o.snr = -1.0;
  REQUIRE_THROWS_WITH(Sampler<float>(s, o), Catch::Contains("snr must be > 0"));
  o.snr = 0.1;
  o.corrector_steps = -1;
  REQUIRE_THROWS_WITH(Sampler<float>(s, o), Catch::Contains("corrector_steps must be >= 0"));
  o = SamplerOptions{};
  o.steps = 21;
  REQUIRE_THROWS_WITH(Sampler<float>(s, o), Catch::Contains("S must be in [1, T = 20], got 21"));
  o.spacing = TimestepSpacing::Karras;
  REQUIRE_THROWS_WITH(Sampler<float>(s, o), Catch::Contains("karras_timesteps") && Catch::Contains("got 21"));
  o = SamplerOptions{};
  o.sampler = SamplerKind::Ddpm;
  o.timesteps = {1, 5};
  REQUIRE_THROWS_WITH(Sampler<float>(s, o), Catch::Contains("ddpm visits every timestep"));
  o.sampler = SamplerKind::Heun;
  o.timesteps = {5, 1};
  REQUIRE_THROWS_WITH(Sampler<float>(s, o), Catch::Contains("SamplerOptions::timesteps") &&
                                                Catch::Contains("strictly ascending"));

  // step(): noise when needed, shapes as begun, nothing after the end
  o = SamplerOptions{};
  o.sampler = SamplerKind::EulerAncestral;
  o.steps = 2;
  Sampler<float> sampler(s, o);
  Tensor<float> x(Shape{1, 1, 2, 2}), out(Shape{1, 1, 2, 2}), bad(Shape{1, 1, 2, 3});
  sampler.begin(x.shape());
  REQUIRE(sampler.needs_noise());
  REQUIRE_THROWS_WITH(sampler.step(x, out, nullptr), Catch::Contains("euler_ancestral needs noise at step 0"));
  REQUIRE_THROWS_WITH(sampler.step(x, bad, &x), Catch::Contains("model output"));
  REQUIRE_THROWS_WITH(sampler.step(x, out, &bad), Catch::Contains("noise"));
  REQUIRE_THROWS_WITH(sampler.step(bad, out, &x), Catch::Contains("begin() was given (1, 1, 2, 2)"));
  REQUIRE(sampler.step(x, out, &x));
  REQUIRE_FALSE(sampler.needs_noise());  // the last step lands on sigma = 0
  REQUIRE(sampler.step(x, out, nullptr));
  REQUIRE(sampler.done());
  REQUIRE_THROWS_WITH(sampler.step(x, out, nullptr), Catch::Contains("steps are done"));
  REQUIRE_THROWS_WITH(sampler.begin(x.shape(), 2), Catch::Contains("first step 2 outside [0, 2)"));

  Rng rng(1);
  o = SamplerOptions{};
  o.steps = 5;
  Tensor<float> empty(Shape{0, 1, 2, 2});
  REQUIRE_THROWS_WITH(sample(model, s, empty, rng, o), Catch::Contains("sample: x_T must be a non-empty batch"));
  auto shrinking = [](const Tensor<float>&, const std::vector<std::int64_t>&, Tensor<float>& r) { r.resize(Shape{1}); };
  REQUIRE_THROWS_WITH(sample(shrinking, s, x, rng, o),
                      Catch::Contains("sample: the model returned an output of shape (1)"));
}
