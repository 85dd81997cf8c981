#pragma once
// `fashion_mnist train`: the primer's training recipe on Fashion-MNIST, with previews, checkpoints that resume a
// run exactly, a progress display and a CSV log, and at the end the EMA weights, a grid of samples and a GIF.

#include <set>
#include <string>

#include "options.hpp"
#include "sampling.hpp"

namespace fashion_mnist {

// The training images of `data_dir` as (N, 1, H, W) in [-1, 1]. Errors say what is missing or damaged and how to
// get the data (diffusion::Error).
Images load_training_images(const std::string& data_dir);

// Creates `out` if needed and proves it writable by writing (atomically) and removing a probe file; throws
// diffusion::Error naming the folder otherwise.
void check_output_folder(const std::string& out);

// Runs `train`: returns the exit status; throws diffusion::Error on failure (nothing half-written is left: every
// output is written atomically).
int run_train(const TrainOptions& flags, const std::set<std::string>& given);

}  // namespace fashion_mnist
