// train_images: train a diffusion model on any folder of images (any size, 1 or 3 channels), and sample from it.
//   train_images train --data DIR [--size 32] [--channels 3] [--labels] ... --out results/train_images
//   train_images sample --checkpoint results/train_images/model.safetensors --n 64 --out samples.png
//   train_images eval --checkpoint results/train_images/model.safetensors --data DIR --inception FILE [--n 1000]
//   (with --labels --conditional: a class-conditional model; sample --class K --guidance W)
// See README.md in this folder. Errors are one line on stderr and exit status 1; usage errors exit with 2.
// The progress display, the train log, the sampler settings, grids and the denoising GIF are the examples' common
// code (examples/common), shared with fashion_mnist.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "common/evaluation.hpp"
#include "common/option_table.hpp"
#include "common/progress.hpp"
#include "common/ranks.hpp"
#include "common/sampling.hpp"
#include "common/training_loop.hpp"
#include "diffusion/diffusion.hpp"
#include "diffusion/io/atomic_file.hpp"
#include "diffusion/io/image_folder.hpp"
#include "evaluation.hpp"

namespace {

namespace fs = std::filesystem;
using diffusion::Error;
using diffusion::Index;
using examples::Images;

constexpr const char* kOptionsKey = "train_images.options";  // checkpoint / weights metadata: the flags as JSON
constexpr const char* kRunKey = "train_images.run";          // checkpoint metadata: elapsed time
constexpr int kPreviewImages = 16;
constexpr int kGifImages = 8;
constexpr Index kEvalBatch = 100;  // images sampled at a time while training measures (eval's --batch)

struct TrainOptions {
  // The data: fixed for a run (a resumed run checks them against the checkpoint).
  std::string data;
  int channels = 3;
  std::vector<int> size = {32};  // H, or H W
  bool labels = false;
  bool conditional = false;     // a class-conditional model on the class folders (needs --labels)
  double cond_drop_prob = 0.1;  // probability that a label is dropped to "no class" (for guidance)
  std::string background = "255,255,255";
  bool skip_bad_files = false;
  bool upscale = false;
  bool flip = true;
  // The model and the noise: fixed for a run.
  std::string block = "convnext";
  int dim = 32;
  std::vector<int> dim_mults = {1, 2, 4};
  int timesteps = 1000;
  std::string schedule = "linear";
  std::string loss = "l2";
  std::string prediction = "eps";
  double min_snr_gamma = 0.0;  // Min-SNR-gamma loss weighting (process/loss_weighting.hpp); 0: off
  double ema_decay = 0.995;
  int batch = 32;
  std::uint64_t seed = 0;
  int gradient_shards = 0;  // parts of each batch whose gradients are summed in a fixed order (0: the ranks)
  // Free to change on resume.
  int accumulate = 1;
  double lr = 1e-3;
  std::int64_t lr_warmup = 0;     // learning-rate warm-up steps (train/lr_schedule.hpp)
  std::string lr_decay = "none";  // none | cosine | linear, to lr_min x lr at the run's last step
  double lr_min = 0.0;
  double grad_clip = 0.0;
  std::int64_t steps = 0;
  int epochs = 10;
  std::string out = "results/train_images";
  std::string resume;
  std::int64_t sample_every = 0;
  std::int64_t checkpoint_every = 500;
  int final_samples = 64;
  std::string final_sampler = "ddim";
  int sampling_steps = 50;
  double final_guidance = 3.0;  // conditional runs: guidance scale w of samples.png (a class grid) and the previews
  std::int64_t eval_every = 0;  // measure the EMA model every N steps (0: never), --eval-n samples, into eval_log.csv
  int eval_n = 1000;
  std::string inception, classifier;  // the feature extractor of the measurements
  int threads = 0;
  std::string precision = "fp32";  // fp32 | bf16: the GEMMs of the training steps (kernels/precision.hpp)
};

// The flags that define the model, the noise and the data: stored in the checkpoint, taken from it on resume.
const std::vector<std::string> kFixedFlags = {"channels", "size", "labels", "background", "upscale", "flip", "block",
                                              "dim", "dim-mults", "timesteps", "schedule", "loss", "prediction",
                                              "min-snr-gamma", "ema-decay", "batch", "seed", "conditional", "cond-drop-prob",
                                              "gradient-shards"};

nlohmann::json to_json(const TrainOptions& o) {
  return {{"channels", o.channels}, {"size", o.size},           {"labels", o.labels},
          {"background", o.background}, {"upscale", o.upscale}, {"flip", o.flip},
          {"block", o.block},       {"dim", o.dim},             {"dim-mults", o.dim_mults},
          {"timesteps", o.timesteps}, {"schedule", o.schedule}, {"loss", o.loss},
          {"prediction", o.prediction}, {"ema-decay", o.ema_decay}, {"batch", o.batch},
          {"seed", o.seed},         {"conditional", o.conditional}, {"cond-drop-prob", o.cond_drop_prob},
          {"gradient-shards", o.gradient_shards}, {"min-snr-gamma", o.min_snr_gamma}};
}

void from_json(const nlohmann::json& j, TrainOptions& o) {
  o.channels = j.at("channels").get<int>();
  o.size = j.at("size").get<std::vector<int>>();
  o.labels = j.at("labels").get<bool>();
  o.background = j.at("background").get<std::string>();
  o.upscale = j.at("upscale").get<bool>();
  o.flip = j.at("flip").get<bool>();
  o.block = j.at("block").get<std::string>();
  o.dim = j.at("dim").get<int>();
  o.dim_mults = j.at("dim-mults").get<std::vector<int>>();
  o.timesteps = j.at("timesteps").get<int>();
  o.schedule = j.at("schedule").get<std::string>();
  o.loss = j.at("loss").get<std::string>();
  o.prediction = j.at("prediction").get<std::string>();
  o.ema_decay = j.at("ema-decay").get<double>();
  o.batch = j.at("batch").get<int>();
  o.seed = j.at("seed").get<std::uint64_t>();
  // Absent in files written before --conditional existed: unconditional.
  o.conditional = j.value("conditional", false);
  o.cond_drop_prob = j.value("cond-drop-prob", 0.1);
  // Absent in files written before data-parallel training: one shard.
  o.gradient_shards = j.value("gradient-shards", 1);
  // Absent in files written before the loss weighting existed: none.
  o.min_snr_gamma = j.value("min-snr-gamma", 0.0);
}

std::set<std::string> given_flags(const CLI::App& app) {
  std::set<std::string> given;
  for (const CLI::Option* opt : app.get_options())
    if (opt->count() > 0) given.insert(opt->get_name().substr(opt->get_name().rfind('-') == std::string::npos ? 0 : 2));
  return given;
}

// The reference statistics cache of a folder's measurements: reference_inception.safetensors or
// reference_classifier.safetensors in `folder` (its keys tell a stale file, which is then recomputed).
std::string reference_cache_path(const std::string& folder, const std::string& inception) {
  return (fs::path(folder) / (inception.empty() ? "reference_classifier.safetensors" : "reference_inception.safetensors"))
      .string();
}

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && (s.back() == ' ' || s.back() == '.')) s.pop_back();
  return s;
}

std::array<std::uint8_t, 3> parse_background(const std::string& text) {
  std::array<std::uint8_t, 3> rgb{};
  int r = -1, g = -1, b = -1;
  char tail = 0;
  DIFFUSION_CHECK(std::sscanf(text.c_str(), "%d,%d,%d%c", &r, &g, &b, &tail) == 3 && r >= 0 && r <= 255 && g >= 0 &&
                      g <= 255 && b >= 0 && b <= 255,
                  "--background '" << text << "': expected R,G,B with values 0 to 255, e.g. 255,255,255");
  rgb = {static_cast<std::uint8_t>(r), static_cast<std::uint8_t>(g), static_cast<std::uint8_t>(b)};
  return rgb;
}

diffusion::UnetConfig unet_config(const TrainOptions& o, Index num_classes) {
  diffusion::UnetConfig c;
  c.num_classes = num_classes;
  c.dim = o.dim;
  c.dim_mults.assign(o.dim_mults.begin(), o.dim_mults.end());
  c.channels = o.channels;
  c.use_convnext = o.block == "convnext";
  return c;
}

nlohmann::json parse_metadata_json(const diffusion::io::SafetensorsReader& reader, const char* key) {
  const auto it = reader.metadata().find(key);
  DIFFUSION_CHECK(it != reader.metadata().end(), "'" << reader.path() << "' was not written by `train_images train` (no '"
                                                     << key << "' metadata)");
  try {
    return nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    throw Error("'" + reader.path() + "': malformed '" + key + "' metadata (" + e.what() + ")");
  }
}

// ---------------------------------------------------------------------------------------------------------------
int run_train(TrainOptions o, const std::set<std::string>& given) {
  // A resumed run takes the model, noise and data settings from the checkpoint; a given flag must agree.
  std::unique_ptr<diffusion::io::SafetensorsReader> resume_reader;
  double elapsed_before = 0.0;
  std::optional<diffusion::io::DatasetInfo> stored_info;
  if (!o.resume.empty()) {
    DIFFUSION_CHECK(fs::exists(o.resume), "--resume '" << o.resume << "' does not exist");
    resume_reader = std::make_unique<diffusion::io::SafetensorsReader>(o.resume);
    const nlohmann::json stored = parse_metadata_json(*resume_reader, kOptionsKey);
    const nlohmann::json flags = to_json(o);
    std::string differ;
    for (const std::string& f : kFixedFlags)
      if (given.count(f) && stored.contains(f) && stored.at(f) != flags.at(f))
        differ += (differ.empty() ? "--" : ", --") + f + " " + flags.at(f).dump() + " (the checkpoint has " +
                  stored.at(f).dump() + ")";
    DIFFUSION_CHECK(differ.empty(), "cannot resume from '" << o.resume << "': " << differ << ". Drop these flags");
    from_json(stored, o);
    if (const auto it = resume_reader->metadata().find(kRunKey); it != resume_reader->metadata().end())
      elapsed_before = nlohmann::json::parse(it->second).value("elapsed_s", 0.0);
    diffusion::io::DatasetInfo info;
    if (diffusion::io::dataset_info_from_metadata(resume_reader->metadata(), o.resume, info)) stored_info = info;
  }
  if (o.threads > 0) diffusion::set_num_threads(o.threads);
  examples::Ranks& ranks = examples::Ranks::get();
  o.gradient_shards = ranks.gradient_shards(o.gradient_shards);
  DIFFUSION_CHECK(!o.conditional || o.labels,
                  "--conditional needs --labels: the classes are the first level of subfolders of --data");
  DIFFUSION_CHECK(o.size.size() == 1 || o.size.size() == 2, "--size takes H or H W");
  const int H = o.size[0], W = o.size.size() == 2 ? o.size[1] : o.size[0];

  // Everything that can be wrong with the inputs is found before the first step.
  diffusion::io::ImageFolderOptions fo;
  fo.decode.channels = o.channels;
  fo.decode.height = H;
  fo.decode.width = W;
  fo.decode.background = parse_background(o.background);
  fo.decode.upscale = o.upscale;
  fo.labels = o.labels;
  fo.skip_bad_files = o.skip_bad_files;
  fo.progress = [](std::size_t done, std::size_t total) {
    if (total >= 2048) std::fprintf(stderr, "\rtrain_images: decoding %zu/%zu images", done, total);
    if (total >= 2048 && done == total) std::fprintf(stderr, "\n");
  };
  const diffusion::io::ImageFolder data(o.data, fo);
  if (stored_info) diffusion::io::check_dataset_matches(*stored_info, data.info(), "cannot resume from '" + o.resume + "'");
  for (const auto& s : data.skipped()) std::fprintf(stderr, "train_images: skipped %s: %s\n", s.path.c_str(), s.reason.c_str());

  const Index num_classes = o.conditional ? static_cast<Index>(data.classes().size()) : 0;
  const diffusion::UnetConfig config = unet_config(o, num_classes);
  const diffusion::UnetPlan plan = [&] {
    try {
      return diffusion::plan_unet(config);
    } catch (const Error& e) {
      throw Error(std::string("invalid model flags (--dim, --dim-mults, --block): ") + e.what());
    }
  }();
  const int divisor = 1 << (static_cast<int>(config.levels()) - 1);
  DIFFUSION_CHECK(H % divisor == 0 && W % divisor == 0,
                  "--dim-mults gives " << config.levels() << " resolution levels, so the image size must be divisible by "
                                       << divisor << ", but it is " << H << "x" << W);
  DIFFUSION_CHECK(o.batch >= o.accumulate, "--accumulate " << o.accumulate << " needs --batch >= " << o.accumulate);
  if (resume_reader) diffusion::check_checkpoint(*resume_reader, config);
  std::error_code ec;
  fs::create_directories(o.out, ec);
  DIFFUSION_CHECK(!ec && fs::is_directory(o.out), "cannot create the output folder '" << o.out << "'");
  const fs::path out(o.out);
  const std::string checkpoint_path = (out / "checkpoint.safetensors").string();
  const std::string model_path = (out / "model.safetensors").string();

  diffusion::BatchOptions bo;
  bo.batch_size = o.batch;
  bo.seed = o.seed;
  bo.horizontal_flip = o.flip;
  diffusion::BatchSampler<float> sampler(data.images(), bo, o.conditional ? &data.labels() : nullptr);
  const std::int64_t per_epoch = sampler.batches_per_epoch();
  const std::int64_t total = o.steps > 0 ? o.steps : static_cast<std::int64_t>(o.epochs) * per_epoch;

  diffusion::Unet<float> net(config, o.seed);
  diffusion::TrainerOptions to;
  to.loss = diffusion::parse_loss_type(o.loss);
  to.prediction = diffusion::parse_prediction(o.prediction);
  to.min_snr_gamma = o.min_snr_gamma;
  to.adam.lr = o.lr;
  to.lr_schedule = examples::lr_schedule_of_flags(o.lr_warmup, o.lr_decay, o.lr_min, total);
  to.grad_clip = o.grad_clip;
  to.use_ema = o.ema_decay > 0.0;
  to.ema = diffusion::EmaOptions{o.ema_decay, true};
  to.seed = o.seed;
  to.accumulate = o.accumulate;
  to.cond_drop_prob = o.cond_drop_prob;
  to.gradient_shards = o.gradient_shards;
  to.precision = diffusion::kernels::parse_matmul_precision(o.precision);
  diffusion::Trainer<float> trainer(net, diffusion::NoiseSchedule(diffusion::parse_beta_schedule(o.schedule), o.timesteps), to);
  if (resume_reader) {
    diffusion::load_checkpoint(*resume_reader, trainer);
    resume_reader.reset();
  }
  {  // every rank must train the same run on the same data
    nlohmann::json run = to_json(o);
    run["lr"] = o.lr;
    run["lr-warmup"] = o.lr_warmup;
    run["lr-decay"] = o.lr_decay;
    run["lr-min"] = o.lr_min;
    run["grad-clip"] = o.grad_clip;
    run["accumulate"] = o.accumulate;
    run["steps"] = o.steps;
    run["epochs"] = o.epochs;
    run["resume-step"] = trainer.step_count();
    const auto& bytes = data.images();
    ranks.join(trainer, run.dump(), data.info().to_json().dump() + " " +
                                        diffusion::hash_key(diffusion::fnv1a64(bytes.data(), static_cast<std::size_t>(bytes.numel()))));
  }

  const std::int64_t first = trainer.step_count();
  const std::map<std::string, std::string> metadata = {{kOptionsKey, to_json(o).dump()},
                                                       {diffusion::io::kDatasetInfoKey, data.info().to_json().dump()}};
  if (ranks.leader())
  std::fprintf(stderr, "train_images: %lld images %dx%d, %d channel(s)%s from %s; %s%s U-Net (dim %d, %zu parameters), "
                       "steps %lld to %lld (%lld per epoch), batch %d (%d micro-batches)%s; output in %s\n",
               static_cast<long long>(data.size()), H, W, o.channels,
               o.labels ? (", " + std::to_string(data.classes().size()) + " classes").c_str() : "", o.data.c_str(),
               o.conditional ? "class-conditional " : "", o.block.c_str(), o.dim, static_cast<std::size_t>(plan.parameter_count), static_cast<long long>(first),
               static_cast<long long>(total), static_cast<long long>(per_epoch), o.batch, o.accumulate,
               examples::precision_note(to.precision).c_str(), o.out.c_str());
  if (ranks.leader() && !to.lr_schedule.is_constant())
    std::fprintf(stderr, "train_images: learning rate %s\n", to.lr_schedule.describe(to.adam.lr).c_str());
  if (ranks.leader() && to.min_snr_gamma > 0.0)
    std::fprintf(stderr, "train_images: Min-SNR-gamma loss weighting, gamma %g\n", to.min_snr_gamma);
  if (ranks.leader() && ranks.size() > 1)
    std::fprintf(stderr, "train_images: %d ranks, %d gradient shards: rank 0 prints and writes\n", ranks.size(),
                 o.gradient_shards);

  examples::ProgressDisplay progress(first, total, per_epoch, elapsed_before, ranks.leader() ? stderr : nullptr);
  const examples::TrainLog log((out / "train_log.csv").string(), ranks.leader());
  auto save = [&] {
    nlohmann::json run;
    run["elapsed_s"] = progress.elapsed();
    std::map<std::string, std::string> m = metadata;
    m[kRunKey] = run.dump();
    diffusion::save_checkpoint(checkpoint_path, trainer, m);
  };
  auto settings_for = [&](const std::string& name) {
    examples::SamplerSettings s;
    s.sampler = name;
    s.ddim_steps = std::min(o.sampling_steps, o.timesteps);
    s.prediction = to.prediction;
    if (o.conditional) s.guidance = o.final_guidance;
    return s;
  };
  // A conditional run's previews take the classes in turn.
  auto class_ids = [&](Index n) {
    return o.conditional ? examples::classes_in_turn(n, num_classes) : std::vector<std::int64_t>{};
  };

  // Measured quality every --eval-every steps: the EMA network, DDIM with --sampling-steps, --eval-n samples from the
  // same x_T each time, against the training folder's images.
  std::unique_ptr<train_images::FolderMetrics> metrics;
  std::unique_ptr<examples::EvalLog> eval_log;
  if (o.eval_every > 0 && ranks.leader()) {
    metrics = train_images::make_folder_metrics({o.inception, o.classifier, reference_cache_path(o.out, o.inception)},
                                                data.images());
    eval_log = std::make_unique<examples::EvalLog>((out / "eval_log.csv").string());
  }
  auto evaluate = [&](std::int64_t s) {
    double sampling_seconds = 0.0;
    const auto t0 = std::chrono::steady_clock::now();
    const diffusion::metrics::SampleReport r = train_images::measure_samples(
        trainer.sampling_model(), trainer.schedule(), settings_for("ddim"), *metrics, o.eval_n, kEvalBatch, o.channels,
        H, W, o.seed, class_ids(o.eval_n), sampling_seconds, false);
    const double seconds = examples::seconds_since(t0);
    eval_log->add(s, static_cast<double>(s) / static_cast<double>(per_epoch), r, seconds);
    std::fprintf(stderr, "\ntrain_images: step %lld: %s\n", static_cast<long long>(s), r.summary().c_str());
  };

  examples::TrainingLoop loop;
  loop.total_steps = total;
  loop.steps_per_epoch = per_epoch;
  loop.checkpoint_every = o.checkpoint_every;
  loop.checkpoint_path = checkpoint_path;
  loop.resumed_from = o.resume;
  loop.divergence_advice = "Try a new run with a lower --lr or --grad-clip 1";
  loop.save = save;
  loop.leader = ranks.leader();
  loop.after_step = [&](std::int64_t s) {
    if (o.sample_every > 0 && s % o.sample_every == 0) {
      char name[64];
      std::snprintf(name, sizeof name, "preview_step_%06lld.png", static_cast<long long>(s));
      Images x;
      diffusion::Rng rng = diffusion::Rng(o.seed).fork(examples::kPreviewStream);
      examples::SamplerSettings preview = settings_for("ddim");
      preview.classes = class_ids(kPreviewImages);
      examples::generate(trainer.sampling_model(), trainer.schedule(), preview, kPreviewImages, o.channels, H, W, rng,
                         x, nullptr);
      examples::write_grid_png((out / name).string(), x);
    }
    if (metrics && s % o.eval_every == 0) evaluate(s);
  };
  loop.run(trainer, sampler, progress, log);
  if (!ranks.leader()) return 0;  // the leader writes the final outputs

  save();
  diffusion::save_unet_weights(net, model_path, trainer.sampling_weights(), metadata);
  // A conditional run's samples.png is a class grid: one row per class (sorted names), ceil(final / classes) each.
  examples::SamplerSettings final_settings = settings_for(o.final_sampler);
  const int per_row = o.conditional ? static_cast<int>((o.final_samples + num_classes - 1) / num_classes) : 0;
  const Index final_n = o.conditional ? per_row * num_classes : o.final_samples;
  if (o.conditional) final_settings.classes = examples::class_grid_ids(static_cast<int>(num_classes), per_row);
  // A class grid's GIF shows the first image of each row (one per class).
  const int sampler_steps = final_settings.steps(o.timesteps);
  examples::DenoisingRecorder gif =
      o.conditional ? examples::class_grid_recorder(static_cast<int>(num_classes), per_row, sampler_steps)
                    : examples::DenoisingRecorder(kGifImages, sampler_steps);
  Images x;  // (final_n, C, H, W)
  diffusion::Rng rng = diffusion::Rng(o.seed).fork(examples::kSampleStream);
  examples::generate(trainer.sampling_model(), trainer.schedule(), final_settings, final_n, o.channels, H, W, rng, x, &gif);
  if (o.conditional) examples::write_grid_png((out / "samples.png").string(), x, per_row);
  else examples::write_grid_png((out / "samples.png").string(), x);
  gif.write((out / "denoising.gif").string());
  std::printf("train_images: trained to step %lld in %s\n  checkpoint: %s\n  weights:    %s\n  samples:    %s\n"
              "  denoising:  %s\n  log:        %s\n",
              static_cast<long long>(trainer.step_count()), examples::format_duration(progress.elapsed()).c_str(),
              checkpoint_path.c_str(), model_path.c_str(), (out / "samples.png").string().c_str(),
              (out / "denoising.gif").string().c_str(), log.path().c_str());
  if (eval_log) std::printf("  metrics:    %s\n", eval_log->path().c_str());
  return 0;
}

// ---------------------------------------------------------------------------------------------------------------
struct SampleOptions {
  std::string checkpoint, out = "samples.png", gif, sampler = "ddim";
  int n = 64, steps = 50, threads = 0;
  std::string spacing = "linspace";  // where the steps fall among the T timesteps
  std::string precision = "fp32";    // fp32 | bf16: the GEMMs of the model calls
  std::optional<double> eta;
  std::uint64_t seed = 0;
  std::optional<std::string> class_name;  // conditional models: a class folder's name (or its index); none: a class grid
  double guidance = 0.0, rescaled_phi = 0.0;
};

// --class: a class folder's name, or its index in the sorted list, or -1 for no class.
std::int64_t parse_class(const std::string& text, const std::vector<std::string>& classes) {
  for (std::size_t i = 0; i < classes.size(); ++i)
    if (classes[i] == text) return static_cast<std::int64_t>(i);
  char* end = nullptr;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (!text.empty() && end && *end == '\0' && v >= -1 && v < static_cast<long>(classes.size())) return v;
  std::string names;
  for (const auto& c : classes) names += (names.empty() ? "" : ", ") + c;
  throw Error("--class '" + text + "': not a class of the model (" + names + "), nor an index 0-" +
              std::to_string(classes.size() - 1) + " or -1 (no class)");
}

// A trained model: model.safetensors (its weights) or checkpoint.safetensors (its EMA weights when it has them),
// with the flags it was trained with and the description of its data.
struct LoadedModel {
  std::unique_ptr<diffusion::Unet<float>> net;
  nlohmann::json stored;  // the fixed flags (kOptionsKey)
  diffusion::io::DatasetInfo info;
  std::vector<double> betas;
};

LoadedModel load_model(const std::string& path) {
  DIFFUSION_CHECK(fs::exists(path), "--checkpoint '" << path << "' does not exist");
  LoadedModel m;
  const diffusion::io::SafetensorsReader reader(path);
  m.stored = parse_metadata_json(reader, kOptionsKey);
  DIFFUSION_CHECK(diffusion::io::dataset_info_from_metadata(reader.metadata(), path, m.info),
                  "'" << path << "' has no '" << diffusion::io::kDatasetInfoKey << "' metadata");
  const bool checkpoint = reader.metadata().count(diffusion::kTrainStateKey) != 0;
  diffusion::WeightLoadOptions wo;
  if (checkpoint) {
    m.betas = diffusion::read_checkpoint_schedule(reader).betas;
    wo.prefix = reader.contains("ema.init_conv.weight") ? "ema." : "";
    wo.allow_extra_tensors = true;
  } else {
    m.betas = diffusion::make_betas(diffusion::parse_beta_schedule(m.stored.at("schedule").get<std::string>()),
                                    m.stored.at("timesteps").get<int>());
  }
  const diffusion::UnetConfig config = diffusion::unet_config_from_metadata(reader.metadata(), path);
  diffusion::check_unet_tensors(reader, diffusion::plan_unet(config), wo);
  m.net = std::make_unique<diffusion::Unet<float>>(config);
  diffusion::load_unet_weights(*m.net, reader, wo);
  const Index K = config.num_classes;
  DIFFUSION_CHECK(K == 0 || static_cast<Index>(m.info.classes.size()) == K,
                  "'" << path << "': the model has " << K << " classes but the data set's description names "
                      << m.info.classes.size());
  return m;
}

// Samples from a model of load_model().
int run_sample(const SampleOptions& o) {
  if (o.threads > 0) diffusion::set_num_threads(o.threads);
  const LoadedModel m = load_model(o.checkpoint);
  diffusion::Unet<float>& net = *m.net;
  const diffusion::io::DatasetInfo& info = m.info;
  const diffusion::NoiseSchedule schedule(m.betas);
  const Index K = net.config().num_classes;
  DIFFUSION_CHECK(K > 0 || (!o.class_name && o.guidance == 0.0 && o.rescaled_phi == 0.0),
                  "'" << o.checkpoint << "' holds an unconditional model: --class, --guidance and --rescaled-phi do not "
                                         "apply (train with --labels --conditional)");
  examples::SamplerSettings settings;
  settings.guidance = o.guidance;
  settings.rescaled_phi = o.rescaled_phi;
  settings.sampler = o.sampler;
  settings.ddim_steps = o.steps;
  settings.spacing = diffusion::parse_spacing(o.spacing);
  settings.precision = diffusion::kernels::parse_matmul_precision(o.precision);
  settings.eta = o.eta;
  settings.prediction = diffusion::parse_prediction(m.stored.at("prediction").get<std::string>());
  DIFFUSION_CHECK(o.sampler == "ddpm" || o.steps <= schedule.num_timesteps(),
                  "--steps " << o.steps << " is more than the model's T = " << schedule.num_timesteps());
  // A conditional model without --class: a class grid, one row per class, ceil(n / K) images each.
  const bool class_grid = K > 0 && !o.class_name;
  const int per_row = class_grid ? static_cast<int>((o.n + K - 1) / K) : 0;
  const Index n = class_grid ? per_row * K : o.n;
  if (class_grid) settings.classes = examples::class_grid_ids(static_cast<int>(K), per_row);
  else if (K > 0) settings.classes.assign(static_cast<std::size_t>(n), parse_class(*o.class_name, info.classes));
  const int sampler_steps = settings.steps(schedule.num_timesteps());
  examples::DenoisingRecorder gif =
      class_grid ? examples::class_grid_recorder(static_cast<int>(K), per_row, sampler_steps)
                 : examples::DenoisingRecorder(std::min<Index>(kGifImages, n), sampler_steps);
  Images x;
  diffusion::Rng rng = diffusion::Rng(o.seed).fork(examples::kSampleStream);
  examples::generate(net, schedule, settings, n, info.channels, info.height, info.width, rng, x,
                     o.gif.empty() ? nullptr : &gif);
  if (class_grid) examples::write_grid_png(o.out, x, per_row);
  else examples::write_grid_png(o.out, x);
  if (!o.gif.empty()) gif.write(o.gif);
  std::string what;
  if (class_grid) {
    what = ", one row per class:";
    for (const auto& c : info.classes) what += " " + c;
  } else if (K > 0) {
    const std::int64_t c = settings.classes.front();
    what = c == diffusion::kNullClass ? ", no class" : ", class " + info.classes[static_cast<std::size_t>(c)];
  }
  if (K > 0) {
    char w[40];
    std::snprintf(w, sizeof w, ", guidance %g", o.guidance);
    what += w;
  }
  std::printf("train_images sample: %lld images %dx%d from '%s' (%s%s) in %s\n", static_cast<long long>(n),
              info.height, info.width, o.checkpoint.c_str(), o.sampler.c_str(), what.c_str(), o.out.c_str());
  return 0;
}

// ---------------------------------------------------------------------------------------------------------------
struct EvalOptions {
  SampleOptions sample;  // the model, the sampler, the classes and guidance (n, out and gif unused)
  std::string data, inception, classifier, cache, json;
  int n = 1000, batch = static_cast<int>(kEvalBatch);
  bool skip_bad_files = false;
};

// Samples --n images and measures them against the images of --data, decoded as the model's training images were.
int run_eval(const EvalOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  if (o.sample.threads > 0) diffusion::set_num_threads(o.sample.threads);
  const LoadedModel m = load_model(o.sample.checkpoint);
  const Index K = m.net->config().num_classes;
  DIFFUSION_CHECK(K > 0 || (!o.sample.class_name && o.sample.guidance == 0.0 && o.sample.rescaled_phi == 0.0),
                  "'" << o.sample.checkpoint << "' holds an unconditional model: --class, --guidance and "
                                                "--rescaled-phi do not apply");
  const diffusion::NoiseSchedule schedule(m.betas);
  DIFFUSION_CHECK(o.sample.sampler == "ddpm" || o.sample.steps <= schedule.num_timesteps(),
                  "--steps " << o.sample.steps << " is more than the model's T = " << schedule.num_timesteps());

  // The reference: every image under --data (class folders or not), at the model's size and channels.
  diffusion::io::ImageFolderOptions fo;
  fo.decode.channels = m.info.channels;
  fo.decode.height = m.info.height;
  fo.decode.width = m.info.width;
  fo.decode.background = parse_background(m.stored.at("background").get<std::string>());
  fo.decode.upscale = m.stored.at("upscale").get<bool>();
  fo.skip_bad_files = o.skip_bad_files;
  const diffusion::io::ImageFolder data(o.data, fo);
  for (const auto& s : data.skipped()) std::fprintf(stderr, "train_images: skipped %s: %s\n", s.path.c_str(), s.reason.c_str());
  const std::string cache =
      o.cache.empty() ? reference_cache_path(fs::path(o.sample.checkpoint).parent_path().string(), o.inception) : o.cache;
  const auto metrics = train_images::make_folder_metrics({o.inception, o.classifier, cache}, data.images());

  examples::SamplerSettings settings;
  settings.sampler = o.sample.sampler;
  settings.ddim_steps = o.sample.steps;
  settings.spacing = diffusion::parse_spacing(o.sample.spacing);
  settings.precision = diffusion::kernels::parse_matmul_precision(o.sample.precision);
  settings.eta = o.sample.eta;
  settings.guidance = o.sample.guidance;
  settings.rescaled_phi = o.sample.rescaled_phi;
  settings.prediction = diffusion::parse_prediction(m.stored.at("prediction").get<std::string>());
  // A conditional model: every image of --class, or the classes in turn.
  std::vector<std::int64_t> classes;
  if (K > 0 && o.sample.class_name)
    classes.assign(static_cast<std::size_t>(o.n), parse_class(*o.sample.class_name, m.info.classes));
  else if (K > 0)
    classes = examples::classes_in_turn(o.n, K);

  std::printf("train_images eval: %d samples %dx%d from '%s', %s", o.n, m.info.height, m.info.width,
              o.sample.checkpoint.c_str(), settings.sampler.c_str());
  if (settings.sampler != "ddpm") std::printf(" %d steps", settings.ddim_steps);
  if (settings.eta) std::printf(", eta %g", *settings.eta);
  if (K > 0) std::printf(", guidance %g", settings.guidance);
  std::printf("\n  reference: %lld images of %s in %s, statistics %s in %s\n",
              static_cast<long long>(metrics->reference().stats.gaussian.count), o.data.c_str(),
              metrics->extractor_name().c_str(), diffusion::metrics::cache_status_name(metrics->reference().status),
              cache.c_str());
  if (!metrics->reference().reason.empty()) std::printf("  (%s)\n", metrics->reference().reason.c_str());
  std::fflush(stdout);

  double sampling_seconds = 0.0;
  const diffusion::metrics::SampleReport r =
      train_images::measure_samples(*m.net, schedule, settings, *metrics, o.n, o.batch, m.info.channels,
                                    m.info.height, m.info.width, o.sample.seed, classes, sampling_seconds, true);
  const double total = examples::seconds_since(start);
  examples::print_report(r, metrics->class_names(), {}, sampling_seconds, total);
  if (!o.json.empty()) {
    nlohmann::json j = examples::report_json(r, settings, schedule.num_timesteps(), o.sample.seed, o.batch,
                                             sampling_seconds, total);
    j["checkpoint"] = o.sample.checkpoint;
    j["data"] = o.data;
    j["extractor"] = metrics->extractor_name();
    if (K > 0) {
      j["guidance"] = settings.guidance;
      j["rescaled_phi"] = settings.rescaled_phi;
      j["class"] = o.sample.class_name ? nlohmann::json(*o.sample.class_name) : nlohmann::json("all in turn");
    }
    const std::string text = j.dump(2) + "\n";
    diffusion::io::write_file_atomically(o.json, text.data(), text.size());
    std::printf("  json: %s\n", o.json.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    examples::Ranks::init(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_images: %s.\n", one_line(e.what()).c_str());
    return 1;
  }
  CLI::App app{"Train a denoising diffusion model on a folder of images, and sample from it.", "train_images"};
  app.require_subcommand(1);
  app.option_defaults()->always_capture_default();
  const CLI::Validator spacings = examples::parsed_by(diffusion::parse_spacing, "SPACING");
  const std::string spacing_help =
      "where the steps fall among the T timesteps (not ddpm): linspace, leading, trailing, karras";
  const CLI::Validator precisions = examples::parsed_by(diffusion::kernels::parse_matmul_precision, "PRECISION");
  const std::string precision_help = examples::kPrecisionHelp;
  const CLI::Validator samplers(  // any name of diffusion::parse_sampler
      [](std::string& name) {
        try {
          diffusion::parse_sampler(name);
          return std::string();
        } catch (const std::exception&) {
          return "unknown sampler '" + name + "'; one of " + diffusion::sampler_names();
        }
      },
      "SAMPLER");

  TrainOptions t;
  CLI::App* train = app.add_subcommand("train", "train a U-Net on a folder of images");
  train->add_option("--data", t.data, "folder of PNG/JPEG/BMP/TGA/GIF images, searched recursively")->required();
  train->add_option("--channels", t.channels, "1 (gray) or 3 (RGB)")->check(CLI::IsMember({1, 3}));
  train->add_option("--size", t.size, "H, or H W: images resized (shorter side) and centre-cropped to it")
      ->expected(1, 2)->check(CLI::Range(4, 4096));
  train->add_flag("--labels", t.labels, "classes from the first level of subfolders (stored with the model)");
  train->add_flag("--conditional", t.conditional,
                  "a class-conditional model on those classes (needs --labels; sample with --class and --guidance)");
  train->add_option("--cond-drop-prob", t.cond_drop_prob,
                    "conditional runs: probability that a label is dropped (so the model also learns without it)")
      ->check(CLI::Range(0.0, 1.0));
  train->add_option("--background", t.background, "R,G,B under transparent pixels");
  train->add_flag("--skip-bad-files", t.skip_bad_files, "skip files that do not decode (and list them)");
  train->add_flag("--upscale", t.upscale, "enlarge images smaller than the crop instead of refusing them");
  train->add_flag("!--no-flip", t.flip, "no random horizontal flips");
  train->add_option("--block", t.block, "U-Net block")->check(CLI::IsMember({"convnext", "resnet"}));
  train->add_option("--dim", t.dim, "U-Net base channels")->check(CLI::Range(4, 4096));
  train->add_option("--dim-mults", t.dim_mults, "channel multipliers per resolution level")->delimiter(',');
  train->add_option("--timesteps", t.timesteps, "diffusion steps T")->check(CLI::Range(2, 100000));
  train->add_option("--schedule", t.schedule, "beta schedule")->check(CLI::IsMember({"linear", "cosine", "quadratic", "sigmoid"}));
  train->add_option("--loss", t.loss, "loss")->check(CLI::IsMember({"l1", "l2", "huber"}));
  train->add_option("--prediction", t.prediction, "what the network predicts")->check(CLI::IsMember({"eps", "x0", "v"}));
  train->add_option("--min-snr-gamma", t.min_snr_gamma,
                    "Min-SNR-gamma loss weighting (Hang et al. 2023, who recommend 5); 0: off, the primer's L_simple")
      ->check(CLI::Range(0.0, 1e9));
  train->add_option("--ema-decay", t.ema_decay, "EMA decay of the weights (0: no EMA)")->check(CLI::Range(0.0, 0.99999));
  train->add_option("--batch", t.batch, "images per optimisation step")->check(CLI::Range(1, 65536));
  train->add_option("--accumulate", t.accumulate, "micro-batches per step (same result, less memory)")->check(CLI::Range(1, 65536));
  train->add_option("--gradient-shards", t.gradient_shards,
                    "parts of each batch whose gradients are added in a fixed order, so that any number of ranks "
                    "(mpirun -np R, R dividing it) gives the same weights; stored with the run (0: the number of ranks)")
      ->check(CLI::Range(0, 65536));
  train->add_option("--lr", t.lr, "Adam learning rate")->check(CLI::PositiveNumber);
  train->add_option("--lr-warmup", t.lr_warmup,
                    "steps of linear learning-rate warm-up, from lr / N at the first step to lr at step N (0: none)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 40));
  train->add_option("--lr-decay", t.lr_decay, "learning-rate decay after the warm-up, reaching --lr-min x lr at the "
                                              "run's last step")
      ->check(CLI::IsMember({"none", "cosine", "linear"}));
  train->add_option("--lr-min", t.lr_min, "the rate the decay ends at, as a multiple of --lr")->check(CLI::Range(0.0, 1.0));
  train->add_option("--grad-clip", t.grad_clip, "max global gradient norm (0: none)")->check(CLI::NonNegativeNumber);
  train->add_option("--steps", t.steps, "optimisation steps (wins over --epochs)")->check(CLI::NonNegativeNumber);
  train->add_option("--epochs", t.epochs, "epochs")->check(CLI::Range(1, 1000000));
  train->add_option("--seed", t.seed, "seed of everything random");
  train->add_option("--out", t.out, "output folder");
  train->add_option("--resume", t.resume, "continue from a checkpoint.safetensors of this program");
  train->add_option("--sample-every", t.sample_every, "a preview grid every N steps (0: none)")->check(CLI::NonNegativeNumber);
  train->add_option("--checkpoint-every", t.checkpoint_every, "a checkpoint every N steps (0: at the end only)")
      ->check(CLI::NonNegativeNumber);
  train->add_option("--final-samples", t.final_samples, "images in samples.png")->check(CLI::Range(1, 4096));
  train->add_option("--final-sampler", t.final_sampler, "sampler of samples.png")->check(samplers);
  train->add_option("--sampling-steps", t.sampling_steps, "steps of every sampler but ddpm")->check(CLI::Range(1, 100000));
  train->add_option("--final-guidance", t.final_guidance, "conditional runs: guidance scale w of samples.png and the previews")
      ->check(CLI::Range(-1000.0, 1000.0));
  train->add_option("--eval-every", t.eval_every,
                    "every N steps, measure --eval-n EMA samples (DDIM, --sampling-steps) against the --data images: FID, "
                    "KID, precision, recall, appended to eval_log.csv (0: never; needs --inception or --classifier)")
      ->check(CLI::NonNegativeNumber);
  train->add_option("--eval-n", t.eval_n, "samples per measurement while training")->check(CLI::Range(2, 1000000));
  train->add_option("--inception", t.inception,
                    "feature extractor of the measurements: pytorch-fid's Inception-v3 weights in safetensors "
                    "(scripts/convert_fid_inception.py)");
  train->add_option("--classifier", t.classifier,
                    "feature extractor of the measurements for 1 x 28 x 28 images: the Fashion-MNIST classifier "
                    "(examples/fashion_classifier/fashion_classifier.safetensors)");
  train->add_option("--threads", t.threads, "threads (0: OpenMP's default)")->check(CLI::NonNegativeNumber);
  train->add_option("--precision", t.precision, precision_help + " of the training steps")->check(precisions);

  SampleOptions s;
  CLI::App* sample = app.add_subcommand("sample", "sample images from model.safetensors or checkpoint.safetensors");
  sample->add_option("--checkpoint", s.checkpoint, "weights or checkpoint written by `train_images train`")->required();
  sample->add_option("--n", s.n, "images")->check(CLI::Range(1, 65536));
  sample->add_option("--sampler", s.sampler, "sampler")->check(samplers);
  sample->add_option("--steps", s.steps, "steps of every sampler but ddpm")->check(CLI::Range(1, 100000));
  sample->add_option("--spacing", s.spacing, spacing_help)->check(spacings);
  sample->add_option("--precision", s.precision, precision_help + " of the model calls")->check(precisions);
  sample->add_option("--eta", s.eta, "noise scale of ddim / ancestral samplers");
  sample->add_option("--seed", s.seed, "seed");
  sample->add_option("--out", s.out, "PNG grid to write");
  sample->add_option("--class", s.class_name,
                     "conditional models: the class of every image (a class folder's name or index; -1: no class); "
                     "default: a class grid, one row per class");
  sample->add_option("--guidance", s.guidance, "conditional models: classifier-free guidance scale w (0: none)")
      ->check(CLI::Range(-1000.0, 1000.0));
  sample->add_option("--rescaled-phi", s.rescaled_phi, "conditional models: rescaled guidance (Lin et al. 2023), 0 to 1")
      ->check(CLI::Range(0.0, 1.0));
  sample->add_option("--gif", s.gif, "also write the denoising of the first 8 images as a GIF");
  sample->add_option("--threads", s.threads, "threads (0: OpenMP's default)")->check(CLI::NonNegativeNumber);

  EvalOptions ev;
  CLI::App* eval = app.add_subcommand("eval", "measure a model's samples against a folder of images: FID, KID, "
                                              "precision, recall");
  eval->add_option("--checkpoint", ev.sample.checkpoint, "weights or checkpoint written by `train_images train`")->required();
  eval->add_option("--data", ev.data, "the reference images: a folder (usually the training folder), decoded at the "
                                     "model's size and channels")->required();
  eval->add_option("--inception", ev.inception,
                   "feature extractor: pytorch-fid's Inception-v3 weights in safetensors (scripts/convert_fid_inception.py)");
  eval->add_option("--classifier", ev.classifier,
                   "feature extractor for 1 x 28 x 28 images: the Fashion-MNIST classifier's weights");
  eval->add_option("--n", ev.n, "samples to measure")->check(CLI::Range(2, 1000000));
  eval->add_option("--batch", ev.batch, "images sampled at a time")->check(CLI::Range(1, 4096));
  eval->add_option("--sampler", ev.sample.sampler, "sampler")->check(samplers);
  eval->add_option("--steps", ev.sample.steps, "steps of every sampler but ddpm")->check(CLI::Range(1, 100000));
  eval->add_option("--spacing", ev.sample.spacing, spacing_help)->check(spacings);
  eval->add_option("--precision", ev.sample.precision, precision_help + " of the model calls")->check(precisions);
  eval->add_option("--eta", ev.sample.eta, "noise scale of ddim / ancestral samplers");
  eval->add_option("--seed", ev.sample.seed, "seed of x_T and the sampler's noise");
  eval->add_option("--class", ev.sample.class_name,
                   "conditional models: the class of every sample (a class folder's name or index; -1: no class); "
                   "default: the classes in turn");
  eval->add_option("--guidance", ev.sample.guidance, "conditional models: classifier-free guidance scale w (0: none)")
      ->check(CLI::Range(-1000.0, 1000.0));
  eval->add_option("--rescaled-phi", ev.sample.rescaled_phi, "conditional models: rescaled guidance, 0 to 1")
      ->check(CLI::Range(0.0, 1.0));
  eval->add_option("--cache", ev.cache,
                   "reference statistics cache (default: reference_inception.safetensors or "
                   "reference_classifier.safetensors next to the checkpoint; recomputed when the images or weights differ)");
  eval->add_flag("--skip-bad-files", ev.skip_bad_files, "skip files of --data that do not decode (and list them)");
  eval->add_option("--json", ev.json, "also write the report as JSON to this file");
  eval->add_option("--threads", ev.sample.threads, "threads (0: OpenMP's default)")->check(CLI::NonNegativeNumber);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    DIFFUSION_CHECK(*train || examples::Ranks::get().size() == 1,
                    "only `train` runs on several ranks; run `sample` and `eval` as one process");
    if (*train) return run_train(t, given_flags(*train));
    if (*eval) return run_eval(ev);
    return run_sample(s);
  } catch (const std::exception& e) {
    if (examples::Ranks::get().size() > 1) examples::Ranks::get().fail("train_images", one_line(e.what()), 1);
    std::fflush(stdout);
    std::fprintf(stderr, "train_images: %s.\n", one_line(e.what()).c_str());
    return 1;
  }
}
