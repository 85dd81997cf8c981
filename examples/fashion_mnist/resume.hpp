#pragma once
// `fashion_mnist train --resume`: everything a resumed run takes from its checkpoint's metadata (the stored options
// under "fashion_mnist.options", the run info under "fashion_mnist.run", the trainer state under "diffusion.train",
// the U-Net configuration under "diffusion.unet"), read and checked against the file's tensors before any network is
// built. Kept apart from training.cpp so that the libFuzzer target tests/fuzz/fuzz_checkpoint_resume.cpp compiles
// exactly this code (with options.cpp and the header-only library).

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/model/unet_config.hpp"
#include "diffusion/model/unet_plan.hpp"
#include "diffusion/process/schedule.hpp"
#include "diffusion/train/trainer.hpp"
#include "options.hpp"

namespace fashion_mnist {

// The "fashion_mnist.options" metadata `train` stores in its checkpoints and weights files: the options (to_json),
// with the number of training images ("images"), their size ("image-size") and the run's length ("total-steps").
nlohmann::json stored_options(const TrainOptions& o, diffusion::Index images, diffusion::Index image_size,
                              std::int64_t total_steps);
// The "fashion_mnist.run" metadata of a checkpoint: {"elapsed_s": seconds trained so far}.
nlohmann::json run_info(double elapsed_s);

// The stored options of a checkpoint being resumed, with what else it says about the run.
struct ResumeInfo {
  nlohmann::json options;    // "fashion_mnist.options" as stored: a JSON object (its values are checked on merging)
  double elapsed = 0.0;      // seconds trained so far ("fashion_mnist.run" elapsed_s: finite, in [0, 1e12])
  std::int64_t images = -1;  // the number of training images ("images" of the options), -1 if not recorded
};

// The checkpoint's options and run info. Throws diffusion::Error naming the file and the metadata key when the file
// is not a training checkpoint of this program, or a value is not JSON, not an object, or out of its range.
ResumeInfo read_resume_info(const diffusion::io::SafetensorsReader& reader);

// A resumed run before its network is built: the options (command line merged with the checkpoint's), the notes to
// print, the U-Net configuration and its plan; the checkpoint's tensors have been checked against the plan.
struct ResumedRun {
  ResumeInfo info;
  TrainOptions options;
  std::vector<std::string> notes;
  diffusion::UnetConfig config;
  diffusion::UnetPlan plan;
};

// Reads the checkpoint of `flags.resume` (opened as `reader`) for `train --resume`: its stored options merged with
// the flags given on the command line (merge_resume_options, which checks every value as strictly as the flags), the
// network they describe (a plan error names the file), and the file's tensors against that network's plan
// (diffusion::check_checkpoint). Throws diffusion::Error naming the file; allocates nothing beyond the plan.
ResumedRun prepare_resume(const diffusion::io::SafetensorsReader& reader, const TrainOptions& flags,
                          const std::set<std::string>& given);

// The trainer settings and the noise schedule of a run's options (new or resumed).
// total_steps: the run's length, where a learning-rate decay ends (--lr-decay); an Error names the flags when the run
// is not longer than the warm-up a decay follows.
diffusion::TrainerOptions trainer_options(const TrainOptions& o, std::int64_t total_steps);
diffusion::NoiseSchedule noise_schedule(const TrainOptions& o);

// The images a resumed run trains on must be as many as those of the checkpoint's run (when it recorded them).
void check_resume_images(const ResumedRun& run, diffusion::Index images, const std::string& data_dir);

}  // namespace fashion_mnist
