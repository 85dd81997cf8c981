#include "options.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "common/sampling.hpp"
#include "diffusion/core/error.hpp"
#include "diffusion/samplers/timesteps.hpp"

namespace fashion_mnist {

namespace {

const std::vector<std::string> kSchedules = {"linear", "cosine", "quadratic", "sigmoid"};
const std::vector<std::string> kPrecisions = {"fp32", "bf16"};
using examples::kPrecisionHelp;
const std::vector<std::string> kLosses = {"l2", "l1", "huber"};
const std::vector<std::string> kPredictions = {"eps", "x0", "v"};
const std::vector<std::string> kBlocks = {"convnext", "resnet"};
const std::vector<std::string> kLrDecays = {"none", "cosine", "linear"};
// Every sampler of the library (samplers/sampler.hpp), by the names parse_sampler accepts.
const std::vector<std::string> kSamplers = {"ddpm",     "ddim",         "euler",  "euler_ancestral",
                                            "heun",     "dpmpp_2m",     "dpmpp_2m_sde", "uni_pc",
                                            "reverse_diffusion", "euler_maruyama", "pc"};

constexpr double kInf = std::numeric_limits<double>::infinity();

// The ranges of the numeric options (train and sample).
const NumberRange kTimestepsRange{1, 100000};
const NumberRange kDimRange{4, 4096};
const NumberRange kEpochsRange{1, 1000000};
const NumberRange kStepsRange{1, 1099511627776.0};  // 2^40
const NumberRange kStoredStepsRange{0, 1099511627776.0};  // 0: the length is --epochs
const NumberRange kDimMultsCount{1, static_cast<double>(diffusion::UnetConfig::kMaxLevels)};  // the list's length
const NumberRange kLrRange{0, kInf, true};
const NumberRange kBatchRange{1, 1 << 20};
const NumberRange kGradientShardsRange{0, 65536};
const NumberRange kThreadsRange{0, 4096};
const NumberRange kEmaDecayRange{0, 1};
const NumberRange kNonNegative{0, kInf};  // --grad-clip, --sample-every, --checkpoint-every, --eta
const NumberRange kFinalSamplesRange{1, 4096};
const NumberRange kMinSnrGammaRange{0, 1e9};  // finite: the trainer needs a number (SNRs of T = 1000 reach 1e4)
const NumberRange kSampleStepsRange{1, 100000};
const NumberRange kImagesRange{1, 4096};  // sample --n
const NumberRange kEvalImagesRange{1, 1000000};  // eval --n, train --eval-n
const NumberRange kEvalBatchRange{1, 4096};      // eval --batch
const NumberRange kChannelsRange{1, 4};
const NumberRange kImageSizeRange{1, 4096};
const NumberRange kProbabilityRange{0, 1};
const NumberRange kGuidanceRange{-1000, 1000};  // w; negative w pushes away from the class (allowed, rarely wanted)
const NumberRange kClassRange{-1, 65535};       // --class: -1 is kNullClass; the model's num_classes is checked later

using examples::add_int_list;

}  // namespace

const std::vector<examples::OptionRow<TrainOptions>>& train_option_rows() {
  using O = TrainOptions;
  using examples::OnResume;
  // The fields of a row after the help: accepted values (a range, or for strings a set), the value of a key absent
  // from a file written before the option existed, a stored value's range when wider than the flag's.
  static const std::vector<examples::OptionRow<O>> rows = {
      {"data", &O::data, OnResume::Run,
       "folder holding " + std::string(kTrainImagesFile) + " (Debian package dataset-fashion-mnist)"},
      {"schedule", &O::schedule, OnResume::Fixed, "beta schedule", {}, kSchedules},
      {"timesteps", &O::timesteps, OnResume::Fixed, "number of diffusion steps T", kTimestepsRange},
      {"loss", &O::loss, OnResume::Fixed, "denoising loss", {}, kLosses},
      {"prediction", &O::prediction, OnResume::Fixed, "what the network predicts", {}, kPredictions},
      // Absent in checkpoints written before the loss weighting existed: none.
      {"min-snr-gamma", &O::min_snr_gamma, OnResume::Fixed,
       "Min-SNR-gamma loss weighting (Hang et al. 2023, who recommend 5): each image's loss times min(SNR, gamma) / "
       "SNR for eps prediction (x0: min(SNR, gamma), v: min(SNR, gamma) / (SNR + 1)); 0: off, the primer's L_simple",
       kMinSnrGammaRange, {}, nlohmann::json(0.0)},
      {"block", &O::block, OnResume::Fixed, "U-Net block type", {}, kBlocks},
      {"dim", &O::dim, OnResume::Fixed, "U-Net base channel count", kDimRange},
      {"dim-mults", &O::dim_mults, OnResume::Fixed, "channel multipliers per resolution level, e.g. 1,2,4",
       kDimMultsCount},
      {"epochs", &O::epochs, OnResume::Length, "training length in epochs (ignored when --steps is given)",
       kEpochsRange},
      {"steps", &O::steps, OnResume::Length, "training length in optimisation steps (wins over --epochs)",
       kStepsRange, {}, {}, kStoredStepsRange},
      {"lr", &O::lr, OnResume::Optimizer, "Adam learning rate", kLrRange},
      // Absent in checkpoints written before the learning-rate schedule existed: a constant rate.
      {"lr-warmup", &O::lr_warmup, OnResume::Optimizer,
       "steps of linear learning-rate warm-up, from lr / N at the first step to lr at step N (0: none; without the "
       "flag, a new run not longer than the default warms up for a tenth of its steps)",
       kStoredStepsRange, {}, nlohmann::json(0)},
      {"lr-decay", &O::lr_decay, OnResume::Optimizer,
       "learning-rate decay after the warm-up, reaching --lr-min x lr at the run's last step", {}, kLrDecays,
       nlohmann::json("none")},
      {"lr-min", &O::lr_min, OnResume::Optimizer, "the rate the decay ends at, as a multiple of --lr",
       kProbabilityRange, {}, nlohmann::json(0.0)},
      {"batch", &O::batch, OnResume::Fixed, "images per step", kBatchRange},
      // Absent in checkpoints written before data-parallel training: one shard (0 would mean one per rank).
      {"gradient-shards", &O::gradient_shards, OnResume::Fixed,
       "parts of each batch whose gradients are added in a fixed order, so that any number of ranks "
       "(mpirun -np R, R dividing it) gives the same weights; stored with the run (0: the number of ranks)",
       kGradientShardsRange, {}, nlohmann::json(1)},
      {"seed", &O::seed, OnResume::Fixed, "seed of the initial weights, the data order and the noise"},
      {"threads", &O::threads, OnResume::Run, "worker threads (0: all cores)", kThreadsRange},
      // Absent in checkpoints written before mixed precision existed: fp32.
      {"precision", &O::precision, OnResume::Run, std::string(kPrecisionHelp) + " of the training steps", {},
       kPrecisions, nlohmann::json("fp32")},
      {"ema-decay", &O::ema_decay, OnResume::Fixed, "EMA decay of the sampling weights (0 disables the EMA)",
       kEmaDecayRange},
      {"grad-clip", &O::grad_clip, OnResume::Optimizer, "max global gradient norm (0: no clipping)", kNonNegative},
      // Absent in checkpoints written before `train --conditional` existed: an unconditional run.
      {"conditional", &O::conditional, OnResume::Fixed,
       "train a class-conditional model on the labels in " + std::string(kTrainLabelsFile) +
           " (sample a class with `sample --class K --guidance W`)",
       {}, {}, nlohmann::json(false)},
      {"cond-drop-prob", &O::cond_drop_prob, OnResume::Fixed,
       "conditional runs: probability that an image's label is dropped (the model then learns the "
       "unconditional prediction too, which guidance needs)",
       kProbabilityRange, {}, nlohmann::json(0.1)},
      {"out", &O::out, OnResume::Run, "output folder (default with --resume: the checkpoint's folder)"},
      {"sample-every", &O::sample_every, OnResume::Run, "write a 4x4 grid of EMA samples every N steps (0: never)",
       kNonNegative},
      {"checkpoint-every", &O::checkpoint_every, OnResume::Run,
       "write the checkpoint every N steps (0: only at the end)", kNonNegative},
      {"resume", &O::resume, OnResume::NotStored, "continue the run of this checkpoint exactly"},
      {"final-samples", &O::final_samples, OnResume::Run, "number of images in the final grid", kFinalSamplesRange},
      {"final-sampler", &O::final_sampler, OnResume::Run, "sampler of the final grid and GIF", {}, kSamplers},
      {"final-guidance", &O::final_guidance, OnResume::Run,
       "conditional runs: guidance scale w of the final class grid, the previews and the evaluations",
       kGuidanceRange, {}, nlohmann::json(3.0)},
      // Absent in checkpoints written before `train --eval-every` existed: the defaults.
      {"eval-every", &O::eval_every, OnResume::Run,
       "every N steps, measure --eval-n EMA samples (DDIM 50) against the test set in --data: FID, KID, "
       "precision, recall, appended to eval_log.csv (0: never)",
       kNonNegative, {}, nlohmann::json(0)},
      {"eval-n", &O::eval_n, OnResume::Run, "samples per evaluation during training", kEvalImagesRange, {},
       nlohmann::json(1000)},
  };
  return rows;
}

void add_train_flags(CLI::App& app, TrainOptions& o) { examples::add_flags(app, o, train_option_rows()); }

namespace {

// The model to load (and, for a weights file without our metadata, its configuration) and how to sample from it:
// the flags `sample` and `eval` share.
void add_model_and_sampler_flags(CLI::App& app, SampleOptions& o) {
  app.add_option("--checkpoint", o.checkpoint,
                 "a training checkpoint, or a weights file (ours, or a PyTorch state_dict in safetensors)")
      ->required();
  app.add_option("--sampler", o.sampler, "sampler")->check(CLI::IsMember(kSamplers));
  app.add_option("--steps", o.steps, "sampling steps (every sampler but ddpm, which takes all T)")
      ->check(in_range(kSampleStepsRange));
  app.add_option("--spacing", o.spacing,
                 "where the steps fall among the T timesteps (not ddpm): linspace (evenly, both ends included), "
                 "leading, trailing (diffusers' names), karras (Karras et al. 2022's noise levels, rho 7)")
      ->check(examples::parsed_by(diffusion::parse_spacing, "SPACING"));
  app.add_option("--eta", o.eta,
                 "noise of ddim / euler_ancestral / dpmpp_2m_sde (default: 0 for ddim, 1 for the others)")
      ->check(in_range(kNonNegative));
  app.add_option("--clip-x0", o.clip_x0,
                 "clip the predicted x0 to [-1, 1] at every step (true/false; keeps large-T DDIM from saturating)");
  app.add_option("--precision", o.precision, std::string(kPrecisionHelp) + " of the model calls")
      ->check(CLI::IsMember(kPrecisions));
  app.add_option("--seed", o.seed, "seed of x_T and of the sampler's noise");
  app.add_option("--threads", o.threads, "worker threads (0: all cores)")->check(in_range(kThreadsRange));
  // Class-conditional models only.
  app.add_option("--class", o.class_id,
                 "conditional models: the class of every image (0-9 for Fashion-MNIST; -1: no class); default: a "
                 "class grid (sample) or every class in turn (eval)")
      ->check(in_range(kClassRange));
  app.add_option("--guidance", o.guidance,
                 "conditional models: classifier-free guidance scale w (0: the conditional prediction; larger: more "
                 "typical of the class, less varied)")
      ->check(in_range(kGuidanceRange));
  app.add_option("--rescaled-phi", o.rescaled_phi,
                 "conditional models: rescale the guided prediction to the conditional one's spread (Lin et al. "
                 "2023), 0 to 1")
      ->check(in_range(kProbabilityRange));
  // Only for a weights file that does not carry its configuration.
  app.add_option("--block", o.block, "U-Net block type (weights without metadata)")->check(CLI::IsMember(kBlocks));
  app.add_option("--dim", o.dim, "U-Net base channel count (weights without metadata)")
      ->check(in_range(kDimRange));
  add_int_list(app, "--dim-mults", o.dim_mults, "channel multipliers (weights without metadata)");
  app.add_option("--channels", o.channels, "image channels (weights without metadata)")
      ->check(in_range(kChannelsRange));
  app.add_option("--image-size", o.image_size, "image height and width (weights without metadata)")
      ->check(in_range(kImageSizeRange));
  app.add_option("--schedule", o.schedule, "beta schedule (weights without metadata)")->check(CLI::IsMember(kSchedules));
  app.add_option("--timesteps", o.timesteps, "number of diffusion steps T (weights without metadata)")
      ->check(in_range(kTimestepsRange));
  app.add_option("--prediction", o.prediction, "what the network predicts (weights without metadata)")
      ->check(CLI::IsMember(kPredictions));
}

}  // namespace

void add_sample_flags(CLI::App& app, SampleOptions& o) {
  add_model_and_sampler_flags(app, o);
  app.add_option("--n", o.n, "number of images")->check(in_range(kImagesRange));
  app.add_option("--x-T", o.x_T, "start from the tensor 'x_T' (N, C, H, W) of this safetensors file");
  app.add_option("--out", o.out, "PNG grid of the samples");
  app.add_option("--tensor-out", o.tensor_out, "also write the samples as tensor 'x_0' (F32) to this safetensors file");
  app.add_option("--gif", o.gif, "also write the denoising of the first 8 samples as an animated GIF");
}

void add_eval_flags(CLI::App& app, EvalOptions& o) {
  add_model_and_sampler_flags(app, o.sample);
  app.add_option("--n", o.n, "number of generated images to evaluate")->check(in_range(kEvalImagesRange));
  app.add_option("--batch", o.batch, "images sampled at a time (memory: about 10 MB per image at 28x28)")
      ->check(in_range(kEvalBatchRange));
  app.add_option("--data", o.data, "folder of the Fashion-MNIST IDX files (the reference images)");
  app.add_option("--reference", o.reference, "reference images: the test set (t10k) or the training set")
      ->check(CLI::IsMember({"test", "train"}));
  app.add_option("--classifier", o.classifier, "weights of the feature extractor (fashion_classifier train)");
  app.add_option("--cache", o.cache,
                 "reference statistics cache (default: reference_<reference>.safetensors next to the checkpoint); "
                 "recomputed when the images or the classifier differ");
  app.add_option("--json", o.json, "also write the report as JSON to this file");
}

nlohmann::json to_json(const TrainOptions& o) { return examples::options_to_json(o, train_option_rows()); }

TrainOptions train_options_from_json(const nlohmann::json& j, const std::string& source) {
  return examples::options_from_json(j, "'" + source + "': the stored '" + kOptionsKey + "' ", train_option_rows());
}

TrainOptions merge_resume_options(const TrainOptions& flags, const std::set<std::string>& given,
                                  const nlohmann::json& stored, const std::string& checkpoint,
                                  std::vector<std::string>& notes) {
  nlohmann::json merged = examples::merge_resume_json(flags, given, stored, train_option_rows(), checkpoint, notes);
  // Length: --steps wins; --epochs alone replaces the stored length; neither keeps it.
  if (given.count("steps")) {
    merged["steps"] = flags.steps;
  } else if (given.count("epochs")) {
    merged["epochs"] = flags.epochs;
    merged["steps"] = 0;
  }
  TrainOptions o = train_options_from_json(merged, checkpoint);
  o.resume = flags.resume;
  // Outputs go next to the checkpoint unless --out says otherwise.
  if (given.count("out")) {
    o.out = flags.out;
  } else {
    const std::filesystem::path parent = std::filesystem::path(checkpoint).parent_path();
    o.out = parent.empty() ? "." : parent.string();
  }
  return o;
}

diffusion::UnetConfig unet_config(const std::string& block, int dim, const std::vector<int>& dim_mults, int channels,
                                  int num_classes) {
  diffusion::UnetConfig c;
  c.num_classes = num_classes;
  c.dim = dim;
  c.dim_mults.assign(dim_mults.begin(), dim_mults.end());
  c.channels = channels;
  c.use_convnext = block == "convnext";
  return c;
}

diffusion::UnetPlan plan_model(const diffusion::UnetConfig& config) {
  try {
    return diffusion::plan_unet(config);
  } catch (const diffusion::Error& e) {
    throw diffusion::Error(std::string("invalid model flags (--dim, --dim-mults, --block): ") + e.what());
  }
}

}  // namespace fashion_mnist
