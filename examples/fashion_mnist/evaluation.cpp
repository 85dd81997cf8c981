#include "evaluation.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/io/atomic_file.hpp"
#include "diffusion/metrics/fashion_mnist.hpp"
#include "sampling.hpp"

namespace fashion_mnist {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

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

diffusion::metrics::SampleReport evaluate_samples(diffusion::Unet<float>& net, const diffusion::NoiseSchedule& schedule,
                                                  const SamplerSettings& settings,
                                                  diffusion::metrics::FashionMnistMetrics& metrics, Index n,
                                                  Index batch, std::uint64_t seed, double& sampling_seconds,
                                                  bool progress) {
  auto evaluator = metrics.evaluator();
  const diffusion::Rng stream = diffusion::Rng(seed).fork(kEvalStream);
  Images x;
  sampling_seconds = 0.0;
  for (Index done = 0, b = 0; done < n; ++b) {
    const Index k = std::min<Index>(batch, n - done);
    diffusion::Rng rng = stream.fork(static_cast<std::uint64_t>(b));
    const auto t0 = std::chrono::steady_clock::now();
    generate(net, schedule, settings, k, 1, 28, 28, rng, x, nullptr);
    sampling_seconds += seconds_since(t0);
    evaluator.add(x);
    done += k;
    if (progress)
      std::fprintf(stderr, "\r  sampled %lld / %lld (%.1f s)", static_cast<long long>(done), static_cast<long long>(n),
                   sampling_seconds);
  }
  if (progress) std::fprintf(stderr, "\n");
  return evaluator.finish();
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
  if (settings.eta) std::printf(", eta %g", *settings.eta);
  std::printf("\n  reference: %s images of %s (%lld), statistics %s in %s\n", o.reference.c_str(), o.data.c_str(),
              static_cast<long long>(metrics.reference().gaussian.count),
              diffusion::metrics::cache_status_name(metrics.reference_status()), cache.c_str());
  if (!metrics.reference_reason().empty()) std::printf("  (%s)\n", metrics.reference_reason().c_str());
  std::fflush(stdout);

  double sampling_seconds = 0.0;
  const diffusion::metrics::SampleReport r =
      evaluate_samples(*m.net, schedule, settings, metrics, o.n, o.batch, o.sample.seed, sampling_seconds, true);

  std::printf("  %s\n", r.summary().c_str());
  std::printf("  classes:");
  for (std::size_t c = 0; c < r.class_histogram.size(); ++c)
    std::printf("%s %s %lld", c ? "," : "", diffusion::metrics::kFashionMnistClasses[c],
                static_cast<long long>(r.class_histogram[c]));
  const double total = seconds_since(start);
  std::printf("\n  time: sampling %.1f s, features %.1f s, metrics %.1f s, total %.1f s\n", sampling_seconds,
              r.extract_seconds, r.metric_seconds, total);
  if (!o.json.empty()) {
    nlohmann::json j = r.to_json();
    j["checkpoint"] = o.sample.checkpoint;
    j["sampler"] = settings.sampler;
    j["steps"] = settings.sampler == "ddpm" ? schedule.num_timesteps() : settings.ddim_steps;
    j["eta"] = settings.eta ? nlohmann::json(*settings.eta) : nlohmann::json();
    j["seed"] = o.sample.seed;
    j["batch"] = o.batch;
    j["reference"] = o.reference;
    j["data"] = o.data;
    j["sampling_seconds"] = sampling_seconds;
    j["total_seconds"] = total;
    const std::string text = j.dump(2) + "\n";
    diffusion::io::write_file_atomically(o.json, text.data(), text.size());
    std::printf("  json: %s\n", o.json.c_str());
  }
  return 0;
}

}  // namespace fashion_mnist
