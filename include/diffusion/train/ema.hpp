#pragma once
// Ema<T>: an exponential moving average of the flat parameter values (the primer's Trainer keeps one with
// ema_decay = 0.995), sampled from instead of the raw weights.
//   shadow = d * shadow + (1 - d) * values,   d = decay, or with warm-up d_k = min(decay, (1 + k) / (10 + k)) for
//   the k-th update (k = 0, 1, ...; the formula of TensorFlow's ExponentialMovingAverage(num_updates)), so that the
//   average forgets the random initial weights quickly.
// The update is element-wise in double, so it is the same for any thread count.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "diffusion/core/aligned_buffer.hpp"
#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/parameters.hpp"

namespace diffusion {

struct EmaOptions {
  double decay = 0.995;
  // On by default, as in the trainer: without it the average starts at the random initial weights and needs
  // ~1/(1 - decay) updates to forget them, so samples of an early checkpoint are noise.
  bool warmup = true;
};

template <class T>
class Ema {
 public:
  explicit Ema(const EmaOptions& options = {}) : options_(options) {
    DIFFUSION_CHECK(options.decay >= 0.0 && options.decay <= 1.0,
                    "Ema: decay must be in [0, 1], got " << options.decay);
  }
  // Starts the average at values[0..n).
  Ema(const T* values, std::size_t n, const EmaOptions& options = {}) : Ema(options) { reset(values, n); }
  // Starts the average at a store's values and remembers its parameters (names and shapes), which apply_to checks.
  explicit Ema(const ParameterStore<T>& params, const EmaOptions& options = {})
      : Ema(params.values(), params.size(), options) {
    parameters_ = params.entries();
  }

  // shadow = values, update count 0.
  void reset(const T* values, std::size_t n) {
    shadow_.resize(n);
    for (std::size_t i = 0; i < n; ++i) shadow_[i] = values[i];
    step_ = 0;
    initialized_ = true;
  }

  // The decay the update number `k` (0-based) uses.
  double decay_at(std::int64_t k) const {
    if (!options_.warmup) return options_.decay;
    return std::min(options_.decay, (1.0 + static_cast<double>(k)) / (10.0 + static_cast<double>(k)));
  }

  // One update towards values[0..n); n must equal the size given to reset().
  void update(const T* values, std::size_t n) {
    DIFFUSION_CHECK(initialized_, "Ema::update: the average was never initialised (construct with values or reset)");
    DIFFUSION_CHECK(n == shadow_.size(), "Ema::update: " << n << " values, but the average holds " << shadow_.size());
    const double d = decay_at(step_);
    const double w = 1.0 - d;
    T* s = shadow_.data();
    constexpr std::size_t kChunk = 4096;
    const Index chunks = static_cast<Index>((n + kChunk - 1) / kChunk);
    parallel_for(0, chunks, double(2 * kChunk), [&](Index c) {
      const std::size_t begin = static_cast<std::size_t>(c) * kChunk;
      const std::size_t end = std::min(begin + kChunk, n);
      for (std::size_t i = begin; i < end; ++i)
        s[i] = static_cast<T>(d * static_cast<double>(s[i]) + w * static_cast<double>(values[i]));
    });
    ++step_;
  }

  // Writes the average to out[0..size()).
  void copy_to(T* out) const {
    for (std::size_t i = 0; i < shadow_.size(); ++i) out[i] = shadow_[i];
  }

  // Writes the average into a network's parameters: `model` is a Unet (anything with params()) or a ParameterStore
  // with the parameters the average was taken over. Checked by size and, when the average was started from a store,
  // by every parameter's name and shape; the error names the first difference.
  template <class Model>
  void apply_to(Model& model) const {
    if constexpr (std::is_same_v<Model, ParameterStore<T>>) {
      apply_to_store(model);
    } else {
      apply_to_store(model.params());
    }
  }

  const EmaOptions& options() const { return options_; }
  // State for checkpoints.
  const T* shadow() const { return shadow_.data(); }
  std::size_t size() const { return shadow_.size(); }
  std::int64_t step_count() const { return step_; }
  void load_state(std::int64_t step, const T* shadow, std::size_t n) {
    DIFFUSION_CHECK(step >= 0, "Ema::load_state: update count must be >= 0, got " << step);
    reset(shadow, n);
    step_ = step;
  }

 private:
  void apply_to_store(ParameterStore<T>& params) const {
    DIFFUSION_CHECK(initialized_, "Ema::apply_to: the average was never initialised (construct with values or reset)");
    if (!parameters_.empty()) check_same_parameters(parameters_, params.entries(), "Ema::apply_to");
    DIFFUSION_CHECK(params.size() == shadow_.size(), "Ema::apply_to: the average holds " << shadow_.size()
                                                         << " values, the network's parameters take " << params.size());
    copy_to(params.values());
  }

  EmaOptions options_;
  std::vector<typename ParameterStore<T>::Entry> parameters_;  // of the store it started from; empty: unknown
  AlignedBuffer<T> shadow_;  // (n,) the averaged values
  std::int64_t step_ = 0;    // updates done
  bool initialized_ = false;
};

}  // namespace diffusion
