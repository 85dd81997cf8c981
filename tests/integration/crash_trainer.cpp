// Helper of test_crash_safety.cpp: trains a small U-Net on synthetic images forever (the run of crash_setup.hpp) and
// writes a training checkpoint after every step, so that the test can SIGKILL it at random moments, some of them
// mid-write.
//   diffusion_crash_trainer CHECKPOINT_PATH
// On start it removes the temporaries that killed predecessors left beside the checkpoint, resumes from the
// checkpoint when there is one, prints "ready <step>" on stdout, then trains and saves until killed.
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <string>
#include <sys/stat.h>

#include "crash_setup.hpp"
#include "diffusion/io/atomic_file.hpp"
#include "diffusion/train/checkpoint.hpp"

using namespace diffusion;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CHECKPOINT_PATH\n", argv[0]);
    return 2;
  }
  const std::string path = argv[1];
  try {
    io::remove_stale_temporaries(path);
    Unet<float> net(crash_test::config(), crash_test::kModelSeed);
    Trainer<float> trainer(net, crash_test::schedule(), crash_test::trainer_options());
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) load_checkpoint(path, trainer);
    const Tensor<float> images = crash_test::squares();
    BatchSampler<float> sampler(images, crash_test::batch_options());
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
