// The trainer's Min-SNR-gamma option (TrainerOptions::min_snr_gamma): its step is the weighted loss of
// process/loss_weighting.hpp on the network's output, micro-batches and gradient shards keep each image's own weight,
// and a gamma no timestep reaches is the unweighted L_simple bit for bit.
#include <catch2/catch.hpp>

#include <cstring>
#include <limits>
#include <vector>

#include "diffusion/core/random.hpp"
#include "diffusion/process/forward_process.hpp"
#include "diffusion/process/loss_weighting.hpp"
#include "diffusion/process/parameterization.hpp"
#include "diffusion/train/grad_clip.hpp"
#include "diffusion/train/trainer.hpp"
#include "support/tiny_unet.hpp"

using namespace diffusion;

namespace {

struct Batch {
  Tensor<float> x0, noise;
  std::vector<std::int64_t> t;
};

// 8 images; timesteps from t = 0 (SNR ~ 1e4) to T - 1, so that the weights span (0, gamma] and 1.
Batch batch() {
  Batch b;
  b.x0 = testing::bright_squares(8, 5);
  b.noise = Tensor<float>(b.x0.shape());
  Rng(6).normal(b.noise.data(), b.noise.numel());
  b.t = {0, 3, 9, 20, 35, 50, 70, 99};
  return b;
}

const NoiseSchedule& schedule() {
  static const NoiseSchedule s(BetaSchedule::Linear, 100);
  return s;
}

}  // namespace

TEST_CASE("a Min-SNR-gamma step's loss and gradient are the weighted loss of the network's output") {
  const Batch b = batch();
  const UnetConfig config = testing::tiny_unet_config(1);
  for (Prediction p : {Prediction::Epsilon, Prediction::V, Prediction::X0}) {
    INFO("prediction " << prediction_name(p));
    TrainerOptions o;
    o.prediction = p;
    o.min_snr_gamma = 5.0;
    Unet<float> net(config, 3), ref(config, 3);
    Trainer<float> trainer(net, schedule(), o);
    const StepResult r = trainer.step(b.x0, b.t, b.noise);

    // The reference: the same forward on a copy of the initial weights, the weighted loss of its output, backward.
    Tensor<float> x_t, target, out, dout;
    q_sample(schedule(), TensorView<float>(b.x0), b.t, TensorView<float>(b.noise), x_t);
    training_target(p, schedule(), TensorView<float>(b.x0), b.t, TensorView<float>(b.noise), target);
    ref.forward(x_t, b.t, out);
    std::vector<double> w;
    loss_weights(5.0, p, schedule(), b.t, w);
    const double count = static_cast<double>(out.numel());
    const double want = loss_sum_backward(LossType::L2, TensorView<float>(out), TensorView<float>(target), w.data(),
                                          1.0 / count, 0.0, dout) / count;
    ref.params().zero_grad();
    ref.backward(dout);
    CAPTURE(r.loss, want);
    REQUIRE(r.loss == want);
    REQUIRE(r.grad_norm == grad_norm(ref.params().grads(), ref.params().size()));

    // and it is not the unweighted loss: the weights span (0, 5] (1 for eps at high noise), so the step differs
    Unet<float> plain_net(config, 3);
    TrainerOptions plain = o;
    plain.min_snr_gamma = 0.0;
    Trainer<float> unweighted(plain_net, schedule(), plain);
    REQUIRE(unweighted.step(b.x0, b.t, b.noise).loss != r.loss);
  }
}

TEST_CASE("Min-SNR-gamma weights follow their images through micro-batches and gradient shards") {
  const Batch b = batch();
  const UnetConfig config = testing::tiny_unet_config(1);
  TrainerOptions whole;
  whole.min_snr_gamma = 2.0;
  TrainerOptions parts = whole;
  parts.accumulate = 2;
  parts.gradient_shards = 2;  // 4 parts of 2 images: the weights of images 2..7 are read at offsets
  Unet<float> a(config, 4), c(config, 4);
  Trainer<float> ta(a, schedule(), whole), tc(c, schedule(), parts);
  // Shards add their loss sums in shard order, so the first step's loss equals the one-pass loss up to the rounding
  // of that sum (later steps start from weights that differ in the last bits); an image given another image's weight
  // would move it by far more (the weights range from 2e-4 to 1).
  REQUIRE(tc.step(b.x0, b.t, b.noise).loss == Approx(ta.step(b.x0, b.t, b.noise).loss).epsilon(1e-12));
  // Micro-batches continue one loss sum and one gradient fold in image order: the same weights to the last bit.
  TrainerOptions micro = whole;
  micro.accumulate = 4;
  Unet<float> d(config, 4), e(config, 4);
  Trainer<float> td(d, schedule(), whole), te(e, schedule(), micro);
  for (int step = 0; step < 2; ++step) REQUIRE(td.step(b.x0, b.t, b.noise).loss == te.step(b.x0, b.t, b.noise).loss);
  REQUIRE(std::memcmp(d.params().values(), e.params().values(), d.params().size() * sizeof(float)) == 0);
}

TEST_CASE("a Min-SNR gamma above every timestep's SNR trains eps prediction exactly as L_simple") {
  // eps weights are min(SNR, gamma) / SNR: exactly 1 for every timestep once gamma exceeds the largest SNR.
  const Batch b = batch();
  const UnetConfig config = testing::tiny_unet_config(1);
  TrainerOptions off, huge;
  huge.min_snr_gamma = 1e30;
  Unet<float> a(config, 8), c(config, 8);
  Trainer<float> ta(a, schedule(), off), tc(c, schedule(), huge);
  for (int step = 0; step < 3; ++step) REQUIRE(ta.step(b.x0, b.t, b.noise).loss == tc.step(b.x0, b.t, b.noise).loss);
  REQUIRE(std::memcmp(a.params().values(), c.params().values(), a.params().size() * sizeof(float)) == 0);
}

TEST_CASE("the trainer rejects a negative or non-finite Min-SNR gamma") {
  Unet<float> net(testing::tiny_unet_config(1), 1);
  TrainerOptions o;
  o.min_snr_gamma = -5.0;
  REQUIRE_THROWS_WITH(Trainer<float>(net, schedule(), o), Catch::Contains("min_snr_gamma") && Catch::Contains("-5"));
  o.min_snr_gamma = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(Trainer<float>(net, schedule(), o), Catch::Contains("min_snr_gamma"));
}
