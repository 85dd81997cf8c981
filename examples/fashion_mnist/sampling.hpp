#pragma once
// The `sample` subcommand and loading a trained model; the sampling itself (any sampler, grids, the denoising GIF)
// is the examples' common code (examples/common/sampling.hpp).

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/io/image.hpp"
#include "diffusion/model/unet.hpp"
#include "diffusion/process/parameterization.hpp"
#include "diffusion/process/schedule.hpp"
#include "common/sampling.hpp"
#include "options.hpp"

namespace fashion_mnist {

using examples::DenoisingRecorder;
using examples::denoise;
using examples::first_images;
using examples::generate;
using examples::Images;
using examples::kPreviewStream;
using examples::kSampleStream;
using examples::SamplerSettings;
using examples::write_grid_png;
using diffusion::Index;

// A trained model read from a checkpoint or weights file, as `sample` and `eval` use it.
struct LoadedModel {
  std::unique_ptr<diffusion::Unet<float>> net;
  std::vector<double> betas;  // the schedule it was trained with
  diffusion::Prediction prediction = diffusion::Prediction::Epsilon;
  Index channels = 1, image_size = 28;
  std::string kind;  // "training checkpoint, step 2345, EMA weights", ... (for the summary)
};

// Reads o.checkpoint (a checkpoint's EMA weights when it has them); the flags in `given` must agree with what the
// file defines. Checks the file against the network's plan before building it. Throws diffusion::Error.
LoadedModel load_model(const SampleOptions& o, const std::set<std::string>& given);

// The sampler settings of the flags (--eta only when given).
SamplerSettings sampler_settings(const SampleOptions& o, const std::set<std::string>& given,
                                 diffusion::Prediction prediction);

// `fashion_mnist sample`: returns the exit status; throws diffusion::Error on failure.
int run_sample(const SampleOptions& options, const std::set<std::string>& given);

}  // namespace fashion_mnist
