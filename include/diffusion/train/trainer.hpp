#pragma once
// Trainer<T>: Algorithm 1 of Ho et al. (2020) with the L_simple objective, one optimisation step at a time:
//   t ~ Uniform{0..T-1}, eps ~ N(0, I)                       drawn from Rng(seed).fork(step): a pure function of
//   x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps              (seed, step), so a resumed run draws the same numbers
//   loss = mean(loss_fn(model(x_t, t), target))              target = eps (default), x0 or v
//   backward; [clip the global gradient norm]; Adam/AdamW step; [EMA update]
// Gradient accumulation (options.accumulate = k): the batch goes through the model in k consecutive micro-batches
// (forward, backward, forward, backward, ...; activations for one micro-batch at a time), the draws, the loss sum
// and the gradients carried over from one to the next, then one optimiser step. The result is bitwise the step on
// the whole batch at once: the draws are made for the whole batch first, the loss is one sum in element order
// (loss_sum_backward), and every parameter gradient of the library is a fold over the batch in image order, each
// image's contribution independent of the batch it is in (kernels/conv2d.hpp, kernels/linear.hpp), so backward on
// consecutive micro-batches, accumulating into the same gradient buffer, adds the same numbers in the same order.
// A non-finite loss or gradient stops training with an Error naming the step, before the weights change.
// Class-conditional networks (config.num_classes > 0) train with step(x0, labels), classifier-free guidance's joint
// training (Ho & Salimans 2022, Algorithm 1): each label is replaced by kNullClass (the learned null embedding) with
// probability options.cond_drop_prob, decided per image from Rng(seed).fork(kStepStream).fork(step)
// .fork(kCondDropStream), a child of the step's stream that leaves the t and noise draws as they are. The decisions
// are made for the whole batch before the micro-batches, like t and noise: a pure function of (seed, step, N).
// The model, its optimiser moments and the EMA are the whole state besides the step count (see checkpoint.hpp).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/model/unet.hpp"
#include "diffusion/nn/class_embedding.hpp"
#include "diffusion/process/forward_process.hpp"
#include "diffusion/process/losses.hpp"
#include "diffusion/process/parameterization.hpp"
#include "diffusion/process/schedule.hpp"
#include "diffusion/train/adam.hpp"
#include "diffusion/train/dataset.hpp"
#include "diffusion/train/ema.hpp"
#include "diffusion/train/grad_clip.hpp"

namespace diffusion {

struct TrainerOptions {
  LossType loss = LossType::L2;                 // L_simple; L1 and Huber as the primer's p_losses offers
  Prediction prediction = Prediction::Epsilon;  // what the network predicts
  AdamOptions adam;                             // lr 1e-3 as the primer; decoupled_weight_decay for AdamW
  double grad_clip = 0.0;                       // max global gradient norm; 0 disables clipping
  bool use_ema = true;
  EmaOptions ema;  // the primer's decay 0.995, with warm-up
  std::uint64_t seed = 0;
  // Micro-batches per optimiser step (the primer's gradient_accumulate_every): step(x0) splits x0's N images into
  // `accumulate` consecutive parts, images [j N / k, (j + 1) N / k) for j < k, and needs N >= accumulate.
  Index accumulate = 1;
  // Conditional networks only: the probability that an image's class id is replaced by kNullClass in a step
  // (classifier-free guidance's p_uncond), so that one network learns eps(x, c) and eps(x, null). 0.1: Ho & Salimans
  // (2022, "Classifier-Free Diffusion Guidance", arXiv:2207.12598, sec. 4.2 and Table 1) trained with p_uncond in
  // {0.1, 0.2, 0.5} and found 0.1 and 0.2 about equally good and 0.5 worse across the FID/IS trade-off: the
  // unconditional model needs only a small share of the training. Of the two, 0.1 leaves more steps to the
  // conditional model, which guided sampling leans on most. lucidrains' classifier_free_guidance.py defaults to
  // cond_drop_prob = 0.5, the value that finding argues against.
  double cond_drop_prob = 0.1;
};

// Raised when the loss or a gradient is NaN or infinite; training state is left as it was before the step.
class TrainingDiverged : public Error {
 public:
  TrainingDiverged(std::int64_t step, const std::string& what)
      : Error("training diverged at step " + std::to_string(step) + ": " + what), step_(step) {}
  std::int64_t step() const { return step_; }

 private:
  std::int64_t step_;
};

struct StepResult {
  double loss = 0.0;
  double grad_norm = 0.0;  // before clipping
};

template <class T>
class Trainer {
 public:
  // Stream ids under the seed: one for the per-step diffusion draws (data order uses others, see dataset.hpp).
  static constexpr std::uint64_t kStepStream = 0x5354455053ull;  // "STEPS"
  // Under a step's stream: the condition-dropout decisions of a conditional step.
  static constexpr std::uint64_t kCondDropStream = 0x434F4E44ull;  // "COND"

  // The class ids a conditional step of `step` trains on: out (N) = labels with each id replaced by kNullClass where
  // u_n < p, u_n (n = 0..N-1, in image order) the uniform (0, 1) draws of
  // Rng(seed).fork(kStepStream).fork(step).fork(kCondDropStream). Hence no drop at p = 0 and all dropped at p = 1.
  // A pure function of (seed, step, p, labels): independent of the thread count, the micro-batches and the past.
  static void drop_classes(std::uint64_t seed, std::int64_t step, double p, const std::vector<std::int64_t>& labels,
                           std::vector<std::int64_t>& out) {
    Rng rng = Rng(seed).fork(kStepStream).fork(static_cast<std::uint64_t>(step)).fork(kCondDropStream);
    out.resize(labels.size());
    for (std::size_t n = 0; n < labels.size(); ++n) out[n] = rng.uniform() < p ? kNullClass : labels[n];
  }

  // Trains `model` in place: the trainer keeps a reference, so the model must outlive it (a temporary does not
  // compile).
  Trainer(Unet<T>& model, NoiseSchedule schedule, const TrainerOptions& options)
      : model_(model), schedule_(std::move(schedule)), options_(options), optimizer_(options.adam) {
    DIFFUSION_CHECK(options.grad_clip >= 0.0, "Trainer: grad_clip must be >= 0 (0 disables), got " << options.grad_clip);
    DIFFUSION_CHECK(options.accumulate >= 1,
                    "Trainer: accumulate (micro-batches per step) must be >= 1, got " << options.accumulate);
    DIFFUSION_CHECK(options.cond_drop_prob >= 0.0 && options.cond_drop_prob <= 1.0,
                    "Trainer: cond_drop_prob must be in [0, 1], got " << options.cond_drop_prob);
    // Every target (eps, x0, v) has the images' shape, so the network must output as many channels as it reads.
    DIFFUSION_CHECK(model.config().resolved_out_dim() == model.config().channels,
                    "Trainer: the model outputs out_dim = " << model.config().resolved_out_dim()
                                                            << " channels but reads channels = " << model.config().channels
                                                            << "; the training target needs them equal");
    if (options_.use_ema) ema_ = std::make_unique<Ema<T>>(model.params(), options.ema);
  }
  Trainer(Unet<T>&& model, NoiseSchedule schedule, const TrainerOptions& options) = delete;  // would dangle

  // One optimisation step on x0 (N, channels, H, W) with pixel values in [-1, 1]: draws t (N,) and the noise
  // (x0's shape) from the step's stream, Rng(seed).fork(kStepStream).fork(step_count()) (sample_timesteps, then
  // normal over the noise in element order), and runs the step below with them.
  // Unconditional networks only.
  StepResult step(const Tensor<T>& x0) {
    check_batch(x0);
    DIFFUSION_CHECK(!model_.is_conditional(),
                    "Trainer::step: the model is class-conditional (num_classes " << model_.config().num_classes
                        << "): train it with step(x0, labels), a class id per image");
    draw(x0);
    return step_with(x0, t_, noise_, nullptr);
  }

  // One optimisation step of a class-conditional network on x0 (N, channels, H, W) and labels (N), each in
  // [0, num_classes): t and the noise drawn as step(x0) draws them (the same numbers), and the class ids dropped to
  // kNullClass with probability options.cond_drop_prob (drop_classes(seed, step_count(), ...)).
  StepResult step(const Tensor<T>& x0, const std::vector<std::int64_t>& labels) {
    check_batch(x0);
    check_labels(x0, labels, "labels");
    for (std::size_t n = 0; n < labels.size(); ++n)
      DIFFUSION_CHECK(labels[n] >= 0 && labels[n] < model_.config().num_classes,
                      "Trainer::step: label " << labels[n] << " of image " << n << " is outside [0, "
                                              << model_.config().num_classes
                                              << ") (kNullClass ids are what condition dropout makes)");
    draw(x0);
    drop_classes(options_.seed, step_, options_.cond_drop_prob, labels, classes_);
    return step_with(x0, t_, noise_, &classes_);
  }

  // One optimisation step on the batch `batches` gives for this trainer's step count, with the batch's labels when
  // the model is class-conditional (the sampler must then have labels; an unconditional model ignores any). The data
  // order is then a function of the step, as the draws are: a run resumed at step s continues both exactly, and the
  // sampler and the trainer cannot get out of step.
  StepResult step(BatchSampler<T>& batches) {
    if (!model_.is_conditional()) {
      batches.batch(step_, batch_);
      return step(batch_);
    }
    DIFFUSION_CHECK(batches.has_labels(), "Trainer::step: the model is class-conditional (num_classes "
                                              << model_.config().num_classes
                                              << ") but the BatchSampler has no labels; give it the images' labels");
    batches.batch(step_, batch_, batch_labels_);
    return step(batch_, batch_labels_);
  }

  // One optimisation step with the caller's timesteps t (N,) in [0, T) and noise (x0's shape) instead of the
  // step's own draws: for timesteps chosen by the caller (e.g. importance sampling of t) and for checking a step
  // against a reference given the same draws. Everything else is step(x0) exactly; the step count advances.
  // Unconditional networks only.
  StepResult step(const Tensor<T>& x0, const std::vector<std::int64_t>& t, const Tensor<T>& noise) {
    check_batch(x0);
    DIFFUSION_CHECK(!model_.is_conditional(),
                    "Trainer::step: the model is class-conditional (num_classes " << model_.config().num_classes
                        << "): give the class ids too, step(x0, t, noise, classes)");
    check_shape(noise, x0.shape(), "Trainer::step: noise");
    return step_with(x0, t, noise, nullptr);
  }

  // The same for a class-conditional network, with the caller's class ids (N) used as given: ids in
  // [0, num_classes) or kNullClass, no dropout applied (the caller's draws, as t and noise are).
  StepResult step(const Tensor<T>& x0, const std::vector<std::int64_t>& t, const Tensor<T>& noise,
                  const std::vector<std::int64_t>& classes) {
    check_batch(x0);
    check_labels(x0, classes, "classes");
    for (std::size_t n = 0; n < classes.size(); ++n)
      DIFFUSION_CHECK(classes[n] == kNullClass || (classes[n] >= 0 && classes[n] < model_.config().num_classes),
                      "Trainer::step: class id " << classes[n] << " of image " << n << " is neither in [0, "
                                                 << model_.config().num_classes << ") nor kNullClass (" << kNullClass
                                                 << ")");
    check_shape(noise, x0.shape(), "Trainer::step: noise");
    return step_with(x0, t, noise, &classes);
  }

  std::int64_t step_count() const { return step_; }
  const NoiseSchedule& schedule() const { return schedule_; }
  const TrainerOptions& options() const { return options_; }
  Unet<T>& model() { return model_; }
  const Unet<T>& model() const { return model_; }
  Adam<T>& optimizer() { return optimizer_; }
  const Adam<T>& optimizer() const { return optimizer_; }
  Ema<T>* ema() { return ema_.get(); }
  const Ema<T>* ema() const { return ema_.get(); }
  double last_loss() const { return last_loss_; }

  // The weights to sample with: the EMA when enabled, the raw weights otherwise. Same layout as params().values().
  const T* sampling_weights() const { return ema_ ? ema_->shadow() : model_.params().values(); }

  // The network to sample with: with EMA on, a copy of the model holding the current EMA weights (built on the first
  // call, its weights refreshed from the average on every call); without, the model itself. A callable the samplers
  // take: sample(trainer.sampling_model(), trainer.schedule(), x, rng).
  Unet<T>& sampling_model() {
    if (!ema_) return model_;
    if (!ema_model_) ema_model_ = std::make_unique<Unet<T>>(model_);
    ema_->apply_to(*ema_model_);
    return *ema_model_;
  }

  // Restores the step counter (checkpoint.hpp restores the rest).
  void set_step_count(std::int64_t step) {
    DIFFUSION_CHECK(step >= 0, "Trainer: step count must be >= 0, got " << step);
    step_ = step;
  }

 private:
  void check_batch(const Tensor<T>& x0) const {
    DIFFUSION_CHECK(x0.rank() == 4 && x0.dim(0) > 0,
                    "Trainer::step: expected a non-empty batch (N, C, H, W), got " << x0.shape());
    DIFFUSION_CHECK(x0.dim(0) >= options_.accumulate,
                    "Trainer::step: a batch of " << x0.dim(0) << " images cannot be split into accumulate = "
                                                 << options_.accumulate << " micro-batches");
  }

  // A conditional model and one class id per image (the ids themselves are checked by the U-Net).
  void check_labels(const Tensor<T>& x0, const std::vector<std::int64_t>& labels, const char* what) const {
    DIFFUSION_CHECK(model_.is_conditional(),
                    "Trainer::step: " << what << " given, but the model is unconditional (num_classes 0); train it with "
                                      << "step(x0), or build a U-Net with num_classes > 0");
    DIFFUSION_CHECK(static_cast<Index>(labels.size()) == x0.dim(0),
                    "Trainer::step: " << labels.size() << " " << what << " for a batch of " << x0.dim(0) << " images");
  }

  // t_ (N) and noise_ (x0's shape) from the step's stream Rng(seed).fork(kStepStream).fork(step_count()):
  // sample_timesteps, then normal over the noise in element order.
  void draw(const Tensor<T>& x0) {
    Rng rng = Rng(options_.seed).fork(kStepStream).fork(static_cast<std::uint64_t>(step_));
    sample_timesteps(rng, schedule_, x0.dim(0), t_);
    noise_.resize(x0.shape());
    rng.normal(noise_.data(), noise_.numel());
  }

  // The step proper: q_sample and the target for the whole batch, then forward, loss and backward per micro-batch
  // (images [j N / k, (j + 1) N / k), views into x_t_ and target_; the micro-batch's class ids when `classes` (N) is
  // given, for a conditional model), [clip], Adam, [EMA]. t and noise may be t_ and noise_.
  StepResult step_with(const Tensor<T>& x0, const std::vector<std::int64_t>& t, const Tensor<T>& noise,
                       const std::vector<std::int64_t>* classes) {
    q_sample(schedule_, x0, t, noise, x_t_);  // checks t against the batch and the schedule
    training_target(options_.prediction, schedule_, x0, t, noise, target_);

    ParameterStore<T>& params = model_.params();
    params.zero_grad();
    const Index N = x0.dim(0), k = options_.accumulate, per_image = x0.numel() / N;
    const double count = static_cast<double>(x0.numel());
    double sum = 0.0;  // the loss sum over the whole batch, in element order
    for (Index j = 0; j < k; ++j) {
      const Index n0 = j * N / k, n1 = (j + 1) * N / k;
      const Shape micro{n1 - n0, x0.dim(1), x0.dim(2), x0.dim(3)};
      const TensorView<T> x(x_t_.data() + n0 * per_image, micro), target(target_.data() + n0 * per_image, micro);
      micro_t_.assign(t.begin() + n0, t.begin() + n1);
      if (classes) {
        micro_classes_.assign(classes->begin() + n0, classes->begin() + n1);
        model_.forward(x, micro_t_, micro_classes_, out_);
      } else {
        model_.forward(x, micro_t_, out_);
      }
      sum = loss_sum_backward(options_.loss, TensorView<T>(out_), target, 1.0 / count, sum, dout_);
      if (!std::isfinite(sum)) throw TrainingDiverged(step_, "the loss is " + std::to_string(sum / count));
      model_.backward(dout_);
    }
    StepResult r;
    r.loss = sum / count;
    r.grad_norm = options_.grad_clip > 0.0 ? clip_grad_norm(params, options_.grad_clip)
                                           : grad_norm(params.grads(), params.size());
    if (!std::isfinite(r.grad_norm))
      throw TrainingDiverged(step_, "the gradient norm is " + std::to_string(r.grad_norm));
    optimizer_.step(params);
    if (ema_) ema_->update(params.values(), params.size());
    ++step_;
    last_loss_ = r.loss;
    return r;
  }

  Unet<T>& model_;
  NoiseSchedule schedule_;
  TrainerOptions options_;
  Adam<T> optimizer_;
  std::unique_ptr<Ema<T>> ema_;
  std::unique_ptr<Unet<T>> ema_model_;  // sampling_model()'s network with EMA on
  std::int64_t step_ = 0;
  double last_loss_ = 0.0;
  // Per-step buffers, reused: (N, C, H, W) each, t_ (N), classes_ (N) (a conditional step's ids after dropout);
  // out_ and dout_ of one micro-batch; micro_t_ and micro_classes_ its timesteps and class ids.
  std::vector<std::int64_t> t_, micro_t_, classes_, micro_classes_;
  Tensor<T> noise_, x_t_, target_, out_, dout_;
  Tensor<T> batch_;                           // step(batches)'s images (B, C, H, W)
  std::vector<std::int64_t> batch_labels_;    // and their labels (B), for a conditional model
};

}  // namespace diffusion
