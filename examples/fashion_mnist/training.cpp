#include "training.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <system_error>

#include <nlohmann/json.hpp>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/io/atomic_file.hpp"
#include "diffusion/io/idx.hpp"
#include "diffusion/io/safetensors.hpp"
#include "diffusion/model/unet_plan.hpp"
#include "diffusion/model/unet_weights.hpp"
#include "diffusion/train/checkpoint.hpp"
#include "diffusion/train/dataset.hpp"
#include "diffusion/train/trainer.hpp"
#include "evaluation.hpp"
#include "common/ranks.hpp"
#include "common/training_loop.hpp"
#include "progress.hpp"
#include "resume.hpp"

namespace fashion_mnist {

namespace fs = std::filesystem;
using diffusion::Error;

namespace {

constexpr int kPreviewImages = 16;   // a 4x4 grid
constexpr int kPreviewDdimSteps = 50;
constexpr int kGifImages = 8;        // one row

std::string join(const fs::path& dir, const std::string& name) { return (dir / name).string(); }

}  // namespace

Images load_training_images(const std::string& data_dir) {
  const fs::path dir(data_dir);
  std::error_code ec;
  const auto status = fs::status(dir, ec);
  DIFFUSION_CHECK(fs::exists(status), "the data folder '" << data_dir << "' does not exist. Install the Debian package "
                                                          << "dataset-fashion-mnist or pass --data DIR");
  DIFFUSION_CHECK(fs::is_directory(status), "--data '" << data_dir << "' is not a folder. Pass --data DIR, the folder "
                                                       << "that holds " << kTrainImagesFile);
  std::string path = join(dir, kTrainImagesFile);
  if (!fs::exists(path, ec)) {
    const std::string plain = join(dir, "train-images-idx3-ubyte");  // a gunzipped copy will do as well
    DIFFUSION_CHECK(fs::exists(plain, ec), "cannot read " << path << ": file does not exist. Install the Debian package "
                                                          << "dataset-fashion-mnist or pass --data DIR");
    path = plain;
  }
  try {
    return diffusion::io::load_idx_images<float>(path);
  } catch (const Error& e) {
    throw Error(std::string("cannot read the training images: ") + e.what() +
                ". The file is damaged or is not an IDX image file: reinstall it (apt-get install --reinstall "
                "dataset-fashion-mnist) or pass --data DIR with intact files");
  }
}

std::vector<std::int64_t> load_training_labels(const std::string& data_dir, Index images) {
  const fs::path dir(data_dir);
  std::error_code ec;
  std::string path = join(dir, kTrainLabelsFile);
  if (!fs::exists(path, ec)) {
    const std::string plain = join(dir, "train-labels-idx1-ubyte");
    DIFFUSION_CHECK(fs::exists(plain, ec), "--conditional: cannot read " << path << ": file does not exist (the "
                                                                         << "labels of the training images). Install "
                                                                         << "dataset-fashion-mnist or pass --data DIR");
    path = plain;
  }
  diffusion::io::IdxArray a;
  try {
    a = diffusion::io::read_idx(path);
  } catch (const Error& e) {
    throw Error(std::string("--conditional: cannot read the training labels: ") + e.what());
  }
  DIFFUSION_CHECK(a.dims.size() == 1, "--conditional: '" << path << "' is not an IDX label file (expected one "
                                                         << "dimension, the file has " << a.dims.size() << ")");
  DIFFUSION_CHECK(static_cast<Index>(a.data.size()) == images,
                  "--conditional: '" << path << "' holds " << a.data.size() << " labels for " << images
                                     << " training images; the two files must come from the same data set");
  std::vector<std::int64_t> labels(a.data.begin(), a.data.end());
  for (std::size_t i = 0; i < labels.size(); ++i)
    DIFFUSION_CHECK(labels[i] >= 0 && labels[i] < kNumClasses,
                    "--conditional: '" << path << "': label " << labels[i] << " of image " << i
                                       << " is outside the " << kNumClasses << " Fashion-MNIST classes [0, "
                                       << kNumClasses << ")");
  return labels;
}

void check_output_folder(const std::string& out) {
  std::error_code ec;
  fs::create_directories(out, ec);
  DIFFUSION_CHECK(!ec && fs::is_directory(out, ec), "cannot create the output folder '"
                                                         << out << "': " << (ec ? ec.message() : "not a folder")
                                                         << ". Pass --out DIR with a folder you can write to");
  const std::string probe = join(out, ".fashion_mnist-write-probe");
  try {
    diffusion::io::write_file_atomically(probe, "ok\n", 3);
  } catch (const Error& e) {
    throw Error("cannot write to the output folder '" + out + "' (" + e.what() +
                "). Pass --out DIR with a folder you can write to");
  }
  fs::remove(probe, ec);
}

namespace {

// A run, built and checked before its first step: the options (merged with a resumed checkpoint's), the data, the
// network, the trainer and the batches, where the outputs go. Held by pointer: the trainer refers to the network
// and the batch sampler to the images.
struct Run {
  TrainOptions o;
  std::vector<std::string> notes;  // of the resume merge, printed with the summary
  std::optional<ResumedRun> resumed;
  Images images;  // (N, 1, H, W) in [-1, 1]
  Index N = 0, H = 0, W = 0;
  std::vector<std::int64_t> labels;  // (N) conditional runs only
  diffusion::UnetPlan plan;
  std::unique_ptr<diffusion::Unet<float>> net;
  diffusion::TrainerOptions trainer_options;
  std::unique_ptr<diffusion::Trainer<float>> trainer;
  std::unique_ptr<diffusion::BatchSampler<float>> batches;
  std::int64_t per_epoch = 0, total = 0, first = 0;  // steps per epoch, the run's length, the step it starts at
  nlohmann::json stored;                             // the options as `sample` and `--resume` read them back
  fs::path out;
  std::string path(const std::string& name) const { return join(out, name); }
};

// Sampler settings of the previews, the evaluations and the final grid. A conditional run's images take the classes
// in turn (0, 1, ..., 9, 0, ...) when n is given.
SamplerSettings settings_for(const Run& run, const std::string& sampler_name, Index n = 0) {
  SamplerSettings s;
  s.sampler = sampler_name;
  s.ddim_steps = std::min(kPreviewDdimSteps, run.o.timesteps);
  s.prediction = run.trainer_options.prediction;
  if (run.o.conditional) s.guidance = run.o.final_guidance;
  if (run.o.conditional && n > 0) s.classes = examples::classes_in_turn(n, kNumClasses);
  return s;
}

// 1. Building: everything that can be wrong with the inputs is found before the first step.
std::unique_ptr<Run> build_run(const TrainOptions& flags, const std::set<std::string>& given) {
  auto run = std::make_unique<Run>();
  // A resumed run: options, network and tensors checked against the checkpoint before anything is allocated.
  std::unique_ptr<diffusion::io::SafetensorsReader> resume_reader;
  if (!flags.resume.empty()) {
    DIFFUSION_CHECK(fs::exists(flags.resume),
                    "--resume '" << flags.resume << "' does not exist. Pass the checkpoint.safetensors of the run to "
                                 << "continue (results/fashion_mnist/checkpoint.safetensors by default)");
    resume_reader = std::make_unique<diffusion::io::SafetensorsReader>(flags.resume);
    run->resumed = prepare_resume(*resume_reader, flags, given);
  }
  const std::optional<ResumedRun>& resumed = run->resumed;
  TrainOptions& o = run->o;
  o = resumed ? resumed->options : flags;
  if (resumed) run->notes = resumed->notes;
  if (o.threads > 0) diffusion::set_num_threads(o.threads);
  examples::Ranks& ranks = examples::Ranks::get();
  o.gradient_shards = ranks.gradient_shards(o.gradient_shards);

  run->images = load_training_images(o.data);  // (N, 1, H, W)
  run->N = run->images.dim(0);
  run->H = run->images.dim(2);
  run->W = run->images.dim(3);
  if (resumed) check_resume_images(*resumed, run->N, o.data);
  if (o.conditional) run->labels = load_training_labels(o.data, run->N);
  const diffusion::UnetConfig config =
      resumed ? resumed->config : unet_config(o.block, o.dim, o.dim_mults, 1, o.conditional ? kNumClasses : 0);
  run->plan = resumed ? resumed->plan : plan_model(config);
  const Index divisor = Index(1) << (config.levels() - 1);
  DIFFUSION_CHECK(run->H % divisor == 0 && run->W % divisor == 0,
                  "--dim-mults " << int_list_text(o.dim_mults) << " gives " << config.levels() << " resolution levels, "
                                 << "so the image size must be divisible by " << divisor << ", but the images are "
                                 << run->H << "x" << run->W << "; use fewer levels (e.g. 1,2,4)");
  if (ranks.leader()) check_output_folder(o.out);  // the leader writes every output
  run->out = fs::path(o.out);

  diffusion::BatchOptions bo;
  bo.batch_size = o.batch;
  bo.seed = o.seed;
  run->batches = std::make_unique<diffusion::BatchSampler<float>>(run->images, bo,
                                                                  o.conditional ? &run->labels : nullptr);
  run->per_epoch = run->batches->batches_per_epoch();
  run->total = o.steps > 0 ? o.steps : static_cast<std::int64_t>(o.epochs) * run->per_epoch;
  // The default warm-up is sized for the default run; a new run that is not longer and does not give --lr-warmup (a
  // quick try) warms up for a tenth of its steps, so that the default decay still has steps to act on. The checkpoint
  // stores the warm-up that ran.
  if (!resumed && !given.count("lr-warmup") && run->total <= o.lr_warmup) {
    const std::int64_t shortened = run->total / 10;
    run->notes.push_back("the run's " + std::to_string(run->total) + " steps are not more than the default --lr-warmup " +
                         std::to_string(o.lr_warmup) + ": warming up for " + std::to_string(shortened) + " steps");
    o.lr_warmup = shortened;
  }

  run->net = std::make_unique<diffusion::Unet<float>>(config, o.seed);
  run->trainer_options = trainer_options(o, run->total);
  run->trainer = std::make_unique<diffusion::Trainer<float>>(*run->net, noise_schedule(o), run->trainer_options);
  if (resume_reader) {
    diffusion::load_checkpoint(*resume_reader, *run->trainer);
    resume_reader.reset();  // the file's bytes are not needed any more
  }
  {  // every rank must train the same run on the same data
    nlohmann::json settings = to_json(o);
    for (const char* local : {"data", "out", "threads"}) settings.erase(local);  // may differ between machines
    settings["resume-step"] = run->trainer->step_count();
    const auto bytes = [](const auto& v, std::size_t n) { return diffusion::hash_key(diffusion::fnv1a64(v, n)); };
    ranks.join(*run->trainer, settings.dump(),
               std::to_string(run->N) + " images " +
                   bytes(run->images.data(), static_cast<std::size_t>(run->images.numel()) * sizeof(float)) +
                   (o.conditional ? ", labels " + bytes(run->labels.data(), run->labels.size() * sizeof(std::int64_t))
                                  : std::string()));
  }

  run->first = run->trainer->step_count();
  run->stored = stored_options(o, run->N, run->H, run->total);
  return run;
}

void print_summary(const Run& run, int ranks) {
  const TrainOptions& o = run.o;
  const auto parameters = static_cast<std::size_t>(run.plan.parameter_count);  // params().size() has padding too
  std::fprintf(stderr, "fashion_mnist: training a %s%s U-Net (dim %d, dim-mults %s, %zu parameters) on %lld images "
                       "%lldx%lld, steps %lld to %lld (%lld per epoch), batch %d, %s loss, T = %d %s%s; output in %s\n",
               o.conditional ? "class-conditional " : "", o.block.c_str(), o.dim, int_list_text(o.dim_mults).c_str(),
               parameters, static_cast<long long>(run.N), static_cast<long long>(run.H), static_cast<long long>(run.W),
               static_cast<long long>(run.first), static_cast<long long>(run.total),
               static_cast<long long>(run.per_epoch), o.batch, o.loss.c_str(), o.timesteps, o.schedule.c_str(),
               examples::precision_note(diffusion::kernels::parse_matmul_precision(o.precision)).c_str(), o.out.c_str());
  const diffusion::LrSchedule& lr = run.trainer_options.lr_schedule;
  if (!lr.is_constant())
    std::fprintf(stderr, "fashion_mnist: learning rate %s\n", lr.describe(run.trainer_options.adam.lr).c_str());
  if (o.min_snr_gamma > 0.0)
    std::fprintf(stderr, "fashion_mnist: Min-SNR-gamma loss weighting, gamma %g\n", o.min_snr_gamma);
  for (const std::string& note : run.notes) std::fprintf(stderr, "fashion_mnist: note: %s\n", note.c_str());
  if (run.first >= run.total)
    std::fprintf(stderr, "fashion_mnist: note: the checkpoint is at step %lld, the run's length is %lld steps: nothing "
                         "to train, writing the final outputs\n",
                 static_cast<long long>(run.first), static_cast<long long>(run.total));
  if (ranks > 1)
    std::fprintf(stderr, "fashion_mnist: %d ranks, %d gradient shards: rank 0 prints and writes\n", ranks,
                 o.gradient_shards);
}

void save_checkpoint(const Run& run, const ProgressDisplay& progress) {
  diffusion::save_checkpoint(run.path("checkpoint.safetensors"), *run.trainer,
                             {{kOptionsKey, run.stored.dump()}, {kRunKey, run_info(progress.elapsed()).dump()}});
}

// 2. The loop: the steps, with checkpoints, previews every --sample-every steps and measurements every --eval-every
// steps (returns the measurements' log, or null).
std::unique_ptr<EvalLog> train_steps(Run& run, ProgressDisplay& progress, const TrainLog& log, bool leader) {
  const TrainOptions& o = run.o;
  diffusion::Trainer<float>& trainer = *run.trainer;
  // Measured quality every --eval-every steps: the EMA network, DDIM 50, --eval-n samples from the same x_T each time.
  std::unique_ptr<diffusion::metrics::FashionMnistMetrics> metrics;
  std::unique_ptr<EvalLog> eval_log;
  if (o.eval_every > 0 && leader) {
    DIFFUSION_CHECK(run.H == 28 && run.W == 28, "--eval-every: the Fashion-MNIST classifier measures 28x28 images, "
                                                "the data are " << run.H << "x" << run.W);
    metrics = make_metrics(o.data, "test", kDefaultClassifier, run.path("reference_test.safetensors"));
    eval_log = std::make_unique<EvalLog>(run.path("eval_log.csv"));
  }
  const auto evaluate = [&](std::int64_t s) {
    double sampling_seconds = 0.0;
    const auto t0 = std::chrono::steady_clock::now();
    const EvalResult r = evaluate_samples(trainer.sampling_model(), trainer.schedule(), settings_for(run, "ddim"),
                                          *metrics, o.eval_n, 250, o.seed,
                                          eval_classes(trainer.sampling_model(), o.eval_n, {}), sampling_seconds, false);
    const double seconds = examples::seconds_since(t0);
    eval_log->add(s, static_cast<double>(s) / static_cast<double>(run.per_epoch), r.report, seconds);
    std::fprintf(stderr, "\nfashion_mnist: step %lld: %s%s\n", static_cast<long long>(s), r.report.summary().c_str(),
                 r.accuracy.asked.empty() ? "" : (", class accuracy " + r.accuracy.summary()).c_str());
  };

  examples::TrainingLoop loop;
  loop.total_steps = run.total;
  loop.steps_per_epoch = run.per_epoch;
  loop.checkpoint_every = o.checkpoint_every;
  loop.checkpoint_path = run.path("checkpoint.safetensors");
  loop.resumed_from = o.resume;
  loop.divergence_advice = "Try a lower --lr or --grad-clip 1";
  loop.resume_advice = "(both may be changed with --resume)";
  loop.save = [&] { save_checkpoint(run, progress); };
  loop.leader = leader;
  loop.after_step = [&](std::int64_t s) {
    if (o.sample_every > 0 && s % o.sample_every == 0) {
      char name[64];
      std::snprintf(name, sizeof name, "preview_step_%06lld.png", static_cast<long long>(s));
      Images x;
      diffusion::Rng rng = diffusion::Rng(o.seed).fork(kPreviewStream);
      generate(trainer.sampling_model(), trainer.schedule(), settings_for(run, "ddim", kPreviewImages), kPreviewImages,
               1, run.H, run.W, rng, x, nullptr);
      write_grid_png(run.path(name), x);
    }
    if (metrics && s % o.eval_every == 0) evaluate(s);
  };
  loop.run(trainer, *run.batches, progress, log);
  return eval_log;
}

// 3. The outputs (the leader's): the last checkpoint, the sampling weights, a grid of samples and its GIF, and the
// summary on stdout.
void write_outputs(const Run& run, const ProgressDisplay& progress, const TrainLog& log, const EvalLog* eval_log) {
  const TrainOptions& o = run.o;
  diffusion::Trainer<float>& trainer = *run.trainer;
  const std::string checkpoint_path = run.path("checkpoint.safetensors"), model_path = run.path("model.safetensors");
  const std::string samples_path = run.path("samples.png"), gif_path = run.path("denoising.gif");
  save_checkpoint(run, progress);
  diffusion::save_unet_weights(*run.net, model_path, trainer.sampling_weights(),
                               {{kOptionsKey, run.stored.dump()},
                                {"fashion_mnist.weights", trainer.ema() ? "ema" : "raw"}});
  // A conditional run's grid is a class grid: one row per class, ceil(final_samples / 10) images each.
  const int per_row = (o.final_samples + kNumClasses - 1) / kNumClasses;
  const Index final_n = o.conditional ? static_cast<Index>(per_row) * kNumClasses : o.final_samples;
  SamplerSettings final_settings = settings_for(run, o.final_sampler);
  if (o.conditional) final_settings.classes = examples::class_grid_ids(kNumClasses, per_row);
  // A class grid's GIF shows the first image of each row: one per class.
  const int sampler_steps = final_settings.steps(o.timesteps);
  DenoisingRecorder gif = o.conditional ? examples::class_grid_recorder(kNumClasses, per_row, sampler_steps)
                                        : DenoisingRecorder(kGifImages, sampler_steps);
  Images x;  // (final_n, 1, H, W)
  diffusion::Rng rng = diffusion::Rng(o.seed).fork(kSampleStream);
  char class_note[64] = "";
  if (o.conditional) std::snprintf(class_note, sizeof class_note, ", one row per class, guidance %g", o.final_guidance);
  std::fprintf(stderr, "fashion_mnist: sampling %lld images (%s, %d steps%s)\n", static_cast<long long>(final_n),
               o.final_sampler.c_str(), sampler_steps, class_note);
  generate(trainer.sampling_model(), trainer.schedule(), final_settings, final_n, 1, run.H, run.W, rng, x, &gif);
  if (o.conditional) write_grid_png(samples_path, x, per_row);
  else write_grid_png(samples_path, x);
  gif.write(gif_path);

  std::printf("fashion_mnist: trained to step %lld in %s", static_cast<long long>(trainer.step_count()),
              format_duration(progress.elapsed()).c_str());
  if (trainer.step_count() > run.first)
    std::printf(", loss %.4f (mean of the last %lld steps)", progress.mean_loss(),
                static_cast<long long>(std::min<std::int64_t>(100, trainer.step_count() - run.first)));
  std::printf("\n");
  std::printf("  checkpoint: %s  (resume with --resume, sample with `fashion_mnist sample --checkpoint ...`)\n",
              checkpoint_path.c_str());
  std::printf("  weights:    %s  (%s weights, a PyTorch-compatible state_dict)\n", model_path.c_str(),
              trainer.ema() ? "EMA" : "raw");
  std::printf("  samples:    %s%s\n", samples_path.c_str(), o.conditional ? "  (one row per class, 0-9)" : "");
  std::printf("  denoising:  %s\n", gif_path.c_str());
  std::printf("  log:        %s\n", log.path().c_str());
  if (eval_log) std::printf("  metrics:    %s\n", eval_log->path().c_str());
}

}  // namespace

int run_train(const TrainOptions& flags, const std::set<std::string>& given) {
  const std::unique_ptr<Run> run = build_run(flags, given);
  const examples::Ranks& ranks = examples::Ranks::get();
  if (ranks.leader()) print_summary(*run, ranks.size());
  ProgressDisplay progress(run->first, run->total, run->per_epoch, run->resumed ? run->resumed->info.elapsed : 0.0,
                           ranks.leader() ? stderr : nullptr);
  const TrainLog log(run->path("train_log.csv"), ranks.leader());
  const std::unique_ptr<EvalLog> eval_log = train_steps(*run, progress, log, ranks.leader());
  if (!ranks.leader()) return 0;  // the leader writes the final outputs
  write_outputs(*run, progress, log, eval_log.get());
  return 0;
}

}  // namespace fashion_mnist
