#include "common/evaluation.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/progress.hpp"
#include "diffusion/core/error.hpp"

namespace examples {

double sample_in_batches(diffusion::Unet<float>& net, const diffusion::NoiseSchedule& schedule,
                         const SamplerSettings& settings, Index n, Index batch, Index channels, Index height,
                         Index width, std::uint64_t seed, const std::vector<std::int64_t>& classes,
                         const std::function<void(const Images& x, Index first)>& measure, bool progress) {
  DIFFUSION_CHECK(n > 0 && batch > 0, "sample_in_batches: n = " << n << " and batch = " << batch << " must be positive");
  DIFFUSION_CHECK(classes.empty() || static_cast<Index>(classes.size()) == n,
                  "sample_in_batches: " << classes.size() << " class ids for " << n << " samples");
  const diffusion::Rng stream = diffusion::Rng(seed).fork(kEvalStream);
  SamplerSettings s = settings;
  Images x;
  double sampling_seconds = 0.0;
  for (Index done = 0, b = 0; done < n; ++b) {
    const Index k = std::min<Index>(batch, n - done);
    diffusion::Rng rng = stream.fork(static_cast<std::uint64_t>(b));
    if (!classes.empty()) s.classes.assign(classes.begin() + done, classes.begin() + done + k);
    const auto t0 = std::chrono::steady_clock::now();
    generate(net, schedule, s, k, channels, height, width, rng, x, nullptr);
    sampling_seconds += seconds_since(t0);
    measure(x, done);
    done += k;
    if (progress)
      std::fprintf(stderr, "\r  sampled %lld / %lld (%.1f s)", static_cast<long long>(done), static_cast<long long>(n),
                   sampling_seconds);
  }
  if (progress) std::fprintf(stderr, "\n");
  return sampling_seconds;
}

void print_report(const diffusion::metrics::SampleReport& r, const std::vector<std::string>& class_names,
                  const std::vector<std::string>& extra_lines, double sampling_seconds, double total_seconds) {
  std::printf("  %s\n", r.summary().c_str());
  if (!r.class_histogram.empty()) {
    std::printf("  classes:");
    for (std::size_t c = 0; c < r.class_histogram.size(); ++c)
      std::printf("%s %s %lld", c ? "," : "", class_names.at(c).c_str(), static_cast<long long>(r.class_histogram[c]));
    std::printf("\n");
  }
  for (const std::string& line : extra_lines) std::printf("  %s\n", line.c_str());
  std::printf("  time: sampling %.1f s, features %.1f s, metrics %.1f s, total %.1f s\n", sampling_seconds,
              r.extract_seconds, r.metric_seconds, total_seconds);
}

nlohmann::json report_json(const diffusion::metrics::SampleReport& r, const SamplerSettings& settings, int T,
                           std::uint64_t seed, Index batch, double sampling_seconds, double total_seconds) {
  nlohmann::json j = r.to_json();
  j["sampler"] = settings.sampler;
  j["steps"] = settings.steps(T);
  j["spacing"] = diffusion::spacing_name(settings.spacing);
  j["matmul_precision"] = diffusion::kernels::matmul_precision_name(diffusion::kernels::effective_matmul_precision(settings.precision));
  j["eta"] = settings.eta ? nlohmann::json(*settings.eta) : nlohmann::json();
  j["seed"] = seed;
  j["batch"] = batch;
  j["sampling_seconds"] = sampling_seconds;
  j["total_seconds"] = total_seconds;
  return j;
}

EvalLog::EvalLog(std::string path) : path_(std::move(path)) {
  std::error_code ec;
  const bool fresh = !std::filesystem::exists(path_, ec) || std::filesystem::file_size(path_, ec) == 0;
  if (!fresh) return;
  std::FILE* f = std::fopen(path_.c_str(), "a");
  DIFFUSION_CHECK(f != nullptr, "cannot write the evaluation log '" << path_ << "': " << std::strerror(errno));
  std::fprintf(f, "step,epoch,n,fid,kid_mean,kid_std,precision,recall,eval_s\n");
  DIFFUSION_CHECK(std::fclose(f) == 0, "cannot write the evaluation log '" << path_ << "': " << std::strerror(errno));
}

void EvalLog::add(std::int64_t step, double epoch, const diffusion::metrics::SampleReport& r, double seconds) const {
  std::FILE* f = std::fopen(path_.c_str(), "a");
  DIFFUSION_CHECK(f != nullptr, "cannot write the evaluation log '" << path_ << "': " << std::strerror(errno));
  std::fprintf(f, "%lld,%.3f,%lld,%.6f,%.6f,%.6f,%.6f,%.6f,%.1f\n", static_cast<long long>(step), epoch,
               static_cast<long long>(r.count), r.fid.distance, r.kid.mean, r.kid.std, r.pr.precision, r.pr.recall,
               seconds);
  DIFFUSION_CHECK(std::fclose(f) == 0, "cannot write the evaluation log '" << path_ << "': " << std::strerror(errno));
}

}  // namespace examples
