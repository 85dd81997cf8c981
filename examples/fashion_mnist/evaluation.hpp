#pragma once
// `fashion_mnist eval`: sample n images from a trained model and measure them against real Fashion-MNIST images with
// the library's metrics (diffusion/metrics/fashion_mnist.hpp): FID, KID, precision and recall in the feature space of
// the committed classifier (examples/fashion_classifier), and the histogram of the classes it predicts.

#include <set>
#include <string>

#include "options.hpp"

namespace fashion_mnist {

// Stream id under the seed of the x_T and sampler noise of `eval` (batch b uses fork(b): the samples are a pure
// function of the seed, n and the batch size, whatever the thread count).
inline constexpr std::uint64_t kEvalStream = 0x4556414cull;  // "EVAL"

// Returns the exit status; throws diffusion::Error on failure.
int run_eval(const EvalOptions& options, const std::set<std::string>& given);

}  // namespace fashion_mnist
