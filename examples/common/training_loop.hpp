#pragma once
// The training loop both example programs run: one optimisation step per batch until the run's length, with the
// progress display, a train_log.csv line per epoch, checkpoints every N steps and the program's own work after a
// step (preview grids, evaluations). What differs between the programs stays in them: the data, the outputs.

#include <cstdint>
#include <functional>
#include <string>

#include "common/progress.hpp"
#include "diffusion/train/dataset.hpp"
#include "diffusion/train/trainer.hpp"

namespace examples {

struct TrainingLoop {
  std::int64_t total_steps = 0;       // the run ends when the trainer's step count reaches this
  std::int64_t steps_per_epoch = 1;   // a train_log.csv line at every multiple (and at the end)
  std::int64_t checkpoint_every = 0;  // save() every N steps, not at the last one (the caller writes that); 0: never
  std::string checkpoint_path;        // what save() writes: the last good checkpoint once it ran
  std::string resumed_from;           // the checkpoint this run continues ("" for a new run)
  std::string divergence_advice;      // appended to the message of a diverged step, e.g. "Try a lower --lr"
  std::string resume_advice;          // appended after it when there is a checkpoint to resume from
  // False on the ranks of a data-parallel run other than rank 0: they train but write nothing (no log lines, no
  // checkpoints, no after_step work); rank 0 does.
  bool leader = true;
  std::function<void()> save;                         // writes the checkpoint of the trainer's current step
  std::function<void(std::int64_t step)> after_step;  // previews, evaluations; may be empty

  // Trains from the trainer's step count to total_steps on sampler.batch(step) (with the batch's labels for a
  // class-conditional model: the sampler must have them). A diverged step
  // (diffusion::TrainingDiverged) closes the display and throws diffusion::Error naming the last good checkpoint
  // (nothing later was saved) and the advice.
  void run(diffusion::Trainer<float>& trainer, diffusion::BatchSampler<float>& sampler, ProgressDisplay& progress,
           const TrainLog& log) const;
};

}  // namespace examples
