// The learning-rate schedule (train/lr_schedule.hpp): its factor at the steps that define it, worked out by hand
// from the closed forms; its errors; and the Trainer following it: a scheduled run is the run whose caller sets
// Adam's rate before each step, bit for bit, resumes exactly, and the default schedule changes nothing.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "diffusion/train/checkpoint.hpp"
#include "diffusion/train/dataset.hpp"
#include "diffusion/train/lr_schedule.hpp"
#include "diffusion/train/trainer.hpp"
#include "support/tiny_unet.hpp"

using namespace diffusion;

TEST_CASE("LrSchedule: the warm-up, cosine and linear factors at the steps that define them") {
  LrSchedule constant;
  CHECK(constant.is_constant());
  for (std::int64_t s : {0, 1, 1000000}) REQUIRE(constant.factor(s) == 1.0);  // exactly: lr x 1 is lr

  LrSchedule warmup;
  warmup.warmup_steps = 4;
  CHECK_FALSE(warmup.is_constant());
  const double ramp[] = {0.25, 0.5, 0.75, 1.0, 1.0, 1.0};
  for (int s = 0; s < 6; ++s) REQUIRE(warmup.factor(s) == ramp[s]);

  // Warm-up 4, decay over steps 4..14 to 0.1: p = (s - 4) / 10.
  LrSchedule cosine;
  cosine.warmup_steps = 4;
  cosine.decay = LrDecay::Cosine;
  cosine.total_steps = 14;
  cosine.min_ratio = 0.1;
  LrSchedule linear = cosine;
  linear.decay = LrDecay::Linear;
  CHECK(cosine.factor(3) == 1.0);
  CHECK(cosine.factor(4) == Approx(1.0).epsilon(1e-15));
  // p = 0.2: (1 + cos(0.2 pi)) / 2 = 0.904508497187474, so 0.1 + 0.9 x that.
  CHECK(cosine.factor(6) == Approx(0.91405764746872662).epsilon(1e-14));
  CHECK(linear.factor(6) == Approx(0.1 + 0.9 * 0.8).epsilon(1e-14));
  CHECK(cosine.factor(9) == Approx(0.55).epsilon(1e-14));  // p = 0.5: half way on both
  CHECK(linear.factor(9) == Approx(0.55).epsilon(1e-14));
  for (std::int64_t s : {14, 15, 1000}) {  // the floor from total_steps on
    CHECK(cosine.factor(s) == Approx(0.1).epsilon(1e-15));
    CHECK(linear.factor(s) == Approx(0.1).epsilon(1e-15));
  }
  CHECK(cosine.describe(0.002) == "0.002 after a warm-up of 4 steps, cosine decay to 0.0002 at step 14");
  CHECK(warmup.describe(0.001) == "0.001 after a warm-up of 4 steps, then constant");
  CHECK(parse_lr_decay("linear") == LrDecay::Linear);
  CHECK_THROWS_WITH(parse_lr_decay("step"), Catch::Contains("learning-rate decay 'step'") && Catch::Contains("none, cosine, linear"));
}

TEST_CASE("LrSchedule: a schedule that cannot be followed is refused, also by the Trainer") {
  LrSchedule s;
  s.warmup_steps = -1;
  CHECK_THROWS_WITH(s.validate(), Catch::Contains("warmup_steps must be >= 0"));
  s.warmup_steps = 10;
  s.min_ratio = 1.5;
  CHECK_THROWS_WITH(s.validate(), Catch::Contains("min_ratio must be in [0, 1]"));
  s.min_ratio = 0.0;
  s.decay = LrDecay::Cosine;
  s.total_steps = 10;
  CHECK_THROWS_WITH(s.validate(), Catch::Contains("total_steps > warmup_steps"));
  s.total_steps = 11;
  CHECK_NOTHROW(s.validate());

  Unet<float> net(testing::tiny_unet_config(1), 1);
  TrainerOptions o;
  o.lr_schedule.decay = LrDecay::Linear;  // total_steps 0: no steps to decay over
  CHECK_THROWS_WITH(Trainer<float>(net, NoiseSchedule(BetaSchedule::Linear, 50), o),
                    Catch::Contains("total_steps > warmup_steps"));
}

namespace {

struct Weights {
  std::vector<float> values, ema;
};

// Steps `trainer` until its step count is `until`, on batches of bright squares that are a function of the step (so
// a trainer resumed at any step gets the batches of an uninterrupted run). With `manual`, the caller sets Adam's rate
// before each step to lr x manual->factor(step) instead of the trainer's schedule.
void train_until(Trainer<float>& trainer, std::int64_t until, const LrSchedule* manual = nullptr) {
  const Tensor<float> images = testing::bright_squares(32, 7);
  BatchOptions b;
  b.batch_size = 8;
  b.seed = 3;
  BatchSampler<float> sampler(images, b);
  Tensor<float> batch;
  while (trainer.step_count() < until) {
    if (manual) trainer.optimizer().set_lr(trainer.options().adam.lr * manual->factor(trainer.step_count()));
    sampler.batch(trainer.step_count(), batch);
    trainer.step(batch);
  }
}

// The tiny U-Net trained for `steps` steps from its seed-3 initialisation (train_until).
Weights train(const TrainerOptions& o, int steps, const LrSchedule* manual = nullptr) {
  Unet<float> net(testing::tiny_unet_config(1), 3);
  Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 50), o);
  train_until(trainer, steps, manual);
  Weights w;
  w.values.assign(net.params().values(), net.params().values() + net.params().size());
  w.ema.assign(trainer.ema()->shadow(), trainer.ema()->shadow() + net.params().size());
  return w;
}

bool same(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("Trainer follows its LrSchedule step by step, and the default schedule changes nothing") {
  TrainerOptions o;
  o.seed = 3;
  o.adam.lr = 2e-3;
  LrSchedule schedule;
  schedule.warmup_steps = 3;
  schedule.decay = LrDecay::Cosine;
  schedule.total_steps = 8;
  schedule.min_ratio = 0.05;

  const Weights constant = train(o, 8);
  const Weights by_hand = train(o, 8, &schedule);
  TrainerOptions scheduled = o;
  scheduled.lr_schedule = schedule;
  const Weights followed = train(scheduled, 8);
  REQUIRE(same(followed.values, by_hand.values));
  REQUIRE(same(followed.ema, by_hand.ema));
  REQUIRE_FALSE(same(followed.values, constant.values));  // the schedule does change the run

  // An explicit constant schedule is the default, and a caller's own set_lr still works without a schedule.
  TrainerOptions explicit_constant = o;
  explicit_constant.lr_schedule = LrSchedule{};
  REQUIRE(same(train(explicit_constant, 8).values, constant.values));
}

TEST_CASE("a run with a learning-rate schedule resumes from a checkpoint exactly") {
  TrainerOptions o;
  o.seed = 4;
  o.lr_schedule.warmup_steps = 2;
  o.lr_schedule.decay = LrDecay::Linear;
  o.lr_schedule.total_steps = 8;
  const Weights straight = train(o, 8);

  const std::string path = std::string(DIFFUSION_TEST_BINARY_DIR) + "/lr_schedule_resume.safetensors";
  {
    Unet<float> net(testing::tiny_unet_config(1), 3);
    Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 50), o);
    train_until(trainer, 5);
    save_checkpoint(path, trainer);
    const nlohmann::json state = read_train_state(io::SafetensorsReader(path));
    CHECK(state.at("lr_warmup_steps") == 2);
    CHECK(state.at("lr_decay") == "linear");
    CHECK(state.at("lr_total_steps") == 8);
  }
  Unet<float> net(testing::tiny_unet_config(1), 99);
  Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 50), o);
  load_checkpoint(path, trainer);
  REQUIRE(trainer.step_count() == 5);
  train_until(trainer, 8);
  REQUIRE(same(std::vector<float>(net.params().values(), net.params().values() + net.params().size()),
               straight.values));
}
