// q_sample, parameterizations and losses: against the float64 PyTorch reference (schedules.safetensors), against
// finite differences, and their argument checks.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "diffusion/core/random.hpp"
#include "diffusion/process/forward_process.hpp"
#include "diffusion/process/losses.hpp"
#include "diffusion/process/parameterization.hpp"
#include "diffusion/process/schedule.hpp"
#include "process/process_test_util.hpp"

using namespace diffusion;
using process_test::cast;
using process_test::compare;

TEMPLATE_TEST_CASE("q_sample matches reference.q_sample", "", float, double) {
  using T = TestType;
  io::SafetensorsReader fx(process_test::golden("schedules.safetensors"));
  const NoiseSchedule s(BetaSchedule::Linear, 200);
  const Tensor<T> x0 = cast<T>(fx.read<double>("q_sample.x0"));
  const Tensor<T> noise = cast<T>(fx.read<double>("q_sample.noise"));
  const std::vector<std::int64_t> t = process_test::to_timesteps(fx.read<double>("q_sample.t"));
  const Tensor<double> want = fx.read<double>("q_sample.out");
  Tensor<T> out;
  q_sample(s, x0, t, noise, out);
  REQUIRE(out.shape() == want.shape());
  const auto m = compare(out, want);
  INFO(m.str());
  // double: the same two products and a sum, a few ulps. float: the inputs are rounded to float (2^-24 relative
  // each) and the result once more, so the error is below ~3 * 2^-24 * max|a x0| + |b noise| <= 2e-7 * max|out|.
  REQUIRE(m.rel() <= (std::is_same_v<T, double> ? 1e-14 : 1e-6));

  // in place (out aliases x0) gives the same bits
  Tensor<T> inplace;
  inplace.copy_from(x0);
  q_sample(s, inplace, t, noise, inplace);
  REQUIRE(process_test::bitwise_equal(inplace, out));
}

TEST_CASE("q_sample checks shapes and timesteps") {
  const NoiseSchedule s(BetaSchedule::Linear, 200);
  Tensor<float> x0(Shape{2, 1, 3, 3}), noise(Shape{2, 1, 3, 3}), out;
  REQUIRE_THROWS_WITH(q_sample(s, x0, {0, 200}, noise, out), Catch::Contains("timestep 200 outside [0, 200)"));
  REQUIRE_THROWS_WITH(q_sample(s, x0, {0}, noise, out), Catch::Contains("t has 1 timesteps for a batch of 2"));
  Tensor<float> bad(Shape{2, 1, 3, 4});
  REQUIRE_THROWS_WITH(q_sample(s, x0, {0, 1}, bad, out),
                      Catch::Contains("noise") && Catch::Contains("(2, 1, 3, 3)") && Catch::Contains("(2, 1, 3, 4)"));
}

TEST_CASE("sample_timesteps draws every t from 0 to T-1 uniformly and reproducibly") {
  const NoiseSchedule s(BetaSchedule::Linear, 10);
  Rng rng(5);
  std::vector<std::int64_t> t;
  sample_timesteps(rng, s, 20000, t);
  REQUIRE(t.size() == 20000);
  std::vector<int> count(10, 0);
  for (std::int64_t v : t) {
    REQUIRE(v >= 0);
    REQUIRE(v < 10);
    ++count[static_cast<std::size_t>(v)];
  }
  // each count ~ Binomial(20000, 0.1): mean 2000, sd 42.4; 6 sd = 255
  for (int c : count) REQUIRE(std::abs(c - 2000) <= 255);
  Rng again(5);
  std::vector<std::int64_t> t2;
  sample_timesteps(again, s, 20000, t2);
  REQUIRE(t2 == t);
}

TEST_CASE("every parameterization inverts its own training target") {
  // x_t = a x0 + b eps; a model that outputs exactly the target of prediction p must give back eps and x0.
  const NoiseSchedule s(BetaSchedule::Linear, 1000);
  const Shape shape{4, 2, 3, 3};
  Rng rng(17);
  const auto x0 = Tensor<double>::normal(shape, rng);
  const auto noise = Tensor<double>::normal(shape, rng);
  Tensor<double> x_t, target, eps, x0_back;
  const std::vector<std::int64_t> t = {0, 10, 500, 999};
  q_sample(s, x0, t, noise, x_t);
  for (Prediction p : {Prediction::Epsilon, Prediction::X0, Prediction::V}) {
    INFO("prediction " << prediction_name(p));
    training_target(p, s, x0, t, noise, target);
    eps_from_output(p, s, x_t, t, target, eps);
    x0_from_output(p, s, x_t, t, target, x0_back);
    const auto me = compare(eps, noise);
    const auto mx = compare(x0_back, x0);
    INFO("eps: " << me.str() << "; x0: " << mx.str());
    // double round trip; the worst case divides by a = sqrt(abar_999) = 6.4e-3 (linear schedule), which scales
    // rounding errors of ~1e-16 * |x_t| up to ~1e-13.
    REQUIRE(me.max_abs <= 1e-11);
    REQUIRE(mx.max_abs <= 1e-11);
  }
  // v = sqrt(abar) eps - sqrt(1 - abar) x0, written out
  training_target(Prediction::V, s, x0, t, noise, target);
  const Index per = shape.numel() / 4;
  for (Index n = 0; n < 4; ++n)
    for (Index i = 0; i < per; ++i) {
      const std::size_t tn = static_cast<std::size_t>(t[static_cast<std::size_t>(n)]);
      const double want = s.sqrt_alphas_cumprod[tn] * noise[n * per + i] - s.sqrt_one_minus_alphas_cumprod[tn] * x0[n * per + i];
      REQUIRE(target[n * per + i] == Approx(want).epsilon(1e-15).margin(1e-15));
    }
  REQUIRE(parse_prediction("v") == Prediction::V);
  REQUIRE(parse_prediction("epsilon") == Prediction::Epsilon);
  REQUIRE_THROWS_WITH(parse_prediction("noise"), Catch::Contains("'noise'") && Catch::Contains("eps, x0, v"));
  Tensor<double> wrong(Shape{4, 2, 3, 2});
  REQUIRE_THROWS_WITH(eps_from_output(Prediction::V, s, x_t, t, wrong, eps), Catch::Contains("model output"));
  REQUIRE_THROWS_WITH(training_target(Prediction::V, s, x0, {1, 2, 3}, noise, target), Catch::Contains("t has 3"));
}

TEMPLATE_TEST_CASE("losses and their gradients match PyTorch", "", float, double) {
  using T = TestType;
  io::SafetensorsReader fx(process_test::golden("schedules.safetensors"));
  const Tensor<T> pred = cast<T>(fx.read<double>("loss.pred"));
  const Tensor<T> target = cast<T>(fx.read<double>("loss.target"));
  for (const char* name : {"l1", "l2", "huber"}) {
    INFO("loss " << name);
    const LossType type = parse_loss_type(name);
    const double want = fx.read<double>(std::string("loss.") + name + ".value")[0];
    const Tensor<double> want_grad = fx.read<double>(std::string("loss.") + name + ".grad");
    Tensor<T> dpred(pred.shape(), std::numeric_limits<T>::quiet_NaN());  // must be assigned everywhere
    const double value = loss_forward_backward(type, pred, target, dpred);
    CAPTURE(value, want);
    // double: a mean of 96 terms in double (~1e-16 relative). float: the inputs were rounded to float; the loss
    // (a mean of |d| or d^2 with |d| ~ 1) moves by at most ~2 * 2^-24 relative.
    REQUIRE(std::fabs(value - want) <= (std::is_same_v<T, double> ? 1e-14 : 2e-7) * std::fabs(want));
    REQUIRE(loss_forward(type, pred, target) == value);
    const auto m = compare(dpred, want_grad);
    INFO("gradient: " << m.str());
    REQUIRE(m.rel() <= (std::is_same_v<T, double> ? 1e-14 : 1e-6));
  }
}

TEST_CASE("loss gradients equal central finite differences in double") {
  io::SafetensorsReader fx(process_test::golden("schedules.safetensors"));
  Tensor<double> pred = fx.read<double>("loss.pred");
  const Tensor<double> target = fx.read<double>("loss.target");
  for (LossType type : {LossType::L1, LossType::L2, LossType::Huber}) {
    INFO("loss " << loss_type_name(type));
    Tensor<double> dpred(pred.shape(), NAN);
    loss_forward_backward(type, pred, target, dpred);
    const double h = 1e-6;
    double worst = 0.0;
    Index checked = 0;
    for (Index i = 0; i < pred.numel(); ++i) {
      const double d = pred[i] - target[i];
      // the losses are piecewise polynomials of degree <= 2, so central differences are exact away from the kinks
      // (d = 0 for L1, |d| = 1 for Huber); skip elements within 1e-3 of one.
      if (type == LossType::L1 && std::fabs(d) < 1e-3) continue;
      if (type == LossType::Huber && std::fabs(std::fabs(d) - 1.0) < 1e-3) continue;
      const double keep = pred[i];
      pred[i] = keep + h;
      const double fp = loss_forward(type, pred, target);
      pred[i] = keep - h;
      const double fm = loss_forward(type, pred, target);
      pred[i] = keep;
      const double fd = (fp - fm) / (2 * h);
      worst = diffusion::testing::max_keep_nan(worst, diffusion::testing::element_error(dpred[i], fd));
      ++checked;
    }
    CAPTURE(worst, checked);
    // rounding of the loss (~1, eps 1.1e-16) divided by 2h: ~1e-10; gradients are O(1/96) = 1e-2
    REQUIRE(worst <= 1e-8);
    REQUIRE(checked >= 80);
  }
  // L1 at exact ties: gradient 0 like PyTorch (the fixture has 4 tied elements)
  Tensor<double> d;
  loss_forward_backward(LossType::L1, pred, target, d);
  int ties = 0;
  for (Index i = 0; i < pred.numel(); ++i)
    if (pred[i] == target[i]) {
      ++ties;
      REQUIRE(d[i] == 0.0);
    }
  REQUIRE(ties == 4);
}

TEST_CASE("loss arguments are checked") {
  Tensor<float> a(Shape{2, 3}), b(Shape{3, 2}), d, empty(Shape{0, 3});
  REQUIRE_THROWS_WITH(loss_forward_backward(LossType::L2, a, b, d),
                      Catch::Contains("target") && Catch::Contains("(2, 3)") && Catch::Contains("(3, 2)"));
  REQUIRE_THROWS_WITH(loss_forward(LossType::L1, empty, empty), Catch::Contains("empty"));
  REQUIRE_THROWS_WITH(parse_loss_type("mse"), Catch::Contains("'mse'") && Catch::Contains("l2, l1, huber"));
}
