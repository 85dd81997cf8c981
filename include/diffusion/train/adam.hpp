#pragma once
// Adam (Kingma & Ba 2015) and AdamW (Loshchilov & Hutter 2019) over one flat parameter buffer, written to equal
// torch.optim.Adam / AdamW of PyTorch 1.13 (single-tensor implementation) operation by operation, each operation
// rounded to T as PyTorch rounds it:
//   step += 1
//   Adam:  g = g + weight_decay * p                 (L2 penalty added to the gradient)
//   AdamW: p = p * (1 - lr * weight_decay)          (decoupled decay, before the update)
//   m = m * beta1 + (1 - beta1) * g                 exp_avg.mul_(beta1).add_(g, alpha=1-beta1)
//   v = v * beta2 + (1 - beta2) * g * g             exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1-beta2)
//   step_size = lr / (1 - beta1^step)               in double, like PyTorch's Python scalars
//   denom = sqrt(v) / sqrt(1 - beta2^step) + eps
//   p = p - step_size * m / denom                   param.addcdiv_(exp_avg, denom, value=-step_size)
// Element-wise, so the parallel split (fixed chunks) cannot change a result.

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "diffusion/core/aligned_buffer.hpp"
#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/parameters.hpp"

namespace diffusion {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool decoupled_weight_decay = false;  // true: AdamW
};

template <class T>
class Adam {
 public:
  explicit Adam(const AdamOptions& options = {}) : options_(options) { check_options(options); }

  // One optimizer step on params[0..n) with grads[0..n). The first call sizes the state (zeros); later calls must
  // pass the same n.
  void step(T* params, const T* grads, std::size_t n) {
    if (exp_avg_.size() == 0 && step_ == 0) {
      exp_avg_.resize(n);
      exp_avg_sq_.resize(n);
      for (std::size_t i = 0; i < n; ++i) exp_avg_[i] = exp_avg_sq_[i] = T(0);
    }
    DIFFUSION_CHECK(n == exp_avg_.size(), "Adam::step: " << n << " parameters, but the optimizer state holds "
                                                         << exp_avg_.size());
    ++step_;
    const AdamOptions& o = options_;
    const double bias_correction1 = 1.0 - std::pow(o.beta1, static_cast<double>(step_));
    const double bias_correction2 = 1.0 - std::pow(o.beta2, static_cast<double>(step_));
    // PyTorch passes these as Python floats; the kernels round each to T.
    const T beta1 = static_cast<T>(o.beta1), one_minus_beta1 = static_cast<T>(1.0 - o.beta1);
    const T beta2 = static_cast<T>(o.beta2), one_minus_beta2 = static_cast<T>(1.0 - o.beta2);
    const T neg_step_size = static_cast<T>(-(o.lr / bias_correction1));
    const T bias_correction2_sqrt = static_cast<T>(std::sqrt(bias_correction2));
    const T eps = static_cast<T>(o.eps);
    const bool l2 = o.weight_decay != 0.0 && !o.decoupled_weight_decay;
    const bool decoupled = o.weight_decay != 0.0 && o.decoupled_weight_decay;
    const T weight_decay = static_cast<T>(o.weight_decay);
    const T decay_factor = static_cast<T>(1.0 - o.lr * o.weight_decay);
    T* m = exp_avg_.data();
    T* v = exp_avg_sq_.data();

    constexpr std::size_t kChunk = 4096;
    const Index chunks = static_cast<Index>((n + kChunk - 1) / kChunk);
    parallel_for(0, chunks, double(10 * kChunk), [&](Index c) {
      const std::size_t begin = static_cast<std::size_t>(c) * kChunk;
      const std::size_t end = begin + kChunk < n ? begin + kChunk : n;
      for (std::size_t i = begin; i < end; ++i) {
        T p = params[i];
        T g = grads[i];
        if (l2) g = g + weight_decay * p;
        if (decoupled) p = p * decay_factor;
        m[i] = m[i] * beta1 + one_minus_beta1 * g;
        v[i] = v[i] * beta2 + one_minus_beta2 * g * g;
        const T denom = std::sqrt(v[i]) / bias_correction2_sqrt + eps;
        params[i] = p + neg_step_size * m[i] / denom;
      }
    });
  }

  // One step over every parameter of a store (the zero padding between tensors stays zero: zero gradient and
  // zero value give a zero update, with or without weight decay).
  void step(ParameterStore<T>& store) { step(store.values(), store.grads(), store.size()); }

  const AdamOptions& options() const { return options_; }
  // Learning-rate schedules change lr between steps.
  void set_lr(double lr) {
    DIFFUSION_CHECK(lr >= 0.0, "Adam::set_lr: learning rate must be >= 0, got " << lr);
    options_.lr = lr;
  }

  // State for checkpoints: the number of steps taken and the moment estimates (size() elements each).
  std::int64_t step_count() const { return step_; }
  std::size_t size() const { return exp_avg_.size(); }
  const T* exp_avg() const { return exp_avg_.data(); }
  const T* exp_avg_sq() const { return exp_avg_sq_.data(); }
  // Restores a saved state (n elements of each moment).
  void load_state(std::int64_t step, const T* exp_avg, const T* exp_avg_sq, std::size_t n) {
    DIFFUSION_CHECK(step >= 0, "Adam::load_state: step count must be >= 0, got " << step);
    step_ = step;
    exp_avg_.resize(n);
    exp_avg_sq_.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      exp_avg_[i] = exp_avg[i];
      exp_avg_sq_[i] = exp_avg_sq[i];
    }
  }
  // Forgets the state (the next step starts from step 1 with zero moments).
  void reset() {
    step_ = 0;
    exp_avg_.resize(0);
    exp_avg_sq_.resize(0);
  }

 private:
  static void check_options(const AdamOptions& o) {
    DIFFUSION_CHECK(o.lr >= 0.0, "Adam: learning rate lr must be >= 0, got " << o.lr);
    DIFFUSION_CHECK(o.beta1 >= 0.0 && o.beta1 < 1.0, "Adam: beta1 must be in [0, 1), got " << o.beta1);
    DIFFUSION_CHECK(o.beta2 >= 0.0 && o.beta2 < 1.0, "Adam: beta2 must be in [0, 1), got " << o.beta2);
    DIFFUSION_CHECK(o.eps >= 0.0, "Adam: eps must be >= 0, got " << o.eps);
    DIFFUSION_CHECK(o.weight_decay >= 0.0, "Adam: weight_decay must be >= 0, got " << o.weight_decay);
  }

  AdamOptions options_;
  std::int64_t step_ = 0;
  AlignedBuffer<T> exp_avg_;     // (n,) first moment
  AlignedBuffer<T> exp_avg_sq_;  // (n,) second moment
};

// torch.optim.AdamW: Adam with decoupled weight decay, default weight_decay 0.01 (PyTorch's default).
template <class T>
class AdamW : public Adam<T> {
 public:
  explicit AdamW(AdamOptions options = defaults()) : Adam<T>(decoupled(options)) {}
  static AdamOptions defaults() {
    AdamOptions o;
    o.weight_decay = 0.01;
    o.decoupled_weight_decay = true;
    return o;
  }

 private:
  static AdamOptions decoupled(AdamOptions o) {
    o.decoupled_weight_decay = true;
    return o;
  }
};

}  // namespace diffusion
