#pragma once
// GaussianDiffusion<T>: the one-object API of the primer's denoising-diffusion-pytorch,
//   diffusion = GaussianDiffusion(model, image_size, timesteps, loss_type); loss = diffusion(images);
//   diffusion.sample(batch_size)
// built only from the library's parts: a Unet (the model), a NoiseSchedule, a Trainer (the L_simple objective,
// Adam, EMA) and SamplerOptions (which sampler, how many steps). Each part stays reachable (model(), trainer(),
// schedule(), sampler_options()) for whatever the object does not offer.
//
//   GaussianDiffusion<float> diffusion(config, /*image_size=*/28);     // T = 1000, linear betas, L2, eps, EMA
//   double loss = diffusion.train_step(images);                        // images (N, channels, 28, 28) in [-1, 1]
//   Tensor<float> x = diffusion.sample(64, rng);                       // (64, channels, 28, 28), the EMA network
//   diffusion.save("model.safetensors"); diffusion.load("model.safetensors");
//
// save writes a training checkpoint (train/checkpoint.hpp: weights, EMA, Adam moments, schedule, step), so load
// continues training exactly or samples; load checks the file against this object's configuration first.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/model/unet.hpp"
#include "diffusion/model/unet_config.hpp"
#include "diffusion/process/schedule.hpp"
#include "diffusion/samplers/sample.hpp"
#include "diffusion/samplers/sampler.hpp"
#include "diffusion/train/checkpoint.hpp"
#include "diffusion/train/trainer.hpp"

namespace diffusion {

struct GaussianDiffusionOptions {
  int timesteps = 1000;                              // T (the primer: 200; see README on why 1000)
  BetaSchedule beta_schedule = BetaSchedule::Linear;
  TrainerOptions trainer;                            // loss (L2), objective (prediction: eps), Adam, EMA, seed
  SamplerOptions sampler;                            // DDIM, 50 steps, x0 clipped; its prediction follows trainer's
  std::uint64_t seed = 0;                            // the network's initial weights (when built from a config)
};

template <class T>
class GaussianDiffusion {
 public:
  // A new network built from `config` (weights drawn from options.seed), for images (channels, size, size).
  GaussianDiffusion(const UnetConfig& config, Index image_size, const GaussianDiffusionOptions& options = {})
      : GaussianDiffusion(Unet<T>(config, options.seed), image_size, options) {}

  // Takes over `model` (a value: pass a copy, or std::move a network you no longer need).
  GaussianDiffusion(Unet<T> model, Index image_size, const GaussianDiffusionOptions& options = {})
      : model_(std::make_unique<Unet<T>>(std::move(model))), image_size_(image_size), options_(options) {
    const Index factor = Index(1) << (model_->config().levels() - 1);
    DIFFUSION_CHECK(image_size > 0 && image_size % factor == 0,
                    "GaussianDiffusion: image_size " << image_size << " must be a positive multiple of " << factor
                                                     << " (2^(levels-1) of the U-Net)");
    options_.sampler.prediction = options_.trainer.prediction;  // sample with the objective the network learns
    trainer_ = std::make_unique<Trainer<T>>(*model_, NoiseSchedule(options.beta_schedule, options.timesteps),
                                            options_.trainer);
    (void)Sampler<T>(trainer_->schedule(), options_.sampler);  // refuse bad sampler options now, not after training
  }

  // One optimisation step on images (N, channels, image_size, image_size) in [-1, 1]; returns the loss (the mean of
  // L_simple, or of the chosen loss, over the batch). The primer's `loss = diffusion(images)` + backward + step.
  double train_step(const Tensor<T>& images) {
    check_images(images);
    return trainer_->step(images).loss;
  }

  // The same for a class-conditional network (config num_classes > 0): labels (N) in [0, num_classes), each dropped
  // to kNullClass with probability options.trainer.cond_drop_prob (Trainer::step(x0, labels)).
  double train_step(const Tensor<T>& images, const std::vector<std::int64_t>& labels) {
    check_images(images);
    return trainer_->step(images, labels).loss;
  }

  // n images (n, channels, image_size, image_size) in [-1, 1], drawn from x_T ~ N(0, I) (from rng, in element order)
  // with the sampler of sampler_options(), through the EMA network when EMA is on.
  Tensor<T> sample(Index n, Rng& rng) {
    DIFFUSION_CHECK(n > 0, "GaussianDiffusion::sample: n must be positive, got " << n);
    Tensor<T> x = Tensor<T>::normal(Shape{n, model_->config().channels, image_size_, image_size_}, rng);
    diffusion::sample(trainer_->sampling_model(), trainer_->schedule(), x, rng, options_.sampler);
    return x;
  }

  // A training checkpoint (atomic): everything needed to continue training exactly or to sample.
  void save(const std::string& path) const { save_checkpoint(path, *trainer_); }
  // Restores a checkpoint written by save() (or by save_checkpoint) for the same configuration and schedule.
  void load(const std::string& path) { load_checkpoint(path, *trainer_); }

  Index image_size() const { return image_size_; }
  Unet<T>& model() { return *model_; }
  const Unet<T>& model() const { return *model_; }
  Trainer<T>& trainer() { return *trainer_; }
  const Trainer<T>& trainer() const { return *trainer_; }
  const NoiseSchedule& schedule() const { return trainer_->schedule(); }
  SamplerOptions& sampler_options() { return options_.sampler; }
  const SamplerOptions& sampler_options() const { return options_.sampler; }

 private:
  void check_images(const Tensor<T>& images) const {
    DIFFUSION_CHECK(images.rank() == 4 && images.dim(1) == model_->config().channels &&
                        images.dim(2) == image_size_ && images.dim(3) == image_size_,
                    "GaussianDiffusion::train_step: images " << images.shape() << " do not match (N, "
                                                             << model_->config().channels << ", " << image_size_
                                                             << ", " << image_size_ << ")");
  }

  std::unique_ptr<Unet<T>> model_;      // on the heap: the trainer keeps a reference, which a move keeps valid
  Index image_size_;
  GaussianDiffusionOptions options_;
  std::unique_ptr<Trainer<T>> trainer_;
};

}  // namespace diffusion
