// The L_simple trainer on a tiny synthetic dataset: it learns, it is bit-reproducible (also across thread counts),
// a checkpoint resumes a run exactly, and a NaN stops training with the step named.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <set>

#include "diffusion/core/parallel.hpp"
#include "diffusion/train/checkpoint.hpp"
#include "diffusion/train/dataset.hpp"
#include "diffusion/train/trainer.hpp"
#include "support/build_kind.hpp"
#include "support/skip.hpp"
#include "support/threads.hpp"
#include "support/tiny_unet.hpp"

using namespace diffusion;

namespace {

// 64 images 8x8, background -1, a 3x3 bright square at a random place: easy structure for a tiny U-Net.
Tensor<float> squares(Index n) { return testing::bright_squares(n, 99); }

UnetConfig trainer_tiny() { return testing::tiny_unet_config(1); }

struct Run {
  std::vector<float> weights, ema, adam_m;
  std::vector<double> losses;
};

Run train(int steps, std::uint64_t seed, const UnetConfig& config = trainer_tiny(), TrainerOptions o = {}) {
  const Tensor<float> images = squares(64);
  Unet<float> net(config, seed);
  o.seed = seed;
  Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 100), o);
  BatchOptions b;
  b.batch_size = 16;
  b.seed = seed;
  BatchSampler<float> sampler(images, b);
  Tensor<float> batch;
  Run run;
  for (int s = 0; s < steps; ++s) {
    sampler.batch(trainer.step_count(), batch);
    run.losses.push_back(trainer.step(batch).loss);
  }
  run.weights.assign(net.params().values(), net.params().values() + net.params().size());
  run.ema.assign(trainer.ema()->shadow(), trainer.ema()->shadow() + net.params().size());
  run.adam_m.assign(trainer.optimizer().exp_avg(), trainer.optimizer().exp_avg() + net.params().size());
  return run;
}

double mean(const std::vector<double>& v, std::size_t begin, std::size_t end) {
  double s = 0;
  for (std::size_t i = begin; i < end; ++i) s += v[i];
  return s / double(end - begin);
}

}  // namespace

TEST_CASE("training the tiny U-Net on synthetic squares lowers the L_simple loss substantially") {
  // 600 steps are a measurement of learning, not of memory safety: the sanitizer build runs the same training code
  // in the shorter cases below (it took 12 minutes there).
  if (testing::kSanitizedBuild) {
    testing::skip("600 training steps under the sanitizers; the shorter training cases cover the same code");
    return;
  }
  const Run run = train(600, 1);
  const double first = mean(run.losses, 0, 20), last = mean(run.losses, 560, 600);
  INFO("mean loss over steps 0-19: " << first << ", over steps 560-599: " << last);
  // Measured: first ~1.0 (an untrained network predicts noise at the noise's own variance), last ~0.2.
  // Requiring a drop to under half of the start is far from both the noise in the means and the measured value.
  REQUIRE(first > 0.5);
  REQUIRE(last < 0.5 * first);
}

TEST_CASE("two training runs with the same seed give bit-identical weights with 1 2 3 and 7 threads") {
  // Both block types, with gradient clipping (a parallel norm and scaling) and the EMA (a parallel update); 3 and 7
  // threads split the work unevenly, and ScopedThreads makes every loop of two or more items parallel.
  for (bool convnext : {true, false}) {
    INFO((convnext ? "ConvNeXt blocks" : "ResNet blocks"));
    UnetConfig config = trainer_tiny();
    config.use_convnext = convnext;
    TrainerOptions options;
    options.seed = 3;
    options.grad_clip = 0.5;
    const Run a = [&] {
      testing::ScopedThreads threads(1);
      return train(8, 3, config, options);
    }();
    for (int threads : {2, 3, 7}) {
      INFO(threads << " threads against 1");
      const Run b = [&] {
        testing::ScopedThreads scoped(threads);
        return train(8, 3, config, options);
      }();
      REQUIRE(a.losses == b.losses);
      REQUIRE(std::memcmp(a.weights.data(), b.weights.data(), a.weights.size() * sizeof(float)) == 0);
      REQUIRE(std::memcmp(a.ema.data(), b.ema.data(), a.ema.size() * sizeof(float)) == 0);
      REQUIRE(std::memcmp(a.adam_m.data(), b.adam_m.data(), a.adam_m.size() * sizeof(float)) == 0);
    }
  }
  const Run a = train(12, 3), c = train(12, 4);
  REQUIRE(a.weights != c.weights);
}

TEST_CASE("a checkpoint resumes a run exactly: weights, Adam moments, EMA, data order and noise") {
  const Run straight = train(16, 5);
  const Tensor<float> images = squares(64);
  const std::string path = std::string(DIFFUSION_TEST_BINARY_DIR) + "/resume.safetensors";
  BatchOptions b;
  b.batch_size = 16;
  b.seed = 5;
  TrainerOptions o;
  o.seed = 5;
  {
    Unet<float> net(trainer_tiny(), 5);
    Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 100), o);
    BatchSampler<float> sampler(images, b);
    Tensor<float> batch;
    for (int s = 0; s < 8; ++s) {
      sampler.batch(trainer.step_count(), batch);
      trainer.step(batch);
    }
    save_checkpoint(path, trainer);
  }
  Unet<float> net(trainer_tiny(), 777);  // different initial weights: all must come from the checkpoint
  Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 100), o);
  load_checkpoint(path, trainer);
  REQUIRE(trainer.step_count() == 8);
  BatchSampler<float> sampler(images, b);
  Tensor<float> batch;
  std::vector<double> losses;
  while (trainer.step_count() < 16) {
    sampler.batch(trainer.step_count(), batch);
    losses.push_back(trainer.step(batch).loss);
  }
  REQUIRE(losses == std::vector<double>(straight.losses.begin() + 8, straight.losses.end()));
  REQUIRE(std::memcmp(net.params().values(), straight.weights.data(), straight.weights.size() * sizeof(float)) == 0);
  REQUIRE(std::memcmp(trainer.ema()->shadow(), straight.ema.data(), straight.ema.size() * sizeof(float)) == 0);
  REQUIRE(std::memcmp(trainer.optimizer().exp_avg(), straight.adam_m.data(), straight.adam_m.size() * sizeof(float)) == 0);

  // A checkpoint of another architecture or schedule is refused before anything changes.
  UnetConfig other = trainer_tiny();
  other.dim = 16;
  Unet<float> wrong(other, 1);
  Trainer<float> wrong_trainer(wrong, NoiseSchedule(BetaSchedule::Linear, 100), o);
  REQUIRE_THROWS_WITH(load_checkpoint(path, wrong_trainer), Catch::Contains("configuration"));
  Unet<float> same(trainer_tiny(), 1);
  Trainer<float> other_schedule(same, NoiseSchedule(BetaSchedule::Cosine, 100), o);
  REQUIRE_THROWS_WITH(load_checkpoint(path, other_schedule), Catch::Contains("schedule"));
}

TEST_CASE("a NaN in the batch stops training with the step named and the weights untouched") {
  Tensor<float> images = squares(16);
  Unet<float> net(trainer_tiny(), 1);
  Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 100), TrainerOptions{});
  trainer.step(images);
  const std::vector<float> before(net.params().values(), net.params().values() + net.params().size());
  images[5] = std::nanf("");
  try {
    trainer.step(images);
    FAIL("no exception");
  } catch (const TrainingDiverged& e) {
    REQUIRE(e.step() == 1);
    REQUIRE_THAT(e.what(), Catch::Contains("step 1") && Catch::Contains("nan"));
  }
  REQUIRE(trainer.step_count() == 1);
  REQUIRE(std::memcmp(before.data(), net.params().values(), before.size() * sizeof(float)) == 0);
}

TEST_CASE("BatchSampler visits every image once per epoch and reproducibly") {
  Tensor<float> images(Shape{10, 1, 1, 3});
  for (Index i = 0; i < 10; ++i) images.at(i, 0, 0, 0) = float(i), images.at(i, 0, 0, 2) = 100.0f + float(i);
  BatchOptions o;
  o.batch_size = 4;
  o.seed = 8;
  BatchSampler<float> s(images, o);
  REQUIRE(s.batches_per_epoch() == 3);  // 4 + 4 + 2
  for (std::int64_t epoch = 0; epoch < 3; ++epoch) {
    std::multiset<int> seen;
    Tensor<float> batch;
    for (Index b = 0; b < 3; ++b) {
      s.batch(epoch * 3 + b, batch);
      REQUIRE(batch.dim(0) == (b < 2 ? 4 : 2));
      for (Index i = 0; i < batch.dim(0); ++i) {
        const float left = batch.at(i, 0, 0, 0), right = batch.at(i, 0, 0, 2);
        seen.insert(int(left < 100 ? left : right));  // flipped images have the 100+ value on the left
      }
    }
    REQUIRE(seen == std::multiset<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  }
  BatchSampler<float> again(images, o);
  Tensor<float> a, b;
  s.batch(4, a);
  again.batch(4, b);
  REQUIRE(std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.numel())) == 0);
  const Tensor<float> empty(Shape{0, 1, 2, 2});
  REQUIRE_THROWS_AS(BatchSampler<float>(empty, o), Error);
}

TEST_CASE("trainer.step(batches) trains on the sampler's batch of the trainer's own step count") {
  const Tensor<float> images = squares(64);
  BatchOptions b;
  b.batch_size = 16;
  b.seed = 5;
  const auto weights_after = [&](bool with_sampler, std::int64_t first_step, int steps) {
    Unet<float> net(trainer_tiny(), 5);
    TrainerOptions o;
    o.seed = 5;
    Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 100), o);
    trainer.set_step_count(first_step);
    BatchSampler<float> sampler(images, b);
    Tensor<float> batch;
    for (int s = 0; s < steps; ++s) {
      if (with_sampler) {
        trainer.step(sampler);
      } else {
        sampler.batch(trainer.step_count(), batch);
        trainer.step(batch);
      }
    }
    return std::vector<float>(net.params().values(), net.params().values() + net.params().size());
  };
  REQUIRE(weights_after(true, 0, 3) == weights_after(false, 0, 3));
  // From a later step (as after a resume): the batches of steps 7 and 8, not 0 and 1.
  const auto later = weights_after(true, 7, 2);
  REQUIRE(later == weights_after(false, 7, 2));
  REQUIRE(later != weights_after(false, 0, 2));
}
