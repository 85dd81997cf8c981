#include "options.hpp"

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
const std::vector<std::string> kConfigKeys = {"schedule", "timesteps", "loss",  "prediction", "block",
                                              "dim",      "dim-mults", "batch", "seed",       "ema-decay"};
const std::vector<std::string> kOptimizerKeys = {"lr", "grad-clip"};
const std::vector<std::string> kRunKeys = {"data",          "threads",       "sample-every", "checkpoint-every",
                                           "final-samples", "final-sampler", "eval-every",   "eval-n"};

std::string value_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::string s;
    for (const auto& e : v) s += (s.empty() ? "" : ",") + e.dump();
    return s;
  }
  return v.dump();
}

}  // namespace

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
  app.add_option("--timesteps", o.timesteps, "number of diffusion steps T")->check(CLI::Range(1, 100000));
  app.add_option("--loss", o.loss, "denoising loss")->check(CLI::IsMember(kLosses));
  app.add_option("--prediction", o.prediction, "what the network predicts")->check(CLI::IsMember(kPredictions));
  app.add_option("--block", o.block, "U-Net block type")->check(CLI::IsMember(kBlocks));
  app.add_option("--dim", o.dim, "U-Net base channel count")->check(CLI::Range(4, 4096));
  add_int_list(app, "--dim-mults", o.dim_mults, "channel multipliers per resolution level, e.g. 1,2,4");
  app.add_option("--epochs", o.epochs, "training length in epochs (ignored when --steps is given)")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--steps", o.steps, "training length in optimisation steps (wins over --epochs)")
      ->check(CLI::Range(std::int64_t(1), std::int64_t(1) << 40));
  app.add_option("--lr", o.lr, "Adam learning rate")->check(CLI::PositiveNumber);
  app.add_option("--batch", o.batch, "images per step")->check(CLI::Range(1, 1 << 20));
  app.add_option("--seed", o.seed, "seed of the initial weights, the data order and the noise");
  app.add_option("--threads", o.threads, "worker threads (0: all cores)")->check(CLI::Range(0, 4096));
  app.add_option("--ema-decay", o.ema_decay, "EMA decay of the sampling weights (0 disables the EMA)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--grad-clip", o.grad_clip, "max global gradient norm (0: no clipping)")->check(CLI::NonNegativeNumber);
  app.add_option("--out", o.out, "output folder (default with --resume: the checkpoint's folder)");
  app.add_option("--sample-every", o.sample_every, "write a 4x4 grid of EMA samples every N steps (0: never)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--checkpoint-every", o.checkpoint_every, "write the checkpoint every N steps (0: only at the end)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--resume", o.resume, "continue the run of this checkpoint exactly");
  app.add_option("--final-samples", o.final_samples, "number of images in the final grid")->check(CLI::Range(1, 4096));
  app.add_option("--final-sampler", o.final_sampler, "sampler of the final grid and GIF")->check(CLI::IsMember(kSamplers));
  app.add_option("--eval-every", o.eval_every,
                 "every N steps, measure --eval-n EMA samples (DDIM 50) against the test set in --data: FID, KID, "
                 "precision, recall, appended to eval_log.csv (0: never)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--eval-n", o.eval_n, "samples per evaluation during training")->check(CLI::Range(1, 1000000));
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
      ->check(CLI::Range(1, 100000));
  app.add_option("--eta", o.eta,
                 "noise of ddim / euler_ancestral / dpmpp_2m_sde (default: 0 for ddim, 1 for the others); must be >= 0")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--clip-x0", o.clip_x0,
                 "clip the predicted x0 to [-1, 1] at every step (true/false; keeps large-T DDIM from saturating)");
  app.add_option("--seed", o.seed, "seed of x_T and of the sampler's noise");
  app.add_option("--threads", o.threads, "worker threads (0: all cores)")->check(CLI::Range(0, 4096));
  // Only for a weights file that does not carry its configuration.
  app.add_option("--block", o.block, "U-Net block type (weights without metadata)")->check(CLI::IsMember(kBlocks));
  app.add_option("--dim", o.dim, "U-Net base channel count (weights without metadata)")->check(CLI::Range(4, 4096));
  add_int_list(app, "--dim-mults", o.dim_mults, "channel multipliers (weights without metadata)");
  app.add_option("--channels", o.channels, "image channels (weights without metadata)")->check(CLI::Range(1, 4));
  app.add_option("--image-size", o.image_size, "image height and width (weights without metadata)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--schedule", o.schedule, "beta schedule (weights without metadata)")->check(CLI::IsMember(kSchedules));
  app.add_option("--timesteps", o.timesteps, "number of diffusion steps T (weights without metadata)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--prediction", o.prediction, "what the network predicts (weights without metadata)")
      ->check(CLI::IsMember(kPredictions));
}

}  // namespace

void add_sample_flags(CLI::App& app, SampleOptions& o) {
  add_model_and_sampler_flags(app, o);
  app.add_option("--n", o.n, "number of images")->check(CLI::Range(1, 4096));
  app.add_option("--x-T", o.x_T, "start from the tensor 'x_T' (N, C, H, W) of this safetensors file");
  app.add_option("--out", o.out, "PNG grid of the samples");
  app.add_option("--tensor-out", o.tensor_out, "also write the samples as tensor 'x_0' (F32) to this safetensors file");
  app.add_option("--gif", o.gif, "also write the denoising of the first 8 samples as an animated GIF");
}

void add_eval_flags(CLI::App& app, EvalOptions& o) {
  add_model_and_sampler_flags(app, o.sample);
  app.add_option("--n", o.n, "number of generated images to evaluate")->check(CLI::Range(1, 1000000));
  app.add_option("--batch", o.batch, "images sampled at a time (memory: about 10 MB per image at 28x28)")
      ->check(CLI::Range(1, 4096));
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
  return j;
}

TrainOptions train_options_from_json(const nlohmann::json& j, const std::string& source) {
  TrainOptions o;
  try {
    o.schedule = j.at("schedule").get<std::string>();
    o.timesteps = j.at("timesteps").get<int>();
    o.loss = j.at("loss").get<std::string>();
    o.prediction = j.at("prediction").get<std::string>();
    o.block = j.at("block").get<std::string>();
    o.dim = j.at("dim").get<int>();
    o.dim_mults = j.at("dim-mults").get<std::vector<int>>();
    o.batch = j.at("batch").get<int>();
    o.seed = j.at("seed").get<std::uint64_t>();
    o.ema_decay = j.at("ema-decay").get<double>();
    o.lr = j.at("lr").get<double>();
    o.grad_clip = j.at("grad-clip").get<double>();
    o.epochs = j.at("epochs").get<int>();
    o.steps = j.at("steps").get<std::int64_t>();
    o.data = j.at("data").get<std::string>();
    o.out = j.at("out").get<std::string>();
    o.threads = j.at("threads").get<int>();
    o.sample_every = j.at("sample-every").get<std::int64_t>();
    o.checkpoint_every = j.at("checkpoint-every").get<std::int64_t>();
    o.final_samples = j.at("final-samples").get<int>();
    o.final_sampler = j.at("final-sampler").get<std::string>();
    o.eval_every = j.value("eval-every", std::int64_t{0});  // absent in checkpoints of earlier versions
    o.eval_n = j.value("eval-n", o.eval_n);
  } catch (const nlohmann::json::exception& e) {
    throw diffusion::Error(source + ": the stored '" + kOptionsKey + "' metadata is incomplete or malformed (" +
                           e.what() + ")");
  }
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

diffusion::UnetConfig unet_config(const std::string& block, int dim, const std::vector<int>& dim_mults, int channels) {
  diffusion::UnetConfig c;
  c.dim = dim;
  c.dim_mults.assign(dim_mults.begin(), dim_mults.end());
  c.channels = channels;
  c.use_convnext = block == "convnext";
  return c;
}

}  // namespace fashion_mnist
