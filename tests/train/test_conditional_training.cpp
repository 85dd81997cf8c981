// Class-conditional training with condition dropout (issue 15, classifier-free guidance's joint training): the
// dropped ids are a pure function of (seed, step) at the asked rate; a conditional step is the documented draws (t
// and noise of the step stream, as an unconditional step draws them, and drop_classes) fed to
// step(x0, t, noise, classes); a conditional run is bitwise the same on 1, 2 and 3 threads and with 1, 2 or 3
// micro-batches; a checkpoint resumes it exactly; wrong combinations of network and labels are refused.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "diffusion/gaussian_diffusion.hpp"
#include "diffusion/train/checkpoint.hpp"
#include "diffusion/train/dataset.hpp"
#include "diffusion/train/trainer.hpp"
#include "support/threads.hpp"

using namespace diffusion;

namespace {

constexpr Index kClasses = 3;

// dim 8, dim_mults (1, 2), 3 classes: the smallest conditional U-Net for 8x8 images.
UnetConfig tiny_conditional(bool convnext = true) {
  UnetConfig c;
  c.dim = 8;
  c.channels = 1;
  c.dim_mults = {1, 2};
  c.use_convnext = convnext;
  c.num_classes = kClasses;
  return c;
}

// n images 8x8 (N, 1, 8, 8), background -1 with a bright 3x3 square; label = the square's column third (0, 1, 2).
Tensor<float> squares(Index n, std::vector<std::int64_t>& labels) {
  Tensor<float> images(Shape{n, 1, 8, 8}, -1.0f);
  labels.resize(static_cast<std::size_t>(n));
  Rng rng(99);
  for (Index i = 0; i < n; ++i) {
    const Index r = rng.uniform_int(6), c = rng.uniform_int(6);
    for (Index y = r; y < r + 3; ++y)
      for (Index x = c; x < c + 3; ++x) images.at(i, 0, y, x) = 1.0f;
    labels[static_cast<std::size_t>(i)] = c / 2;
  }
  return images;
}

struct ConditionalRun {
  std::vector<float> weights, ema, adam_m, adam_v;
  std::vector<double> losses, norms;
};

ConditionalRun snapshot(const Unet<float>& net, const Trainer<float>& trainer, ConditionalRun run) {
  const std::size_t n = net.params().size();
  run.weights.assign(net.params().values(), net.params().values() + n);
  run.ema.assign(trainer.ema()->shadow(), trainer.ema()->shadow() + n);
  run.adam_m.assign(trainer.optimizer().exp_avg(), trainer.optimizer().exp_avg() + n);
  run.adam_v.assign(trainer.optimizer().exp_avg_sq(), trainer.optimizer().exp_avg_sq() + n);
  return run;
}

BatchOptions batches(std::uint64_t seed) {
  BatchOptions b;
  b.batch_size = 8;
  b.seed = seed;
  return b;
}

// `steps` steps of trainer.step(sampler) on 32 labelled squares, batches of 8 (an epoch is 4 steps).
ConditionalRun cond_train(int steps, const UnetConfig& config, TrainerOptions o) {
  std::vector<std::int64_t> labels;
  const Tensor<float> images = squares(32, labels);
  Unet<float> net(config, 7);
  Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 100), o);
  BatchSampler<float> sampler(images, batches(o.seed), &labels);
  ConditionalRun run;
  for (int s = 0; s < steps; ++s) {
    const StepResult r = trainer.step(sampler);
    run.losses.push_back(r.loss);
    run.norms.push_back(r.grad_norm);
  }
  return snapshot(net, trainer, run);
}

bool cond_same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Bitwise equality of two runs, NaN never equal (losses compared with ==), and the first differing weight named.
void require_same(const ConditionalRun& a, const ConditionalRun& b) {
  REQUIRE(a.losses.size() == b.losses.size());
  for (std::size_t s = 0; s < a.losses.size(); ++s) {
    INFO("step " << s << ": loss " << a.losses[s] << " vs " << b.losses[s] << ", gradient norm " << a.norms[s]
                 << " vs " << b.norms[s]);
    REQUIRE(std::isfinite(a.losses[s]));
    REQUIRE(a.losses[s] == b.losses[s]);
    REQUIRE(a.norms[s] == b.norms[s]);
  }
  std::size_t first = 0;
  while (first < a.weights.size() && first < b.weights.size() &&
         std::memcmp(&a.weights[first], &b.weights[first], sizeof(float)) == 0)
    ++first;
  INFO("first differing weight: element " << first << " of " << a.weights.size());
  REQUIRE(cond_same_bits(a.weights, b.weights));
  REQUIRE(cond_same_bits(a.ema, b.ema));
  REQUIRE(cond_same_bits(a.adam_m, b.adam_m));
  REQUIRE(cond_same_bits(a.adam_v, b.adam_v));
}

std::int64_t count_null(const std::vector<std::int64_t>& ids) {
  std::int64_t k = 0;
  for (std::int64_t id : ids) k += id == kNullClass;
  return k;
}

}  // namespace

TEST_CASE("condition dropout is a pure function of (seed, step) at the rate cond_drop_prob") {
  std::vector<std::int64_t> labels(1000);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::int64_t>(i % 10);
  std::vector<std::int64_t> a, b;

  // p = 0 keeps every label; p = 1 drops every one.
  for (std::int64_t step : {0, 1, 12345}) {
    Trainer<float>::drop_classes(3, step, 0.0, labels, a);
    REQUIRE(a == labels);
    Trainer<float>::drop_classes(3, step, 1.0, labels, a);
    REQUIRE(count_null(a) == static_cast<std::int64_t>(labels.size()));
  }

  // The rate: 200 steps x 1000 images = n = 200 000 decisions. The count of drops is Binomial(n, p) when the draws are
  // independent uniforms: mean n p, standard deviation sqrt(n p (1 - p)) (134 at p = 0.1, 179 at 0.2, 224 at 0.5).
  // Required within 5 standard deviations of the mean: a correct generator fails that with probability 6e-7 for a
  // new seed (and this seed is fixed). It catches a rate off by 5 sd / n = 0.0034, 0.0045, 0.0056 (absolute) at
  // p = 0.1, 0.2, 0.5, e.g. the keep probability used as the drop probability (0.9 for 0.1). Kept ids are the labels
  // themselves, every step's mask differs from the last, and a smaller p drops a subset (the same uniforms compared
  // with a smaller bound).
  for (double p : {0.1, 0.2, 0.5}) {
    INFO("p = " << p);
    const double n = 200.0 * static_cast<double>(labels.size()), sd = std::sqrt(n * p * (1.0 - p));
    double drops = 0.0;
    std::vector<std::int64_t> previous;
    std::int64_t wrong_ids = 0, repeated_masks = 0, not_nested = 0;
    for (std::int64_t step = 0; step < 200; ++step) {
      Trainer<float>::drop_classes(11, step, p, labels, a);
      REQUIRE(a.size() == labels.size());
      for (std::size_t i = 0; i < a.size(); ++i) wrong_ids += a[i] != kNullClass && a[i] != labels[i];
      drops += static_cast<double>(count_null(a));
      repeated_masks += a == previous;
      previous = a;
      Trainer<float>::drop_classes(11, step, 0.05, labels, b);
      for (std::size_t i = 0; i < a.size(); ++i) not_nested += b[i] == kNullClass && a[i] != kNullClass;
    }
    REQUIRE(wrong_ids == 0);
    REQUIRE(repeated_masks == 0);
    REQUIRE(not_nested == 0);
    INFO("drops " << drops << ", expected " << n * p << " +- " << sd << " (one sd)");
    REQUIRE(std::abs(drops - n * p) <= 5.0 * sd);
  }

  // A function of (seed, step) and nothing else: the same call gives the same mask, another step or seed another.
  Trainer<float>::drop_classes(5, 42, 0.2, labels, a);
  Trainer<float>::drop_classes(5, 7, 0.2, labels, b);
  REQUIRE(a != b);
  Trainer<float>::drop_classes(5, 42, 0.2, labels, b);
  REQUIRE(a == b);
  Trainer<double>::drop_classes(5, 42, 0.2, labels, b);  // the scalar type plays no part
  REQUIRE(a == b);
  Trainer<float>::drop_classes(6, 42, 0.2, labels, b);
  REQUIRE(a != b);
  // Image n's decision does not depend on the batch size: a prefix of the batch gets a prefix of the mask.
  const std::vector<std::int64_t> prefix(labels.begin(), labels.begin() + 10);
  Trainer<float>::drop_classes(5, 42, 0.2, prefix, b);
  REQUIRE(b == std::vector<std::int64_t>(a.begin(), a.begin() + 10));
}

TEST_CASE("a conditional step is step(x0, t, noise, classes) with the step stream's t and noise and drop_classes") {
  // The t and noise of a conditional step are the numbers an unconditional step of the same (seed, step) draws
  // (Rng(seed).fork(kStepStream).fork(step): sample_timesteps, then normal), and its ids are drop_classes(seed, step):
  // two trainers, one drawing for itself, one given those draws, end bitwise equal after 3 steps from step 5.
  std::vector<std::int64_t> labels;
  const Tensor<float> images = squares(8, labels);
  TrainerOptions o;
  o.seed = 21;
  o.cond_drop_prob = 0.5;  // ids of both kinds in a batch of 8
  Unet<float> net_a(tiny_conditional(), 7), net_b(tiny_conditional(), 7);
  const NoiseSchedule schedule(BetaSchedule::Linear, 100);
  Trainer<float> a(net_a, schedule, o), b(net_b, schedule, o);
  a.set_step_count(5);
  b.set_step_count(5);
  std::vector<std::int64_t> t, classes;
  Tensor<float> noise(images.shape());
  std::int64_t dropped = 0;
  ConditionalRun ra, rb;
  for (int s = 0; s < 3; ++s) {
    const StepResult x = a.step(images, labels);
    ra.losses.push_back(x.loss);
    ra.norms.push_back(x.grad_norm);
    Rng rng = Rng(o.seed).fork(Trainer<float>::kStepStream).fork(static_cast<std::uint64_t>(b.step_count()));
    sample_timesteps(rng, schedule, images.dim(0), t);
    rng.normal(noise.data(), noise.numel());
    Trainer<float>::drop_classes(o.seed, b.step_count(), o.cond_drop_prob, labels, classes);
    dropped += count_null(classes);
    const StepResult y = b.step(images, t, noise, classes);
    rb.losses.push_back(y.loss);
    rb.norms.push_back(y.grad_norm);
  }
  INFO(dropped << " of 24 ids dropped");
  REQUIRE(dropped > 0);
  REQUIRE(dropped < 24);
  require_same(snapshot(net_a, a, ra), snapshot(net_b, b, rb));
  // And the ids matter: the same draws with no ids dropped train another network.
  Unet<float> net_c(tiny_conditional(), 7);
  Trainer<float> c(net_c, schedule, o);
  c.set_step_count(5);
  for (int s = 0; s < 3; ++s) {
    Rng rng = Rng(o.seed).fork(Trainer<float>::kStepStream).fork(static_cast<std::uint64_t>(c.step_count()));
    sample_timesteps(rng, schedule, images.dim(0), t);
    rng.normal(noise.data(), noise.numel());
    c.step(images, t, noise, labels);
  }
  REQUIRE(!cond_same_bits(snapshot(net_a, a, ra).weights, snapshot(net_c, c, ConditionalRun{}).weights));
}

TEST_CASE("a conditional training run is bitwise identical on 1 2 and 3 threads and with 1 2 or 3 micro-batches") {
  // 6 steps (past an epoch of 4), cond_drop_prob 0.5 so that most batches mix real and null ids, gradient clipping
  // (a parallel norm and scaling) and the EMA on. accumulate 3 splits the batch of 8 unevenly (2, 3, 3).
  TrainerOptions o;
  o.seed = 4;
  o.cond_drop_prob = 0.5;
  o.grad_clip = 0.5;
  const ConditionalRun base = [&] {
    testing::ScopedThreads threads(1);
    return cond_train(6, tiny_conditional(), o);
  }();
  for (int threads : {2, 3}) {
    INFO(threads << " threads against 1");
    testing::ScopedThreads scoped(threads);
    require_same(base, cond_train(6, tiny_conditional(), o));
  }
  for (Index k : {2, 3}) {
    INFO("accumulate " << k << " against 1 (1 thread)");
    testing::ScopedThreads scoped(1);
    TrainerOptions ok = o;
    ok.accumulate = k;
    require_same(base, cond_train(6, tiny_conditional(), ok));
  }
  {
    INFO("accumulate 2 on 3 threads against accumulate 1 on 1 thread");
    testing::ScopedThreads scoped(3);
    TrainerOptions ok = o;
    ok.accumulate = 2;
    require_same(base, cond_train(6, tiny_conditional(), ok));
  }
  // The dropout is in play: another drop rate (the same draws otherwise) trains another network.
  TrainerOptions other = o;
  other.cond_drop_prob = 0.0;
  testing::ScopedThreads scoped(1);
  REQUIRE(!cond_same_bits(base.weights, cond_train(6, tiny_conditional(), other).weights));
}

TEST_CASE("a checkpoint resumes a conditional run exactly, the condition dropout included") {
  TrainerOptions o;
  o.seed = 9;
  o.cond_drop_prob = 0.3;
  const ConditionalRun straight = cond_train(8, tiny_conditional(), o);
  std::vector<std::int64_t> labels;
  const Tensor<float> images = squares(32, labels);
  const std::string path = std::string(DIFFUSION_TEST_BINARY_DIR) + "/resume_conditional.safetensors";
  {
    Unet<float> net(tiny_conditional(), 7);
    Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 100), o);
    BatchSampler<float> sampler(images, batches(o.seed), &labels);
    for (int s = 0; s < 5; ++s) trainer.step(sampler);  // stops inside the second epoch
    save_checkpoint(path, trainer);
  }
  {
    const io::SafetensorsReader reader(path);
    const nlohmann::json state = read_train_state(reader);
    REQUIRE(state.contains("cond_drop_prob"));
    REQUIRE(state["cond_drop_prob"].get<double>() == 0.3);
  }
  Unet<float> net(tiny_conditional(), 777);  // other initial weights: all must come from the checkpoint
  Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 100), o);
  load_checkpoint(path, trainer);
  REQUIRE(trainer.step_count() == 5);
  BatchSampler<float> sampler(images, batches(o.seed), &labels);
  ConditionalRun resumed;
  resumed.losses.assign(straight.losses.begin(), straight.losses.begin() + 5);
  resumed.norms.assign(straight.norms.begin(), straight.norms.begin() + 5);
  while (trainer.step_count() < 8) {
    const StepResult r = trainer.step(sampler);
    resumed.losses.push_back(r.loss);
    resumed.norms.push_back(r.grad_norm);
  }
  require_same(straight, snapshot(net, trainer, resumed));
  // The conditional checkpoint does not load into an unconditional trainer (another configuration and plan).
  UnetConfig plain = tiny_conditional();
  plain.num_classes = 0;
  Unet<float> unconditional(plain, 1);
  Trainer<float> wrong(unconditional, NoiseSchedule(BetaSchedule::Linear, 100), o);
  REQUIRE_THROWS_WITH(load_checkpoint(path, wrong), Catch::Contains("configuration"));
}

TEST_CASE("GaussianDiffusion::train_step(images, labels) is the trainer's conditional step") {
  std::vector<std::int64_t> labels;
  const Tensor<float> images = squares(8, labels);
  GaussianDiffusionOptions options;
  options.timesteps = 100;
  options.seed = 7;
  options.trainer.seed = 2;
  GaussianDiffusion<float> diffusion(tiny_conditional(), 8, options);
  Unet<float> net(tiny_conditional(), 7);
  Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 100), options.trainer);
  for (int s = 0; s < 2; ++s) REQUIRE(diffusion.train_step(images, labels) == trainer.step(images, labels).loss);
  REQUIRE(std::memcmp(diffusion.model().params().values(), net.params().values(),
                      net.params().size() * sizeof(float)) == 0);
  REQUIRE_THROWS_WITH(diffusion.train_step(images), Catch::Contains("class-conditional"));
}

TEST_CASE("conditional training refuses labels for unconditional networks, missing or bad labels, bad drop rates") {
  std::vector<std::int64_t> labels;
  const Tensor<float> images = squares(4, labels);
  const NoiseSchedule schedule(BetaSchedule::Linear, 10);
  const std::vector<std::int64_t> t(4, 3);
  const Tensor<float> noise(images.shape(), 0.5f);

  // The drop rate is a probability.
  Unet<float> net(tiny_conditional(), 1);
  for (double p : {-0.1, 1.5, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    INFO("cond_drop_prob " << p);
    TrainerOptions o;
    o.cond_drop_prob = p;
    REQUIRE_THROWS_WITH(Trainer<float>(net, schedule, o), Catch::Contains("cond_drop_prob must be in [0, 1]"));
  }

  // A conditional network without labels, with wrong labels, or from a sampler without labels; nothing changes.
  Trainer<float> trainer(net, schedule, TrainerOptions{});
  const std::vector<float> before(net.params().values(), net.params().values() + net.params().size());
  REQUIRE_THROWS_WITH(trainer.step(images), Catch::Contains("class-conditional (num_classes 3)") &&
                                                Catch::Contains("step(x0, labels)"));
  REQUIRE_THROWS_WITH(trainer.step(images, t, noise), Catch::Contains("class-conditional (num_classes 3)"));
  REQUIRE_THROWS_WITH(trainer.step(images, std::vector<std::int64_t>{0, 1, 2}),
                      Catch::Contains("3 labels for a batch of 4 images"));
  REQUIRE_THROWS_WITH(trainer.step(images, std::vector<std::int64_t>{0, 1, 3, 2}),
                      Catch::Contains("label 3 of image 2 is outside [0, 3)"));
  REQUIRE_THROWS_WITH(trainer.step(images, std::vector<std::int64_t>{0, kNullClass, 1, 2}),
                      Catch::Contains("label -1 of image 1 is outside [0, 3)"));
  REQUIRE_THROWS_WITH(trainer.step(images, t, noise, std::vector<std::int64_t>{0, 1, 2, 7}),
                      Catch::Contains("class id 7 of image 3 is neither in [0, 3) nor kNullClass"));
  BatchOptions b;
  b.batch_size = 4;
  BatchSampler<float> unlabelled(images, b);
  REQUIRE_THROWS_WITH(trainer.step(unlabelled), Catch::Contains("BatchSampler has no labels"));
  REQUIRE(trainer.step_count() == 0);
  REQUIRE(cond_same_bits(before, std::vector<float>(net.params().values(), net.params().values() + net.params().size())));
  // kNullClass is allowed where the caller chooses the ids.
  REQUIRE_NOTHROW(trainer.step(images, t, noise, std::vector<std::int64_t>{0, kNullClass, 1, 2}));
  REQUIRE(trainer.step_count() == 1);

  // An unconditional network given labels.
  UnetConfig plain = tiny_conditional();
  plain.num_classes = 0;
  Unet<float> unconditional(plain, 1);
  Trainer<float> plain_trainer(unconditional, schedule, TrainerOptions{});
  REQUIRE_THROWS_WITH(plain_trainer.step(images, labels),
                      Catch::Contains("labels given, but the model is unconditional"));
  REQUIRE_THROWS_WITH(plain_trainer.step(images, t, noise, labels),
                      Catch::Contains("classes given, but the model is unconditional"));
  REQUIRE(plain_trainer.step_count() == 0);
  // A sampler's labels are ignored by an unconditional network: the step is the unlabelled one.
  BatchSampler<float> labelled(images, b, &labels);
  Unet<float> twin(plain, 1);
  Trainer<float> twin_trainer(twin, schedule, TrainerOptions{});
  REQUIRE(plain_trainer.step(labelled).loss == twin_trainer.step(unlabelled).loss);
  REQUIRE(cond_same_bits(std::vector<float>(unconditional.params().values(),
                                       unconditional.params().values() + unconditional.params().size()),
                    std::vector<float>(twin.params().values(), twin.params().values() + twin.params().size())));
}
