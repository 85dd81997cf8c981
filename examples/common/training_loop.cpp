#include "common/training_loop.hpp"

#include <chrono>
#include <cstdint>
#include <vector>

#include "diffusion/core/error.hpp"

namespace examples {

void TrainingLoop::run(diffusion::Trainer<float>& trainer, diffusion::BatchSampler<float>& sampler,
                       ProgressDisplay& progress, const TrainLog& log) const {
  std::string last_checkpoint = resumed_from;
  std::int64_t last_checkpoint_step = resumed_from.empty() ? -1 : trainer.step_count();
  const bool conditional = trainer.model().is_conditional();
  DIFFUSION_CHECK(!conditional || sampler.has_labels(),
                  "the model is class-conditional but the training data have no labels");
  // Every batch must split into the trainer's shards and micro-batches: an epoch's last, the smallest, tells now.
  const std::int64_t smallest = sampler.batch_size_of(sampler.batches_per_epoch() - 1);
  try {
    trainer.check_batch_size(smallest);
  } catch (const diffusion::Error& e) {
    throw diffusion::Error("the last batch of each epoch has " + std::to_string(smallest) + " images (" +
                           std::to_string(sampler.dataset_size()) + " in batches of the run's size): " + e.what() +
                           "; change the batch size");
  }
  double epoch_loss = 0.0;
  std::int64_t epoch_steps = 0;
  while (trainer.step_count() < total_steps) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::int64_t images = sampler.batch_size_of(trainer.step_count());
    diffusion::StepResult r;
    try {
      r = trainer.step(sampler);  // each rank of a data-parallel run reads only its share of the batch
    } catch (const diffusion::TrainingDiverged& e) {
      progress.finish();
      const std::string kept = last_checkpoint.empty()
                                   ? std::string(" No checkpoint was written.")
                                   : " The last good checkpoint is '" + last_checkpoint + "' (step " +
                                         std::to_string(last_checkpoint_step) + "); nothing later was saved.";
      throw diffusion::Error(std::string(e.what()) + "." + kept +
                             (divergence_advice.empty() ? "" : " " + divergence_advice) +
                             (last_checkpoint.empty() || resume_advice.empty() ? "" : " " + resume_advice));
    }
    const std::int64_t s = trainer.step_count();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress.update(s, r.loss, images, seconds);
    epoch_loss += r.loss;
    ++epoch_steps;
    if (s % steps_per_epoch == 0 || s == total_steps) {
      if (leader)
        log.add(s, static_cast<double>(s) / static_cast<double>(steps_per_epoch),
                epoch_loss / static_cast<double>(epoch_steps), progress.images_per_second(), progress.elapsed());
      epoch_loss = 0.0;
      epoch_steps = 0;
    }
    if (checkpoint_every > 0 && s % checkpoint_every == 0 && s != total_steps) {
      if (leader) save();
      last_checkpoint = checkpoint_path;
      last_checkpoint_step = s;
    }
    if (leader && after_step) after_step(s);
  }
  progress.finish();
}

}  // namespace examples
