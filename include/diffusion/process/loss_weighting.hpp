#pragma once
// Per-timestep loss weights: Min-SNR-gamma weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR
// Weighting Strategy", arXiv:2303.09556). With SNR(t) = abar_t / (1 - abar_t), every image's loss is multiplied by
//   eps prediction:  min(SNR, gamma) / SNR          (1 where SNR <= gamma: only the nearly clean images lose weight)
//   x0 prediction:   min(SNR, gamma)
//   v prediction:    min(SNR, gamma) / (SNR + 1)
// the weights of the three targets that make them the same objective, an x0-space loss whose weight is clamped at
// gamma (the paper's eq. 8-10; diffusers' train_text_to_image.py --snr_gamma computes them this way). The paper's
// reason: the timesteps' gradients conflict, and the low-noise ones, easy and numerous in x0 terms, dominate; capping
// their weight converged 3.4x faster on ImageNet 256 with gamma = 5, its recommended value.
// The weighted loss is the batch mean of w_n x (image n's mean loss), diffusers' form; with gamma = 0 (off) every
// weight is 1 and the loss is the primer's L_simple.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/process/parameterization.hpp"
#include "diffusion/process/schedule.hpp"

namespace diffusion {

// The Min-SNR-gamma weight of a timestep whose cumulative alpha is abar (in (0, 1)), for prediction p; gamma > 0.
inline double min_snr_weight(Prediction p, double abar, double gamma) {
  const double snr = abar / (1.0 - abar);
  const double clamped = std::min(snr, gamma);
  switch (p) {
    case Prediction::Epsilon:
      return snr <= gamma ? 1.0 : gamma / snr;  // not min/snr: exact 1 below gamma, and no 0/0 at snr = 0
    case Prediction::X0:
      return clamped;
    case Prediction::V:
      return clamped / (snr + 1.0);
  }
  return 1.0;
}

// weights (resized to t.size()) = the loss weight of each image's timestep: min_snr_weight(p, abar_t, gamma), or 1
// for every image when gamma == 0 (no weighting). gamma must be >= 0 and finite; t in [0, T).
inline void loss_weights(double gamma, Prediction p, const NoiseSchedule& schedule, const std::vector<std::int64_t>& t,
                         std::vector<double>& weights) {
  DIFFUSION_CHECK(std::isfinite(gamma) && gamma >= 0.0,
                  "loss_weights: the min-SNR gamma must be finite and >= 0 (0: no weighting), got " << gamma);
  weights.resize(t.size());
  for (std::size_t n = 0; n < t.size(); ++n) {
    DIFFUSION_CHECK(t[n] >= 0 && t[n] < schedule.T,
                    "loss_weights: timestep " << t[n] << " of image " << n << " is outside [0, " << schedule.T << ")");
    weights[n] = gamma == 0.0 ? 1.0 : min_snr_weight(p, schedule.alphas_cumprod[static_cast<std::size_t>(t[n])], gamma);
  }
}

}  // namespace diffusion
