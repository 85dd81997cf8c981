#pragma once
// Training checkpoints: one safetensors file with everything needed to continue a run exactly.
//   <name>                       the raw weights, under the reference's state_dict names
//   ema.<name>                   the EMA weights (when the trainer keeps an EMA)
//   adam.exp_avg.<name>          Adam's first moments
//   adam.exp_avg_sq.<name>       Adam's second moments
//   schedule.betas               the noise schedule (F64), so that sampling uses exactly the trained one
//   __metadata__: "diffusion.unet" (config), "diffusion.train" (JSON: step, seed, adam and ema counters, options)
//   and any extra entries the caller adds (e.g. the example's command line).
// Written atomically (io/atomic_file.hpp): a crash mid-write leaves the previous checkpoint intact.
// load_checkpoint checks the file against the model and trainer before changing anything: U-Net configuration,
// noise schedule, prediction type, step counters (non-negative JSON integers), and the tensors against the U-Net's
// plan (check_checkpoint_tensors: exactly the weights, all or none of the EMA weights and Adam moments, the
// schedule; names, shapes, floating dtypes). check_checkpoint(reader, config) does the configuration and tensor
// checks without a network: call it before building a network from options read elsewhere (a resumed run's).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/model/unet_plan.hpp"
#include "diffusion/model/unet_weights.hpp"
#include "diffusion/train/trainer.hpp"

namespace diffusion {

inline constexpr const char* kTrainStateKey = "diffusion.train";

template <class T>
void save_checkpoint(const std::string& path, const Trainer<T>& trainer,
                     const std::map<std::string, std::string>& extra_metadata = {}) {
  const Unet<T>& model = trainer.model();
  const ParameterStore<T>& store = model.params();
  io::SafetensorsWriter w;
  for (const auto& e : store.entries()) {
    w.add(e.name, e.shape, store.values() + e.offset);
    if (trainer.ema()) w.add("ema." + e.name, e.shape, trainer.ema()->shadow() + e.offset);
    if (trainer.optimizer().size() == store.size()) {
      w.add("adam.exp_avg." + e.name, e.shape, trainer.optimizer().exp_avg() + e.offset);
      w.add("adam.exp_avg_sq." + e.name, e.shape, trainer.optimizer().exp_avg_sq() + e.offset);
    }
  }
  const auto& betas = trainer.schedule().betas;
  w.add("schedule.betas", Shape{static_cast<Index>(betas.size())}, betas.data());
  const TrainerOptions& o = trainer.options();
  nlohmann::json state;
  state["step"] = trainer.step_count();
  state["seed"] = o.seed;
  state["adam_step"] = trainer.optimizer().step_count();
  state["ema_step"] = trainer.ema() ? trainer.ema()->step_count() : 0;
  state["loss"] = loss_type_name(o.loss);
  state["prediction"] = prediction_name(o.prediction);
  state["lr"] = o.adam.lr;
  state["timesteps"] = trainer.schedule().num_timesteps();
  state["ema"] = trainer.ema() != nullptr;
  state["last_loss"] = std::isfinite(trainer.last_loss()) ? trainer.last_loss() : 0.0;
  // Conditional runs only (an unconditional checkpoint's metadata is as before); informative, not checked on load:
  // a resumed run may change the drop rate as it may the learning rate.
  if (model.config().num_classes > 0) state["cond_drop_prob"] = o.cond_drop_prob;
  // Data-parallel runs only: the shard count fixes the order of the gradient sums, so a run resumed with the same
  // count (on any number of ranks dividing it) continues bit for bit. Informative here, as the learning rate is.
  if (o.gradient_shards > 1) state["gradient_shards"] = o.gradient_shards;
  // Runs with a learning-rate schedule only; informative, as the rate is (the programs keep their own options).
  if (!o.lr_schedule.is_constant()) {
    state["lr_warmup_steps"] = o.lr_schedule.warmup_steps;
    state["lr_decay"] = lr_decay_name(o.lr_schedule.decay);
    state["lr_total_steps"] = o.lr_schedule.total_steps;
    state["lr_min_ratio"] = o.lr_schedule.min_ratio;
  }
  // Runs with Min-SNR-gamma loss weighting only; informative (the programs keep their own options).
  if (o.min_snr_gamma > 0.0) state["min_snr_gamma"] = o.min_snr_gamma;
  w.add_metadata(kTrainStateKey, state.dump());
  w.add_metadata(kUnetConfigKey, model.config().to_json().dump());
  const nlohmann::json ext = model.config().extensions_to_json();
  if (!ext.empty()) w.add_metadata(kUnetExtensionsKey, ext.dump());
  for (const auto& kv : extra_metadata) w.add_metadata(kv.first, kv.second);
  w.write(path);
}

// The "diffusion.train" metadata of a checkpoint (throws if the file has none).
inline nlohmann::json read_train_state(const io::SafetensorsReader& reader) {
  const auto it = reader.metadata().find(kTrainStateKey);
  DIFFUSION_CHECK(it != reader.metadata().end(),
                  "checkpoint '" << reader.path() << "': no '" << kTrainStateKey << "' metadata (not a training checkpoint)");
  try {
    return nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    throw Error("checkpoint '" + reader.path() + "': '" + kTrainStateKey + "' metadata is not valid JSON (" + e.what() + ")");
  }
}

// The noise schedule stored in a checkpoint.
inline NoiseSchedule read_checkpoint_schedule(const io::SafetensorsReader& reader) {
  DIFFUSION_CHECK(reader.contains("schedule.betas"), "checkpoint '" << reader.path() << "': no 'schedule.betas' tensor");
  const Tensor<double> betas = reader.read<double>("schedule.betas");
  return NoiseSchedule(std::vector<double>(betas.begin(), betas.end()));
}

// What a checkpoint holds besides the raw weights and the schedule.
struct CheckpointTensors {
  bool ema = false;   // "ema.<name>" for every parameter
  bool adam = false;  // "adam.exp_avg.<name>" and "adam.exp_avg_sq.<name>" for every parameter
};

// Compares a checkpoint's tensors with the plan of the U-Net it is for, before anything is built or changed: the
// raw weights under the plan's names; "ema.<name>" for every parameter or for none; both Adam moments for every
// parameter or for none; "schedule.betas"; nothing else. Names, shapes and (floating) dtypes are checked; throws an
// Error naming the file and the first tensor that is missing or differs (in plan order), or the first extra one.
inline CheckpointTensors check_checkpoint_tensors(const io::SafetensorsReader& reader, const UnetPlan& plan) {
  const std::string where = "checkpoint '" + reader.path() + "': ";
  const std::vector<std::string> names = reader.names();
  const auto any_starts_with = [&names](const std::string& prefix) {
    for (const auto& name : names)
      if (name.rfind(prefix, 0) == 0) return true;
    return false;
  };
  CheckpointTensors has;
  has.ema = any_starts_with("ema.");
  has.adam = any_starts_with("adam.");
  std::vector<std::string> prefixes = {""};
  if (has.ema) prefixes.push_back("ema.");
  if (has.adam) {
    prefixes.push_back("adam.exp_avg.");
    prefixes.push_back("adam.exp_avg_sq.");
  }
  for (const auto& prefix : prefixes) detail::check_planned_tensors(reader, plan, prefix, where);
  DIFFUSION_CHECK(reader.contains("schedule.betas"), where << "no 'schedule.betas' tensor");
  const std::size_t expected = prefixes.size() * plan.parameters.size() + 1;
  if (names.size() == expected) return has;  // every expected name is present, names are unique: nothing else
  std::vector<std::string> known = {"schedule.betas"};
  for (const auto& prefix : prefixes)
    for (const PlannedParameter& p : plan.parameters) known.push_back(prefix + p.name);
  std::sort(known.begin(), known.end());
  for (const auto& name : names)
    DIFFUSION_CHECK(std::binary_search(known.begin(), known.end(), name),
                    where << "tensor '" << name << "' is not part of a checkpoint of this U-Net (the file has "
                          << names.size() << " tensors, expected " << expected << ")");
  return has;
}

// The configuration and tensor checks of load_checkpoint, without a network: the stored U-Net configuration must
// equal `config`, and the tensors must be those of its plan (check_checkpoint_tensors). Nothing is allocated
// beyond the plan, whatever the file says.
inline CheckpointTensors check_checkpoint(const io::SafetensorsReader& reader, const UnetConfig& config) {
  const std::string& path = reader.path();
  const UnetConfig stored = unet_config_from_metadata(reader.metadata(), path);
  DIFFUSION_CHECK(stored.to_json() == config.to_json() && stored.extensions_to_json() == config.extensions_to_json(),
                  "checkpoint '" << path << "': U-Net configuration " << stored.to_json().dump()
                                 << " differs from the model's " << config.to_json().dump());
  UnetPlan plan;
  try {
    plan = plan_unet(config);
  } catch (const Error& e) {
    throw Error("checkpoint '" + path + "': " + e.what());
  }
  return check_checkpoint_tensors(reader, plan);
}

// Restores weights, optimizer moments, EMA and step count into a trainer built with the same configuration.
template <class T>
void load_checkpoint(const io::SafetensorsReader& reader, Trainer<T>& trainer) {
  const std::string& path = reader.path();
  const nlohmann::json state = read_train_state(reader);
  Unet<T>& model = trainer.model();
  ParameterStore<T>& store = model.params();
  const std::string where = "checkpoint '" + path + "': ";
  const CheckpointTensors has = check_checkpoint(reader, model.config());
  const NoiseSchedule schedule = read_checkpoint_schedule(reader);
  DIFFUSION_CHECK(schedule.betas == trainer.schedule().betas,
                  where << "noise schedule (T = " << schedule.num_timesteps() << ") differs from the trainer's (T = "
                        << trainer.schedule().num_timesteps() << ")");
  DIFFUSION_CHECK(state.is_object(), where << "'" << kTrainStateKey << "' metadata is a JSON " << state.type_name()
                                           << ", not an object");
  // Counters must be JSON integers in [0, 2^63): a float such as 1e300 would be cast to int64, which is undefined.
  auto counter = [&](const char* key, bool required) -> std::int64_t {
    const auto it = state.find(key);
    if (it == state.end()) {
      DIFFUSION_CHECK(!required, where << "'" << kTrainStateKey << "' lacks a step counter '" << key << "'");
      return 0;
    }
    const bool ok = it->is_number_unsigned()
                        ? it->get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
                        : it->is_number_integer() && it->get<std::int64_t>() >= 0;
    DIFFUSION_CHECK(ok, where << "'" << kTrainStateKey << "' step counter '" << key << "' is "
                              << it->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).substr(0, 40)
                              << ", expected a non-negative integer");
    return it->get<std::int64_t>();
  };
  const std::int64_t step = counter("step", true), adam_step = counter("adam_step", true),
                     ema_step = counter("ema_step", false);
  // A run resumed with another parameterization would silently train towards a different target.
  if (const auto it = state.find("prediction"); it != state.end()) {
    DIFFUSION_CHECK(it->is_string() && *it == prediction_name(trainer.options().prediction),
                    where << "the checkpoint was trained to predict "
                          << it->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).substr(0, 40)
                          << " but the trainer predicts \"" << prediction_name(trainer.options().prediction) << "\"");
  }
  DIFFUSION_CHECK(!trainer.ema() || has.ema, where << "has no EMA weights but the trainer keeps an EMA");
  const bool has_adam = adam_step > 0;
  DIFFUSION_CHECK(!has_adam || has.adam, where << "'" << kTrainStateKey << "' says adam_step " << adam_step
                                               << " but the file holds no Adam moments (adam.exp_avg.*)");
  // Load into flat buffers laid out like the store (padding stays zero).
  AlignedBuffer<T> m(store.size()), v(store.size()), ema(store.size());
  for (std::size_t i = 0; i < store.size(); ++i) m[i] = v[i] = ema[i] = T(0);
  for (const auto& e : store.entries()) {
    reader.read_into(e.name, e.shape, store.values() + e.offset);
    if (trainer.ema()) reader.read_into("ema." + e.name, e.shape, ema.data() + e.offset);
    if (has_adam) {
      reader.read_into("adam.exp_avg." + e.name, e.shape, m.data() + e.offset);
      reader.read_into("adam.exp_avg_sq." + e.name, e.shape, v.data() + e.offset);
    }
  }
  if (has_adam) trainer.optimizer().load_state(adam_step, m.data(), v.data(), store.size());
  else trainer.optimizer().reset();
  if (trainer.ema()) trainer.ema()->load_state(ema_step, ema.data(), store.size());
  trainer.set_step_count(step);
}

template <class T>
void load_checkpoint(const std::string& path, Trainer<T>& trainer) {
  const io::SafetensorsReader reader(path);
  load_checkpoint(reader, trainer);
}

}  // namespace diffusion
