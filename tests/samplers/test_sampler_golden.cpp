// The unified samplers against tests/golden/samplers_analytic.safetensors (make_sampler_fixtures.py): runs of
// Euler, Heun, Euler ancestral, DPM-Solver++(2M), DPM-Solver++(2M) SDE, UniPC, reverse diffusion, Euler-Maruyama
// and the predictor-corrector sampler, transcribed from k-diffusion, DPM-Solver, diffusers and score_sde
// (sampler_reference.py), with
// the analytic model eps(x, t) = 0.1 x + 0.001 t; the Karras timesteps and the sigma <-> t map.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/core/random.hpp"
#include "diffusion/samplers/sample.hpp"
#include "diffusion/samplers/sampler.hpp"
#include "diffusion/samplers/timesteps.hpp"
#include "process/process_test_util.hpp"

using namespace diffusion;
using process_test::cast;
using process_test::compare;

namespace {

// eps(x, t) = 0.1 x + 0.001 t, the model of the fixtures.
struct GoldenAnalyticModel {
  template <class T>
  void operator()(const Tensor<T>& x, const std::vector<std::int64_t>& t, Tensor<T>& out) const {
    out.ensure_shape(x.shape());
    const Index N = x.dim(0), per = x.numel() / N;
    for (Index n = 0; n < N; ++n)
      for (Index i = n * per; i < (n + 1) * per; ++i)
        out[i] = static_cast<T>(0.1 * static_cast<double>(x[i]) +
                                0.001 * static_cast<double>(t[static_cast<std::size_t>(n)]));
  }
};

// Row r of a (rows, cols) fixture tensor, as a tensor of `shape`.
template <class T>
Tensor<T> golden_row(const Tensor<double>& m, Index r, const Shape& shape) {
  REQUIRE(m.dim(1) == shape.numel());
  Tensor<T> out;
  out.resize(shape);
  for (Index i = 0; i < shape.numel(); ++i) out[i] = static_cast<T>(m[r * m.dim(1) + i]);
  return out;
}

struct Case {
  std::string name;
  nlohmann::json meta;
  NoiseSchedule schedule;
  SamplerOptions options;
};

Case read_case(const io::SafetensorsReader& fx, const std::string& name) {
  const nlohmann::json m = nlohmann::json::parse(fx.metadata().at(name));
  Case c{name, m, NoiseSchedule(parse_beta_schedule(m.at("schedule").get<std::string>()), m.at("T").get<int>()), {}};
  SamplerOptions& o = c.options;
  o.sampler = parse_sampler(m.at("sampler").get<std::string>());
  o.steps = m.at("steps").get<int>();
  const std::string spacing = m.at("spacing").get<std::string>();
  if (spacing == "all") {
    for (int t = 0; t < c.schedule.num_timesteps(); ++t) o.timesteps.push_back(t);
  } else {
    o.spacing = parse_spacing(spacing);
  }
  o.clip = m.at("clip").get<bool>() ? ClipX0::RederiveEps : ClipX0::None;
  o.eta = m.at("eta").get<double>();
  o.snr = m.at("snr").get<double>() > 0.0 ? m.at("snr").get<double>() : o.snr;
  o.corrector_steps = m.at("corrector_steps").get<int>();
  return c;
}

const char* const kCases[] = {"euler_linspace",
                              "euler_karras",
                              "heun_karras",
                              "heun_trailing_clip",
                              "euler_ancestral_karras",
                              "euler_ancestral_linspace_eta05",
                              "dpmpp_2m_linspace",
                              "dpmpp_2m_karras_clip",
                              "dpmpp_2m_sde_karras",
                              "dpmpp_2m_sde_trailing_eta07_clip",
                              "uni_pc_karras",
                              "uni_pc_linspace_clip",
                              "reverse_diffusion_linspace",
                              "reverse_diffusion_all",
                              "euler_maruyama_linspace",
                              "euler_maruyama_all_clip",
                              "pc_linspace",
                              "pc_leading_two_corrector_steps_clip"};

}  // namespace

TEMPLATE_TEST_CASE("every sampler matches its reference transcription step by step", "", float, double) {
  using T = TestType;
  io::SafetensorsReader fx(process_test::golden("samplers_analytic.safetensors"));
  const Tensor<T> x_T = cast<T>(fx.read<double>("x_T"));
  // Norm-wise relative error per step. double: rounding only (the references compute in another order). float:
  // every step rounds x to float (measured: double <= 3.2e-15, float <= 2.7e-7). The schedules keep sigma_max <= 157
  // for Heun: its correction amplifies rounding by about a' sigma / sigma' (1e-9 in double for cosine T = 200,
  // sigma_max = 12833, in 6 steps).
  const double tol = std::is_same_v<T, double> ? 1e-12 : 1e-6;
  int cases = 0;
  for (const char* name : kCases) {
    const Case c = read_case(fx, name);
    INFO("case " << name << ": " << c.meta.dump());
    const std::vector<std::int64_t> want_ts = process_test::to_timesteps(fx.read<double>(c.name + ".timesteps"));
    const Tensor<double> traj = fx.read<double>(c.name + ".trajectory");
    const bool has_noise = fx.contains(c.name + ".noise");
    const Tensor<double> noise = has_noise ? fx.read<double>(c.name + ".noise") : Tensor<double>(Shape{0, x_T.numel()});

    Sampler<T> sampler(c.schedule, c.options);
    const std::vector<SamplingPoint>& points = sampler.points();
    REQUIRE(sampler.num_steps() == static_cast<int>(want_ts.size()));
    for (std::size_t i = 0; i < want_ts.size(); ++i) REQUIRE(points[i].t == want_ts[want_ts.size() - 1 - i]);
    REQUIRE(points.back().clean());

    // The sampler driven by hand with the fixture's noise, in the order it asks for it.
    Tensor<T> x, out;
    x.copy_from(x_T);
    sampler.begin(x.shape());
    std::vector<std::int64_t> t(static_cast<std::size_t>(x.dim(0)));
    Index noise_rows = 0;
    int calls = 0, steps = 0;
    double worst = 0.0;
    while (!sampler.done()) {
      for (std::int64_t& v : t) v = sampler.model_timestep();
      GoldenAnalyticModel{}(x, t, out);
      ++calls;
      Tensor<T> z;
      const bool noisy = sampler.needs_noise();
      if (noisy) {
        REQUIRE(noise_rows < noise.dim(0));
        z = golden_row<T>(noise, noise_rows++, x.shape());
      }
      if (!sampler.step(x, out, noisy ? &z : nullptr)) continue;
      const auto m = compare(x, golden_row<double>(traj, steps, x.shape()));
      INFO("step " << steps << ": " << m.str());
      REQUIRE(m.rel() <= tol);
      worst = std::max(worst, m.rel());
      ++steps;
    }
    REQUIRE(steps == sampler.num_steps());
    REQUIRE(calls == sampler.model_calls());
    REQUIRE(noise_rows == noise.dim(0));  // every stored draw used, none more

    // The deterministic samplers through the loop (the loop's noise comes from an Rng).
    if (!has_noise) {
      Tensor<T> y;
      y.copy_from(x_T);
      Rng rng(3);
      int seen = 0;
      sample(GoldenAnalyticModel{}, c.schedule, y, rng, c.options, [&](int step, std::int64_t ts, const Tensor<T>& xt) {
        REQUIRE(step == seen);
        REQUIRE(ts == points[static_cast<std::size_t>(step)].t);
        REQUIRE(compare(xt, golden_row<double>(traj, step, x_T.shape())).rel() <= tol);
        ++seen;
      });
      REQUIRE(seen == sampler.num_steps());
      REQUIRE(process_test::bitwise_equal(x, y));
      REQUIRE(rng.state().position == 0);
    }
    WARN(name << " (" << (std::is_same_v<T, double> ? "double" : "float") << "): worst relative error " << worst
              << " over " << steps << " steps, " << calls << " model calls");
    ++cases;
  }
  REQUIRE(cases == 18);
}

TEST_CASE("karras_timesteps and karras_sigmas and DiscreteSigmas match the reference") {
  io::SafetensorsReader fx(process_test::golden("samplers_analytic.safetensors"));
  int cases = 0;
  for (const std::string& name : fx.names()) {
    if (name.rfind("karras.", 0) != 0) continue;
    // karras.<schedule>.<T>.<N>
    const std::size_t a = name.find('.'), b = name.find('.', a + 1), c = name.find('.', b + 1);
    const NoiseSchedule s(parse_beta_schedule(name.substr(a + 1, b - a - 1)), std::stoi(name.substr(b + 1, c - b - 1)));
    const int N = std::stoi(name.substr(c + 1));
    INFO(name);
    const std::vector<std::int64_t> got = karras_timesteps(s, N);
    REQUIRE(got == process_test::to_timesteps(fx.read<double>(name)));
    REQUIRE(sampling_timesteps(s, N, TimestepSpacing::Karras) == got);
    ++cases;
  }
  REQUIRE(cases == 16);

  const NoiseSchedule s(BetaSchedule::Linear, 1000);
  const DiscreteSigmas ds(s);
  const auto sig = karras_sigmas(10, ds.sigma_min(), ds.sigma_max());
  const auto m = compare(sig, fx.read<double>("karras_sigmas.linear.1000.10"));
  INFO(m.str());
  REQUIRE(m.rel() <= 1e-13);
  REQUIRE(std::fabs(sig.front() / ds.sigma_max() - 1.0) <= 1e-14);  // (smax^(1/rho))^rho
  const Tensor<double> sigmas = fx.read<double>("sigma_to_t.sigma"), ts = fx.read<double>("sigma_to_t.t");
  for (Index i = 0; i < sigmas.numel(); ++i) {
    INFO("sigma " << sigmas[i]);
    REQUIRE(std::fabs(ds.sigma_to_t(sigmas[i]) - ts[i]) <= 1e-9);
    const double t = ds.sigma_to_t(sigmas[i]);
    if (sigmas[i] >= ds.sigma_min() && sigmas[i] <= ds.sigma_max())  // inside the table, t_to_sigma inverts it
      REQUIRE(std::fabs(ds.t_to_sigma(t) / sigmas[i] - 1.0) <= 1e-12);
  }
}

TEST_CASE("karras_timesteps gives S distinct timesteps for every S <= T") {
  for (BetaSchedule b : {BetaSchedule::Linear, BetaSchedule::Cosine}) {
    for (int T : {1, 2, 7, 50, 300}) {
      const NoiseSchedule s(b, T);
      for (int S = 1; S <= T; ++S) {
        INFO(beta_schedule_name(b) << " T = " << T << " S = " << S);
        const std::vector<std::int64_t> ts = karras_timesteps(s, S);  // checks ascending, distinct, in [0, T)
        REQUIRE(static_cast<int>(ts.size()) == S);
        REQUIRE(ts.back() == T - 1);  // sigma_max
        REQUIRE(ts.front() == (S == 1 ? T - 1 : 0));
      }
    }
  }
  REQUIRE_THROWS_WITH(karras_timesteps(NoiseSchedule(BetaSchedule::Linear, 10), 11), Catch::Contains("got 11"));
  REQUIRE_THROWS_WITH(ddim_timesteps(10, 3, TimestepSpacing::Karras), Catch::Contains("sampling_timesteps"));
  REQUIRE_THROWS_WITH(karras_sigmas(3, 0.1, 1.0, 0.0), Catch::Contains("rho must be > 0"));
}

TEST_CASE("a sampler's multistep history starts clean: a NaN left by an earlier run does not reach the next") {
  // UniPC's and DPM-Solver++(2M)'s first steps weight the previous-step terms by 0; a history buffer holding a NaN
  // from before would turn 0 x NaN into NaN. Run 1 feeds the sampler a NaN prediction (so its history holds NaNs),
  // run 2 on the same Sampler must give the bits of a fresh one.
  io::SafetensorsReader fx(process_test::golden("samplers_analytic.safetensors"));
  const Tensor<float> x_T = cast<float>(fx.read<double>("x_T"));
  for (const char* name : {"uni_pc_karras", "dpmpp_2m_linspace"}) {
    INFO(name);
    const Case c = read_case(fx, name);
    const auto run = [&](Sampler<float>& sampler, bool nan_model) {
      Tensor<float> x, out;
      x.copy_from(x_T);
      sampler.begin(x.shape());
      std::vector<std::int64_t> t(static_cast<std::size_t>(x.dim(0)));
      while (!sampler.done()) {
        for (std::int64_t& v : t) v = sampler.model_timestep();
        GoldenAnalyticModel{}(x, t, out);
        if (nan_model) out.fill(std::numeric_limits<float>::quiet_NaN());
        sampler.step(x, out, nullptr);
      }
      return x;
    };
    Sampler<float> fresh(c.schedule, c.options), reused(c.schedule, c.options);
    const Tensor<float> want = run(fresh, false);
    // The fresh run is the reference's last step (compare fails on a NaN or an infinity at any element).
    const Tensor<double> traj = fx.read<double>(c.name + ".trajectory");
    REQUIRE(compare(want, golden_row<double>(traj, traj.dim(0) - 1, x_T.shape())).rel() <= 1e-6);
    (void)run(reused, true);
    const Tensor<float> got = run(reused, false);
    REQUIRE(process_test::bitwise_equal(got, want));
  }
}
