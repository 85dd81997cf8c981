#pragma once
// The training run of the crash-safety test, shared by the helper program that is killed (crash_trainer.cpp) and
// the test that checks what it left (test_crash_safety.cpp): the same model, data, options and schedule, so that the
// test can replay the run in-process and know exactly what the checkpoint of every step holds.

#include "diffusion/train/dataset.hpp"
#include "diffusion/train/trainer.hpp"

namespace crash_test {

// ~330k parameters, so that a checkpoint (weights, EMA, two Adam moments) is ~5 MB and takes measurable time to write
// and fsync, while a training step on 8x8 images stays short.
inline diffusion::UnetConfig config() {
  diffusion::UnetConfig c;
  c.dim = 16;
  c.channels = 1;
  c.dim_mults = {1, 2};
  return c;
}

inline constexpr std::uint64_t kModelSeed = 1;

// 32 images 8x8: background -1, a 3x3 bright square at a random place.
inline diffusion::Tensor<float> squares() {
  diffusion::Tensor<float> images(diffusion::Shape{32, 1, 8, 8}, -1.0f);
  diffusion::Rng rng(99);
  for (diffusion::Index i = 0; i < images.dim(0); ++i) {
    const diffusion::Index r = rng.uniform_int(6), c = rng.uniform_int(6);
    for (diffusion::Index y = r; y < r + 3; ++y)
      for (diffusion::Index x = c; x < c + 3; ++x) images.at(i, 0, y, x) = 1.0f;
  }
  return images;
}

inline diffusion::TrainerOptions trainer_options() {
  diffusion::TrainerOptions options;
  options.seed = 1;
  return options;
}

inline diffusion::BatchOptions batch_options() {
  diffusion::BatchOptions options;
  options.batch_size = 4;
  options.seed = 1;
  return options;
}

inline diffusion::NoiseSchedule schedule() { return diffusion::NoiseSchedule(diffusion::BetaSchedule::Linear, 100); }

}  // namespace crash_test
