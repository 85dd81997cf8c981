#pragma once
// `fashion_mnist eval`: sample n images from a trained model and measure them against real Fashion-MNIST images with
// the library's metrics (diffusion/metrics/fashion_mnist.hpp): FID, KID, precision and recall in the feature space of
// the committed classifier (examples/fashion_classifier), and the histogram of the classes it predicts.

#include <memory>
#include <optional>
#include <vector>
#include <set>
#include <string>

#include "diffusion/metrics/fashion_mnist.hpp"
#include "options.hpp"
#include "sampling.hpp"

namespace fashion_mnist {

// The metrics of Fashion-MNIST samples against the images `data`/<reference file> ("test": t10k, "train"), in the
// feature space of `classifier`; the reference statistics cached in `cache`. Throws diffusion::Error naming a missing
// file.
std::unique_ptr<diffusion::metrics::FashionMnistMetrics> make_metrics(const std::string& data, const std::string& reference,
                                                                      const std::string& classifier,
                                                                      const std::string& cache);

// How often the classifier recognises the class each sample was asked to be (class-conditional models).
struct ClassAccuracy {
  std::vector<Index> asked, correct;  // per class: samples asked for, samples the classifier assigns to it
  double mean() const;                // correct / asked over all samples
  double of(std::size_t c) const;     // correct[c] / asked[c] (NaN when none were asked)
  std::string summary() const;        // "0.873 (T-shirt/top 0.91, Trouser 0.98, ...)"
};

struct EvalResult {
  diffusion::metrics::SampleReport report;
  ClassAccuracy accuracy;  // empty for an unconditional model
};

// The class ids of n samples of `net`: none for an unconditional model; for a conditional one class_id for every
// sample when given, otherwise the classes in turn (0, 1, ..., 9, 0, ...). Throws diffusion::Error for a class the
// model does not have, or a class asked of an unconditional model.
std::vector<std::int64_t> eval_classes(const diffusion::Unet<float>& net, Index n, std::optional<int> class_id);

// Samples n images of 1 x 28 x 28 from `net` in batches of `batch` (examples::sample_in_batches: batch b from
// Rng(seed).fork(examples::kEvalStream).fork(b)), image i of class classes[i] (empty: unconditional), and measures them; a conditional model's samples are also
// classified and compared with the class asked for. sampling_seconds receives the time spent sampling; progress lines
// go to stderr when asked.
EvalResult evaluate_samples(diffusion::Unet<float>& net, const diffusion::NoiseSchedule& schedule,
                            const SamplerSettings& settings, diffusion::metrics::FashionMnistMetrics& metrics, Index n,
                            Index batch, std::uint64_t seed, const std::vector<std::int64_t>& classes,
                            double& sampling_seconds, bool progress);

// `fashion_mnist eval`. Returns the exit status; throws diffusion::Error on failure.
int run_eval(const EvalOptions& options, const std::set<std::string>& given);

}  // namespace fashion_mnist
