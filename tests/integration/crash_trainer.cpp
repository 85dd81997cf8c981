// Helper of test_crash_safety.cpp: trains a small U-Net on synthetic images forever and writes a training
// checkpoint after every step, so that the test can SIGKILL it at random moments, some of them mid-write.
//   diffusion_crash_trainer CHECKPOINT_PATH
// On start it removes the temporaries that killed predecessors left beside the checkpoint, resumes from the
// checkpoint when there is one, prints "ready <step>" on stdout, then trains and saves until killed.
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <string>
#include <sys/stat.h>

#include "diffusion/io/atomic_file.hpp"
#include "diffusion/train/checkpoint.hpp"
#include "diffusion/train/dataset.hpp"
#include "diffusion/train/trainer.hpp"

using namespace diffusion;

namespace {

// The model: ~330k parameters, so that a checkpoint (weights, EMA, two Adam moments) is ~5 MB and takes
// measurable time to write and fsync, while a training step on 8x8 images stays short.
UnetConfig crash_config() {
  UnetConfig c;
  c.dim = 16;
  c.channels = 1;
  c.dim_mults = {1, 2};
  return c;
}

// 32 images 8x8: background -1, a 3x3 bright square at a random place.
Tensor<float> squares() {
  Tensor<float> images(Shape{32, 1, 8, 8}, -1.0f);
  Rng rng(99);
  for (Index i = 0; i < images.dim(0); ++i) {
    const Index r = rng.uniform_int(6), c = rng.uniform_int(6);
    for (Index y = r; y < r + 3; ++y)
      for (Index x = c; x < c + 3; ++x) images.at(i, 0, y, x) = 1.0f;
  }
  return images;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CHECKPOINT_PATH\n", argv[0]);
    return 2;
  }
  const std::string path = argv[1];
  try {
    io::remove_stale_temporaries(path);
    Unet<float> net(crash_config(), 1);
    TrainerOptions options;
    options.seed = 1;
    Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 100), options);
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) load_checkpoint(path, trainer);
    const Tensor<float> images = squares();
    BatchOptions batch_options;
    batch_options.batch_size = 4;
    batch_options.seed = 1;
    BatchSampler<float> sampler(images, batch_options);
    std::printf("ready %lld\n", static_cast<long long>(trainer.step_count()));
    std::fflush(stdout);
    Tensor<float> batch;
    for (;;) {
      sampler.batch(trainer.step_count(), batch);
      trainer.step(batch);
      save_checkpoint(path, trainer);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "diffusion_crash_trainer: %s\n", e.what());
    return 1;
  }
}
