#pragma once
// Measuring train_images models (`train_images eval`, `train --eval-every`): FID, KID, precision and recall of
// samples against the images of a folder, in the feature space of
//   - Inception-v3 as pytorch-fid defines it (--inception FILE: pytorch-fid's weights, converted to safetensors by
//     scripts/convert_fid_inception.py; nothing is downloaded), for images of any size, 1 or 3 channels; or
//   - the committed Fashion-MNIST classifier (--classifier FILE), for 1 x 28 x 28 images; it also gives the histogram
//     of the classes it sees in the samples.
// The reference statistics of the folder are computed once and cached in a file keyed by the decoded images and the
// extractor's weights (metrics/reference_stats.hpp: a stale cache is recomputed, never used).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/evaluation.hpp"
#include "common/sampling.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/metrics/reference_stats.hpp"
#include "diffusion/metrics/sample_evaluator.hpp"

namespace train_images {

using diffusion::Index;

struct MetricsOptions {
  std::string inception;   // Inception weights (safetensors); exactly one of inception and classifier
  std::string classifier;  // Fashion-MNIST classifier weights (safetensors)
  std::string cache;       // reference statistics cache ("": none)
};

// A feature extractor and the reference statistics of a folder's images in its space.
class FolderMetrics {
 public:
  virtual ~FolderMetrics() = default;
  // "Inception-v3 pool3 features (FILE)" or "the Fashion-MNIST classifier's features (FILE)".
  virtual const std::string& extractor_name() const = 0;
  // The names of the extractor's classes (the class histogram's), empty when it has none.
  virtual std::vector<std::string> class_names() const = 0;
  // The reference statistics, and whether they came from the cache (and why not).
  virtual const diffusion::metrics::CachedReference& reference() const = 0;
  // One measurement: start(), then add() batches of samples (N, C, H, W) in [-1, 1], then finish().
  virtual void start() = 0;
  virtual void add(const examples::Images& x) = 0;
  virtual diffusion::metrics::SampleReport finish() const = 0;
};

// The extractor the options name and the reference statistics of `images` (bytes (N, C, H, W), e.g.
// io::ImageFolder::images()), loaded from options.cache or computed (a progress line on stderr) and cached. Throws
// diffusion::Error naming the flag when neither or both extractors are given, when a weights file is missing or
// invalid, or when the images do not suit the extractor (the classifier takes 1 x 28 x 28 only).
std::unique_ptr<FolderMetrics> make_folder_metrics(const MetricsOptions& options,
                                                   const diffusion::Tensor<std::uint8_t>& images);

// Samples n images of channels x height x width from `net` (examples::sample_in_batches: batch b from
// Rng(seed).fork(examples::kEvalStream).fork(b); image i of class classes[i], classes empty for an unconditional
// model) and measures them with `metrics`. sampling_seconds receives the time spent sampling.
diffusion::metrics::SampleReport measure_samples(diffusion::Unet<float>& net, const diffusion::NoiseSchedule& schedule,
                                                 const examples::SamplerSettings& settings, FolderMetrics& metrics,
                                                 Index n, Index batch, Index channels, Index height, Index width,
                                                 std::uint64_t seed, const std::vector<std::int64_t>& classes,
                                                 double& sampling_seconds, bool progress);

}  // namespace train_images
