#include "resume.hpp"

#include "common/option_table.hpp"

#include "diffusion/core/error.hpp"
#include "diffusion/train/checkpoint.hpp"

namespace fashion_mnist {

using diffusion::Error;

nlohmann::json stored_options(const TrainOptions& o, diffusion::Index images, diffusion::Index image_size,
                              std::int64_t total_steps) {
  nlohmann::json stored = to_json(o);
  stored["images"] = images;
  stored["image-size"] = image_size;
  stored["total-steps"] = total_steps;
  return stored;
}

nlohmann::json run_info(double elapsed_s) {
  nlohmann::json run;
  run["elapsed_s"] = elapsed_s;
  return run;
}

namespace {

// A metadata value of `reader` that must be a JSON object; errors name the file and the key.
nlohmann::json metadata_object(const diffusion::io::SafetensorsReader& reader, const std::string& key) {
  const std::string& text = reader.metadata().at(key);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error("'" + reader.path() + "': malformed '" + key + "' metadata (" + e.what() + ")");
  }
  DIFFUSION_CHECK(j.is_object(), "'" << reader.path() << "': the '" << key << "' metadata is " << json_brief(j)
                                     << ", not a JSON object");
  return j;
}

const NumberRange kElapsedRange{0, 1e12};  // seconds (31,700 years): any real run, and exact as a whole number
const NumberRange kImageCountRange{1, 9.0e15};

}  // namespace

ResumeInfo read_resume_info(const diffusion::io::SafetensorsReader& reader) {
  const std::string& path = reader.path();
  (void)diffusion::read_train_state(reader);  // a training checkpoint (load_checkpoint checks its contents)
  DIFFUSION_CHECK(reader.metadata().count(kOptionsKey) != 0,
                  "'" << path << "' was not written by `fashion_mnist train` (no '" << kOptionsKey
                      << "' metadata), so its options are unknown; resume from an out/checkpoint.safetensors of this program");
  ResumeInfo info;
  info.options = metadata_object(reader, kOptionsKey);
  if (info.options.contains("images"))
    info.images = stored_integer(info.options, "images", kImageCountRange,
                                 "'" + path + "': the stored '" + kOptionsKey + "' ");
  if (reader.metadata().count(kRunKey) != 0) {
    const nlohmann::json run = metadata_object(reader, kRunKey);
    if (run.contains("elapsed_s"))
      info.elapsed = stored_number(run, "elapsed_s", kElapsedRange, "'" + path + "': the '" + kRunKey + "' ");
  }
  return info;
}

ResumedRun prepare_resume(const diffusion::io::SafetensorsReader& reader, const TrainOptions& flags,
                          const std::set<std::string>& given) {
  ResumeInfo info = read_resume_info(reader);
  std::vector<std::string> notes;
  TrainOptions options = merge_resume_options(flags, given, info.options, flags.resume, notes);
  diffusion::UnetConfig config =
      unet_config(options.block, options.dim, options.dim_mults, 1, options.conditional ? kNumClasses : 0);
  // Planned in the initialiser (no default-constructed plan assigned later: GCC 12 then warns, wrongly, that the
  // default UnetConfig's dim_mults may be used uninitialised).
  diffusion::UnetPlan plan = [&] {
    try {
      return diffusion::plan_unet(config);
    } catch (const Error& e) {
      throw Error("cannot resume from '" + reader.path() + "': the model of its stored '" + kOptionsKey +
                  "' (block, dim, dim-mults) is invalid: " + e.what());
    }
  }();
  // The network comes from options stored in the checkpoint: the checkpoint must hold exactly that network's
  // tensors before the network is built (a small file cannot make us allocate a large one).
  diffusion::check_checkpoint(reader, config);
  return ResumedRun{std::move(info), std::move(options), std::move(notes), std::move(config), std::move(plan)};
}

diffusion::TrainerOptions trainer_options(const TrainOptions& o, std::int64_t total_steps) {
  diffusion::TrainerOptions to;
  to.loss = diffusion::parse_loss_type(o.loss);
  to.prediction = diffusion::parse_prediction(o.prediction);
  to.min_snr_gamma = o.min_snr_gamma;
  to.adam.lr = o.lr;
  to.lr_schedule = examples::lr_schedule_of_flags(o.lr_warmup, o.lr_decay, o.lr_min, total_steps);
  to.grad_clip = o.grad_clip;
  to.use_ema = o.ema_decay > 0.0;
  to.ema = diffusion::EmaOptions{o.ema_decay, true};
  to.seed = o.seed;
  to.cond_drop_prob = o.cond_drop_prob;  // used by conditional runs only
  to.gradient_shards = o.gradient_shards > 0 ? o.gradient_shards : 1;  // 0: one per rank, resolved by run_train
  to.precision = diffusion::kernels::parse_matmul_precision(o.precision);
  return to;
}

diffusion::NoiseSchedule noise_schedule(const TrainOptions& o) {
  return diffusion::NoiseSchedule(diffusion::parse_beta_schedule(o.schedule), o.timesteps);
}

void check_resume_images(const ResumedRun& run, diffusion::Index images, const std::string& data_dir) {
  DIFFUSION_CHECK(run.info.images < 0 || run.info.images == images,
                  "cannot resume from '" << run.options.resume << "': it was trained on " << run.info.images
                                         << " images but the data in '" << data_dir << "' has " << images
                                         << "; resume with the same --data");
}

}  // namespace fashion_mnist
