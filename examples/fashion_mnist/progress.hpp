#pragma once
// Progress of a training run: the display and the train log are the examples' common ones (examples/common); the
// evaluation log is Fashion-MNIST's own.

#include <cstdint>
#include <string>

#include "common/progress.hpp"
#include "diffusion/metrics/sample_evaluator.hpp"

namespace fashion_mnist {

using examples::format_duration;
using examples::ProgressDisplay;
using examples::TrainLog;

// eval_log.csv: the metrics measured during training (train --eval-every), one line per evaluation, appended (a
// resumed run continues the file).
class EvalLog {
 public:
  explicit EvalLog(std::string path);
  void add(std::int64_t step, double epoch, const diffusion::metrics::SampleReport& report, double seconds) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace fashion_mnist
