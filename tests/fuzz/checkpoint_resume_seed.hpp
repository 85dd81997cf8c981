#pragma once
// The small training checkpoint behind fuzz_checkpoint_resume: what `fashion_mnist train --dim 4 --dim-mults 1
// --timesteps 8 --batch 2 --steps 4` on 64 images writes after its first step (the example's own code builds the
// options, the trainer and the metadata; the step is taken on two 28x28 images). fuzz_make_seeds writes its metadata as the fuzzer's seed; the fuzzer keeps its tensors
// and pairs them with each input's metadata.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/train/checkpoint.hpp"
#include "examples/fashion_mnist/options.hpp"
#include "examples/fashion_mnist/resume.hpp"

namespace fuzz {

// The metadata keys an input of fuzz_checkpoint_resume sets, in input order (sections separated by NUL bytes).
inline const std::vector<std::string>& resume_sections() {
  static const std::vector<std::string> keys = {fashion_mnist::kOptionsKey, fashion_mnist::kRunKey,
                                                diffusion::kTrainStateKey, diffusion::kUnetConfigKey,
                                                diffusion::kUnetExtensionsKey};
  return keys;
}

inline fashion_mnist::TrainOptions resume_seed_options() {
  fashion_mnist::TrainOptions o;
  o.dim = 4;
  o.dim_mults = {1};
  o.timesteps = 8;
  o.batch = 2;
  o.steps = 4;
  o.lr_warmup = 0;       // what the program makes of the default warm-up in a 4-step run (a tenth of it)
  o.precision = "fp32";  // the same seed bytes on every CPU
  o.checkpoint_every = 0;
  o.final_samples = 1;
  o.out = "results/fuzz";
  return o;
}

// The checkpoint's bytes, read back (save_checkpoint writes files only: a temporary file is used and removed).
inline diffusion::io::SafetensorsReader resume_seed_checkpoint() {
  const fashion_mnist::TrainOptions o = resume_seed_options();
  const diffusion::UnetConfig config = fashion_mnist::unet_config(o.block, o.dim, o.dim_mults, 1);
  diffusion::Unet<float> net(config, o.seed);
  diffusion::Trainer<float> trainer(net, fashion_mnist::noise_schedule(o),
                                    fashion_mnist::trainer_options(o, o.steps));
  diffusion::Tensor<float> x(diffusion::Shape{2, 1, 28, 28});
  for (diffusion::Index i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(i % 29) / 14.0f - 1.0f;
  trainer.step(x);
  const nlohmann::json stored = fashion_mnist::stored_options(o, 64, 28, o.steps);
  char path[] = "/tmp/fuzz_resume_seed_XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) std::abort();
  ::close(fd);
  diffusion::save_checkpoint(path, trainer,
                             {{fashion_mnist::kOptionsKey, stored.dump()},
                              {fashion_mnist::kRunKey, fashion_mnist::run_info(12.5).dump()}});
  diffusion::io::SafetensorsReader reader(path);
  ::unlink(path);
  return reader;
}

// A fuzzer input: the metadata values of resume_sections() joined by NUL bytes (absent keys as empty sections).
inline std::string resume_input(const std::map<std::string, std::string>& metadata) {
  std::string out;
  const auto& keys = resume_sections();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (i > 0) out += '\0';
    const auto it = metadata.find(keys[i]);
    if (it != metadata.end()) out += it->second;
  }
  while (!out.empty() && out.back() == '\0') out.pop_back();
  return out;
}

}  // namespace fuzz
