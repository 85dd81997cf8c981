#pragma once
// Evaluating generated samples against reference statistics, in any feature extractor's space:
//
//   ReferenceStats ref = compute_reference_stats(extractor, real_images, tensor_key(real_images), options);
//   SampleEvaluator<Extractor> eval(extractor, ref, options);
//   for (each batch of generated images) eval.add(batch);       // streaming: samples are not kept
//   SampleReport report = eval.finish();                        // FID, KID, precision/recall, class histogram
//
// An Extractor provides
//   Index feature_dim() const;  Index num_classes() const;      (0 classes: no histogram)
//   std::string key() const;                                    (content hash of its weights, reference_stats.hpp)
//   void extract(const Tensor<float>& images, Tensor<float>& features, std::vector<std::int64_t>* classes);
//       images (n, C, H, W) -> features (n, D), and the predicted class of each image when classes != null
// and sees at most options.batch_size images per call.
//
// Memory: the feature statistics (D^2 doubles) and a reservoir of options.features.reservoir_size feature vectors
// for KID and precision/recall (a uniform sample when more images than that are added; the reference keeps its
// own reservoir of the same size). FID uses every image.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/core/batch_parts.hpp"
#include "diffusion/core/error.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/metrics/feature_statistics.hpp"
#include "diffusion/metrics/frechet.hpp"
#include "diffusion/metrics/kid.hpp"
#include "diffusion/metrics/precision_recall.hpp"
#include "diffusion/metrics/reference_stats.hpp"

namespace diffusion::metrics {

struct EvaluationOptions {
  FeatureStatisticsOptions features;  // reservoir of M = 10,000 feature vectors (seed 0) for KID and P/R
  std::uint64_t sample_reservoir_seed = 1;  // the generated samples' reservoir (the reference uses features.seed)
  KidOptions kid;                     // 100 subsets of 1000, seed 0
  Index pr_k = 3;                     // neighbourhood of precision/recall
  Index batch_size = 500;             // images per extractor call
};

struct SampleReport {
  Index count = 0;              // generated images evaluated
  Index reference_count = 0;    // real images behind the reference statistics
  FrechetResult fid;            // fid.distance is the FID
  KidResult kid;
  PrecisionRecall pr;
  std::vector<Index> class_histogram;  // predicted classes of the generated images (empty without classes)
  double extract_seconds = 0.0;        // time in the extractor (add)
  double metric_seconds = 0.0;         // time in finish: Frechet, KID, precision/recall
  double seconds() const { return extract_seconds + metric_seconds; }

  nlohmann::json to_json() const {
    return {{"count", count},
            {"reference_count", reference_count},
            {"fid", fid.distance},
            {"kid_mean", kid.mean},
            {"kid_std", kid.std},
            {"kid_subsets", kid.subsets},
            {"kid_subset_size", kid.subset_size},
            {"precision", pr.precision},
            {"recall", pr.recall},
            {"pr_k", pr.k},
            {"class_histogram", class_histogram},
            {"extract_seconds", extract_seconds},
            {"metric_seconds", metric_seconds}};
  }
  // One line: "n 10000  FID 1.234  KID 0.00123 +- 0.00045  precision 0.812  recall 0.765  (12.3 s)".
  std::string summary() const {
    char buf[256];
    std::snprintf(buf, sizeof(buf), "n %lld  FID %.4f  KID %.6f +- %.6f  precision %.4f  recall %.4f  (%.1f s)",
                  static_cast<long long>(count), fid.distance, kid.mean, kid.std, pr.precision, pr.recall, seconds());
    return buf;
  }
};

namespace detail {
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace detail

// Feeds images (n, C, H, W) through the extractor in batches of at most batch_size: body(features, classes) per
// batch (classes empty when the extractor has none).
template <class Extractor, class Body>
void extract_in_batches(Extractor& extractor, const Tensor<float>& images, Index batch_size, Body&& body) {
  DIFFUSION_CHECK(images.rank() == 4, "extract: images must be (N, C, H, W), got " << images.shape());
  DIFFUSION_CHECK(batch_size > 0, "extract: batch_size must be positive, got " << batch_size);
  if (images.dim(0) == 0) return;
  Tensor<float> batch, features;
  std::vector<std::int64_t> classes;
  for_each_part(images.dim(0), batch_size, [&](Index start, Index n) {
    const TensorView<float> part = batch_part<float>(images, start, n);
    batch.resize(part.shape());  // the extractors take a Tensor
    std::copy(part.begin(), part.end(), batch.data());
    classes.clear();
    extractor.extract(batch, features, extractor.num_classes() > 0 ? &classes : nullptr);
    DIFFUSION_CHECK(features.rank() == 2 && features.dim(0) == n && features.dim(1) == extractor.feature_dim(),
                    "extract: the extractor returned features " << features.shape() << " for " << n << " images");
    body(static_cast<const Tensor<float>&>(features), static_cast<const std::vector<std::int64_t>&>(classes));
  });
}

// The reference statistics of real images (n, C, H, W) in the extractor's space.
template <class Extractor>
ReferenceStats compute_reference_stats(Extractor& extractor, const Tensor<float>& images, const std::string& dataset_key,
                                       const EvaluationOptions& options = {}) {
  FeatureStatistics stats(extractor.feature_dim(), options.features);
  extract_in_batches(extractor, images, options.batch_size,
                     [&](const Tensor<float>& f, const std::vector<std::int64_t>&) { stats.add(f); });
  return make_reference_stats(stats, dataset_key, extractor.key(), options.pr_k);
}

template <class Extractor>
class SampleEvaluator {
 public:
  // Both extractor and reference are borrowed: they must outlive the evaluator.
  SampleEvaluator(Extractor& extractor, const ReferenceStats& reference, const EvaluationOptions& options = {})
      : extractor_(&extractor), reference_(&reference), options_(options) {
    DIFFUSION_CHECK(reference.dim() == extractor.feature_dim(),
                    "SampleEvaluator: reference statistics of dimension " << reference.dim() << " for an extractor of "
                                                                          << extractor.feature_dim() << " features");
    DIFFUSION_CHECK(reference.extractor_key == extractor.key(),
                    "SampleEvaluator: the reference statistics were computed with extractor "
                        << reference.extractor_key << ", not with this one (" << extractor.key() << ")");
    FeatureStatisticsOptions o = options.features;
    o.reservoir_seed = options.sample_reservoir_seed;
    stats_ = FeatureStatistics(extractor.feature_dim(), o);
    histogram_.assign(static_cast<std::size_t>(extractor.num_classes()), 0);
  }

  // Adds generated images (n, C, H, W) in the extractor's input convention.
  void add(const Tensor<float>& images) {
    const auto t0 = std::chrono::steady_clock::now();
    extract_in_batches(*extractor_, images, options_.batch_size,
                       [&](const Tensor<float>& f, const std::vector<std::int64_t>& classes) {
                         stats_.add(f);
                         for (std::int64_t c : classes) {
                           DIFFUSION_CHECK(c >= 0 && c < static_cast<std::int64_t>(histogram_.size()),
                                           "SampleEvaluator: the extractor predicted class " << c);
                           ++histogram_[static_cast<std::size_t>(c)];
                         }
                       });
    extract_seconds_ += detail::seconds_since(t0);
  }

  Index count() const { return stats_.count(); }

  // The metrics of everything added so far (>= 2 images). Can be called again after more add()s.
  SampleReport finish() const {
    DIFFUSION_CHECK(stats_.count() >= 2, "SampleEvaluator::finish: needs at least 2 images, got " << stats_.count());
    const auto t0 = std::chrono::steady_clock::now();
    SampleReport r;
    r.count = stats_.count();
    r.reference_count = reference_->gaussian.count;
    r.fid = frechet_distance(stats_.gaussian(), reference_->gaussian);
    const Tensor<double> fake = stats_.reservoir();
    r.kid = kernel_inception_distance(reference_->features, fake, options_.kid);
    const bool cached_radii = reference_->knn_k == options_.pr_k &&
                              static_cast<Index>(reference_->knn_squared_radii.size()) == reference_->features.dim(0);
    r.pr = cached_radii
               ? precision_recall(reference_->features, reference_->knn_squared_radii, fake, options_.pr_k)
               : precision_recall(reference_->features, fake, options_.pr_k);
    r.class_histogram = histogram_;
    r.extract_seconds = extract_seconds_;
    r.metric_seconds = detail::seconds_since(t0);
    return r;
  }

 private:
  Extractor* extractor_;
  const ReferenceStats* reference_;
  EvaluationOptions options_;
  FeatureStatistics stats_;
  std::vector<Index> histogram_;
  double extract_seconds_ = 0.0;
};

}  // namespace diffusion::metrics
