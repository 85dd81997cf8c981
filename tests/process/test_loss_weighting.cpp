// Min-SNR-gamma loss weighting (process/loss_weighting.hpp) and the per-image weighted loss (process/losses.hpp):
// against diffusers' --snr_gamma computation in float64 PyTorch (schedules.safetensors, wloss.*), against finite
// differences, and the unweighted loss as the special case of weights 1.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "diffusion/process/loss_weighting.hpp"
#include "diffusion/process/losses.hpp"
#include "diffusion/process/schedule.hpp"
#include "process/process_test_util.hpp"

using namespace diffusion;
using process_test::cast;
using process_test::compare;

namespace {

std::vector<double> to_vector(const Tensor<double>& t) { return std::vector<double>(t.data(), t.data() + t.numel()); }

// The weighted mean loss and its gradient, as the trainer computes them: one loss_sum_backward over the batch.
template <class T>
double weighted_loss(LossType type, const Tensor<T>& pred, const Tensor<T>& target, const std::vector<double>& w,
                     Tensor<T>& dpred) {
  const double inv_count = 1.0 / static_cast<double>(pred.numel());
  return loss_sum_backward(type, TensorView<T>(pred), TensorView<T>(target), w.data(), inv_count, 0.0, dpred) *
         inv_count;
}

}  // namespace

TEST_CASE("Min-SNR-gamma weights equal diffusers' --snr_gamma weights") {
  io::SafetensorsReader fx(process_test::golden("schedules.safetensors"));
  const NoiseSchedule s(BetaSchedule::Linear, 1000);
  const std::vector<std::int64_t> t = process_test::to_timesteps(fx.read<double>("wloss.t"));
  for (const char* p : {"eps", "x0", "v"})
    for (int gamma : {5, 1}) {
      const std::string key = std::string("wloss.") + p + ".g" + std::to_string(gamma);
      INFO(key);
      const std::vector<double> want = to_vector(fx.read<double>(key + ".weights"));
      std::vector<double> w;
      loss_weights(gamma, parse_prediction(p), s, t, w);
      REQUIRE(w.size() == want.size());
      for (std::size_t n = 0; n < w.size(); ++n) {
        CAPTURE(n, t[n], w[n], want[n]);
        // the same formula in double; diffusers squares sqrt(abar) / sqrt(1 - abar), which costs a few ulps
        REQUIRE(std::fabs(w[n] - want[n]) <= 1e-13 * std::fabs(want[n]));
      }
    }
  // The fixture's timesteps straddle SNR = gamma: for eps prediction the weight is exactly 1 at and beyond it and
  // gamma / SNR (< 1) before it.
  std::vector<double> w;
  loss_weights(5.0, Prediction::Epsilon, s, t, w);
  REQUIRE(w[2] < 1.0);
  REQUIRE(w[3] == 1.0);
  REQUIRE(w[5] == 1.0);
  // gamma = 0 switches the weighting off: every weight 1, whatever the prediction.
  for (Prediction p : {Prediction::Epsilon, Prediction::X0, Prediction::V}) {
    loss_weights(0.0, p, s, t, w);
    for (double v : w) REQUIRE(v == 1.0);
  }
}

TEMPLATE_TEST_CASE("Min-SNR-gamma weighted losses and their gradients match PyTorch", "", float, double) {
  using T = TestType;
  io::SafetensorsReader fx(process_test::golden("schedules.safetensors"));
  const NoiseSchedule s(BetaSchedule::Linear, 1000);
  const std::vector<std::int64_t> t = process_test::to_timesteps(fx.read<double>("wloss.t"));
  const Tensor<T> pred = cast<T>(fx.read<double>("wloss.pred"));
  const Tensor<T> target = cast<T>(fx.read<double>("wloss.target"));
  for (const char* p : {"eps", "x0", "v"})
    for (int gamma : {5, 1})
      for (const char* name : {"l1", "l2", "huber"}) {
        const std::string key = std::string("wloss.") + p + ".g" + std::to_string(gamma) + "." + name;
        INFO(key);
        std::vector<double> w;
        loss_weights(gamma, parse_prediction(p), s, t, w);
        Tensor<T> dpred(pred.shape(), std::numeric_limits<T>::quiet_NaN());  // must be assigned everywhere
        const double value = weighted_loss(parse_loss_type(name), pred, target, w, dpred);
        const double want = fx.read<double>(key + ".value")[0];
        CAPTURE(value, want);
        // as the unweighted golden test: double sums 108 terms (~1e-16 relative each), float rounds the inputs
        REQUIRE(std::fabs(value - want) <= (std::is_same_v<T, double> ? 1e-14 : 2e-7) * std::fabs(want));
        const auto m = compare(dpred, fx.read<double>(key + ".grad"));
        INFO("gradient: " << m.str());
        REQUIRE(m.rel() <= (std::is_same_v<T, double> ? 1e-14 : 1e-6));
      }
}

TEST_CASE("the weighted loss's gradient equals central finite differences in double") {
  io::SafetensorsReader fx(process_test::golden("schedules.safetensors"));
  const NoiseSchedule s(BetaSchedule::Linear, 1000);
  const std::vector<std::int64_t> t = process_test::to_timesteps(fx.read<double>("wloss.t"));
  Tensor<double> pred = fx.read<double>("wloss.pred");
  const Tensor<double> target = fx.read<double>("wloss.target");
  std::vector<double> w;
  loss_weights(5.0, Prediction::V, s, t, w);  // every weight different from 1
  Tensor<double> dpred, scratch;
  weighted_loss(LossType::L2, pred, target, w, dpred);
  const double h = 1e-6;
  double worst = 0.0;
  for (Index i = 0; i < pred.numel(); ++i) {
    const double keep = pred[i];
    pred[i] = keep + h;
    const double fp = weighted_loss(LossType::L2, pred, target, w, scratch);
    pred[i] = keep - h;
    const double fm = weighted_loss(LossType::L2, pred, target, w, scratch);
    pred[i] = keep;
    worst = diffusion::testing::max_keep_nan(worst, diffusion::testing::element_error(dpred[i], (fp - fm) / (2 * h)));
  }
  CAPTURE(worst);
  REQUIRE(worst <= 1e-8);  // a quadratic: central differences are exact up to the loss's rounding / 2h ~ 1e-10
}

TEST_CASE("weights of 1 give the unweighted loss bit for bit, and a null weight array means weights of 1") {
  io::SafetensorsReader fx(process_test::golden("schedules.safetensors"));
  const Tensor<float> pred = cast<float>(fx.read<double>("wloss.pred"));
  const Tensor<float> target = cast<float>(fx.read<double>("wloss.target"));
  const std::vector<double> ones(static_cast<std::size_t>(pred.dim(0)), 1.0);
  for (LossType type : {LossType::L1, LossType::L2, LossType::Huber}) {
    INFO(loss_type_name(type));
    Tensor<float> d_plain, d_ones, d_null;
    const double inv = 1.0 / static_cast<double>(pred.numel());
    const double plain = loss_sum_backward(type, TensorView<float>(pred), TensorView<float>(target), inv, 0.0, d_plain);
    const double with_ones =
        loss_sum_backward(type, TensorView<float>(pred), TensorView<float>(target), ones.data(), inv, 0.0, d_ones);
    const double with_null =
        loss_sum_backward(type, TensorView<float>(pred), TensorView<float>(target), nullptr, inv, 0.0, d_null);
    REQUIRE(plain == with_ones);
    REQUIRE(plain == with_null);
    for (Index i = 0; i < pred.numel(); ++i) {
      REQUIRE(d_plain[i] == d_ones[i]);
      REQUIRE(d_plain[i] == d_null[i]);
    }
  }
}

TEST_CASE("loss_weights checks gamma and the timesteps") {
  const NoiseSchedule s(BetaSchedule::Linear, 10);
  std::vector<double> w;
  REQUIRE_THROWS_WITH(loss_weights(-1.0, Prediction::Epsilon, s, {1}, w),
                      Catch::Contains("gamma") && Catch::Contains("-1"));
  REQUIRE_THROWS_WITH(loss_weights(std::nan(""), Prediction::Epsilon, s, {1}, w), Catch::Contains("gamma"));
  REQUIRE_THROWS_WITH(loss_weights(5.0, Prediction::Epsilon, s, {3, 10}, w),
                      Catch::Contains("timestep 10 of image 1") && Catch::Contains("[0, 10)"));
}
