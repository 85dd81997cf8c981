#pragma once
// Trainer<T>: Algorithm 1 of Ho et al. (2020) with the L_simple objective, one optimisation step at a time:
//   t ~ Uniform{0..T-1}, eps ~ N(0, I)                       drawn from Rng(seed).fork(step): a pure function of
//   x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps              (seed, step), so a resumed run draws the same numbers
//   loss = mean(loss_fn(model(x_t, t), target))              target = eps (default), x0 or v; with min_snr_gamma,
//                                                             each image's term weighted (process/loss_weighting.hpp)
//   backward; [clip the global gradient norm]; Adam/AdamW step at the step's learning rate; [EMA update]
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
// Data parallelism (options.gradient_shards = S, use_communicator): the batch's N images are cut into S contiguous
// shards, images [s N / S, (s + 1) N / S); each shard's gradient is summed from zero (its micro-batches in turn, as
// above) and the S shard gradients are added in shard order (distributed/gradient_sum.hpp), as are the shards' loss
// sums. On R ranks (R divides S) rank r computes only shards [r S / R, (r + 1) S / R), reads only their images,
// and every rank ends the step with the same summed gradient, so takes the same Adam step: R ranks give exactly the
// weights of one process with the same S, for any R and any thread counts. S = 1 is the plain step above.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/hash.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/distributed/communicator.hpp"
#include "diffusion/distributed/gradient_sum.hpp"
#include "diffusion/kernels/precision.hpp"
#include "diffusion/model/unet.hpp"
#include "diffusion/nn/class_embedding.hpp"
#include "diffusion/process/forward_process.hpp"
#include "diffusion/process/loss_weighting.hpp"
#include "diffusion/process/losses.hpp"
#include "diffusion/process/parameterization.hpp"
#include "diffusion/process/schedule.hpp"
#include "diffusion/train/adam.hpp"
#include "diffusion/train/dataset.hpp"
#include "diffusion/train/ema.hpp"
#include "diffusion/train/grad_clip.hpp"
#include "diffusion/train/lr_schedule.hpp"

namespace diffusion {

struct TrainerOptions {
  LossType loss = LossType::L2;                 // L_simple; L1 and Huber as the primer's p_losses offers
  Prediction prediction = Prediction::Epsilon;  // what the network predicts
  // Min-SNR-gamma loss weighting (process/loss_weighting.hpp): each image's loss times a weight of its timestep's
  // SNR, capped at gamma (Hang et al. 2023 recommend 5). 0: off, every weight 1 (the primer's L_simple).
  double min_snr_gamma = 0.0;
  AdamOptions adam;                             // lr 1e-3 as the primer; decoupled_weight_decay for AdamW
  // The learning rate of step s is adam.lr x lr_schedule.factor(s) (train/lr_schedule.hpp: warm-up, cosine or
  // linear decay). The default is the constant adam.lr; a schedule that is not constant sets the optimiser's rate
  // before every step, over any set_lr of the caller's.
  LrSchedule lr_schedule;
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
  // Gradient shards per step (see the top of this file): the batch is cut into this many parts whose gradients are
  // summed in a fixed order, so that a run on any number of ranks dividing it gives the same weights. 1: no cut.
  // Needs N >= gradient_shards x accumulate images per batch.
  Index gradient_shards = 1;
  // With more than one rank: every this many steps the ranks compare a hash of their weights, Adam moments and EMA
  // and stop with an Error naming the ranks that differ (0: never).
  std::int64_t replica_check_every = 100;
  // Mixed precision (the primer's amp = True): the forward and backward GEMMs of every step with bf16 operands and
  // fp32 accumulation (kernels/precision.hpp); weights, gradients, Adam and the EMA stay fp32. Runs fp32 on CPUs
  // without AVX512_BF16 (kernels::effective_matmul_precision says which ran).
  kernels::MatmulPrecision precision = kernels::MatmulPrecision::Fp32;
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
    drop_classes(seed, step, p, 0, labels, out);
  }
  // The same for images [first, first + labels.size()) of the batch: the decisions those images get in the call
  // above (a data-parallel rank's share).
  static void drop_classes(std::uint64_t seed, std::int64_t step, double p, Index first,
                           const std::vector<std::int64_t>& labels, std::vector<std::int64_t>& out) {
    Rng rng = Rng(seed).fork(kStepStream).fork(static_cast<std::uint64_t>(step)).fork(kCondDropStream);
    for (Index n = 0; n < first; ++n) rng.uniform();
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
    DIFFUSION_CHECK(options.gradient_shards >= 1,
                    "Trainer: gradient_shards must be >= 1, got " << options.gradient_shards);
    DIFFUSION_CHECK(options.replica_check_every >= 0,
                    "Trainer: replica_check_every must be >= 0 (0 never checks), got " << options.replica_check_every);
    DIFFUSION_CHECK(options.cond_drop_prob >= 0.0 && options.cond_drop_prob <= 1.0,
                    "Trainer: cond_drop_prob must be in [0, 1], got " << options.cond_drop_prob);
    options.lr_schedule.validate();
    DIFFUSION_CHECK(std::isfinite(options.min_snr_gamma) && options.min_snr_gamma >= 0.0,
                    "Trainer: min_snr_gamma must be finite and >= 0 (0 disables the weighting), got "
                        << options.min_snr_gamma);
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
    draw(x0.dim(0), x0.shape());
    const Images mine = local_images(x0.dim(0));
    return step_with(image_range(x0, mine), x0.dim(0), mine.first, t_, noise_.data(), nullptr);
  }

  // One optimisation step of a class-conditional network on x0 (N, channels, H, W) and labels (N), each in
  // [0, num_classes): t and the noise drawn as step(x0) draws them (the same numbers), and the class ids dropped to
  // kNullClass with probability options.cond_drop_prob (drop_classes(seed, step_count(), ...)).
  StepResult step(const Tensor<T>& x0, const std::vector<std::int64_t>& labels) {
    check_batch(x0);
    check_labels(x0.dim(0), labels, "labels");
    check_label_range(labels);
    draw(x0.dim(0), x0.shape());
    drop_classes(options_.seed, step_, options_.cond_drop_prob, labels, classes_);
    const Images mine = local_images(x0.dim(0));
    return step_with(image_range(x0, mine), x0.dim(0), mine.first, t_, noise_.data(), classes_.data() + mine.first);
  }

  // One optimisation step on the batch `batches` gives for this trainer's step count, with the batch's labels when
  // the model is class-conditional (the sampler must then have labels; an unconditional model ignores any). The data
  // order is then a function of the step, as the draws are: a run resumed at step s continues both exactly, and the
  // sampler and the trainer cannot get out of step. With more than one rank, each reads only its share of the batch.
  StepResult step(BatchSampler<T>& batches) {
    const Index N = batches.batch_size_of(step_);
    check_batch_size(N);
    const Images mine = local_images(N);
    if (!model_.is_conditional()) {
      batches.batch_part(step_, mine.first, mine.last, batch_);
      draw(N, batch_.shape());
      return step_with(TensorView<T>(batch_), N, mine.first, t_, noise_.data(), nullptr);
    }
    DIFFUSION_CHECK(batches.has_labels(), "Trainer::step: the model is class-conditional (num_classes "
                                              << model_.config().num_classes
                                              << ") but the BatchSampler has no labels; give it the images' labels");
    batches.batch_part(step_, mine.first, mine.last, batch_, batch_labels_);
    check_label_range(batch_labels_);
    draw(N, batch_.shape());
    drop_classes(options_.seed, step_, options_.cond_drop_prob, mine.first, batch_labels_, classes_);
    return step_with(TensorView<T>(batch_), N, mine.first, t_, noise_.data(), classes_.data());
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
    check_batch_timesteps(schedule_, TensorView<T>(x0), t, "Trainer::step: x0");
    const Images mine = local_images(x0.dim(0));
    return step_with(image_range(x0, mine), x0.dim(0), mine.first, t, noise.data(), nullptr);
  }

  // The same for a class-conditional network, with the caller's class ids (N) used as given: ids in
  // [0, num_classes) or kNullClass, no dropout applied (the caller's draws, as t and noise are).
  StepResult step(const Tensor<T>& x0, const std::vector<std::int64_t>& t, const Tensor<T>& noise,
                  const std::vector<std::int64_t>& classes) {
    check_batch(x0);
    check_labels(x0.dim(0), classes, "classes");
    for (std::size_t n = 0; n < classes.size(); ++n)
      DIFFUSION_CHECK(classes[n] == kNullClass || (classes[n] >= 0 && classes[n] < model_.config().num_classes),
                      "Trainer::step: class id " << classes[n] << " of image " << n << " is neither in [0, "
                                                 << model_.config().num_classes << ") nor kNullClass (" << kNullClass
                                                 << ")");
    check_shape(noise, x0.shape(), "Trainer::step: noise");
    check_batch_timesteps(schedule_, TensorView<T>(x0), t, "Trainer::step: x0");
    const Images mine = local_images(x0.dim(0));
    return step_with(image_range(x0, mine), x0.dim(0), mine.first, t, noise.data(), classes.data() + mine.first);
  }

  // Data-parallel training: this trainer is rank comm.rank() of comm.size() (e.g. an MpiCommunicator), computes
  // its share of every batch's shards and exchanges the gradients with the other ranks; each rank keeps a replica
  // of the model and takes the same step. The communicator must outlive the trainer; its size must divide
  // options.gradient_shards. Checks at once that the ranks hold the same weights (check_replicas()).
  void use_communicator(Communicator& comm) {
    local_shards(options_.gradient_shards, comm.rank(), comm.size());  // throws unless size() divides the shards
    comm_ = &comm;
    check_replicas();
  }
  Communicator& communicator() { return comm_ ? *comm_ : single_; }

  // Throws unless a batch of N images can be cut into options.gradient_shards shards of options.accumulate
  // micro-batches each (an image per micro-batch): step() checks every batch; a training loop may check its smallest
  // batch (an epoch's last) before the first step.
  void check_batch_size(Index N) const {
    const Index S = options_.gradient_shards, k = options_.accumulate;
    DIFFUSION_CHECK(N >= S * k, "Trainer::step: a batch of "
                                    << N << " images cannot be split into "
                                    << (S > 1 ? "gradient_shards = " + std::to_string(S) + " shards of " : std::string())
                                    << "accumulate = " << k << " micro-batches" << (S > 1 ? " each" : ""));
  }

  // Throws an Error naming the ranks whose weights, Adam moments, EMA or step count differ from rank 0's (compared
  // by a hash); a collective: every rank calls it. Run every options.replica_check_every steps by step().
  void check_replicas() {
    if (communicator().size() == 1) return;
    const ParameterStore<T>& params = model_.params();
    std::uint64_t h = fnv1a64(params.values(), params.size() * sizeof(T));
    if (optimizer_.size() == params.size()) {
      h = fnv1a64(optimizer_.exp_avg(), params.size() * sizeof(T), h);
      h = fnv1a64(optimizer_.exp_avg_sq(), params.size() * sizeof(T), h);
    }
    if (ema_) h = fnv1a64(ema_->shadow(), params.size() * sizeof(T), h);
    check_same_on_all_ranks(communicator(), "the model replica at step " + std::to_string(step_),
                            "step " + std::to_string(step_) + ", weights, Adam moments and EMA " + hash_key(h));
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
  // Images [first, last) of a batch: this rank's shards.
  struct Images {
    Index first = 0, last = 0;
  };

  // Rank r's images of a batch of N: shards [r S / R, (r + 1) S / R), shard s being images [s N / S, (s + 1) N / S).
  Images local_images(Index N) {
    const Index S = options_.gradient_shards;
    const ShardRange mine = local_shards(S, communicator().rank(), communicator().size());
    return {mine.first * N / S, (mine.first + mine.count) * N / S};
  }

  static TensorView<T> image_range(const Tensor<T>& x, Images images) {
    const Index per_image = x.numel() / x.dim(0);
    return TensorView<T>(x.data() + images.first * per_image,
                         Shape{images.last - images.first, x.dim(1), x.dim(2), x.dim(3)});
  }

  void check_batch(const Tensor<T>& x0) const {
    DIFFUSION_CHECK(x0.rank() == 4 && x0.dim(0) > 0,
                    "Trainer::step: expected a non-empty batch (N, C, H, W), got " << x0.shape());
    check_batch_size(x0.dim(0));
  }

  // A conditional model and one class id per image (the ids themselves are checked by the U-Net).
  void check_labels(Index N, const std::vector<std::int64_t>& labels, const char* what) const {
    DIFFUSION_CHECK(model_.is_conditional(),
                    "Trainer::step: " << what << " given, but the model is unconditional (num_classes 0); train it with "
                                      << "step(x0), or build a U-Net with num_classes > 0");
    DIFFUSION_CHECK(static_cast<Index>(labels.size()) == N,
                    "Trainer::step: " << labels.size() << " " << what << " for a batch of " << N << " images");
  }

  void check_label_range(const std::vector<std::int64_t>& labels) const {
    for (std::size_t n = 0; n < labels.size(); ++n)
      DIFFUSION_CHECK(labels[n] >= 0 && labels[n] < model_.config().num_classes,
                      "Trainer::step: label " << labels[n] << " of image " << n << " is outside [0, "
                                              << model_.config().num_classes
                                              << ") (kNullClass ids are what condition dropout makes)");
  }

  // t_ (N) and noise_ (N images of `image`'s per-image shape) from the step's stream
  // Rng(seed).fork(kStepStream).fork(step_count()): sample_timesteps, then normal over the noise in element order.
  // Every rank draws the whole batch's numbers and uses its share.
  void draw(Index N, const Shape& image) {
    Rng rng = Rng(options_.seed).fork(kStepStream).fork(static_cast<std::uint64_t>(step_));
    sample_timesteps(rng, schedule_, N, t_);
    noise_.resize(Shape{N, image[1], image[2], image[3]});
    rng.normal(noise_.data(), noise_.numel());
  }

  // The step proper, on this rank's images x0 = images [first, first + n) of a batch of N: q_sample and the target
  // for them; per local shard, forward, loss and backward per micro-batch (the shard's images [a, b) cut into
  // [a + j (b - a) / k, a + (j + 1) (b - a) / k)), the gradient summed from zero; the shards' gradients and loss
  // sums added in shard order across the ranks; [clip], Adam, [EMA]. t (N) and noise (N images) are the whole
  // batch's; classes (n), the local images' class ids of a conditional model, or null.
  StepResult step_with(TensorView<T> x0, Index N, Index first, const std::vector<std::int64_t>& t, const T* noise,
                       const std::int64_t* classes) {
    const kernels::MatmulPrecisionScope precision(options_.precision);  // gemm runs fp32 where bf16 is unavailable
    const Index n = x0.dim(0), per_image = x0.numel() / n;
    local_t_.assign(t.begin() + first, t.begin() + first + n);
    const TensorView<T> local_noise(noise + first * per_image, x0.shape());
    q_sample(schedule_, x0, local_t_, local_noise, x_t_);  // checks t against the batch and the schedule
    training_target(options_.prediction, schedule_, x0, local_t_, local_noise, target_);
    const bool weighted = options_.min_snr_gamma > 0.0;
    if (weighted) loss_weights(options_.min_snr_gamma, options_.prediction, schedule_, local_t_, weights_);

    ParameterStore<T>& params = model_.params();
    Communicator& comm = communicator();
    const Index S = options_.gradient_shards, k = options_.accumulate;
    const ShardRange mine = local_shards(S, comm.rank(), comm.size());
    const bool exchange = S > 1 || comm.size() > 1;  // otherwise the one shard's gradient is the sum
    if (exchange) gradient_sum_.reset(comm, S, params.size());
    const double count = static_cast<double>(N * per_image);
    shard_sums_.assign(static_cast<std::size_t>(mine.count), 0.0);
    for (Index i = 0; i < mine.count; ++i) {
      const Index a = (mine.first + i) * N / S - first, b = (mine.first + i + 1) * N / S - first;
      params.zero_grad();
      double sum = 0.0;  // the shard's loss sum, in element order
      for (Index j = 0; j < k; ++j) {
        const Index n0 = a + j * (b - a) / k, n1 = a + (j + 1) * (b - a) / k;
        const Shape micro{n1 - n0, x0.dim(1), x0.dim(2), x0.dim(3)};
        const TensorView<T> x(x_t_.data() + n0 * per_image, micro), target(target_.data() + n0 * per_image, micro);
        micro_t_.assign(local_t_.begin() + n0, local_t_.begin() + n1);
        if (classes) {
          micro_classes_.assign(classes + n0, classes + n1);
          model_.forward(x, micro_t_, micro_classes_, out_);
        } else {
          model_.forward(x, micro_t_, out_);
        }
        sum = loss_sum_backward(options_.loss, TensorView<T>(out_), target, weighted ? weights_.data() + n0 : nullptr,
                                1.0 / count, sum, dout_);
        model_.backward(dout_);
      }
      shard_sums_[static_cast<std::size_t>(i)] = sum;
      if (exchange) gradient_sum_.add(static_cast<std::size_t>(i), params.grads());
    }
    if (exchange) gradient_sum_.finish(params.grads());
    // Every rank sees the same loss and gradient, so every rank stops here together when they are not finite.
    const double sum = sum_in_shard_order(comm, shard_sums_, all_shard_sums_);
    if (!std::isfinite(sum)) throw TrainingDiverged(step_, "the loss is " + std::to_string(sum / count));
    StepResult r;
    r.loss = sum / count;
    r.grad_norm = options_.grad_clip > 0.0 ? clip_grad_norm(params, options_.grad_clip)
                                           : grad_norm(params.grads(), params.size());
    if (!std::isfinite(r.grad_norm))
      throw TrainingDiverged(step_, "the gradient norm is " + std::to_string(r.grad_norm));
    if (!options_.lr_schedule.is_constant()) optimizer_.set_lr(options_.adam.lr * options_.lr_schedule.factor(step_));
    optimizer_.step(params);
    if (ema_) ema_->update(params.values(), params.size());
    ++step_;
    last_loss_ = r.loss;
    if (comm.size() > 1 && options_.replica_check_every > 0 && step_ % options_.replica_check_every == 0)
      check_replicas();
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
  SingleProcess single_;            // the communicator without use_communicator()
  Communicator* comm_ = nullptr;    // use_communicator()'s, or null
  ShardedGradientSum<T> gradient_sum_;
  std::vector<double> shard_sums_, all_shard_sums_;  // this rank's shards' loss sums, and every rank's
  // Per-step buffers, reused: t_ (N) and noise_ (N, C, H, W) of the whole batch, classes_ (a conditional step's ids
  // after dropout); local_t_, x_t_ and target_ of this rank's images; out_ and dout_ of one micro-batch; micro_t_
  // and micro_classes_ its timesteps and class ids.
  std::vector<std::int64_t> t_, local_t_, micro_t_, classes_, micro_classes_;
  std::vector<double> weights_;  // the local images' loss weights (min_snr_gamma > 0)
  Tensor<T> noise_, x_t_, target_, out_, dout_;
  Tensor<T> batch_;                           // step(batches)'s images (this rank's share of the batch)
  std::vector<std::int64_t> batch_labels_;    // and their labels, for a conditional model
};

}  // namespace diffusion
