// UnetPlan (model/unet_plan.hpp), the one written form of the U-Net's architecture:
//   - the network Unet::build constructs registers exactly the plan's parameters (names, shapes, order) for
//     configurations covering both block types, every attention kind per level, no time embedding, explicit
//     init_dim/out_dim and 1 to 4 levels; the stage list chains its channel counts; the plan is the reference
//     state_dict of the golden fixtures;
//   - the loaders check a file against the plan before building anything: issue 18's reproducer (a fuzz input of
//     tests/fuzz/regressions/unet_config) and a configuration asking for 10^12 parameters are refused in well under
//     a second with the peak resident memory growing by less than 50 MB (measured, tests/support/peak_memory.hpp).
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/model/unet.hpp"
#include "diffusion/model/unet_plan.hpp"
#include "diffusion/model/unet_weights.hpp"
#include "support/peak_memory.hpp"

using namespace diffusion;

namespace {

constexpr long long kMemoryBound = 50ll << 20;  // bytes of peak resident growth allowed while refusing a file

std::string plan_golden(const std::string& name) { return std::string(DIFFUSION_GOLDEN_DIR) + "/" + name; }
std::string regression(const std::string& name) {
  return std::string(DIFFUSION_GOLDEN_DIR) + "/../fuzz/regressions/unet_config/" + name;
}
std::string plan_scratch(const std::string& name) {
  const auto dir = std::filesystem::path(DIFFUSION_TEST_BINARY_DIR) / "unet_plan";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

std::string describe(const UnetConfig& c) { return c.to_json().dump() + " " + c.extensions_to_json().dump(); }

UnetConfig plan_tiny() {
  UnetConfig c;
  c.dim = 8;
  c.channels = 1;
  c.dim_mults = {1, 2};
  return c;
}

// 1.02e12 parameters (4 TB in float), every field within its own cap.
UnetConfig trillion() {
  UnetConfig c;
  c.dim = 16384;
  c.dim_mults = {1, 2, 4, 4};
  c.use_convnext = false;
  return c;
}

// Configurations that together exercise every branch of the plan.
std::vector<UnetConfig> plan_configs() {
  std::vector<UnetConfig> configs;
  configs.push_back(plan_tiny());  // ConvNeXt, 2 levels, linear attention, full middle attention
  UnetConfig resnet = plan_tiny();
  resnet.use_convnext = false;
  configs.push_back(resnet);
  UnetConfig one_level = plan_tiny();
  one_level.dim_mults = {1};
  configs.push_back(one_level);
  UnetConfig no_time = plan_tiny();
  no_time.with_time_emb = false;
  no_time.dim_mults = {1, 2, 2};
  configs.push_back(no_time);
  UnetConfig mixed = plan_tiny();  // every attention kind at some level, none in the middle, other heads
  mixed.dim_mults = {1, 2, 4};
  mixed.level_attention = {AttentionKind::None, AttentionKind::Full, AttentionKind::Linear};
  mixed.mid_attention = AttentionKind::None;
  mixed.attention_heads = 1;
  mixed.attention_dim_head = 4;
  configs.push_back(mixed);
  UnetConfig dims = plan_tiny();  // explicit init_dim and out_dim, ConvNeXt mult 3
  dims.dim = 4;
  dims.convnext_mult = 3;
  dims.init_dim = 12;
  dims.out_dim = 3;
  configs.push_back(dims);
  UnetConfig resnet4 = plan_tiny();  // ResNet, 4 levels, full attention everywhere, linear middle, 4 groups, no time
  resnet4.use_convnext = false;
  resnet4.resnet_block_groups = 4;
  resnet4.dim_mults = {1, 2, 3, 4};
  resnet4.level_attention = std::vector<AttentionKind>(4, AttentionKind::Full);
  resnet4.mid_attention = AttentionKind::Linear;
  resnet4.with_time_emb = false;
  resnet4.init_dim = 4;
  resnet4.out_dim = 2;
  resnet4.channels = 2;
  configs.push_back(resnet4);
  configs.push_back(UnetConfig{});  // the primer's defaults: dim 28, 3 channels, (1, 2, 4, 8)
  return configs;
}

// The peak resident growth of a call that must throw an Error containing every string of `expect`; also its time.
template <class F>
void require_refused_cheaply(F&& call, const std::vector<std::string>& expect) {
  testing::PeakMemory peak;
  if (!peak.reset_worked()) WARN("cannot reset the peak RSS (/proc/self/clear_refs): growth measured from the old peak");
  const auto start = std::chrono::steady_clock::now();
  std::string message;
  try {
    call();
  } catch (const Error& e) {
    message = e.what();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const long long growth = peak.growth_bytes();
  INFO("message: " << message);
  INFO("took " << seconds << " s, peak resident memory grew by " << growth / 1024 << " KiB (baseline "
               << peak.baseline_bytes() / 1024 << " KiB)");
  REQUIRE(!message.empty());
  for (const auto& part : expect) REQUIRE(message.find(part) != std::string::npos);
  REQUIRE(growth >= 0);
  REQUIRE(growth < kMemoryBound);
  REQUIRE(seconds < 1.0);
}

}  // namespace

TEST_CASE("the U-Net registers exactly the parameters of its plan in order") {
  for (const UnetConfig& c : plan_configs()) {
    INFO("config " << describe(c));
    const UnetPlan plan = plan_unet(c);
    const Unet<float> net(c);
    const auto& entries = net.params().entries();
    REQUIRE(entries.size() == plan.parameters.size());
    Index total = 0;
    for (std::size_t i = 0; i < entries.size(); ++i) {
      INFO("parameter " << i << ": built '" << entries[i].name << "' " << entries[i].shape << ", planned '"
                        << plan.parameters[i].name << "' " << plan.parameters[i].shape);
      REQUIRE(entries[i].name == plan.parameters[i].name);
      REQUIRE(entries[i].shape == plan.parameters[i].shape);
      total += entries[i].shape.numel();
    }
    REQUIRE(static_cast<Index>(net.params().count()) == plan.parameter_count);
    REQUIRE(total == plan.parameter_count);
    REQUIRE(plan.find(plan.parameters.back().name) == &plan.parameters.back());
    REQUIRE(plan.find("no.such.weight") == nullptr);
  }
}

TEST_CASE("the plan's stage list chains its channel counts as the forward pass does") {
  for (const UnetConfig& c : plan_configs()) {
    INFO("config " << describe(c));
    const UnetPlan plan = plan_unet(c);
    const Index L = c.levels();
    REQUIRE(plan.levels() == L);
    REQUIRE(static_cast<Index>(plan.ups.size()) == L - 1);
    REQUIRE(plan.init_conv.in == c.channels);
    REQUIRE(plan.init_conv.out == c.resolved_init_dim());
    REQUIRE(plan.time_dim == (c.with_time_emb ? 4 * c.dim : 0));
    Index x = plan.init_conv.out;  // channels flowing through the network
    for (Index l = 0; l < L; ++l) {
      const DownStagePlan& s = plan.downs[static_cast<std::size_t>(l)];
      REQUIRE(s.level == l);
      REQUIRE(s.block1.in == x);
      REQUIRE(s.block1.out == c.dim * c.dim_mults[static_cast<std::size_t>(l)]);
      REQUIRE(s.block2.in == s.block1.out);
      REQUIRE(s.block2.out == s.block1.out);
      REQUIRE((s.block1.time_dim == plan.time_dim && s.block2.time_dim == plan.time_dim));
      REQUIRE(s.attn.kind == c.attention_at(l));
      REQUIRE(s.attn.channels == s.block2.out);
      REQUIRE(s.has_downsample == (l < L - 1));
      if (s.has_downsample) REQUIRE((s.downsample.in == s.block2.out && s.downsample.out == s.block2.out));
      x = s.block2.out;
    }
    REQUIRE(plan.mid.block1.in == x);
    REQUIRE(plan.mid.attn.kind == c.mid_attention);
    REQUIRE((plan.mid.attn.channels == x && plan.mid.block2.in == x && plan.mid.block2.out == x));
    for (const UpStagePlan& s : plan.ups) {
      const DownStagePlan& skip = plan.downs[static_cast<std::size_t>(s.level)];
      REQUIRE(s.block1.in == x + skip.attn.channels);  // cat(x, skip)
      REQUIRE(s.block1.out == plan.downs[static_cast<std::size_t>(s.level)].block1.in);
      REQUIRE((s.block2.in == s.block1.out && s.block2.out == s.block1.out));
      REQUIRE(s.attn.kind == c.attention_at(s.level));
      REQUIRE((s.upsample.in == s.block2.out && s.upsample.out == s.block2.out));
      x = s.upsample.out;
    }
    REQUIRE(plan.final_block.in == x);
    REQUIRE((plan.final_block.out == c.dim && plan.final_block.time_dim == 0));
    REQUIRE((plan.final_conv.in == c.dim && plan.final_conv.out == c.resolved_out_dim()));
  }
}

TEST_CASE("the plan is the reference state_dict of the golden fixtures") {
  for (const std::string cfg : {"unet_convnext", "unet_resnet"}) {
    INFO(cfg);
    const io::SafetensorsReader reader(plan_golden(cfg + ".weights.safetensors"));
    const UnetPlan plan = plan_unet(read_unet_config(reader.path()));
    REQUIRE_NOTHROW(check_unet_tensors(reader, plan));
    REQUIRE(reader.names().size() == plan.parameters.size());
  }
}

TEST_CASE("plan_unet refuses more parameters than the cap naming the total without allocating") {
  const UnetConfig big = trillion();
  REQUIRE_NOTHROW(big.validate());
  const UnetPlan uncapped = plan_unet(big, std::numeric_limits<Index>::max());  // a plan is names and shapes only
  REQUIRE(uncapped.parameter_count >= Index(1000000000000));
  const std::string total = std::to_string(uncapped.parameter_count);
  require_refused_cheaply([&] { (void)plan_unet(big); },
                          {"total parameters must be at most 4294967296", "asks for " + total});
  require_refused_cheaply([&] { Unet<float> net(big); }, {"total parameters must be at most", total});
  // The estimate of the worst case within the width caps: 16 levels of width 64, convnext_mult 1024.
  UnetConfig deep = plan_tiny();
  deep.dim = 64;
  deep.dim_mults = std::vector<Index>(16, 1);
  deep.convnext_mult = 1024;
  REQUIRE_NOTHROW(deep.validate());
  require_refused_cheaply([&] { (void)plan_unet(deep); }, {"total parameters must be at most", "convnext_mult 1024"});
  // A caller may set a lower cap.
  REQUIRE_THROWS_WITH(plan_unet(plan_tiny(), 1000), Catch::Contains("at most 1000"));
  REQUIRE(plan_unet(plan_tiny(), plan_unet(plan_tiny()).parameter_count).parameter_count > 1000);
}

TEST_CASE("load_unet refuses the fuzzer's convnext_mult 5162 input before building the network") {
  // The libFuzzer input of issue 18 (tests/fuzz/fuzz_unet_config.cpp: the "diffusion.unet" JSON, a NUL, the
  // extensions JSON): dim 4, dim_mults [1, 2], convnext_mult 5162, a network of 32 M parameters (260 MB with
  // gradients) that the old lower bound, blind to convnext_mult, let through for a file of 120 KB.
  std::ifstream in(regression("convnext_mult_5162.json"), std::ios::binary);
  REQUIRE(in.good());
  const std::string input((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t nul = input.find('\0');
  REQUIRE(nul != std::string::npos);
  const std::string config_text = input.substr(0, nul), ext_text = input.substr(nul + 1);
  auto metadata = [&](io::SafetensorsWriter& w, const std::string& config) {
    w.add_metadata(kUnetConfigKey, config);
    w.add_metadata(kUnetExtensionsKey, ext_text);
  };

  // As the fuzz target does: the metadata alone.
  io::SafetensorsWriter bare;
  metadata(bare, config_text);
  const std::string bare_path = plan_scratch("repro_no_tensors.safetensors");
  bare.write(bare_path);
  const UnetConfig config = read_unet_config(bare_path);
  REQUIRE(config.convnext_mult == 5162);
  REQUIRE(plan_unet(config).parameter_count == 32414187);  // Unet::build checks that it builds exactly the plan
  require_refused_cheaply([&] { (void)load_unet<float>(bare_path); },
                          {bare_path, "missing tensor 'init_conv.weight'", "the file has 0 tensors, the U-Net 150"});

  // The file of kilobytes: every tensor of the same network with convnext_mult 2, under the 5162 header.
  nlohmann::json small_json = nlohmann::json::parse(config_text);
  small_json["convnext_mult"] = 2;
  const Unet<float> small(UnetConfig::from_json(small_json, nlohmann::json::parse(ext_text), "test"), 3);
  REQUIRE(small.params().count() == 30027);
  io::SafetensorsWriter w;
  for (const auto& e : small.params().entries()) w.add(e.name, e.shape, small.params().values() + e.offset);
  metadata(w, config_text);
  const std::string path = plan_scratch("repro_mult2_tensors.safetensors");
  w.write(path);
  REQUIRE(std::filesystem::file_size(path) < 200 * 1024);
  require_refused_cheaply([&] { (void)load_unet<float>(path); },
                          {path, "tensor 'downs.0.0.net.1.weight' has shape (8, 2, 3, 3)",
                           "the U-Net expects (20648, 2, 3, 3)"});
  // The same file under its own header loads.
  io::SafetensorsWriter good;
  for (const auto& e : small.params().entries()) good.add(e.name, e.shape, small.params().values() + e.offset);
  metadata(good, small_json.dump());
  good.write(plan_scratch("repro_mult2_good.safetensors"));
  REQUIRE(load_unet<float>(plan_scratch("repro_mult2_good.safetensors"))->params().count() == 30027);
}

TEST_CASE("load_unet refuses a file whose configuration asks for 10^12 parameters") {
  const UnetConfig big = trillion();
  io::SafetensorsWriter w;
  const std::vector<float> values(49, 0.5f);
  w.add("init_conv.weight", Shape{1, 1, 7, 7}, values.data());
  w.add_metadata(kUnetConfigKey, big.to_json().dump());
  const std::string path = plan_scratch("1e12.safetensors");
  w.write(path);
  REQUIRE_NOTHROW(read_unet_config(path));  // every field within its own cap
  require_refused_cheaply([&] { (void)load_unet<float>(path); }, {path, "total parameters must be at most"});
  // load_unet_weights into an existing network checks against the plan of that network.
  Unet<float> net(plan_tiny());
  require_refused_cheaply([&] { load_unet_weights(net, path); },
                          {path, "tensor 'init_conv.weight' has shape (1, 1, 7, 7)", "expects (4, 1, 7, 7)"});
}

TEST_CASE("check_unet_tensors wants exactly the plan's tensors and names the first that differs") {
  Unet<float> net(plan_tiny(), 5);
  const UnetPlan plan = plan_unet(plan_tiny());
  const auto& entries = net.params().entries();
  auto file = [&](const std::string& name, auto&& edit) {
    io::SafetensorsWriter w;
    for (const auto& e : entries) edit(w, e);
    const std::string path = plan_scratch(name);
    w.write(path);
    return path;
  };
  const auto add = [&](io::SafetensorsWriter& w, const ParameterStore<float>::Entry& e, const std::string& prefix) {
    w.add(prefix + e.name, e.shape, net.params().values() + e.offset);
  };
  const std::string exact = file("exact.safetensors", [&](auto& w, const auto& e) { add(w, e, ""); });
  REQUIRE_NOTHROW(check_unet_tensors(io::SafetensorsReader(exact), plan));
  const std::string extra = file("extra.safetensors", [&](auto& w, const auto& e) {
    add(w, e, "");
    if (&e == &entries.back()) w.add("zzz.extra", Shape{1}, net.params().values());
  });
  REQUIRE_THROWS_WITH(check_unet_tensors(io::SafetensorsReader(extra), plan),
                      Catch::Contains(extra) && Catch::Contains("tensor 'zzz.extra' is not a parameter") &&
                          Catch::Contains("the file has " + std::to_string(entries.size() + 1) + " tensors"));
  WeightLoadOptions lenient;
  lenient.allow_extra_tensors = true;
  REQUIRE_NOTHROW(check_unet_tensors(io::SafetensorsReader(extra), plan, lenient));
  const std::string missing = file("missing.safetensors", [&](auto& w, const auto& e) {
    if (&e != &entries[3]) add(w, e, "");
  });
  REQUIRE_THROWS_WITH(check_unet_tensors(io::SafetensorsReader(missing), plan),
                      Catch::Contains("missing tensor '" + entries[3].name + "'"));
  // A prefix reads another set of tensors of the same file (a checkpoint's "ema.").
  const std::string prefixed = file("prefixed.safetensors", [&](auto& w, const auto& e) {
    add(w, e, "");
    add(w, e, "ema.");
  });
  WeightLoadOptions ema;
  ema.prefix = "ema.";
  REQUIRE_THROWS_WITH(check_unet_tensors(io::SafetensorsReader(prefixed), plan, ema),
                      Catch::Contains("is not a parameter"));
  ema.allow_extra_tensors = true;
  Unet<float> other(plan_tiny(), 9);
  load_unet_weights(other, prefixed, ema);
  REQUIRE(std::memcmp(other.params().values(), net.params().values(), net.params().size() * sizeof(float)) == 0);
}
