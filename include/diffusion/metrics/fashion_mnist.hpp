#pragma once
// Sample quality for Fashion-MNIST: the classifier of model/fashion_classifier.hpp as the feature extractor, the
// real test (or training) images as the reference, cached.
//
//   metrics::FashionMnistMetricsOptions o;
//   o.classifier = "examples/fashion_classifier/fashion_classifier.safetensors";
//   o.reference_images = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
//   o.cache = "results/fashion_mnist/reference_stats.safetensors";      // "" : no cache
//   metrics::FashionMnistMetrics fm(o);                                  // loads or computes the reference
//   auto eval = fm.evaluator();                                          // SampleEvaluator
//   for (...) eval.add(samples);                                         // (n, 1, 28, 28), values in [-1, 1]
//   metrics::SampleReport r = eval.finish();                             // r.summary(), r.to_json()
//   // or in one call: fm.evaluate(samples)
//
// Generated samples are made comparable with the 8-bit real images before feature extraction (quantize = true,
// the default): clamped to [-1, 1], rounded to the nearest of the 256 levels p / 255 * 2 - 1 that
// io::load_idx_images produces, i.e. exactly what saving them as 8-bit PNGs and loading them back would give.

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/io/idx.hpp"
#include "diffusion/metrics/reference_stats.hpp"
#include "diffusion/metrics/sample_evaluator.hpp"
#include "diffusion/model/fashion_classifier.hpp"

namespace diffusion::metrics {

inline const char* const kFashionMnistClasses[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                     "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

// Labels (N) from an IDX label file (magic 0x00000801, one dimension), e.g. t10k-labels-idx1-ubyte.gz.
inline std::vector<std::int64_t> load_idx_labels(const std::string& path) {
  const io::IdxArray a = io::read_idx(path);
  DIFFUSION_CHECK(a.dims.size() == 1, "IDX file '" << path << "': expected labels (magic 0x00000801, one dimension) "
                                                   << "but the file has " << a.dims.size() << " dimensions");
  return std::vector<std::int64_t>(a.data.begin(), a.data.end());
}

// x -> the nearest 8-bit level p / 255 * 2 - 1 (p = round((clamp(x, -1, 1) + 1) / 2 * 255)), computed as
// io::load_idx_images computes the levels, so a real image passes through unchanged.
inline void quantize_to_8bit(const float* x, float* y, Index n) {
  float table[256];
  for (int p = 0; p < 256; ++p) table[p] = static_cast<float>(p) / 255.0f * 2.0f - 1.0f;
  for (Index i = 0; i < n; ++i) {
    const float v = std::isnan(x[i]) ? -1.0f : std::min(1.0f, std::max(-1.0f, x[i]));
    const long p = std::lround((static_cast<double>(v) + 1.0) * 0.5 * 255.0);
    y[i] = table[p];
  }
}

// The classifier as a metrics extractor (see sample_evaluator.hpp): features = penultimate activations (N, 128),
// classes = argmax of the logits.
class FashionMnistExtractor {
 public:
  explicit FashionMnistExtractor(const std::string& weights_path, bool quantize = true)
      : net_(load_fashion_classifier<float>(weights_path)), quantize_(quantize),
        key_(parameters_key(net_->params(), "FashionClassifier:" + net_->config().to_json().dump())) {}

  Index feature_dim() const { return net_->feature_dim(); }
  Index num_classes() const { return net_->num_classes(); }
  const std::string& key() const { return key_; }
  FashionClassifier<float>& network() { return *net_; }

  void extract(const Tensor<float>& images, Tensor<float>& features, std::vector<std::int64_t>* classes) {
    const Tensor<float>* in = &images;
    if (quantize_) {
      input_.resize(images.shape());
      quantize_to_8bit(images.data(), input_.data(), images.numel());
      in = &input_;
    }
    net_->forward(*in, logits_);
    features.copy_from(net_->features());
    if (classes) *classes = argmax_rows(logits_);
  }

  static std::vector<std::int64_t> argmax_rows(const Tensor<float>& logits) {
    const Index N = logits.dim(0), C = logits.dim(1);
    std::vector<std::int64_t> out(static_cast<std::size_t>(N));
    for (Index n = 0; n < N; ++n) {
      Index best = 0;
      for (Index c = 1; c < C; ++c)
        if (logits[n * C + c] > logits[n * C + best]) best = c;
      out[static_cast<std::size_t>(n)] = best;
    }
    return out;
  }

 private:
  std::unique_ptr<FashionClassifier<float>> net_;
  bool quantize_;
  std::string key_;
  Tensor<float> input_, logits_;
};

// Fraction of images (N, 1, 28, 28) whose predicted class is the label.
inline double classifier_accuracy(FashionMnistExtractor& extractor, const Tensor<float>& images,
                                  const std::vector<std::int64_t>& labels, Index batch_size = 500) {
  DIFFUSION_CHECK(images.rank() == 4 && static_cast<Index>(labels.size()) == images.dim(0),
                  "classifier_accuracy: " << labels.size() << " labels for images " << images.shape());
  Index correct = 0, at = 0;
  extract_in_batches(extractor, images, batch_size, [&](const Tensor<float>&, const std::vector<std::int64_t>& c) {
    for (std::int64_t p : c) correct += p == labels[static_cast<std::size_t>(at++)];
  });
  return static_cast<double>(correct) / static_cast<double>(images.dim(0));
}

struct FashionMnistMetricsOptions {
  std::string classifier;        // weights of the classifier (safetensors)
  std::string reference_images;  // IDX images, e.g. .../t10k-images-idx3-ubyte.gz
  std::string cache;             // reference statistics cache ("" : none)
  bool quantize = true;          // generated samples -> 8-bit levels first
  EvaluationOptions evaluation;
};

class FashionMnistMetrics {
 public:
  explicit FashionMnistMetrics(const FashionMnistMetricsOptions& options)
      : options_(options), extractor_(options.classifier, options.quantize) {
    const Tensor<float> images = io::load_idx_images<float>(options.reference_images);
    const std::string dataset_key = tensor_key(images);
    cached_ = cached_reference_stats(options.cache, dataset_key, extractor_.key(), options.evaluation.features, [&] {
      return compute_reference_stats(extractor_, images, dataset_key, options_.evaluation);
    });
  }
  FashionMnistMetrics(const FashionMnistMetrics&) = delete;  // evaluators borrow the extractor and reference
  FashionMnistMetrics& operator=(const FashionMnistMetrics&) = delete;

  // Whether the reference statistics came from the cache (and why not, if they did not).
  CacheStatus reference_status() const { return cached_.status; }
  const std::string& reference_reason() const { return cached_.reason; }
  const ReferenceStats& reference() const { return cached_.stats; }
  FashionMnistExtractor& extractor() { return extractor_; }

  SampleEvaluator<FashionMnistExtractor> evaluator() {
    return SampleEvaluator<FashionMnistExtractor>(extractor_, cached_.stats, options_.evaluation);
  }
  SampleReport evaluate(const Tensor<float>& images) {
    SampleEvaluator<FashionMnistExtractor> e = evaluator();
    e.add(images);
    return e.finish();
  }

 private:
  FashionMnistMetricsOptions options_;
  FashionMnistExtractor extractor_;
  CachedReference cached_;
};

}  // namespace diffusion::metrics
