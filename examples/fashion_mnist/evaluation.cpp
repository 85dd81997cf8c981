#include "evaluation.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/io/atomic_file.hpp"
#include "common/evaluation.hpp"
#include "diffusion/metrics/fashion_mnist.hpp"
#include "progress.hpp"
#include "sampling.hpp"

namespace fashion_mnist {

namespace {

std::string default_cache(const EvalOptions& o) {
  const std::filesystem::path folder = std::filesystem::path(o.sample.checkpoint).parent_path();
  return (folder / ("reference_" + o.reference + ".safetensors")).string();
}

}  // namespace

std::unique_ptr<diffusion::metrics::FashionMnistMetrics> make_metrics(const std::string& data, const std::string& reference,
                                                                      const std::string& classifier,
                                                                      const std::string& cache) {
  diffusion::metrics::FashionMnistMetricsOptions mo;
  DIFFUSION_CHECK(std::filesystem::exists(classifier),
                  "--classifier '" << classifier << "' does not exist (the committed weights are "
                                   << "examples/fashion_classifier/fashion_classifier.safetensors)");
  mo.classifier = classifier;
  const std::string images_file = reference == "test" ? "t10k-images-idx3-ubyte.gz" : kTrainImagesFile;
  mo.reference_images = (std::filesystem::path(data) / images_file).string();
  DIFFUSION_CHECK(std::filesystem::exists(mo.reference_images),
                  "--data '" << data << "' holds no " << images_file << " (the reference images; Debian package "
                             << "dataset-fashion-mnist)");
  mo.cache = cache;
  return std::make_unique<diffusion::metrics::FashionMnistMetrics>(mo);
}

double ClassAccuracy::mean() const {
  Index a = 0, c = 0;
  for (std::size_t k = 0; k < asked.size(); ++k) a += asked[k], c += correct[k];
  return a > 0 ? static_cast<double>(c) / static_cast<double>(a) : std::nan("");
}

double ClassAccuracy::of(std::size_t c) const {
  return asked[c] > 0 ? static_cast<double>(correct[c]) / static_cast<double>(asked[c]) : std::nan("");
}

std::string ClassAccuracy::summary() const {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f (", mean());
  std::string s = buf;
  bool first = true;
  for (std::size_t c = 0; c < asked.size(); ++c) {
    if (asked[c] == 0) continue;
    std::snprintf(buf, sizeof buf, "%s%s %.2f", first ? "" : ", ", diffusion::metrics::kFashionMnistClasses[c], of(c));
    s += buf;
    first = false;
  }
  return s + ")";
}

std::vector<std::int64_t> eval_classes(const diffusion::Unet<float>& net, Index n, std::optional<int> class_id) {
  const Index K = net.config().num_classes;
  if (K == 0) {
    DIFFUSION_CHECK(!class_id, "--class " << *class_id << ": the model is unconditional (trained without classes)");
    return {};
  }
  DIFFUSION_CHECK(K == kNumClasses, "the model has " << K << " classes; the Fashion-MNIST classifier knows "
                                                     << kNumClasses);
  DIFFUSION_CHECK(!class_id || (*class_id >= 0 && *class_id < K),
                  "--class " << *class_id << ": a measured class must be one of the model's classes 0-" << K - 1);
  return class_id ? std::vector<std::int64_t>(static_cast<std::size_t>(n), *class_id) : examples::classes_in_turn(n, K);
}

EvalResult evaluate_samples(diffusion::Unet<float>& net, const diffusion::NoiseSchedule& schedule,
                            const SamplerSettings& settings, diffusion::metrics::FashionMnistMetrics& metrics, Index n,
                            Index batch, std::uint64_t seed, const std::vector<std::int64_t>& classes,
                            double& sampling_seconds, bool progress) {
  auto evaluator = metrics.evaluator();
  EvalResult result;
  if (!classes.empty()) {
    result.accuracy.asked.assign(kNumClasses, 0);
    result.accuracy.correct.assign(kNumClasses, 0);
  }
  diffusion::Tensor<float> features;
  std::vector<std::int64_t> predicted;
  const auto measure = [&](const Images& x, Index first) {
    evaluator.add(x);
    if (classes.empty()) return;
    // A second pass of the (small) classifier for its predictions: the evaluator keeps only their histogram.
    metrics.extractor().extract(x, features, &predicted);
    for (Index i = 0; i < x.dim(0); ++i) {
      const std::int64_t asked = classes[static_cast<std::size_t>(first + i)];
      ++result.accuracy.asked[static_cast<std::size_t>(asked)];
      result.accuracy.correct[static_cast<std::size_t>(asked)] += predicted[static_cast<std::size_t>(i)] == asked;
    }
  };
  sampling_seconds =
      examples::sample_in_batches(net, schedule, settings, n, batch, 1, 28, 28, seed, classes, measure, progress);
  result.report = evaluator.finish();
  return result;
}

int run_eval(const EvalOptions& o, const std::set<std::string>& given) {
  const auto start = std::chrono::steady_clock::now();
  if (o.sample.threads > 0) diffusion::set_num_threads(o.sample.threads);
  const LoadedModel m = load_model(o.sample, given);
  DIFFUSION_CHECK(m.channels == 1 && m.image_size == 28,
                  "eval: the Fashion-MNIST classifier measures 1 x 28 x 28 images, but '"
                      << o.sample.checkpoint << "' makes " << m.channels << " x " << m.image_size << " x "
                      << m.image_size << " images");
  const diffusion::NoiseSchedule schedule(m.betas);
  const SamplerSettings settings = sampler_settings(o.sample, given, m.prediction);

  const std::string cache = o.cache.empty() ? default_cache(o) : o.cache;
  const auto metrics_ptr = make_metrics(o.data, o.reference, o.classifier, cache);
  auto& metrics = *metrics_ptr;
  std::printf("fashion_mnist eval: %d samples from '%s' (%s), %s", o.n, o.sample.checkpoint.c_str(), m.kind.c_str(),
              settings.sampler.c_str());
  if (settings.sampler != "ddpm") std::printf(" %d steps", settings.ddim_steps);
  if (settings.sampler != "ddpm" && settings.spacing != diffusion::TimestepSpacing::Linspace)
    std::printf(" (%s spacing)", diffusion::spacing_name(settings.spacing));
  if (settings.eta) std::printf(", eta %g", *settings.eta);
  std::printf("%s", examples::precision_note(settings.precision).c_str());
  if (m.net->is_conditional()) std::printf(", guidance %g", settings.guidance);
  std::printf("\n  reference: %s images of %s (%lld), statistics %s in %s\n", o.reference.c_str(), o.data.c_str(),
              static_cast<long long>(metrics.reference().gaussian.count),
              diffusion::metrics::cache_status_name(metrics.reference_status()), cache.c_str());
  if (!metrics.reference_reason().empty()) std::printf("  (%s)\n", metrics.reference_reason().c_str());
  std::fflush(stdout);

  double sampling_seconds = 0.0;
  const EvalResult result = evaluate_samples(*m.net, schedule, settings, metrics, o.n, o.batch, o.sample.seed,
                                             eval_classes(*m.net, o.n, o.sample.class_id), sampling_seconds, true);
  const diffusion::metrics::SampleReport& r = result.report;

  const double total = examples::seconds_since(start);
  std::vector<std::string> extra;
  if (!result.accuracy.asked.empty()) extra.push_back("class accuracy: " + result.accuracy.summary());
  examples::print_report(r, std::vector<std::string>(std::begin(diffusion::metrics::kFashionMnistClasses),
                                                     std::end(diffusion::metrics::kFashionMnistClasses)),
                         extra, sampling_seconds, total);
  if (!o.json.empty()) {
    nlohmann::json j = examples::report_json(r, settings, schedule.num_timesteps(), o.sample.seed, o.batch,
                                             sampling_seconds, total);
    j["checkpoint"] = o.sample.checkpoint;
    if (!result.accuracy.asked.empty()) {
      j["guidance"] = settings.guidance;
      j["rescaled_phi"] = settings.rescaled_phi;
      j["class"] = o.sample.class_id ? nlohmann::json(*o.sample.class_id) : nlohmann::json("all in turn");
      j["class_accuracy"] = result.accuracy.mean();
      nlohmann::json per = nlohmann::json::object();
      for (std::size_t c = 0; c < result.accuracy.asked.size(); ++c)
        if (result.accuracy.asked[c] > 0) per[diffusion::metrics::kFashionMnistClasses[c]] = result.accuracy.of(c);
      j["class_accuracy_per_class"] = per;
    }
    j["reference"] = o.reference;
    j["data"] = o.data;
    const std::string text = j.dump(2) + "\n";
    diffusion::io::write_file_atomically(o.json, text.data(), text.size());
    std::printf("  json: %s\n", o.json.c_str());
  }
  return 0;
}

}  // namespace fashion_mnist
