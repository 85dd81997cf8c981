#pragma once
// Regression losses of the denoiser (the primer's p_losses): mean over every element of
//   L2:    (pred - target)^2                                   F.mse_loss
//   L1:    |pred - target|                                     F.l1_loss
//   Huber: 0.5 d^2 if |d| < 1 else |d| - 0.5,  d = pred - target  F.smooth_l1_loss (beta = 1)
// The mean is accumulated in double, in element order (bitwise the same for any thread count).

#include <cmath>
#include <string>

#include "diffusion/core/enum_names.hpp"
#include "diffusion/core/error.hpp"
#include "diffusion/core/tensor.hpp"

namespace diffusion {

enum class LossType { L2, L1, Huber };

namespace detail {
// The primer's loss_type strings.
inline constexpr NameEntry<LossType> kLossTypeNames[] = {
    {LossType::L2, "l2"}, {LossType::L1, "l1"}, {LossType::Huber, "huber"}};
}  // namespace detail

inline const char* loss_type_name(LossType t) { return detail::enum_name(detail::kLossTypeNames, t); }
// "l2" | "l1" | "huber".
inline LossType parse_loss_type(const std::string& name) {
  return detail::parse_enum(detail::kLossTypeNames, name, "loss type");
}

namespace detail {

// Loss of one element and its derivative with respect to pred, for the difference d = pred - target.
// The derivatives at the kinks are PyTorch's: sign(0) = 0 for L1; at |d| = 1 Huber's quadratic branch gives d.
inline double loss_element(LossType type, double d, double& dd) {
  switch (type) {
    case LossType::L2:
      dd = 2.0 * d;
      return d * d;
    case LossType::L1:
      dd = d > 0.0 ? 1.0 : d < 0.0 ? -1.0 : 0.0;
      return std::fabs(d);
    case LossType::Huber: {
      const double ad = std::fabs(d);
      dd = d < -1.0 ? -1.0 : d > 1.0 ? 1.0 : d;
      return ad < 1.0 ? 0.5 * d * d : ad - 0.5;
    }
  }
  dd = 0.0;
  return 0.0;
}

template <class T>
void check_loss_args(TensorView<T> pred, TensorView<T> target, const char* what) {
  check_shape(target, pred.shape(), what);
  DIFFUSION_CHECK(pred.numel() > 0, what << ": pred is empty (shape " << pred.shape() << "), the mean is undefined");
}

}  // namespace detail

// Returns the mean loss of pred against target (same shape, non-empty).
template <class T>
double loss_forward(LossType type, TensorView<T> pred, TensorView<T> target) {
  detail::check_loss_args(pred, target, "loss_forward: target");
  const Index n = pred.numel();
  double sum = 0.0, dd = 0.0;
  for (Index i = 0; i < n; ++i)
    sum += detail::loss_element(type, static_cast<double>(pred[i]) - static_cast<double>(target[i]), dd);
  return sum / static_cast<double>(n);
}

// One part of a mean loss over a batch split into parts (gradient accumulation, train/trainer.hpp): continues `sum`
// with the loss of every element of pred against target (in double, in element order), ASSIGNS dpred (resized to
// pred's shape) = d(element loss)/d(pred) * inv_count, and returns the new sum. With inv_count = 1 / (elements of the
// whole batch), calling it on consecutive parts in order, each starting from the sum the previous one returned,
// gives bitwise the sum and the gradient of one call on the whole batch. dpred may be pred itself.
template <class T>
double loss_sum_backward(LossType type, TensorView<T> pred, TensorView<T> target, double inv_count, double sum,
                         Tensor<T>& dpred) {
  detail::check_loss_args(pred, target, "loss_sum_backward: target");
  const Index n = pred.numel();
  dpred.ensure_shape(pred.shape());
  for (Index i = 0; i < n; ++i) {
    double dd = 0.0;
    sum += detail::loss_element(type, static_cast<double>(pred[i]) - static_cast<double>(target[i]), dd);
    dpred[i] = static_cast<T>(dd * inv_count);
  }
  return sum;
}

// The same with a weight per image (process/loss_weighting.hpp): image n's elements (pred's first dimension is the
// image) add w[n] x their loss to the sum and get w[n] x d(element loss)/d(pred) x inv_count, so that with
// inv_count = 1 / (elements of the batch) the sum is the batch mean of w_n x (image n's mean loss).
// image_weights holds pred.dim(0) values; null means every weight 1, which is exactly the unweighted call above.
template <class T>
double loss_sum_backward(LossType type, TensorView<T> pred, TensorView<T> target, const double* image_weights,
                         double inv_count, double sum, Tensor<T>& dpred) {
  if (image_weights == nullptr) return loss_sum_backward(type, pred, target, inv_count, sum, dpred);
  detail::check_loss_args(pred, target, "loss_sum_backward: target");
  dpred.ensure_shape(pred.shape());
  const Index images = pred.dim(0), per_image = pred.numel() / images;
  for (Index b = 0; b < images; ++b) {
    const double w = image_weights[b], scale = w * inv_count;
    for (Index i = b * per_image; i < (b + 1) * per_image; ++i) {
      double dd = 0.0;
      sum += w * detail::loss_element(type, static_cast<double>(pred[i]) - static_cast<double>(target[i]), dd);
      dpred[i] = static_cast<T>(dd * scale);
    }
  }
  return sum;
}

// Returns the mean loss and ASSIGNS dpred (resized to pred's shape) = d(loss)/d(pred). dpred may be pred itself.
template <class T>
double loss_forward_backward(LossType type, TensorView<T> pred, TensorView<T> target, Tensor<T>& dpred) {
  detail::check_loss_args(pred, target, "loss_forward_backward: target");
  const double n = static_cast<double>(pred.numel());
  return loss_sum_backward(type, pred, target, 1.0 / n, 0.0, dpred) / n;
}

}  // namespace diffusion
