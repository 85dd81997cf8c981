#pragma once
// LrSchedule: the learning rate of each optimisation step as a multiple of the base rate (AdamOptions::lr), a pure
// function of the step number, so that a run resumed at step s continues exactly. Step s counts from 0 (the first
// step). Linear warm-up over the first warmup_steps steps, then the base rate, or a decay from it that reaches
// min_ratio x the base rate at step total_steps and stays there:
//   warm-up (s < W):   factor(s) = (s + 1) / W
//   after it:          p = clamp((s - W) / (total_steps - W), 0, 1)
//     none             factor(s) = 1
//     cosine           factor(s) = min_ratio + (1 - min_ratio) (1 + cos(pi p)) / 2   (Loshchilov & Hutter 2017, one
//                                                                                     half period, no restarts)
//     linear           factor(s) = min_ratio + (1 - min_ratio) (1 - p)
// This is diffusers' get_cosine_schedule_with_warmup / get_linear_schedule_with_warmup with a floor, except that the
// warm-up starts at 1 / W of the rate instead of 0: their first step, at rate 0, moves no weight (it only feeds
// Adam's moments). The default (no warm-up, no decay) is factor 1 exactly, so training is bit for bit what it is
// without a schedule.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

#include "diffusion/core/enum_names.hpp"
#include "diffusion/core/error.hpp"

namespace diffusion {

enum class LrDecay { None, Cosine, Linear };

namespace detail {
inline constexpr NameEntry<LrDecay> kLrDecayNames[] = {
    {LrDecay::None, "none"}, {LrDecay::Cosine, "cosine"}, {LrDecay::Linear, "linear"}};
}  // namespace detail

inline const char* lr_decay_name(LrDecay d) { return detail::enum_name(detail::kLrDecayNames, d); }

inline LrDecay parse_lr_decay(const std::string& name) {
  return detail::parse_enum(detail::kLrDecayNames, name, "learning-rate decay");
}

struct LrSchedule {
  std::int64_t warmup_steps = 0;  // W: steps of linear warm-up (0: none)
  LrDecay decay = LrDecay::None;
  std::int64_t total_steps = 0;   // the step at which the decay reaches min_ratio (needed by cosine and linear)
  double min_ratio = 0.0;         // the rate at the end of the decay, as a multiple of the base rate

  bool is_constant() const { return warmup_steps == 0 && decay == LrDecay::None; }

  // Throws an Error naming the field when the schedule cannot be followed.
  void validate() const {
    DIFFUSION_CHECK(warmup_steps >= 0, "LrSchedule: warmup_steps must be >= 0, got " << warmup_steps);
    DIFFUSION_CHECK(min_ratio >= 0.0 && min_ratio <= 1.0,
                    "LrSchedule: min_ratio must be in [0, 1], got " << min_ratio);
    if (decay != LrDecay::None)
      DIFFUSION_CHECK(total_steps > warmup_steps,
                      "LrSchedule: a " << lr_decay_name(decay) << " decay needs total_steps > warmup_steps (steps to "
                                       << "decay over), got total_steps " << total_steps << " and warmup_steps "
                                       << warmup_steps);
  }

  // In words, for a base rate lr: e.g. "0.001 after a warm-up of 200 steps, cosine decay to 1e-05 at step 2345".
  std::string describe(double lr) const {
    std::ostringstream text;
    text << lr;
    if (warmup_steps > 0) text << " after a warm-up of " << warmup_steps << (warmup_steps == 1 ? " step" : " steps");
    if (decay == LrDecay::None) text << (warmup_steps > 0 ? ", then constant" : ", constant");
    else text << ", " << lr_decay_name(decay) << " decay to " << lr * min_ratio << " at step " << total_steps;
    return text.str();
  }

  // The multiple of the base rate that step `step` (from 0) trains with.
  double factor(std::int64_t step) const {
    if (step < warmup_steps) return static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
    if (decay == LrDecay::None) return 1.0;
    const double span = static_cast<double>(total_steps - warmup_steps);
    const double p = std::min(1.0, std::max(0.0, static_cast<double>(step - warmup_steps) / span));
    const double shape = decay == LrDecay::Cosine ? 0.5 * (1.0 + std::cos(3.14159265358979323846 * p)) : 1.0 - p;
    return min_ratio + (1.0 - min_ratio) * shape;
  }
};

}  // namespace diffusion
