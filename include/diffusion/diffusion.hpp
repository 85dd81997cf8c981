#pragma once
// Umbrella header: the public API of the diffusion library. Includes the other headers and nothing else.
// (io/image.hpp and io/gif.hpp are left out: they need stb and giflib; include them where you write pictures.)

#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/parameters.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"

#include "diffusion/nn/activations.hpp"
#include "diffusion/nn/attention.hpp"
#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/conv_transpose2d.hpp"
#include "diffusion/nn/convnext_block.hpp"
#include "diffusion/nn/cross_entropy.hpp"
#include "diffusion/nn/group_norm.hpp"
#include "diffusion/nn/linear.hpp"
#include "diffusion/nn/linear_attention.hpp"
#include "diffusion/nn/pooling.hpp"
#include "diffusion/nn/prenorm_residual.hpp"
#include "diffusion/nn/relu.hpp"
#include "diffusion/nn/resnet_block.hpp"
#include "diffusion/nn/tensor_ops.hpp"
#include "diffusion/nn/time_embedding.hpp"

#include "diffusion/model/fashion_classifier.hpp"
#include "diffusion/model/inception.hpp"
#include "diffusion/model/unet.hpp"
#include "diffusion/model/unet_config.hpp"
#include "diffusion/model/unet_weights.hpp"

#include "diffusion/process/forward_process.hpp"
#include "diffusion/process/losses.hpp"
#include "diffusion/process/parameterization.hpp"
#include "diffusion/process/schedule.hpp"

#include "diffusion/samplers/ddim.hpp"
#include "diffusion/samplers/ddpm.hpp"

#include "diffusion/train/adam.hpp"
#include "diffusion/train/checkpoint.hpp"
#include "diffusion/train/dataset.hpp"
#include "diffusion/train/ema.hpp"
#include "diffusion/train/grad_clip.hpp"
#include "diffusion/train/trainer.hpp"

#include "diffusion/metrics/fashion_mnist.hpp"
#include "diffusion/metrics/feature_statistics.hpp"
#include "diffusion/metrics/frechet.hpp"
#include "diffusion/metrics/inception.hpp"
#include "diffusion/metrics/kid.hpp"
#include "diffusion/metrics/precision_recall.hpp"
#include "diffusion/metrics/reference_stats.hpp"
#include "diffusion/metrics/sample_evaluator.hpp"

#include "diffusion/io/atomic_file.hpp"
#include "diffusion/io/idx.hpp"
#include "diffusion/io/safetensors.hpp"
