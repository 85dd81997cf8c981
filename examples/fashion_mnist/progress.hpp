#pragma once
// Progress of a training run: the display, the train log and the evaluation log are the examples' common ones
// (examples/common).

#include "common/evaluation.hpp"
#include "common/progress.hpp"

namespace fashion_mnist {

using examples::EvalLog;
using examples::format_duration;
using examples::ProgressDisplay;
using examples::TrainLog;

}  // namespace fashion_mnist
