#pragma once
// Measuring a model's samples in the example programs: sample n images in batches and hand each batch to the
// metrics (diffusion/metrics); the log of the measurements taken while training (eval_log.csv). What is measured
// (which feature extractor, which reference images) stays in each program.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/sampling.hpp"
#include "diffusion/metrics/sample_evaluator.hpp"

namespace examples {

// Stream id under the seed of an evaluation's x_T and sampler noise: batch b uses fork(kEvalStream).fork(b), so the
// samples are a pure function of the seed, n and the batch size, whatever the thread count.
inline constexpr std::uint64_t kEvalStream = 0x4556414cull;  // "EVAL"

// Samples n images of channels x height x width from `net` in batches of `batch` images, image i of class classes[i]
// (classes empty: an unconditional model), and calls measure(x, first) with each batch x, whose first image is
// image `first` of the n. Returns the seconds spent sampling (measure's time excluded); writes a progress line to
// stderr when asked.
double sample_in_batches(diffusion::Unet<float>& net, const diffusion::NoiseSchedule& schedule,
                         const SamplerSettings& settings, Index n, Index batch, Index channels, Index height,
                         Index width, std::uint64_t seed, const std::vector<std::int64_t>& classes,
                         const std::function<void(const Images& x, Index first)>& measure, bool progress);

// Prints a measurement to stdout: the report's summary line, its class histogram under class_names (when it has
// one), each of extra_lines, and where the time went.
void print_report(const diffusion::metrics::SampleReport& report, const std::vector<std::string>& class_names,
                  const std::vector<std::string>& extra_lines, double sampling_seconds, double total_seconds);

// The report as JSON with the settings that made the samples (sampler, steps for a schedule of T timesteps, eta,
// seed, batch) and the times; a program adds its own fields (checkpoint, data, ...).
nlohmann::json report_json(const diffusion::metrics::SampleReport& report, const SamplerSettings& settings, int T,
                           std::uint64_t seed, Index batch, double sampling_seconds, double total_seconds);

// eval_log.csv: the metrics measured while training (train --eval-every), one line per evaluation, appended (a
// resumed run continues the file). Header: step,epoch,n,fid,kid_mean,kid_std,precision,recall,eval_s
// (scripts/plot_training.sh reads it).
class EvalLog {
 public:
  explicit EvalLog(std::string path);  // writes the header when the file is new or empty
  void add(std::int64_t step, double epoch, const diffusion::metrics::SampleReport& report, double seconds) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace examples
