// Gradient accumulation: a step on a batch in k micro-batches equals the step on the whole batch, bit for bit
// (weights, Adam moments, EMA, loss, gradient norm), for even and uneven splits, both block types, with and without
// gradient clipping, on one thread and on two; and the per-image results that make it so (kernels fold every
// parameter gradient over the batch in image order, each image computed the same way in any batch).
#include <catch2/catch.hpp>

#include <cstring>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "diffusion/core/parallel.hpp"
#include "diffusion/train/trainer.hpp"
#include "support/threads.hpp"

using namespace diffusion;

namespace {

UnetConfig small_rgb(bool convnext) {
  UnetConfig c;
  c.dim = 8;
  c.channels = 3;
  c.dim_mults = {1, 2};
  c.use_convnext = convnext;
  return c;
}

Tensor<float> random_images(Index n, std::uint64_t seed) {
  Tensor<float> x(Shape{n, 3, 8, 8});
  Rng rng(seed);
  rng.uniform(x.data(), x.numel(), -1.0, 1.0);
  return x;
}

struct Outcome {
  std::vector<float> weights, adam_m, adam_v, ema;
  std::vector<double> losses, norms;
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The first element where two runs differ, for the failure message.
std::string first_difference(const std::vector<float>& a, const std::vector<float>& b) {
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      std::ostringstream s;
      s << "element " << i << ": " << std::setprecision(9) << a[i] << " vs " << b[i];
      return s.str();
    }
  return a.size() == b.size() ? "none" : "sizes differ";
}

// `steps` steps on batches of n images, accumulate = k.
Outcome train(bool convnext, Index n, Index k, int steps, double clip) {
  Unet<float> net(small_rgb(convnext), 3);
  TrainerOptions o;
  o.seed = 11;
  o.accumulate = k;
  o.grad_clip = clip;
  o.loss = clip > 0.0 ? LossType::Huber : LossType::L2;
  Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Cosine, 50), o);
  Outcome r;
  for (int s = 0; s < steps; ++s) {
    const StepResult step = trainer.step(random_images(n, 100 + static_cast<std::uint64_t>(s)));
    r.losses.push_back(step.loss);
    r.norms.push_back(step.grad_norm);
  }
  const std::size_t size = net.params().size();
  r.weights.assign(net.params().values(), net.params().values() + size);
  r.adam_m.assign(trainer.optimizer().exp_avg(), trainer.optimizer().exp_avg() + size);
  r.adam_v.assign(trainer.optimizer().exp_avg_sq(), trainer.optimizer().exp_avg_sq() + size);
  r.ema.assign(trainer.ema()->shadow(), trainer.ema()->shadow() + size);
  return r;
}

void require_equal(const Outcome& whole, const Outcome& parts) {
  REQUIRE(whole.losses == parts.losses);
  REQUIRE(whole.norms == parts.norms);
  INFO("weights: first difference at " << first_difference(whole.weights, parts.weights));
  REQUIRE(same_bits(whole.weights, parts.weights));
  REQUIRE(same_bits(whole.adam_m, parts.adam_m));
  REQUIRE(same_bits(whole.adam_v, parts.adam_v));
  REQUIRE(same_bits(whole.ema, parts.ema));
}

}  // namespace

TEST_CASE("gradient accumulation equals one batch of the whole size bit for bit") {
  for (bool convnext : {true, false}) {
    for (int threads : {1, 2}) {
      testing::ScopedThreads scoped(threads);
      const double clip = convnext ? 0.0 : 0.5;  // clipping (and the Huber loss) on the ResNet runs
      const Outcome whole = train(convnext, 20, 1, 3, clip);
      for (Index k : {2, 3, 7, 20}) {  // 10+10; 6+7+7; 2+3+3+3+3+3+3; one image each
        INFO((convnext ? "ConvNeXt" : "ResNet") << " blocks, " << threads << " thread(s), accumulate " << k);
        require_equal(whole, train(convnext, 20, k, 3, clip));
      }
    }
  }
}

TEST_CASE("a micro-batch's outputs and gradients do not depend on the batch around it") {
  // The property accumulation rests on, layer by layer: image i's output is the same in a batch of 1 and of 13
  // (linear layers run on fixed blocks of 8 images), and backward over two parts of a batch, accumulating into
  // the same gradient, gives the gradient of the whole.
  testing::ScopedThreads scoped(2);
  Unet<float> net(small_rgb(true), 5);
  const Tensor<float> x = random_images(13, 7);
  std::vector<std::int64_t> t(13);
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<std::int64_t>(7 * i % 1000);
  Tensor<float> y, dy(Shape{13, 3, 8, 8});
  Rng(8).normal(dy.data(), dy.numel());
  net.forward(x, t, y);
  net.params().zero_grad();
  net.backward(dy);
  const std::vector<float> whole(net.params().grads(), net.params().grads() + net.params().size());
  const Index per = 3 * 8 * 8;
  net.params().zero_grad();
  for (Index n0 : {0, 5}) {  // images 0-4, then 5-12
    const Index n1 = n0 == 0 ? 5 : 13;
    Tensor<float> xp(Shape{n1 - n0, 3, 8, 8}), dyp(Shape{n1 - n0, 3, 8, 8}), yp;
    std::memcpy(xp.data(), x.data() + n0 * per, sizeof(float) * static_cast<std::size_t>(xp.numel()));
    std::memcpy(dyp.data(), dy.data() + n0 * per, sizeof(float) * static_cast<std::size_t>(dyp.numel()));
    net.forward(xp, std::vector<std::int64_t>(t.begin() + n0, t.begin() + n1), yp);
    REQUIRE(std::memcmp(yp.data(), y.data() + n0 * per, sizeof(float) * static_cast<std::size_t>(yp.numel())) == 0);
    net.backward(dyp);
  }
  const std::vector<float> parts(net.params().grads(), net.params().grads() + net.params().size());
  INFO("gradients: first difference at " << first_difference(whole, parts));
  REQUIRE(same_bits(whole, parts));
}

TEST_CASE("accumulate must be at least 1 and at most the batch size") {
  Unet<float> net(small_rgb(true), 1);
  TrainerOptions o;
  o.accumulate = 0;
  REQUIRE_THROWS_WITH(Trainer<float>(net, NoiseSchedule(BetaSchedule::Linear, 10), o),
                      Catch::Contains("accumulate") && Catch::Contains("got 0"));
  o.accumulate = 5;
  Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 10), o);
  REQUIRE_THROWS_WITH(trainer.step(random_images(4, 1)),
                      Catch::Contains("4 images") && Catch::Contains("accumulate = 5"));
  REQUIRE(trainer.step_count() == 0);
}
