// Preconditions of train/: optimizer, EMA, clipping, trainer and data options; and load_checkpoint on checkpoints
// with malformed or inconsistent "diffusion.train" metadata, missing tensors or another prediction type: each is
// refused with a message naming the file and the field, and leaves the trainer unchanged. check_checkpoint wants
// exactly the tensors of the U-Net's plan and refuses a configuration larger than the file with bounded memory.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/train/adam.hpp"
#include "diffusion/train/checkpoint.hpp"
#include "diffusion/train/dataset.hpp"
#include "diffusion/train/ema.hpp"
#include "diffusion/train/grad_clip.hpp"
#include "diffusion/train/trainer.hpp"
#include "support/peak_memory.hpp"

using namespace diffusion;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string precond_scratch(const std::string& name) {
  const auto dir = std::filesystem::path(DIFFUSION_TEST_BINARY_DIR) / "preconditions_train";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

UnetConfig precond_tiny() {
  UnetConfig c;
  c.dim = 4;
  c.channels = 1;
  c.dim_mults = {1, 2};
  c.attention_heads = 1;
  c.attention_dim_head = 4;
  return c;
}

// Copies checkpoint `from` to `to`, letting `edit` change the metadata and drop tensors (return false to drop).
void rewrite(const std::string& from, const std::string& to,
             const std::function<void(std::map<std::string, std::string>&)>& edit_metadata,
             const std::function<bool(const std::string&)>& keep = [](const std::string&) { return true; }) {
  const io::SafetensorsReader r(from);
  io::SafetensorsWriter w;
  for (const auto& name : r.names()) {
    if (!keep(name)) continue;
    if (r.info(name).dtype == io::DType::F64) w.add(name, r.read<double>(name));
    else w.add(name, r.read<float>(name));
  }
  std::map<std::string, std::string> m = r.metadata();
  edit_metadata(m);
  for (const auto& kv : m) w.add_metadata(kv.first, kv.second);
  w.write(to);
}

void set_train_field(std::map<std::string, std::string>& m, const std::string& key, const nlohmann::json& value) {
  nlohmann::json state = nlohmann::json::parse(m.at(kTrainStateKey));
  if (value.is_discarded()) state.erase(key);
  else state[key] = value;
  m[kTrainStateKey] = state.dump();
}

}  // namespace

TEST_CASE("Adam, EMA and gradient clipping reject bad hyper-parameters, NaN included") {
  auto adam = [](void (*set)(AdamOptions&)) {
    AdamOptions o;
    set(o);
    return Adam<float>(o);
  };
  REQUIRE_THROWS_WITH(adam([](AdamOptions& o) { o.lr = -1e-3; }), Catch::Contains("learning rate lr must be >= 0"));
  REQUIRE_THROWS_WITH(adam([](AdamOptions& o) { o.lr = kNaN; }), Catch::Contains("lr"));
  REQUIRE_THROWS_WITH(adam([](AdamOptions& o) { o.beta1 = 1.0; }), Catch::Contains("beta1 must be in [0, 1)"));
  REQUIRE_THROWS_WITH(adam([](AdamOptions& o) { o.beta2 = -0.1; }), Catch::Contains("beta2"));
  REQUIRE_THROWS_WITH(adam([](AdamOptions& o) { o.beta2 = kNaN; }), Catch::Contains("beta2"));
  REQUIRE_THROWS_WITH(adam([](AdamOptions& o) { o.eps = -1.0; }), Catch::Contains("eps must be >= 0"));
  REQUIRE_THROWS_WITH(adam([](AdamOptions& o) { o.weight_decay = -0.01; }), Catch::Contains("weight_decay"));
  Adam<float> a;
  std::vector<float> p(8, 1.0f), g(8, 0.5f);
  a.step(p.data(), g.data(), 8);
  REQUIRE_THROWS_WITH(a.step(p.data(), g.data(), 7), Catch::Contains("7 parameters") && Catch::Contains("holds 8"));
  REQUIRE_THROWS_WITH(a.set_lr(-1.0), Catch::Contains("set_lr"));
  REQUIRE_THROWS_WITH(a.load_state(-1, p.data(), p.data(), 8), Catch::Contains("step count must be >= 0"));

  REQUIRE_THROWS_WITH(Ema<float>(EmaOptions{1.5, false}), Catch::Contains("decay must be in [0, 1], got 1.5"));
  REQUIRE_THROWS_WITH(Ema<float>(EmaOptions{kNaN, false}), Catch::Contains("decay"));
  Ema<float> unset;
  REQUIRE_THROWS_WITH(unset.update(p.data(), 8), Catch::Contains("never initialised"));
  Ema<float> e(p.data(), 8);
  REQUIRE_THROWS_WITH(e.update(p.data(), 4), Catch::Contains("4 values") && Catch::Contains("holds 8"));
  REQUIRE_THROWS_WITH(e.load_state(-2, p.data(), 8), Catch::Contains("update count must be >= 0"));

  for (double bad : {0.0, -1.0, kNaN})
    REQUIRE_THROWS_WITH(clip_grad_norm(g.data(), g.size(), bad), Catch::Contains("max_norm must be > 0"));
}

TEST_CASE("Trainer and BatchSampler reject bad options and batches") {
  Unet<float> net(precond_tiny(), 1);
  const NoiseSchedule schedule(BetaSchedule::Linear, 10);
  TrainerOptions o;
  o.grad_clip = -1.0;
  REQUIRE_THROWS_WITH(Trainer<float>(net, schedule, o), Catch::Contains("grad_clip must be >= 0"));
  o.grad_clip = kNaN;
  REQUIRE_THROWS_WITH(Trainer<float>(net, schedule, o), Catch::Contains("grad_clip"));
  o = TrainerOptions{};
  o.ema.decay = 2.0;
  REQUIRE_THROWS_WITH(Trainer<float>(net, schedule, o), Catch::Contains("decay"));
  o.use_ema = false;  // the EMA options are not used then
  REQUIRE_NOTHROW(Trainer<float>(net, schedule, o));
  UnetConfig two_out = precond_tiny();
  two_out.out_dim = 2;  // e.g. a learned-variance head: the L_simple target has 1 channel
  Unet<float> net2(two_out, 1);
  REQUIRE_THROWS_WITH(Trainer<float>(net2, schedule, TrainerOptions{}),
                      Catch::Contains("out_dim = 2") && Catch::Contains("channels = 1"));

  Trainer<float> trainer(net, schedule, TrainerOptions{});
  REQUIRE_THROWS_WITH(trainer.step(Tensor<float>(Shape{0, 1, 4, 4})), Catch::Contains("non-empty batch"));
  REQUIRE_THROWS_WITH(trainer.step(Tensor<float>(Shape{2, 16})), Catch::Contains("(2, 16)"));
  REQUIRE_THROWS_WITH(trainer.step(Tensor<float>(Shape{2, 3, 4, 4})), Catch::Contains("(2, 3, 4, 4)"));
  REQUIRE_THROWS_WITH(trainer.set_step_count(-1), Catch::Contains("step count must be >= 0"));
  REQUIRE(trainer.step_count() == 0);

  const Tensor<float> images(Shape{5, 1, 4, 4});
  BatchOptions b;
  b.batch_size = 0;
  REQUIRE_THROWS_WITH(BatchSampler<float>(images, b), Catch::Contains("batch_size must be positive, got 0"));
  b.batch_size = -3;
  REQUIRE_THROWS_WITH(BatchSampler<float>(images, b), Catch::Contains("batch_size"));
  b.batch_size = 8;
  b.drop_last = true;
  REQUIRE_THROWS_WITH(BatchSampler<float>(images, b), Catch::Contains("leaves no batch"));
  b.drop_last = false;
  const Tensor<float> empty(Shape{0, 1, 4, 4});
  REQUIRE_THROWS_WITH(BatchSampler<float>(empty, b), Catch::Contains("dataset is empty"));
  const Tensor<float> flat(Shape{5, 16});
  REQUIRE_THROWS_WITH(BatchSampler<float>(flat, b), Catch::Contains("(N, C, H, W)"));
  BatchSampler<float> sampler(images, b);
  Tensor<float> batch;
  REQUIRE_THROWS_WITH(sampler.batch(-1, batch), Catch::Contains("step must be >= 0"));
}

TEST_CASE("load_checkpoint refuses malformed or inconsistent training state, naming the file and the field") {
  Unet<float> net(precond_tiny(), 1);
  const NoiseSchedule schedule(BetaSchedule::Linear, 10);
  Trainer<float> trainer(net, schedule, TrainerOptions{});
  Tensor<float> x(Shape{2, 1, 4, 4}, 0.5f);
  trainer.step(x);
  trainer.step(x);
  const std::string good = precond_scratch("good.safetensors");
  save_checkpoint(good, trainer);

  struct Case {
    const char* label;
    std::function<void(std::map<std::string, std::string>&)> edit;
    std::vector<std::string> expect;
    std::function<bool(const std::string&)> keep = [](const std::string&) { return true; };
  };
  using M = std::map<std::string, std::string>;
  const nlohmann::json erase = nlohmann::json(nlohmann::json::value_t::discarded);
  const std::vector<Case> cases = {
      {"no_train_state", [](M& m) { m.erase(kTrainStateKey); }, {"no 'diffusion.train' metadata"}},
      {"train_state_not_json", [](M& m) { m[kTrainStateKey] = "{\"step\": 2,"; }, {"'diffusion.train'", "not valid JSON"}},
      {"train_state_array", [](M& m) { m[kTrainStateKey] = "[2, 2]"; }, {"'diffusion.train'", "array", "not an object"}},
      {"step_missing", [&](M& m) { set_train_field(m, "step", erase); }, {"lacks a step counter 'step'"}},
      {"adam_step_missing", [&](M& m) { set_train_field(m, "adam_step", erase); }, {"'adam_step'"}},
      {"step_string", [&](M& m) { set_train_field(m, "step", "2"); }, {"'step'", "\"2\"", "non-negative integer"}},
      {"step_float", [&](M& m) { set_train_field(m, "step", 2.5); }, {"'step'", "2.5"}},
      {"step_huge_float", [&](M& m) { set_train_field(m, "step", 1e300); }, {"'step'", "non-negative integer"}},
      {"step_negative", [&](M& m) { set_train_field(m, "step", -4); }, {"'step'", "-4"}},
      {"step_too_big", [&](M& m) { set_train_field(m, "step", 18446744073709551615ull); }, {"'step'"}},
      {"ema_step_bool", [&](M& m) { set_train_field(m, "ema_step", true); }, {"'ema_step'", "true"}},
      {"prediction_other", [&](M& m) { set_train_field(m, "prediction", "v"); },
       {"trained to predict \"v\"", "the trainer predicts \"eps\""}},
      {"prediction_not_string", [&](M& m) { set_train_field(m, "prediction", 3); }, {"predict 3"}},
      {"config_missing", [](M& m) { m.erase(kUnetConfigKey); }, {"no 'diffusion.unet'"}},
      {"config_wrong_type", [](M& m) { m[kUnetConfigKey] = R"({"dim": "4"})"; }, {"field 'dim'", "expected an integer"}},
      {"config_other", [](M& m) { m[kUnetConfigKey] = R"({"dim": 8, "channels": 1, "dim_mults": [1, 2]})"; },
       {"U-Net configuration", "differs"}},
      {"no_schedule", [](M&) {}, {"no 'schedule.betas'"}, [](const std::string& n) { return n != "schedule.betas"; }},
      {"no_ema", [](M&) {}, {"no EMA weights"}, [](const std::string& n) { return n.rfind("ema.", 0) != 0; }},
      {"no_adam_moment", [](M&) {}, {"missing tensor 'adam.exp_avg_sq.init_conv.weight'"},
       [](const std::string& n) { return n != "adam.exp_avg_sq.init_conv.weight"; }},
      {"no_weight", [](M&) {}, {"missing tensor 'final_conv.1.bias'"},
       [](const std::string& n) { return n != "final_conv.1.bias"; }},
  };
  for (const Case& c : cases) {
    const std::string path = precond_scratch(std::string(c.label) + ".safetensors");
    rewrite(good, path, c.edit, c.keep);
    Unet<float> fresh(precond_tiny(), 2);
    Trainer<float> t(fresh, schedule, TrainerOptions{});
    const std::vector<float> before(fresh.params().values(), fresh.params().values() + fresh.params().size());
    INFO("case " << c.label);
    try {
      load_checkpoint(path, t);
      FAIL("no exception");
    } catch (const Error& e) {
      const std::string msg = e.what();
      INFO("message: " << msg);
      REQUIRE(msg.find(path) != std::string::npos);
      for (const auto& part : c.expect) REQUIRE(msg.find(part) != std::string::npos);
    }
    REQUIRE(t.step_count() == 0);  // nothing changed
    REQUIRE(std::memcmp(before.data(), fresh.params().values(), before.size() * sizeof(float)) == 0);
  }
  // The untouched copy loads (the rewrite itself is faithful).
  const std::string same = precond_scratch("same.safetensors");
  rewrite(good, same, [](std::map<std::string, std::string>&) {});
  Unet<float> fresh(precond_tiny(), 2);
  Trainer<float> t(fresh, schedule, TrainerOptions{});
  load_checkpoint(same, t);
  REQUIRE(t.step_count() == 2);
}

TEST_CASE("check_checkpoint compares a checkpoint with the plan before any network is built") {
  Unet<float> net(precond_tiny(), 1);
  const NoiseSchedule schedule(BetaSchedule::Linear, 10);
  Trainer<float> trainer(net, schedule, TrainerOptions{});
  Tensor<float> x(Shape{2, 1, 4, 4}, 0.5f);
  trainer.step(x);
  const std::string good = precond_scratch("plan_good.safetensors");
  save_checkpoint(good, trainer);
  const CheckpointTensors has = check_checkpoint(io::SafetensorsReader(good), precond_tiny());
  REQUIRE(has.ema);
  REQUIRE(has.adam);

  // Exactly the planned tensors: an extra one, half of the EMA weights, a stray Adam moment are refused.
  const io::SafetensorsReader r(good);
  auto copy = [&](const std::string& name, const std::function<bool(const std::string&)>& keep, bool extra) {
    io::SafetensorsWriter w;
    for (const auto& n : r.names())
      if (keep(n)) w.add(n, r.read<double>(n));
    if (extra) w.add("surprise.weight", Tensor<double>(Shape{2}));
    for (const auto& kv : r.metadata()) w.add_metadata(kv.first, kv.second);
    const std::string path = precond_scratch(name);
    w.write(path);
    return path;
  };
  const std::string extra = copy("plan_extra.safetensors", [](const std::string&) { return true; }, true);
  REQUIRE_THROWS_WITH(check_checkpoint(io::SafetensorsReader(extra), precond_tiny()),
                      Catch::Contains(extra) && Catch::Contains("tensor 'surprise.weight' is not part of a checkpoint"));
  Unet<float> fresh(precond_tiny(), 2);
  Trainer<float> t(fresh, schedule, TrainerOptions{});
  REQUIRE_THROWS_WITH(load_checkpoint(extra, t), Catch::Contains("surprise.weight"));
  REQUIRE(t.step_count() == 0);
  const std::string half_ema = copy(
      "plan_half_ema.safetensors", [](const std::string& n) { return n != "ema.final_conv.1.bias"; }, false);
  REQUIRE_THROWS_WITH(check_checkpoint(io::SafetensorsReader(half_ema), precond_tiny()),
                      Catch::Contains("missing tensor 'ema.final_conv.1.bias'"));
  const std::string stray_adam = copy(
      "plan_stray_adam.safetensors",
      [](const std::string& n) { return n.rfind("adam.", 0) != 0 || n == "adam.exp_avg.init_conv.weight"; }, false);
  REQUIRE_THROWS_WITH(check_checkpoint(io::SafetensorsReader(stray_adam), precond_tiny()),
                      Catch::Contains("missing tensor 'adam.exp_avg.init_conv.bias'"));

  // A checkpoint whose configuration asks for a network far larger than its tensors: refused from the plan, with
  // the peak resident memory bounded (the network would take 470 MB with its gradients, 10^12 parameters 8 TB).
  auto with_config = [&](const std::string& name, const UnetConfig& config) {
    const std::string path = precond_scratch(name);
    rewrite(good, path, [&](std::map<std::string, std::string>& m) {
      m[kUnetConfigKey] = config.to_json().dump();
      m[kUnetExtensionsKey] = config.extensions_to_json().dump();
    });
    return path;
  };
  UnetConfig big = precond_tiny();
  big.dim = 256;  // 5.9e7 parameters
  UnetConfig trillion = precond_tiny();
  trillion.dim = 16384;
  trillion.dim_mults = {1, 2, 4, 4};
  trillion.use_convnext = false;
  const std::vector<std::pair<UnetConfig, std::string>> cases = {
      {big, "tensor 'init_conv.weight' has shape (2, 1, 7, 7) but the U-Net expects (170, 1, 7, 7)"},
      {trillion, "total parameters must be at most 4294967296"}};
  for (const auto& [config, expect] : cases) {
    const std::string path = with_config("plan_big.safetensors", config);
    const io::SafetensorsReader reader(path);
    testing::PeakMemory peak;
    REQUIRE_THROWS_WITH(check_checkpoint(reader, config), Catch::Contains(path) && Catch::Contains(expect));
    INFO("peak resident memory grew by " << peak.growth_bytes() / 1024 << " KiB");
    REQUIRE(peak.growth_bytes() >= 0);
    REQUIRE(peak.growth_bytes() < (50ll << 20));
  }
}

TEST_CASE("a checkpoint's EMA weights load into a U-Net with WeightLoadOptions::prefix") {
  Unet<float> net(precond_tiny(), 1);
  Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 10), TrainerOptions{});
  Tensor<float> x(Shape{2, 1, 4, 4}, 0.5f);
  trainer.step(x);
  trainer.step(x);
  REQUIRE(trainer.ema() != nullptr);
  const std::string path = precond_scratch("ema_prefix.safetensors");
  save_checkpoint(path, trainer);
  WeightLoadOptions o;
  o.prefix = "ema.";
  o.allow_extra_tensors = true;  // the raw weights, the Adam moments and the schedule
  Unet<float> ema(precond_tiny(), 5);
  load_unet_weights(ema, path, o);
  REQUIRE(std::memcmp(ema.params().values(), trainer.ema()->shadow(), net.params().size() * sizeof(float)) == 0);
  REQUIRE(std::memcmp(ema.params().values(), net.params().values(), net.params().size() * sizeof(float)) != 0);
}
