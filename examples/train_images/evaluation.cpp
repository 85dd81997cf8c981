#include "evaluation.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <utility>

#include "diffusion/core/batch_parts.hpp"
#include "diffusion/core/error.hpp"
#include "diffusion/metrics/fashion_mnist.hpp"
#include "diffusion/metrics/feature_statistics.hpp"
#include "diffusion/metrics/inception.hpp"

namespace train_images {

namespace {

namespace metrics = diffusion::metrics;

// Images per extractor call: Inception's activations at 299 x 299 take about 11 MB per image.
constexpr Index kInceptionBatch = 20;
constexpr Index kClassifierBatch = 500;

template <class Extractor>
class FolderMetricsWith final : public FolderMetrics {
 public:
  FolderMetricsWith(std::unique_ptr<Extractor> extractor, std::string name, std::vector<std::string> classes,
                    Index batch, const diffusion::Tensor<std::uint8_t>& images, const std::string& cache)
      : extractor_(std::move(extractor)), name_(std::move(name)), classes_(std::move(classes)) {
    options_.batch_size = batch;
    const std::string dataset_key = metrics::tensor_key(images);
    reference_ = metrics::cached_reference_stats(cache, dataset_key, extractor_->key(), options_.features,
                                                 [&] { return compute_reference(images, dataset_key); });
  }

  const std::string& extractor_name() const override { return name_; }
  std::vector<std::string> class_names() const override { return classes_; }
  const metrics::CachedReference& reference() const override { return reference_; }
  void start() override { evaluator_.emplace(*extractor_, reference_.stats, options_); }
  void add(const examples::Images& x) override {
    DIFFUSION_CHECK(evaluator_, "FolderMetrics::add before start()");
    evaluator_->add(x);
  }
  metrics::SampleReport finish() const override {
    DIFFUSION_CHECK(evaluator_, "FolderMetrics::finish before start()");
    return evaluator_->finish();
  }

 private:
  // The images go through the extractor a batch at a time, converted to [-1, 1] as training converts them
  // (p / 255 * 2 - 1, train/dataset.hpp), so that a folder of 60,000 images never sits in memory as floats.
  metrics::ReferenceStats compute_reference(const diffusion::Tensor<std::uint8_t>& images,
                                            const std::string& dataset_key) {
    DIFFUSION_CHECK(images.rank() == 4 && images.dim(0) >= 2,
                    "the reference folder must hold at least 2 images, got " << images.shape());
    const Index N = images.dim(0), batch = options_.batch_size;
    float level[256];
    for (int p = 0; p < 256; ++p) level[p] = static_cast<float>(p) / 255.0f * 2.0f - 1.0f;
    metrics::FeatureStatistics stats(extractor_->feature_dim(), options_.features);
    examples::Images chunk;
    diffusion::for_each_part(N, batch, [&](Index start, Index n) {
      const diffusion::TensorView<std::uint8_t> bytes = diffusion::batch_part<std::uint8_t>(images, start, n);
      chunk.resize(bytes.shape());
      std::transform(bytes.begin(), bytes.end(), chunk.data(), [&](std::uint8_t p) { return level[p]; });
      metrics::extract_in_batches(*extractor_, chunk, batch,
                                  [&](const diffusion::Tensor<float>& f, const std::vector<std::int64_t>&) { stats.add(f); });
      std::fprintf(stderr, "\r  reference statistics: %lld / %lld images", static_cast<long long>(start + n),
                   static_cast<long long>(N));
    });
    std::fprintf(stderr, "\n");
    return metrics::make_reference_stats(stats, dataset_key, extractor_->key(), options_.pr_k);
  }

  std::unique_ptr<Extractor> extractor_;
  std::string name_;
  std::vector<std::string> classes_;
  metrics::EvaluationOptions options_;
  metrics::CachedReference reference_;
  std::optional<metrics::SampleEvaluator<Extractor>> evaluator_;
};

}  // namespace

std::unique_ptr<FolderMetrics> make_folder_metrics(const MetricsOptions& o, const diffusion::Tensor<std::uint8_t>& images) {
  DIFFUSION_CHECK(o.inception.empty() != o.classifier.empty(),
                  (o.inception.empty() ? "measuring needs a feature extractor: "
                                       : "--inception and --classifier are two feature extractors; give one: ")
                      << "--inception FILE (pytorch-fid's Inception-v3 weights converted by "
                      << "scripts/convert_fid_inception.py; any image size) or --classifier FILE (the Fashion-MNIST "
                      << "classifier, examples/fashion_classifier/fashion_classifier.safetensors; 1 x 28 x 28 images)");
  const std::string& file = o.inception.empty() ? o.classifier : o.inception;
  const char* flag = o.inception.empty() ? "--classifier" : "--inception";
  DIFFUSION_CHECK(std::filesystem::is_regular_file(file), flag << " '" << file << "' does not exist");
  if (!o.inception.empty()) {
    DIFFUSION_CHECK(images.dim(1) == 1 || images.dim(1) == 3,
                    "--inception measures 1- or 3-channel images, the data have " << images.dim(1) << " channels");
    return std::make_unique<FolderMetricsWith<metrics::InceptionExtractor>>(
        std::make_unique<metrics::InceptionExtractor>(file), "Inception-v3 pool3 features (" + file + ")",
        std::vector<std::string>{}, kInceptionBatch, images, o.cache);
  }
  DIFFUSION_CHECK(images.dim(1) == 1 && images.dim(2) == 28 && images.dim(3) == 28,
                  "--classifier: the Fashion-MNIST classifier measures 1 x 28 x 28 images, the data are "
                      << images.dim(1) << " x " << images.dim(2) << " x " << images.dim(3)
                      << " (--inception measures any size)");
  return std::make_unique<FolderMetricsWith<metrics::FashionMnistExtractor>>(
      std::make_unique<metrics::FashionMnistExtractor>(file), "the Fashion-MNIST classifier's features (" + file + ")",
      std::vector<std::string>(std::begin(metrics::kFashionMnistClasses), std::end(metrics::kFashionMnistClasses)),
      kClassifierBatch, images, o.cache);
}

diffusion::metrics::SampleReport measure_samples(diffusion::Unet<float>& net, const diffusion::NoiseSchedule& schedule,
                                                 const examples::SamplerSettings& settings, FolderMetrics& metrics,
                                                 Index n, Index batch, Index channels, Index height, Index width,
                                                 std::uint64_t seed, const std::vector<std::int64_t>& classes,
                                                 double& sampling_seconds, bool progress) {
  metrics.start();
  sampling_seconds = examples::sample_in_batches(
      net, schedule, settings, n, batch, channels, height, width, seed, classes,
      [&](const examples::Images& x, Index) { metrics.add(x); }, progress);
  return metrics.finish();
}

}  // namespace train_images
