#include "sampling.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/io/gif.hpp"
#include "diffusion/io/safetensors.hpp"
#include "diffusion/metrics/fashion_mnist.hpp"
#include "diffusion/model/unet_plan.hpp"
#include "diffusion/model/unet_weights.hpp"
#include "diffusion/samplers/sample.hpp"
#include "diffusion/train/checkpoint.hpp"

namespace fashion_mnist {

using diffusion::Error;
using diffusion::Shape;

namespace {

// What a weights or checkpoint file says about the model it holds.
struct ModelSource {
  diffusion::UnetConfig config;
  std::vector<double> betas;
  diffusion::Prediction prediction = diffusion::Prediction::Epsilon;
  int image_size = 28;
  std::string prefix;           // "ema." for a checkpoint's EMA weights
  std::string kind;             // for the summary
  bool config_from_file = false;
  nlohmann::json defined;       // flag name -> value, for the flags the file decides
};

ModelSource describe(const diffusion::io::SafetensorsReader& reader, const SampleOptions& o) {
  const auto& meta = reader.metadata();
  const std::string& path = reader.path();
  ModelSource m;
  nlohmann::json stored;  // our training options, when the file has them
  if (const auto it = meta.find(kOptionsKey); it != meta.end()) {
    try {
      stored = nlohmann::json::parse(it->second);
    } catch (const nlohmann::json::exception& e) {
      throw Error("'" + path + "': metadata '" + kOptionsKey + "' is not valid JSON (" + e.what() + ")");
    }
  }
  const bool checkpoint = meta.count(diffusion::kTrainStateKey) != 0;
  m.config_from_file = meta.count(diffusion::kUnetConfigKey) != 0;
  m.config = m.config_from_file ? diffusion::unet_config_from_metadata(meta, path)
                                : unet_config(o.block, o.dim, o.dim_mults, o.channels);
  std::string schedule_name = o.schedule, prediction_name = o.prediction;
  if (checkpoint) {
    const nlohmann::json state = diffusion::read_train_state(reader);
    m.betas = diffusion::read_checkpoint_schedule(reader).betas;
    prediction_name = state.value("prediction", std::string("eps"));
    m.prefix = reader.contains("ema.init_conv.weight") ? "ema." : "";  // every U-Net has init_conv
    m.kind = std::string("training checkpoint, step ") + std::to_string(state.value("step", 0)) +
             (m.prefix.empty() ? ", raw weights" : ", EMA weights");
    if (stored.is_object()) schedule_name = stored.value("schedule", schedule_name);
  } else {
    if (stored.is_object()) {
      schedule_name = stored.value("schedule", schedule_name);
      prediction_name = stored.value("prediction", prediction_name);
      m.betas = diffusion::make_betas(diffusion::parse_beta_schedule(schedule_name), stored.value("timesteps", o.timesteps));
    } else {
      m.betas = diffusion::make_betas(diffusion::parse_beta_schedule(o.schedule), o.timesteps);
    }
    m.kind = m.config_from_file ? "weights file" : "weights file without configuration (taken from the flags)";
  }
  m.prediction = diffusion::parse_prediction(prediction_name);
  if (stored.is_object()) m.image_size = stored.value("image-size", o.image_size);
  else m.image_size = o.image_size;

  // The flags the file decides: given ones must agree.
  if (m.config_from_file) {
    m.defined["dim"] = m.config.dim;
    m.defined["dim-mults"] = std::vector<int>(m.config.dim_mults.begin(), m.config.dim_mults.end());
    m.defined["block"] = m.config.use_convnext ? "convnext" : "resnet";
    m.defined["channels"] = m.config.channels;
  }
  if (checkpoint || stored.is_object()) {
    m.defined["timesteps"] = static_cast<int>(m.betas.size());
    m.defined["prediction"] = diffusion::prediction_name(m.prediction);
    if (stored.is_object()) m.defined["schedule"] = schedule_name;
  }
  if (stored.is_object()) m.defined["image-size"] = m.image_size;
  return m;
}

void check_flags_agree(const ModelSource& m, const SampleOptions& o, const std::set<std::string>& given,
                       const std::string& path) {
  nlohmann::json flags;
  flags["dim"] = o.dim;
  flags["dim-mults"] = o.dim_mults;
  flags["block"] = o.block;
  flags["channels"] = o.channels;
  flags["timesteps"] = o.timesteps;
  flags["prediction"] = o.prediction;
  flags["schedule"] = o.schedule;
  flags["image-size"] = o.image_size;
  std::string differ;
  for (const auto& kv : m.defined.items()) {
    if (!given.count(kv.key()) || flags.at(kv.key()) == kv.value()) continue;
    differ += std::string(differ.empty() ? "" : ", ") + "--" + kv.key() + " " + flags.at(kv.key()).dump() +
              " (the file has " + kv.value().dump() + ")";
  }
  DIFFUSION_CHECK(differ.empty(), "'" << path << "' defines the model it holds, and the command line disagrees: " << differ
                                      << ". Drop these flags");
}

// The tensors to load: a checkpoint's EMA weights when it has them (m.prefix), extra tensors (Adam moments, ...)
// allowed in a checkpoint only.
diffusion::WeightLoadOptions weight_options(const diffusion::io::SafetensorsReader& reader, const ModelSource& m) {
  diffusion::WeightLoadOptions wo;
  wo.prefix = m.prefix;
  wo.allow_extra_tensors = reader.metadata().count(diffusion::kTrainStateKey) != 0;
  return wo;
}

std::string weights_hint(const ModelSource& m) {
  return m.config_from_file ? "" : " (check --dim, --dim-mults, --block and --channels: they must "
                                   "describe the network the weights were trained with)";
}

// The file against the plan of the network it is to fill, before that network is built: it must hold every
// parameter with the planned shape, so a small file cannot make us allocate a large network.
void check_weights(const diffusion::io::SafetensorsReader& reader, const ModelSource& m) {
  try {
    diffusion::check_unet_tensors(reader, diffusion::plan_unet(m.config), weight_options(reader, m));
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + weights_hint(m));
  }
}

void load_weights(diffusion::Unet<float>& net, const diffusion::io::SafetensorsReader& reader, const ModelSource& m) {
  try {
    diffusion::load_unet_weights(net, reader, weight_options(reader, m));
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + weights_hint(m));
  }
}

}  // namespace

LoadedModel load_model(const SampleOptions& o, const std::set<std::string>& given) {
  DIFFUSION_CHECK(std::filesystem::exists(o.checkpoint),
                  "--checkpoint '" << o.checkpoint << "' does not exist. Pass the checkpoint.safetensors or "
                                   << "model.safetensors that `fashion_mnist train` wrote (in results/fashion_mnist by default)");
  const diffusion::io::SafetensorsReader reader(o.checkpoint);
  const ModelSource m = describe(reader, o);
  check_flags_agree(m, o, given, o.checkpoint);
  const int T = static_cast<int>(m.betas.size());
  DIFFUSION_CHECK(o.sampler == "ddpm" || o.steps <= T,
                  "--steps " << o.steps << " is more than the model's T = " << T << " diffusion steps");
  check_weights(reader, m);
  LoadedModel out;
  out.net = std::make_unique<diffusion::Unet<float>>(m.config);
  load_weights(*out.net, reader, m);
  out.betas = m.betas;
  out.prediction = m.prediction;
  out.channels = m.config.channels;
  out.image_size = m.image_size;
  out.kind = m.kind;
  return out;
}

SamplerSettings sampler_settings(const SampleOptions& o, const std::set<std::string>& given,
                                 diffusion::Prediction prediction) {
  SamplerSettings settings;
  settings.sampler = o.sampler;
  settings.ddim_steps = o.steps;
  settings.spacing = diffusion::parse_spacing(o.spacing);
  settings.precision = diffusion::kernels::parse_matmul_precision(o.precision);
  if (given.count("eta")) settings.eta = o.eta;
  settings.clip_x0 = o.clip_x0;
  settings.prediction = prediction;
  settings.guidance = o.guidance;
  settings.rescaled_phi = o.rescaled_phi;
  return settings;
}

int run_sample(const SampleOptions& o, const std::set<std::string>& given) {
  if (o.threads > 0) diffusion::set_num_threads(o.threads);
  const LoadedModel m = load_model(o, given);
  const diffusion::NoiseSchedule schedule(m.betas);
  const int T = schedule.num_timesteps();
  auto& net = *m.net;
  SamplerSettings settings = sampler_settings(o, given, m.prediction);
  const Index C = m.channels, S = m.image_size;
  const Index K = net.config().num_classes;
  DIFFUSION_CHECK(K > 0 || (!o.class_id && !given.count("guidance") && !given.count("rescaled-phi")),
                  "'" << o.checkpoint << "' holds an unconditional model (trained without classes): --class, "
                      << "--guidance and --rescaled-phi do not apply");
  DIFFUSION_CHECK(!o.class_id || *o.class_id == diffusion::kNullClass || *o.class_id < K,
                  "--class " << *o.class_id << ": the model knows classes 0-" << K - 1 << " (and -1, no class)");
  diffusion::Rng rng = diffusion::Rng(o.seed).fork(kSampleStream);
  Images x;  // (N, C, S, S)
  if (!o.x_T.empty()) {
    const diffusion::io::SafetensorsReader xr(o.x_T);
    DIFFUSION_CHECK(xr.contains("x_T"), "--x-T '" << o.x_T << "': no tensor named 'x_T' in the file");
    x = xr.read<float>("x_T");
    DIFFUSION_CHECK(x.rank() == 4 && x.dim(0) >= 1 && x.dim(1) == C && x.dim(2) == S && x.dim(3) == S,
                    "--x-T '" << o.x_T << "': tensor 'x_T' has shape " << x.shape() << ", expected (N, " << C << ", "
                              << S << ", " << S << ")");
    DIFFUSION_CHECK(!given.count("n") || x.dim(0) == o.n,
                    "--x-T '" << o.x_T << "' holds " << x.dim(0) << " images but --n is " << o.n);
  }
  // A conditional model without --class draws a class grid: one row per class, ceil(n / K) images each.
  const bool class_grid = K > 0 && !o.class_id && o.x_T.empty();
  const int per_row = class_grid ? static_cast<int>((o.n + K - 1) / K) : 0;
  if (o.x_T.empty()) x = Images::normal(Shape{class_grid ? per_row * K : static_cast<Index>(o.n), C, S, S}, rng);
  const Index n = x.dim(0);
  if (K > 0) {
    if (class_grid) settings.classes = examples::class_grid_ids(static_cast<int>(K), per_row);
    else if (o.class_id) settings.classes.assign(static_cast<std::size_t>(n), *o.class_id);
    else settings.classes = examples::classes_in_turn(n, K);
  }
  // 8 images in a row; a class grid's: the first image of each class.
  DenoisingRecorder gif = class_grid ? examples::class_grid_recorder(static_cast<int>(K), per_row, settings.steps(T))
                                     : DenoisingRecorder(8, settings.steps(T));
  denoise(net, schedule, settings, x, rng, o.gif.empty() ? nullptr : &gif);

  if (class_grid) write_grid_png(o.out, x, per_row);
  else write_grid_png(o.out, x);
  std::printf("fashion_mnist sample: %lld images from '%s' (%s), %s", static_cast<long long>(n), o.checkpoint.c_str(),
              m.kind.c_str(), o.sampler.c_str());
  if (o.sampler != "ddpm") std::printf(" %d steps", o.steps);
  if (o.sampler != "ddpm" && o.spacing != "linspace") std::printf(" (%s spacing)", o.spacing.c_str());
  if (settings.eta) std::printf(", eta %g", *settings.eta);
  std::printf("%s", examples::precision_note(settings.precision).c_str());
  if (K > 0) {
    if (class_grid) std::printf(", one row per class");
    else if (*o.class_id == diffusion::kNullClass) std::printf(", no class");
    else std::printf(", class %d (%s)", *o.class_id, *o.class_id < 10 && K == kNumClasses ? diffusion::metrics::kFashionMnistClasses[*o.class_id] : "");
    std::printf(", guidance %g", settings.guidance);
    if (settings.rescaled_phi > 0.0) std::printf(", rescaled_phi %g", settings.rescaled_phi);
  }
  std::printf("\n  grid:   %s\n", o.out.c_str());
  if (!o.tensor_out.empty()) {
    diffusion::io::SafetensorsWriter w;
    w.add("x_0", x);
    nlohmann::json info;
    info["checkpoint"] = o.checkpoint;
    info["sampler"] = o.sampler;
    info["steps"] = settings.steps(T);
    info["spacing"] = o.spacing;
    info["eta"] = settings.eta ? nlohmann::json(*settings.eta) : nlohmann::json();
    info["clip_x0"] = o.clip_x0;
    info["matmul_precision"] = diffusion::kernels::matmul_precision_name(diffusion::kernels::effective_matmul_precision(settings.precision));
    info["seed"] = o.seed;
    info["x_T"] = o.x_T;
    if (K > 0) {
      info["classes"] = settings.classes;
      info["guidance"] = settings.guidance;
      info["rescaled_phi"] = settings.rescaled_phi;
    }
    w.add_metadata("fashion_mnist.sample", info.dump());
    w.write(o.tensor_out);
    std::printf("  tensor: %s (x_0, F32 (%lld, %lld, %lld, %lld))\n", o.tensor_out.c_str(), static_cast<long long>(n),
                static_cast<long long>(C), static_cast<long long>(S), static_cast<long long>(S));
  }
  if (!o.gif.empty()) {
    gif.write(o.gif);
    std::printf("  gif:    %s (%zu frames)\n", o.gif.c_str(), gif.frames());
  }
  return 0;
}

}  // namespace fashion_mnist
