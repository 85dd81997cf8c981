// DDIM: timestep sequences and trajectories against the PyTorch reference (ddim_analytic.safetensors with an
// analytic model, ddim_unet.safetensors with the reference U-Net), the Gaussian oracle at 50 steps (eta 0 and 1),
// determinism (1, 2, 3 and 7 threads), callbacks and argument checks.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/core/parallel.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/model/unet_weights.hpp"
#include "diffusion/samplers/ddim.hpp"
#include "process/process_test_util.hpp"
#include "samplers/oracle.hpp"
#include "support/threads.hpp"

using namespace diffusion;
using process_test::cast;
using process_test::compare;

namespace {

// The analytic model of the fixtures: eps(x, t) = 0.1 x + 0.001 t.
struct AnalyticModel {
  template <class T>
  void operator()(const Tensor<T>& x, const std::vector<std::int64_t>& t, Tensor<T>& out) const {
    out.ensure_shape(x.shape());
    const Index N = x.dim(0), per = x.numel() / N;
    for (Index n = 0; n < N; ++n)
      for (Index i = n * per; i < (n + 1) * per; ++i)
        out[i] = static_cast<T>(0.1 * static_cast<double>(x[i]) + 0.001 * static_cast<double>(t[static_cast<std::size_t>(n)]));
  }
};

const DdimSpacing kSpacings[] = {DdimSpacing::Linspace, DdimSpacing::Leading, DdimSpacing::Trailing};

// Row `r` of a (rows, cols) fixture tensor as a tensor of `shape`.
template <class T>
Tensor<T> row(const Tensor<double>& m, Index r, const Shape& shape) {
  Tensor<T> out;
  out.resize(shape);
  REQUIRE(m.dim(1) == shape.numel());
  for (Index i = 0; i < shape.numel(); ++i) out[i] = static_cast<T>(m[r * m.dim(1) + i]);
  return out;
}

}  // namespace

TEST_CASE("ddim_timesteps equals reference.ddim_timesteps") {
  io::SafetensorsReader fx(process_test::golden("ddim_analytic.safetensors"));
  int cases = 0;
  for (const std::string& name : fx.names()) {
    if (name.rfind("timesteps.", 0) != 0) continue;
    // timesteps.<spacing>.<T>.<S>
    const std::size_t a = name.find('.'), b = name.find('.', a + 1), c = name.find('.', b + 1);
    const DdimSpacing spacing = parse_ddim_spacing(name.substr(a + 1, b - a - 1));
    const int T = std::stoi(name.substr(b + 1, c - b - 1)), S = std::stoi(name.substr(c + 1));
    const std::vector<std::int64_t> want = process_test::to_timesteps(fx.read<double>(name));
    INFO(name);
    REQUIRE(ddim_timesteps(T, S, spacing) == want);
    ++cases;
  }
  REQUIRE(cases == 30);
  // numpy's float arange gives the reference one element too many for (trailing, T = 200, S = 29): a -1 that the
  // fixture dropped; the library returns exactly S timesteps
  REQUIRE(fx.metadata().at("trailing_reference_has_extra_minus_one") == "200/29");
  REQUIRE(ddim_timesteps(200, 29, DdimSpacing::Trailing).size() == 29);
}

TEST_CASE("ddim_timesteps are ascending and distinct and within 0 to T-1 for every T <= 260 and S <= T") {
  for (DdimSpacing spacing : kSpacings)
    for (int T = 1; T <= 260; ++T)
      for (int S = 1; S <= T; ++S) {
        // ddim_timesteps checks this itself and throws; the test also checks size and ends
        const std::vector<std::int64_t> ts = ddim_timesteps(T, S, spacing);
        REQUIRE(static_cast<int>(ts.size()) == S);
        if (spacing != DdimSpacing::Trailing) REQUIRE(ts.front() == 0);
        if (spacing == DdimSpacing::Trailing || (spacing == DdimSpacing::Linspace && S > 1)) REQUIRE(ts.back() == T - 1);
      }
  REQUIRE_THROWS_WITH(ddim_timesteps(10, 0, DdimSpacing::Linspace), Catch::Contains("S must be in [1, T = 10]"));
  REQUIRE_THROWS_WITH(ddim_timesteps(10, 11, DdimSpacing::Leading), Catch::Contains("got 11"));
  REQUIRE_THROWS_WITH(ddim_timesteps(0, 1, DdimSpacing::Leading), Catch::Contains("T must be >= 1"));
  REQUIRE_THROWS_WITH(parse_ddim_spacing("uniform"), Catch::Contains("linspace, leading, trailing"));
}

TEMPLATE_TEST_CASE("DDIM trajectories match reference.ddim_step (spacings, clipping, eta > 0)", "", float, double) {
  using T = TestType;
  io::SafetensorsReader fx(process_test::golden("ddim_analytic.safetensors"));
  const NoiseSchedule s(BetaSchedule::Linear, 1000);
  REQUIRE(compare(s.alphas_cumprod, fx.read<double>("alphas_cumprod")).max_abs <= 1e-15);
  const Tensor<T> x_T = cast<T>(fx.read<double>("x_T"));
  // Norm-wise relative error (max |got - want| / max |want|) per step. double: ~1e-15 per operation; the x0
  // division by sqrt(ab_t) >= 6e-3 and 30 steps bound the growth well below 1e-10. float: the brief's 1e-5.
  const double tol = std::is_same_v<T, double> ? 1e-10 : 1e-5;
  int cases = 0;
  for (const char* name : {"linspace", "leading", "trailing", "linspace_clip", "trailing_clip", "linspace_eta1",
                           "leading_eta05_clip"}) {
    INFO("case " << name);
    const std::string key = std::string("ddim.") + name;
    const Tensor<double> params = fx.read<double>(key + ".params");  // [eta, clip, S, spacing]
    const Tensor<double> traj = fx.read<double>(key + ".trajectory");
    const std::vector<std::int64_t> want_ts = process_test::to_timesteps(fx.read<double>(key + ".timesteps"));
    DdimOptions o;
    o.eta = params[0];
    o.clip_x0 = params[1] != 0.0;
    o.steps = static_cast<int>(params[2]);
    o.spacing = kSpacings[static_cast<int>(params[3])];
    REQUIRE(ddim_sequence(s, o) == want_ts);
    const int S = o.steps;
    REQUIRE(traj.dim(0) == S);

    double worst = 0.0;
    if (o.eta == 0.0) {
      // the whole sampler
      Tensor<T> x;
      x.copy_from(x_T);
      Rng rng(1);
      int calls = 0;
      ddim_sample(AnalyticModel{}, s, x, rng, o, [&](int step, std::int64_t t, const Tensor<T>& xt) {
        REQUIRE(step == calls);
        REQUIRE(t == want_ts[static_cast<std::size_t>(S - 1 - step)]);
        const auto m = compare(xt, row<double>(traj, step, x_T.shape()));
        INFO("step " << step << " (t = " << t << "): " << m.str());
        REQUIRE(m.rel() <= tol);
        worst = std::max(worst, m.rel());
        ++calls;
      });
      REQUIRE(calls == S);
    } else {
      // the step function with the fixture's noise (the sampler draws its own from an Rng)
      const Tensor<double> zs = fx.read<double>(key + ".z");
      Tensor<T> x, out;
      x.copy_from(x_T);
      for (int step = 0; step < S; ++step) {
        const std::size_t i = static_cast<std::size_t>(S - 1 - step);
        const double ab_t = s.alphas_cumprod[static_cast<std::size_t>(want_ts[i])];
        const double ab_prev = i > 0 ? s.alphas_cumprod[static_cast<std::size_t>(want_ts[i - 1])] : 1.0;
        AnalyticModel{}(x, std::vector<std::int64_t>(2, want_ts[i]), out);
        const Tensor<T> z = row<T>(zs, step, x_T.shape());
        ddim_step(x, out, ab_t, ab_prev, o, &z, x);
        const auto m = compare(x, row<double>(traj, step, x_T.shape()));
        INFO("step " << step << ": " << m.str());
        REQUIRE(m.rel() <= tol);
        worst = std::max(worst, m.rel());
      }
    }
    WARN("DDIM " << name << " (" << (std::is_same_v<T, double> ? "double" : "float")
                 << "): worst relative error over the trajectory " << worst);
    ++cases;
  }
  REQUIRE(cases == 7);
}

TEMPLATE_TEST_CASE("DDIM with the reference U-Net matches the PyTorch trajectory at every step", "", float, double) {
  // tests/golden/ddim_unet.safetensors (make_unet_fixtures.py): the unet_convnext weights, linear T = 200, 10
  // linspace steps, eta 0, no clipping; x after every step, evaluated in float64 and stored as float32.
  using T = TestType;
  const io::SafetensorsReader fx(process_test::golden("ddim_unet.safetensors"));
  const nlohmann::json setup = nlohmann::json::parse(fx.metadata().at("diffusion.ddim"));
  REQUIRE(setup.at("schedule") == "linear");
  const NoiseSchedule s(BetaSchedule::Linear, setup.at("T").get<int>());
  REQUIRE(compare(s.alphas_cumprod, fx.read<double>("alphas_cumprod")).max_abs <= 1e-15);
  const auto net = load_unet<T>(process_test::golden(fx.metadata().at("weights")));
  REQUIRE(net->config().to_json() == nlohmann::json::parse(fx.metadata().at("diffusion.unet")));
  DdimOptions o;
  o.steps = setup.at("steps").get<int>();
  o.spacing = parse_ddim_spacing(setup.at("spacing").get<std::string>());
  o.eta = setup.at("eta").get<double>();
  o.clip_x0 = setup.at("clip_x0").get<bool>();
  const std::vector<std::int64_t> want_ts = process_test::to_timesteps(fx.read<double>("timesteps"));
  REQUIRE(ddim_sequence(s, o) == want_ts);
  REQUIRE(want_ts.size() == 10);
  // Per step, max |x - x_ref| <= tol max |x_ref|. double: the fixture's float32 rounding (6e-8) dominates (measured
  // 3.9e-8). float: the float U-Net's output is within ~1e-6 of float64 relative to its largest value, and x grows to
  // |x| ~ 12 while eps stays O(1), so the relative error of x stays small (measured 1.7e-7); 1e-5 leaves a margin of 60.
  const double tol = std::is_same_v<T, double> ? 1e-6 : 1e-5;
  Tensor<T> x = fx.read<T>("x_T");
  Rng rng(1);
  int steps = 0;
  double worst = 0.0;
  auto model = [&](const Tensor<T>& xt, const std::vector<std::int64_t>& t, Tensor<T>& out) { net->forward(xt, t, out); };
  ddim_sample(model, s, x, rng, o, [&](int step, std::int64_t t, const Tensor<T>& xt) {
    REQUIRE(step == steps);
    REQUIRE(t == want_ts[want_ts.size() - 1 - static_cast<std::size_t>(step)]);
    const Tensor<double> want = fx.read<double>("x_" + std::to_string(step + 1));
    const auto m = compare(xt, want);
    INFO("step " << step << " (t = " << t << "): " << m.str());
    REQUIRE(m.rel() <= tol);
    worst = testing::max_keep_nan(worst, m.rel());
    ++steps;
  });
  REQUIRE(steps == 10);
  const auto m = compare(x, fx.read<double>("x_0"));
  INFO("x_0: " << m.str());
  REQUIRE(m.rel() <= tol);
  WARN("DDIM with the U-Net (" << (std::is_same_v<T, double> ? "double" : "float")
                               << "): worst relative error over the 10 steps " << worst);
}

TEST_CASE("DDIM uses the previous timestep of the sequence for abar_prev (S = 30 does not divide T = 1000)") {
  // Power check of the fixture comparison above: the common mistake abar_prev = abar_{t-1} (alphas_cumprod_prev[t])
  // moves the result far outside the tolerance.
  io::SafetensorsReader fx(process_test::golden("ddim_analytic.safetensors"));
  const NoiseSchedule s(BetaSchedule::Linear, 1000);
  const std::vector<std::int64_t> ts = process_test::to_timesteps(fx.read<double>("ddim.leading.timesteps"));
  REQUIRE(ts[1] - ts[0] == 33);  // 1000 / 30 = 33 (integer division): stride 33, last timestep 957
  const Tensor<double> traj = fx.read<double>("ddim.leading.trajectory");
  Tensor<double> x = fx.read<double>("x_T"), out;
  DdimOptions o;
  o.clip_x0 = false;  // as the fixture's case
  for (std::size_t i = ts.size(); i-- > 0;) {
    AnalyticModel{}(x, std::vector<std::int64_t>(2, ts[i]), out);
    ddim_step(x, out, s.alphas_cumprod[static_cast<std::size_t>(ts[i])],
              s.alphas_cumprod_prev[static_cast<std::size_t>(ts[i])], o, nullptr, x);
  }
  const auto m = compare(x, row<double>(traj, traj.dim(0) - 1, x.shape()));
  INFO(m.str());
  REQUIRE(m.rel() > 1e-2);
}

TEST_CASE("DDIM with eta = 0 is deterministic and never touches the rng while eta > 0 draws noise") {
  const NoiseSchedule s(BetaSchedule::Linear, 1000);
  const Shape shape{2, 3, 8, 8};
  Tensor<float> x_T(shape);
  Rng init(4);
  init.normal(x_T.data(), x_T.numel());
  const sampler_test::GaussianOracle oracle{&s, 0.3, 0.5};
  DdimOptions o;
  o.steps = 20;
  Tensor<float> a, b;
  a.copy_from(x_T);
  b.copy_from(x_T);
  Rng r1(100), r2(999);
  {
    testing::ScopedThreads threads(1);
    ddim_sample(oracle, s, a, r1, o);
  }
  {
    testing::ScopedThreads threads(2);
    ddim_sample(oracle, s, b, r2, o);
  }
  REQUIRE(process_test::bitwise_equal(a, b));  // different seeds and thread counts, same bits
  REQUIRE(r1.state().position == 0);
  REQUIRE(r2.state().position == 0);

  o.eta = 1.0;
  Tensor<float> c, d;
  c.copy_from(x_T);
  d.copy_from(x_T);
  Rng r3(100), r4(101);
  ddim_sample(oracle, s, c, r3, o);
  ddim_sample(oracle, s, d, r4, o);
  // 19 noisy steps of 384 normals (192 blocks); the last step (abar_prev = 1) has sigma = 0 and draws none
  REQUIRE(r3.state().position == 19u * 192u);
  REQUIRE_FALSE(process_test::bitwise_equal(c, d));
  REQUIRE_FALSE(process_test::bitwise_equal(c, a));
}

TEST_CASE("DDIM with a U-Net gives the same bits with 1 2 3 and 7 threads") {
  // A tiny U-Net of each block type as the model (the sampler's own loops are element-wise; the network's kernels
  // split their work by thread count), eta 0.5 so that noise is drawn, an uneven batch of 3 images. ScopedThreads
  // also makes every loop of two or more items parallel, so the uneven splits of 3 and 7 threads are taken.
  const NoiseSchedule s(BetaSchedule::Linear, 100);
  for (bool convnext : {true, false}) {
    INFO((convnext ? "ConvNeXt blocks" : "ResNet blocks"));
    UnetConfig c;
    c.dim = 8;
    c.channels = 2;
    c.dim_mults = {1, 2};
    c.use_convnext = convnext;
    c.resnet_block_groups = 4;
    Unet<float> net(c, 21);
    auto model = [&](const Tensor<float>& x, const std::vector<std::int64_t>& t, Tensor<float>& out) {
      net.forward(x, t, out);
    };
    Tensor<float> x_T(Shape{3, 2, 8, 8});
    Rng(6).normal(x_T.data(), x_T.numel());
    DdimOptions o;
    o.steps = 6;
    o.eta = 0.5;
    o.clip_x0 = true;
    std::vector<Tensor<float>> results;
    for (int threads : {1, 2, 3, 7}) {
      testing::ScopedThreads scoped(threads);
      Tensor<float> x;
      x.copy_from(x_T);
      Rng rng(12);
      ddim_sample(model, s, x, rng, o);
      results.push_back(std::move(x));
    }
    for (std::size_t i = 1; i < results.size(); ++i) {
      INFO("thread setting " << i << " against 1 thread");
      REQUIRE(process_test::bitwise_equal(results[i], results[0]));
    }
    for (float v : results[0]) REQUIRE(std::isfinite(v));
  }
}

TEST_CASE("DDIM: every prediction type gives the same samples, callbacks see every step, buffers are reused") {
  const NoiseSchedule s(BetaSchedule::Cosine, 400);
  const sampler_test::GaussianOracle oracle{&s, -0.2, 0.7};
  const Shape shape{2, 1, 5, 5};
  Tensor<double> x_T(shape);
  Rng init(8);
  init.normal(x_T.data(), x_T.numel());
  DdimOptions o;
  o.steps = 25;
  o.spacing = DdimSpacing::Trailing;
  o.eta = 0.5;
  o.clip_x0 = true;
  Rng r0(5);
  const std::vector<Tensor<double>> ref = ddim_sample_trajectory(oracle, s, x_T, r0, o);
  REQUIRE(ref.size() == 25);
  for (Prediction p : {Prediction::X0, Prediction::V}) {
    INFO("prediction " << prediction_name(p));
    // the same oracle, answering in terms of x0 or v
    std::vector<const double*> buffers;
    auto model = [&](const Tensor<double>& x, const std::vector<std::int64_t>& t, Tensor<double>& out) {
      Tensor<double> eps;
      oracle(x, t, eps);
      out.ensure_shape(x.shape());
      for (Index i = 0; i < x.numel(); ++i) {
        const NoiseLevel k = NoiseLevel::at(s, t[0]);
        const double x0 = x0_from_output(Prediction::Epsilon, k, x[i], eps[i]);
        out[i] = p == Prediction::X0 ? x0 : k.a * eps[i] - k.b * x0;
      }
      buffers.push_back(out.data());
    };
    o.prediction = p;
    Rng r(5);
    Tensor<double> x;
    x.copy_from(x_T);
    std::vector<std::int64_t> seen_t;
    int step_no = 0;
    ddim_sample(model, s, x, r, o, [&](int step, std::int64_t t, const Tensor<double>& xt) {
      REQUIRE(step == step_no);
      seen_t.push_back(t);
      const auto m = compare(xt, ref[static_cast<std::size_t>(step)]);
      INFO("step " << step << ": " << m.str());
      REQUIRE(m.max_abs <= 1e-9);  // double conversions through a, b (>= 4e-3 for cosine T = 400 at t = 399)
      ++step_no;
    });
    REQUIRE(step_no == 25);
    std::vector<std::int64_t> expected = ddim_timesteps(400, 25, DdimSpacing::Trailing);
    std::reverse(expected.begin(), expected.end());
    REQUIRE(seen_t == expected);
    REQUIRE(std::set<const double*>(buffers.begin(), buffers.end()).size() == 1);
  }
}

TEST_CASE("DDIM with the exact MMSE predictor samples N(mu, s^2) (50 steps, eta 0 and 1)") {
  const NoiseSchedule s(BetaSchedule::Linear, 1000);
  const double mu = 0.3, sd = 0.5;
  const sampler_test::GaussianOracle oracle{&s, mu, sd};
  const Shape shape{32, 1, 64, 64};
  const double n = static_cast<double>(shape.numel());
  DdimOptions o;
  o.steps = 50;
  o.clip_x0 = false;  // the exact moments are those of the unclipped sampler
  const std::vector<std::int64_t> ts = ddim_sequence(s, o);
  for (double eta : {0.0, 1.0}) {
    INFO("eta " << eta);
    // Exact output moments (oracle.hpp). Measured biases at 50 linspace steps: eta 0: mean -9.0e-4, variance
    // -0.0273; eta 1: mean -3.0e-6, variance -0.0536. They shrink like 1/S (eta 0: -0.0140 at 100 steps, -0.0015
    // at 1000; eta 1 at S = 1000 equals DDPM's -0.0039), i.e. they are the coarse discretisation, not a defect.
    // Bounds: 0.002 on the mean, 0.03 (eta 0) and 0.06 (eta 1) on the variance.
    const sampler_test::Moments exact = sampler_test::ddim_moments(oracle, ts, eta);
    CAPTURE(exact.mean - mu, exact.var - sd * sd);
    REQUIRE(std::fabs(exact.mean - mu) <= 0.002);
    REQUIRE(std::fabs(exact.var - sd * sd) <= (eta == 0.0 ? 0.03 : 0.06));

    Tensor<float> x(shape);
    Rng rng(31337);
    rng.normal(x.data(), x.numel());
    o.eta = eta;
    ddim_sample(oracle, s, x, rng, o);
    const sampler_test::Moments got = sampler_test::sample_moments(x);
    // 5 standard errors of n = 131072 draws (oracle.hpp): SE(mean) = sqrt(v/n) ~ 1.3e-3, SE(var) =
    // v sqrt(2/(n-1)) ~ 8.6e-4 (eta 0). With eta 0 the sampler is a deterministic affine map of x_T per pixel,
    // so the n outputs are still independent.
    const sampler_test::Tolerance tol = sampler_test::moment_tolerance(exact, n);
    CAPTURE(got.mean, got.var, exact.mean, exact.var, tol.mean, tol.var);
    WARN("DDIM eta " << eta << ": sample mean " << got.mean << " var " << got.var << "; exact mean " << exact.mean
                       << " var " << exact.var << "; tolerance " << tol.mean << " / " << tol.var);
    REQUIRE(std::fabs(got.mean - exact.mean) <= tol.mean);
    REQUIRE(std::fabs(got.var - exact.var) <= tol.var);
    REQUIRE(std::fabs(got.mean - mu) <= tol.mean + std::fabs(exact.mean - mu));
    REQUIRE(std::fabs(got.var - sd * sd) <= tol.var + std::fabs(exact.var - sd * sd));
  }

  // Power check: a predictor that believes s = 0.45 (10% off) produces a variance the test above rejects.
  const sampler_test::GaussianOracle wrong{&s, mu, 0.45};
  Tensor<float> x(shape);
  Rng rng(31337);
  rng.normal(x.data(), x.numel());
  o.eta = 0.0;
  ddim_sample(wrong, s, x, rng, o);
  const sampler_test::Moments exact = sampler_test::ddim_moments(oracle, ts, 0.0);
  const sampler_test::Moments got = sampler_test::sample_moments(x);
  CAPTURE(got.var, exact.var);
  REQUIRE(std::fabs(got.var - exact.var) > sampler_test::moment_tolerance(exact, n).var);
}

TEST_CASE("ddim_step and ddim_sample check their arguments") {
  const NoiseSchedule s(BetaSchedule::Linear, 100);
  Tensor<float> x(Shape{1, 1, 2, 2}), out(Shape{1, 1, 2, 2}), y;
  DdimOptions o;
  o.eta = 1.0;
  REQUIRE_THROWS_WITH(ddim_step(x, out, 0.5, 0.9, o, nullptr, y), Catch::Contains("noise is required"));
  REQUIRE_THROWS_WITH(ddim_step(x, out, 1.5, 0.9, o, &x, y), Catch::Contains("alpha_bar_t"));
  REQUIRE_THROWS_WITH(ddim_step(x, out, 0.5, 0.0, o, &x, y), Catch::Contains("alpha_bar_prev"));
  o.eta = -0.1;
  REQUIRE_THROWS_WITH(ddim_step(x, out, 0.5, 0.9, o, &x, y), Catch::Contains("eta must be >= 0"));
  Rng rng(1);
  REQUIRE_THROWS_WITH(ddim_sample(AnalyticModel{}, s, x, rng, o), Catch::Contains("eta must be >= 0"));
  o.eta = 0.0;
  o.steps = 101;
  REQUIRE_THROWS_WITH(ddim_sample(AnalyticModel{}, s, x, rng, o), Catch::Contains("S must be in [1, T = 100]"));
  o.timesteps = {5, 3};
  REQUIRE_THROWS_WITH(ddim_sample(AnalyticModel{}, s, x, rng, o), Catch::Contains("strictly ascending"));
  o.timesteps = {5, 100};
  REQUIRE_THROWS_WITH(ddim_sample(AnalyticModel{}, s, x, rng, o), Catch::Contains("timestep 100"));
  o.timesteps = {0, 7, 40, 99};  // an explicit, irregular sequence is accepted
  int calls = 0;
  ddim_sample(AnalyticModel{}, s, x, rng, o, [&](int, std::int64_t, const Tensor<float>&) { ++calls; });
  REQUIRE(calls == 4);
}
