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

int run_train(const TrainOptions& flags, const std::set<std::string>& given) {
  // A resumed run: options, network and tensors checked against the checkpoint before anything is allocated.
  std::unique_ptr<diffusion::io::SafetensorsReader> resume_reader;
  std::optional<ResumedRun> resumed;
  if (!flags.resume.empty()) {
    DIFFUSION_CHECK(fs::exists(flags.resume),
                    "--resume '" << flags.resume << "' does not exist. Pass the checkpoint.safetensors of the run to "
                                 << "continue (results/fashion_mnist/checkpoint.safetensors by default)");
    resume_reader = std::make_unique<diffusion::io::SafetensorsReader>(flags.resume);
    resumed = prepare_resume(*resume_reader, flags, given);
  }
  TrainOptions o = resumed ? resumed->options : flags;
  const std::vector<std::string> notes = resumed ? resumed->notes : std::vector<std::string>{};
  if (o.threads > 0) diffusion::set_num_threads(o.threads);
  examples::Ranks& ranks = examples::Ranks::get();
  o.gradient_shards = ranks.gradient_shards(o.gradient_shards);

  // Everything that can be wrong with the inputs is found before the first step.
  const Images images = load_training_images(o.data);  // (N, 1, H, W)
  const Index N = images.dim(0), H = images.dim(2), W = images.dim(3);
  if (resumed) check_resume_images(*resumed, N, o.data);
  const std::vector<std::int64_t> labels = o.conditional ? load_training_labels(o.data, N) : std::vector<std::int64_t>{};
  const diffusion::UnetConfig config =
      resumed ? resumed->config : unet_config(o.block, o.dim, o.dim_mults, 1, o.conditional ? kNumClasses : 0);
  const diffusion::UnetPlan plan = resumed ? resumed->plan : plan_model(config);
  const Index divisor = Index(1) << (config.levels() - 1);
  DIFFUSION_CHECK(H % divisor == 0 && W % divisor == 0,
                  "--dim-mults " << int_list_text(o.dim_mults) << " gives " << config.levels() << " resolution levels, "
                                 << "so the image size must be divisible by " << divisor << ", but the images are "
                                 << H << "x" << W << "; use fewer levels (e.g. 1,2,4)");
  if (ranks.leader()) check_output_folder(o.out);  // the leader writes every output

  const fs::path out(o.out);
  const std::string checkpoint_path = join(out, "checkpoint.safetensors");
  const std::string model_path = join(out, "model.safetensors");
  const std::string samples_path = join(out, "samples.png");
  const std::string gif_path = join(out, "denoising.gif");

  diffusion::Unet<float> net(config, o.seed);
  const diffusion::TrainerOptions to = trainer_options(o);
  diffusion::Trainer<float> trainer(net, noise_schedule(o), to);
  if (resume_reader) {
    diffusion::load_checkpoint(*resume_reader, trainer);
    resume_reader.reset();  // the file's bytes are not needed any more
  }
  {  // every rank must train the same run on the same data
    nlohmann::json run = to_json(o);
    for (const char* local : {"data", "out", "threads"}) run.erase(local);  // may differ between machines
    run["resume-step"] = trainer.step_count();
    ranks.join(trainer, run.dump(),
               std::to_string(N) + " images " + diffusion::hash_key(diffusion::fnv1a64(
                                                    images.data(), static_cast<std::size_t>(images.numel()) * sizeof(float))) +
                   (o.conditional ? ", labels " + diffusion::hash_key(diffusion::fnv1a64(
                                                      labels.data(), labels.size() * sizeof(std::int64_t)))
                                  : std::string()));
  }

  diffusion::BatchOptions bo;
  bo.batch_size = o.batch;
  bo.seed = o.seed;
  diffusion::BatchSampler<float> sampler(images, bo, o.conditional ? &labels : nullptr);
  const std::int64_t per_epoch = sampler.batches_per_epoch();
  const std::int64_t total = o.steps > 0 ? o.steps : static_cast<std::int64_t>(o.epochs) * per_epoch;
  const std::int64_t first = trainer.step_count();

  const nlohmann::json stored = stored_options(o, N, H, total);  // what `sample` and `--resume` read back

  const auto parameters = static_cast<std::size_t>(plan.parameter_count);  // params().size() has padding too
  if (ranks.leader()) {
  std::fprintf(stderr, "fashion_mnist: training a %s%s U-Net (dim %d, dim-mults %s, %zu parameters) on %lld images %lldx%lld, "
                       "steps %lld to %lld (%lld per epoch), batch %d, %s loss, T = %d %s; output in %s\n",
               o.conditional ? "class-conditional " : "", o.block.c_str(), o.dim, int_list_text(o.dim_mults).c_str(), parameters, static_cast<long long>(N),
               static_cast<long long>(H), static_cast<long long>(W), static_cast<long long>(first),
               static_cast<long long>(total), static_cast<long long>(per_epoch), o.batch, o.loss.c_str(), o.timesteps,
               o.schedule.c_str(), o.out.c_str());
  for (const std::string& note : notes) std::fprintf(stderr, "fashion_mnist: note: %s\n", note.c_str());
  if (first >= total)
    std::fprintf(stderr, "fashion_mnist: note: the checkpoint is at step %lld, the run's length is %lld steps: nothing "
                         "to train, writing the final outputs\n",
                 static_cast<long long>(first), static_cast<long long>(total));
  if (ranks.size() > 1)
    std::fprintf(stderr, "fashion_mnist: %d ranks, %d gradient shards: rank 0 prints and writes\n", ranks.size(),
                 o.gradient_shards);
  }

  ProgressDisplay progress(first, total, per_epoch, resumed ? resumed->info.elapsed : 0.0,
                           ranks.leader() ? stderr : nullptr);
  const TrainLog log(join(out, "train_log.csv"), ranks.leader());
  auto save = [&] {
    diffusion::save_checkpoint(checkpoint_path, trainer,
                               {{kOptionsKey, stored.dump()}, {kRunKey, run_info(progress.elapsed()).dump()}});
  };
  auto settings_for = [&](const std::string& sampler_name) {
    SamplerSettings s;
    s.sampler = sampler_name;
    s.ddim_steps = std::min(kPreviewDdimSteps, o.timesteps);
    s.prediction = to.prediction;
    if (o.conditional) s.guidance = o.final_guidance;
    return s;
  };
  // The settings for n images: a conditional run's images take the classes in turn (0, 1, ..., 9, 0, ...).
  auto settings_for_images = [&](const std::string& sampler_name, Index n) {
    SamplerSettings s = settings_for(sampler_name);
    if (o.conditional) s.classes = examples::classes_in_turn(n, kNumClasses);
    return s;
  };

  // Measured quality every --eval-every steps: the EMA network, DDIM 50, --eval-n samples from the same x_T each time.
  std::unique_ptr<diffusion::metrics::FashionMnistMetrics> metrics;
  std::unique_ptr<EvalLog> eval_log;
  if (o.eval_every > 0 && ranks.leader()) {
    DIFFUSION_CHECK(H == 28 && W == 28, "--eval-every: the Fashion-MNIST classifier measures 28x28 images, the data are "
                                            << H << "x" << W);
    metrics = make_metrics(o.data, "test", kDefaultClassifier, join(out, "reference_test.safetensors"));
    eval_log = std::make_unique<EvalLog>(join(out, "eval_log.csv"));
  }
  auto evaluate = [&](std::int64_t s) {
    double sampling_seconds = 0.0;
    const auto t0 = std::chrono::steady_clock::now();
    const EvalResult r = evaluate_samples(trainer.sampling_model(), trainer.schedule(), settings_for("ddim"), *metrics,
                                          o.eval_n, 250, o.seed, eval_classes(trainer.sampling_model(), o.eval_n, {}),
                                          sampling_seconds, false);
    const double seconds = examples::seconds_since(t0);
    eval_log->add(s, static_cast<double>(s) / static_cast<double>(per_epoch), r.report, seconds);
    std::fprintf(stderr, "\nfashion_mnist: step %lld: %s%s\n", static_cast<long long>(s), r.report.summary().c_str(),
                 r.accuracy.asked.empty() ? "" : (", class accuracy " + r.accuracy.summary()).c_str());
  };

  examples::TrainingLoop loop;
  loop.total_steps = total;
  loop.steps_per_epoch = per_epoch;
  loop.checkpoint_every = o.checkpoint_every;
  loop.checkpoint_path = checkpoint_path;
  loop.resumed_from = o.resume;
  loop.divergence_advice = "Try a lower --lr or --grad-clip 1";
  loop.resume_advice = "(both may be changed with --resume)";
  loop.save = save;
  loop.leader = ranks.leader();
  loop.after_step = [&](std::int64_t s) {
    if (o.sample_every > 0 && s % o.sample_every == 0) {
      char name[64];
      std::snprintf(name, sizeof name, "preview_step_%06lld.png", static_cast<long long>(s));
      Images x;
      diffusion::Rng rng = diffusion::Rng(o.seed).fork(kPreviewStream);
      generate(trainer.sampling_model(), trainer.schedule(), settings_for_images("ddim", kPreviewImages), kPreviewImages,
               1, H, W, rng, x, nullptr);
      write_grid_png(join(out, name), x);
    }
    if (metrics && s % o.eval_every == 0) evaluate(s);
  };
  loop.run(trainer, sampler, progress, log);
  if (!ranks.leader()) return 0;  // the leader writes the final outputs

  // The final outputs.
  save();
  diffusion::save_unet_weights(net, model_path, trainer.sampling_weights(),
                               {{kOptionsKey, stored.dump()}, {"fashion_mnist.weights", trainer.ema() ? "ema" : "raw"}});
  // A conditional run's grid is a class grid: one row per class, ceil(final_samples / 10) images each.
  const int per_row = (o.final_samples + kNumClasses - 1) / kNumClasses;
  const Index final_n = o.conditional ? static_cast<Index>(per_row) * kNumClasses : o.final_samples;
  SamplerSettings final_settings = settings_for(o.final_sampler);
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
  generate(trainer.sampling_model(), trainer.schedule(), final_settings, final_n, 1, H, W, rng, x, &gif);
  if (o.conditional) write_grid_png(samples_path, x, per_row);
  else write_grid_png(samples_path, x);
  gif.write(gif_path);

  std::printf("fashion_mnist: trained to step %lld in %s", static_cast<long long>(trainer.step_count()),
              format_duration(progress.elapsed()).c_str());
  if (trainer.step_count() > first)
    std::printf(", loss %.4f (mean of the last %lld steps)", progress.mean_loss(),
                static_cast<long long>(std::min<std::int64_t>(100, trainer.step_count() - first)));
  std::printf("\n");
  std::printf("  checkpoint: %s  (resume with --resume, sample with `fashion_mnist sample --checkpoint ...`)\n",
              checkpoint_path.c_str());
  std::printf("  weights:    %s  (%s weights, a PyTorch-compatible state_dict)\n", model_path.c_str(),
              trainer.ema() ? "EMA" : "raw");
  std::printf("  samples:    %s%s\n", samples_path.c_str(), o.conditional ? "  (one row per class, 0-9)" : "");
  std::printf("  denoising:  %s\n", gif_path.c_str());
  std::printf("  log:        %s\n", log.path().c_str());
  if (eval_log) std::printf("  metrics:    %s\n", eval_log->path().c_str());
  return 0;
}

}  // namespace fashion_mnist
