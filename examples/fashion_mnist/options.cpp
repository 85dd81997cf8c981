#include "options.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "diffusion/core/error.hpp"

namespace fashion_mnist {

namespace {

const std::vector<std::string> kSchedules = {"linear", "cosine", "quadratic", "sigmoid"};
const std::vector<std::string> kLosses = {"l2", "l1", "huber"};
const std::vector<std::string> kPredictions = {"eps", "x0", "v"};
const std::vector<std::string> kBlocks = {"convnext", "resnet"};
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
constexpr auto kMaxDimMults = static_cast<std::size_t>(diffusion::UnetConfig::kMaxLevels);
const NumberRange kLrRange{0, kInf, true};
const NumberRange kBatchRange{1, 1 << 20};
const NumberRange kGradientShardsRange{0, 65536};
const NumberRange kThreadsRange{0, 4096};
const NumberRange kEmaDecayRange{0, 1};
const NumberRange kNonNegative{0, kInf};  // --grad-clip, --sample-every, --checkpoint-every, --eta
const NumberRange kFinalSamplesRange{1, 4096};
const NumberRange kSampleStepsRange{1, 100000};
const NumberRange kImagesRange{1, 4096};  // sample --n
const NumberRange kEvalImagesRange{1, 1000000};  // eval --n, train --eval-n
const NumberRange kEvalBatchRange{1, 4096};      // eval --batch
const NumberRange kChannelsRange{1, 4};
const NumberRange kImageSizeRange{1, 4096};
const NumberRange kProbabilityRange{0, 1};
const NumberRange kGuidanceRange{-1000, 1000};  // w; negative w pushes away from the class (allowed, rarely wanted)
const NumberRange kClassRange{-1, 65535};       // --class: -1 is kNullClass; the model's num_classes is checked later

std::string number_text(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == std::floor(v) && std::fabs(v) < 9.0e15) return std::to_string(static_cast<std::int64_t>(v));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// Binds a comma-separated integer list flag to `target`.
CLI::Option* add_int_list(CLI::App& app, const std::string& name, std::vector<int>& target, const std::string& help) {
  CLI::Option* opt = app.add_option_function<std::string>(
      name,
      [&target, name](const std::string& text) {
        try {
          target = parse_int_list(text, name);
        } catch (const diffusion::Error& e) {
          throw CLI::ValidationError(name, e.what());
        }
      },
      help);
  opt->type_name("LIST")->default_str(int_list_text(target));
  return opt;
}

// Keys of the stored options, by how a resumed run treats them.
const std::vector<std::string> kConfigKeys = {"schedule", "timesteps", "loss",      "prediction",
                                              "block",    "dim",       "dim-mults", "batch",
                                              "seed",     "ema-decay", "conditional", "cond-drop-prob",
                                              "gradient-shards"};
const std::vector<std::string> kOptimizerKeys = {"lr", "grad-clip"};
const std::vector<std::string> kRunKeys = {"data",          "threads",       "sample-every", "checkpoint-every",
                                           "final-samples", "final-sampler", "eval-every",   "eval-n",
                                           "final-guidance"};

// An option's value for a message ("linear", "1,2,4", "0.001"); a stored one may be anything: at most 40 characters.
std::string value_text(const nlohmann::json& v) {
  std::string s;
  if (v.is_string()) {
    s = v.get<std::string>();
  } else if (v.is_array()) {
    for (const auto& e : v) s += (s.empty() ? "" : ",") + e.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

}  // namespace

bool NumberRange::contains(double v) const {
  return (min_open ? v > min : v >= min) && v <= max;  // false for NaN
}

std::string NumberRange::text() const {
  if (std::isinf(max)) return (min_open ? "> " : ">= ") + number_text(min);
  return std::string("in ") + (min_open ? "(" : "[") + number_text(min) + ", " + number_text(max) + "]";
}

CLI::Validator in_range(const NumberRange& range) {
  return CLI::Validator(
      [range](std::string& input) {
        double v = 0.0;
        if (CLI::detail::lexical_cast(input, v) && std::isfinite(v) && range.contains(v)) return std::string();
        return "must be " + range.text() + ", got " + input;
      },
      range.text());
}

std::vector<int> parse_int_list(const std::string& text, const std::string& flag) {
  std::vector<int> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    std::size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    while (used < item.size() && item[used] == ' ') ++used;
    DIFFUSION_CHECK(used == item.size() && !item.empty() && v > 0,
                    flag << " expects positive integers separated by commas (e.g. 1,2,4), got '" << text << "'");
    out.push_back(v);
  }
  DIFFUSION_CHECK(!out.empty(), flag << " expects positive integers separated by commas (e.g. 1,2,4), got '" << text << "'");
  return out;
}

std::string int_list_text(const std::vector<int>& v) {
  std::string s;
  for (int x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

void add_train_flags(CLI::App& app, TrainOptions& o) {
  app.add_option("--data", o.data, "folder holding " + std::string(kTrainImagesFile) +
                                       " (Debian package dataset-fashion-mnist)");
  app.add_option("--schedule", o.schedule, "beta schedule")->check(CLI::IsMember(kSchedules));
  app.add_option("--timesteps", o.timesteps, "number of diffusion steps T")->check(in_range(kTimestepsRange));
  app.add_option("--loss", o.loss, "denoising loss")->check(CLI::IsMember(kLosses));
  app.add_option("--prediction", o.prediction, "what the network predicts")->check(CLI::IsMember(kPredictions));
  app.add_option("--block", o.block, "U-Net block type")->check(CLI::IsMember(kBlocks));
  app.add_option("--dim", o.dim, "U-Net base channel count")->check(in_range(kDimRange));
  add_int_list(app, "--dim-mults", o.dim_mults, "channel multipliers per resolution level, e.g. 1,2,4");
  app.add_option("--epochs", o.epochs, "training length in epochs (ignored when --steps is given)")
      ->check(in_range(kEpochsRange));
  app.add_option("--steps", o.steps, "training length in optimisation steps (wins over --epochs)")
      ->check(in_range(kStepsRange));
  app.add_option("--lr", o.lr, "Adam learning rate")->check(in_range(kLrRange));
  app.add_option("--batch", o.batch, "images per step")->check(in_range(kBatchRange));
  app.add_option("--gradient-shards", o.gradient_shards,
                 "parts of each batch whose gradients are added in a fixed order, so that any number of ranks "
                 "(mpirun -np R, R dividing it) gives the same weights; stored with the run (0: the number of ranks)")
      ->check(in_range(kGradientShardsRange));
  app.add_option("--seed", o.seed, "seed of the initial weights, the data order and the noise");
  app.add_option("--threads", o.threads, "worker threads (0: all cores)")->check(in_range(kThreadsRange));
  app.add_option("--ema-decay", o.ema_decay, "EMA decay of the sampling weights (0 disables the EMA)")
      ->check(in_range(kEmaDecayRange));
  app.add_option("--grad-clip", o.grad_clip, "max global gradient norm (0: no clipping)")
      ->check(in_range(kNonNegative));
  app.add_flag("--conditional", o.conditional,
               "train a class-conditional model on the labels in " + std::string(kTrainLabelsFile) +
                   " (sample a class with `sample --class K --guidance W`)");
  app.add_option("--cond-drop-prob", o.cond_drop_prob,
                 "conditional runs: probability that an image's label is dropped (the model then learns the "
                 "unconditional prediction too, which guidance needs)")
      ->check(in_range(kProbabilityRange));
  app.add_option("--out", o.out, "output folder (default with --resume: the checkpoint's folder)");
  app.add_option("--sample-every", o.sample_every, "write a 4x4 grid of EMA samples every N steps (0: never)")
      ->check(in_range(kNonNegative));
  app.add_option("--checkpoint-every", o.checkpoint_every, "write the checkpoint every N steps (0: only at the end)")
      ->check(in_range(kNonNegative));
  app.add_option("--resume", o.resume, "continue the run of this checkpoint exactly");
  app.add_option("--final-samples", o.final_samples, "number of images in the final grid")
      ->check(in_range(kFinalSamplesRange));
  app.add_option("--final-sampler", o.final_sampler, "sampler of the final grid and GIF")->check(CLI::IsMember(kSamplers));
  app.add_option("--final-guidance", o.final_guidance,
                 "conditional runs: guidance scale w of the final class grid, the previews and the evaluations")
      ->check(in_range(kGuidanceRange));
  app.add_option("--eval-every", o.eval_every,
                 "every N steps, measure --eval-n EMA samples (DDIM 50) against the test set in --data: FID, KID, "
                 "precision, recall, appended to eval_log.csv (0: never)")
      ->check(in_range(kNonNegative));
  app.add_option("--eval-n", o.eval_n, "samples per evaluation during training")->check(in_range(kEvalImagesRange));
}

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
  app.add_option("--eta", o.eta,
                 "noise of ddim / euler_ancestral / dpmpp_2m_sde (default: 0 for ddim, 1 for the others)")
      ->check(in_range(kNonNegative));
  app.add_option("--clip-x0", o.clip_x0,
                 "clip the predicted x0 to [-1, 1] at every step (true/false; keeps large-T DDIM from saturating)");
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

std::set<std::string> given_flags(const CLI::App& app) {
  std::set<std::string> out;
  for (const CLI::Option* opt : app.get_options())
    if (opt->count() > 0) out.insert(opt->get_single_name());
  return out;
}

nlohmann::json to_json(const TrainOptions& o) {
  nlohmann::json j;
  j["schedule"] = o.schedule;
  j["timesteps"] = o.timesteps;
  j["loss"] = o.loss;
  j["prediction"] = o.prediction;
  j["block"] = o.block;
  j["dim"] = o.dim;
  j["dim-mults"] = o.dim_mults;
  j["batch"] = o.batch;
  j["seed"] = o.seed;
  j["ema-decay"] = o.ema_decay;
  j["lr"] = o.lr;
  j["grad-clip"] = o.grad_clip;
  j["epochs"] = o.epochs;
  j["steps"] = o.steps;
  j["data"] = o.data;
  j["out"] = o.out;
  j["threads"] = o.threads;
  j["sample-every"] = o.sample_every;
  j["checkpoint-every"] = o.checkpoint_every;
  j["final-samples"] = o.final_samples;
  j["final-sampler"] = o.final_sampler;
  j["eval-every"] = o.eval_every;
  j["eval-n"] = o.eval_n;
  j["conditional"] = o.conditional;
  j["cond-drop-prob"] = o.cond_drop_prob;
  j["gradient-shards"] = o.gradient_shards;
  j["final-guidance"] = o.final_guidance;
  return j;
}

std::string json_brief(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

namespace {

const nlohmann::json& stored_field(const nlohmann::json& object, const std::string& key, const std::string& where) {
  const auto it = object.find(key);
  DIFFUSION_CHECK(it != object.end(), where << "metadata has no key '" << key << "'");
  return *it;
}

}  // namespace

std::int64_t stored_integer(const nlohmann::json& object, const std::string& key, const NumberRange& range,
                            const std::string& where) {
  const nlohmann::json& v = stored_field(object, key, where);
  bool ok = false;
  std::int64_t x = 0;
  if (v.is_number_unsigned()) {
    const std::uint64_t u = v.get<std::uint64_t>();
    ok = u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    x = ok ? static_cast<std::int64_t>(u) : 0;
  } else if (v.is_number_integer()) {
    x = v.get<std::int64_t>();
    ok = true;
  }
  DIFFUSION_CHECK(ok && range.contains(static_cast<double>(x)),
                  where << "key '" << key << "' is " << json_brief(v) << ", expected an integer " << range.text());
  return x;
}

double stored_number(const nlohmann::json& object, const std::string& key, const NumberRange& range,
                     const std::string& where) {
  const nlohmann::json& v = stored_field(object, key, where);
  const double x = v.is_number() ? v.get<double>() : 0.0;
  DIFFUSION_CHECK(v.is_number() && std::isfinite(x) && range.contains(x),
                  where << "key '" << key << "' is " << json_brief(v) << ", expected a number " << range.text());
  return x;
}

TrainOptions train_options_from_json(const nlohmann::json& j, const std::string& source) {
  const std::string where = "'" + source + "': the stored '" + kOptionsKey + "' ";
  DIFFUSION_CHECK(j.is_object(), where << "metadata is " << json_brief(j) << ", not a JSON object");
  const auto integer = [&](const char* key, const NumberRange& range) { return stored_integer(j, key, range, where); };
  const auto number = [&](const char* key, const NumberRange& range) { return stored_number(j, key, range, where); };
  const auto text = [&](const char* key) {
    const nlohmann::json& v = stored_field(j, key, where);
    DIFFUSION_CHECK(v.is_string(), where << "key '" << key << "' is " << json_brief(v) << ", expected a string");
    return v.get<std::string>();
  };
  const auto one_of = [&](const char* key, const std::vector<std::string>& allowed) {
    const nlohmann::json& v = stored_field(j, key, where);
    const bool ok = v.is_string() && std::find(allowed.begin(), allowed.end(), v.get<std::string>()) != allowed.end();
    if (!ok) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      throw diffusion::Error(where + "key '" + key + "' is " + json_brief(v) + ", expected one of " + list);
    }
    return v.get<std::string>();
  };
  TrainOptions o;
  o.schedule = one_of("schedule", kSchedules);
  o.timesteps = static_cast<int>(integer("timesteps", kTimestepsRange));
  o.loss = one_of("loss", kLosses);
  o.prediction = one_of("prediction", kPredictions);
  o.block = one_of("block", kBlocks);
  o.dim = static_cast<int>(integer("dim", kDimRange));
  {
    const nlohmann::json& v = stored_field(j, "dim-mults", where);
    bool ok = v.is_array() && !v.empty() && v.size() <= kMaxDimMults;
    for (std::size_t i = 0; ok && i < v.size(); ++i)
      ok = (v[i].is_number_unsigned() || v[i].is_number_integer()) && v[i].get<std::int64_t>() >= 1 &&
           v[i].get<std::int64_t>() <= std::numeric_limits<int>::max();
    DIFFUSION_CHECK(ok, where << "key 'dim-mults' is " << json_brief(v) << ", expected a list of 1 to " << kMaxDimMults
                              << " positive integers");
    o.dim_mults.clear();
    for (const auto& m : v) o.dim_mults.push_back(static_cast<int>(m.get<std::int64_t>()));
  }
  o.batch = static_cast<int>(integer("batch", kBatchRange));
  {
    const nlohmann::json& v = stored_field(j, "seed", where);
    DIFFUSION_CHECK(v.is_number_unsigned() || (v.is_number_integer() && v.get<std::int64_t>() >= 0),
                    where << "key 'seed' is " << json_brief(v) << ", expected an integer in [0, 2^64)");
    o.seed = v.get<std::uint64_t>();
  }
  o.ema_decay = number("ema-decay", kEmaDecayRange);
  o.lr = number("lr", kLrRange);
  o.grad_clip = number("grad-clip", kNonNegative);
  o.epochs = static_cast<int>(integer("epochs", kEpochsRange));
  o.steps = integer("steps", kStoredStepsRange);
  o.data = text("data");
  o.out = text("out");
  o.threads = static_cast<int>(integer("threads", kThreadsRange));
  o.sample_every = integer("sample-every", kNonNegative);
  o.checkpoint_every = integer("checkpoint-every", kNonNegative);
  o.final_samples = static_cast<int>(integer("final-samples", kFinalSamplesRange));
  o.final_sampler = one_of("final-sampler", kSamplers);
  // Absent in checkpoints written before `train --eval-every` existed: the defaults.
  if (j.contains("eval-every")) o.eval_every = integer("eval-every", kNonNegative);
  if (j.contains("eval-n")) o.eval_n = static_cast<int>(integer("eval-n", kEvalImagesRange));
  // Absent in checkpoints written before `train --conditional` existed: an unconditional run.
  if (j.contains("conditional")) {
    const nlohmann::json& v = stored_field(j, "conditional", where);
    DIFFUSION_CHECK(v.is_boolean(), where << "key 'conditional' is " << json_brief(v) << ", expected true or false");
    o.conditional = v.get<bool>();
  }
  if (j.contains("cond-drop-prob")) o.cond_drop_prob = number("cond-drop-prob", kProbabilityRange);
  // Absent in checkpoints written before data-parallel training: one shard (0 would mean one per rank).
  o.gradient_shards = j.contains("gradient-shards") ? static_cast<int>(integer("gradient-shards", kGradientShardsRange)) : 1;
  if (j.contains("final-guidance")) o.final_guidance = number("final-guidance", kGuidanceRange);
  return o;
}

TrainOptions merge_resume_options(const TrainOptions& flags, const std::set<std::string>& given,
                                  const nlohmann::json& stored, const std::string& checkpoint,
                                  std::vector<std::string>& notes) {
  const nlohmann::json current = to_json(flags);
  nlohmann::json merged = stored;
  std::string mismatches;
  for (const std::string& key : kConfigKeys) {
    if (!given.count(key)) continue;
    if (!stored.contains(key) || stored.at(key) != current.at(key)) {
      mismatches += std::string(mismatches.empty() ? "" : ", ") + "--" + key + " " + value_text(current.at(key)) +
                    " (the checkpoint has " + (stored.contains(key) ? value_text(stored.at(key)) : "none") + ")";
    }
  }
  DIFFUSION_CHECK(mismatches.empty(),
                  "cannot resume from '" << checkpoint << "': its configuration differs from the command line: "
                                         << mismatches
                                         << ". Drop these flags to continue that run, or start a new run with --out DIR");
  for (const std::string& key : kOptimizerKeys) {
    if (!given.count(key) || stored.value(key, nlohmann::json()) == current.at(key)) continue;
    notes.push_back("--" + key + " changes from " + value_text(stored.value(key, nlohmann::json())) + " to " +
                    value_text(current.at(key)) + " for the rest of the run");
    merged[key] = current.at(key);
  }
  for (const std::string& key : kRunKeys)
    if (given.count(key)) merged[key] = current.at(key);
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
