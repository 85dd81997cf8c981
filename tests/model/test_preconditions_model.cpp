// Preconditions of model/: UnetConfig parsing (wrong JSON types, out-of-range and absurd values), the U-Net's
// input checks, and load_unet refusing a file whose metadata describes a network far larger than the file.
// Each case names the field or argument in the message.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <string>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/model/unet.hpp"
#include "diffusion/model/unet_weights.hpp"

using namespace diffusion;

namespace {

std::string scratch(const std::string& name) {
  const auto dir = std::filesystem::path(DIFFUSION_TEST_BINARY_DIR) / "preconditions_model";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

UnetConfig parse(const std::string& config, const std::string& ext = "null") {
  return UnetConfig::from_json(nlohmann::json::parse(config), nlohmann::json::parse(ext), "file 'w.safetensors'");
}

UnetConfig tiny() {
  UnetConfig c;
  c.dim = 8;
  c.channels = 1;
  c.dim_mults = {1, 2};
  return c;
}

}  // namespace

TEST_CASE("UnetConfig::from_json rejects fields of the wrong JSON type, naming the field") {
  struct Case {
    const char* config;
    const char* ext;
    std::vector<std::string> expect;
  };
  const std::vector<Case> cases = {
      {R"([8, 1])", "null", {"U-Net config is a JSON array", "not a JSON object"}},
      {R"("dim=8")", "null", {"not a JSON object"}},
      {R"({"dim": "eight"})", "null", {"field 'dim'", "\"eight\"", "expected an integer"}},
      {R"({"dim": 8.5})", "null", {"field 'dim'", "8.5", "expected an integer"}},
      {R"({"dim": 1e300})", "null", {"field 'dim'", "expected an integer"}},  // a cast would be undefined
      {R"({"dim": true})", "null", {"field 'dim'", "true", "expected an integer"}},
      {R"({"dim": 18446744073709551615})", "null", {"field 'dim'", "expected an integer"}},
      {R"({"channels": [1]})", "null", {"field 'channels'", "a JSON array"}},
      {R"({"dim_mults": 4})", "null", {"field 'dim_mults'", "expected an array of integers"}},
      {R"({"dim_mults": [1, "2"]})", "null", {"field 'dim_mults'[1]", "expected an integer"}},
      {R"({"dim_mults": [1, 2.5]})", "null", {"field 'dim_mults'[1]", "2.5"}},
      {R"({"with_time_emb": 1})", "null", {"field 'with_time_emb'", "expected true or false"}},
      {R"({"use_convnext": "yes"})", "null", {"field 'use_convnext'", "expected true or false"}},
      {R"({"dim": 8})", R"([1])", {"U-Net extensions are a JSON array", "not a JSON object"}},
      {R"({"dim": 8})", R"({"level_attention": "full"})", {"'level_attention'", "expected an array"}},
      {R"({"dim": 8})", R"({"level_attention": ["full", 3, "none", "linear"]})", {"'level_attention'", "has 3"}},
      {R"({"dim": 8})", R"({"level_attention": ["full", "quadratic", "none", "linear"]})",
       {"'level_attention'", "'quadratic'", "none, linear, full"}},
      {R"({"dim": 8})", R"({"mid_attention": null, "attention_heads": 1.5})", {"'attention_heads'", "1.5"}},
      {R"({"dim": 8})", R"({"attention_dim_head": "32"})", {"'attention_dim_head'", "expected an integer"}},
  };
  for (const Case& c : cases) {
    INFO("config " << c.config << ", extensions " << c.ext);
    REQUIRE_THROWS_AS(parse(c.config, c.ext), Error);
    try {
      parse(c.config, c.ext);
    } catch (const Error& e) {
      const std::string msg = e.what();
      INFO("message: " << msg);
      REQUIRE(msg.find("file 'w.safetensors'") != std::string::npos);
      for (const auto& part : c.expect) REQUIRE(msg.find(part) != std::string::npos);
    }
  }
  // null means "the reference's default", as Python's None.
  const UnetConfig d = parse(R"({"dim": 8, "channels": 1, "dim_mults": [1, 2], "init_dim": null, "out_dim": null})");
  REQUIRE(d.resolved_init_dim() == 4);
  REQUIRE(d.resolved_out_dim() == 1);
}

TEST_CASE("UnetConfig::validate rejects out-of-range and absurd sizes before anything is allocated") {
  struct Case {
    const char* config;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {R"({"dim": 0})", "dim must be in [1, 65536], got 0"},
      {R"({"dim": -8})", "dim must be in"},
      {R"({"dim": 4611686018427387904})", "dim must be in"},
      {R"({"dim": 8, "init_dim": -1})", "init_dim must be in [0, 65536]"},
      {R"({"dim": 8, "out_dim": -3})", "out_dim must be in [0, 65536]"},
      {R"({"dim": 8, "channels": 0})", "channels must be in [1, 65536], got 0"},
      {R"({"dim": 8, "channels": 100000})", "channels must be in"},
      {R"({"dim": 8, "dim_mults": []})", "dim_mults must have 1 to 16 entries, got 0"},
      {R"({"dim": 8, "dim_mults": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]})", "dim_mults must have 1 to 16 entries, got 17"},
      {R"({"dim": 8, "dim_mults": [1, 0]})", "dim_mults entries must be positive"},
      {R"({"dim": 8, "dim_mults": [1, 4611686018427387904]})", "dim * mult <= 65536"},  // would overflow
      {R"({"dim": 8, "dim_mults": [2, 4]})", "dim_mults[0] must be 1"},
      {R"({"dim": 8, "dim_mults": [2]})", "dim_mults[0] must be 1"},  // one level: the middle feeds the final block
      {R"({"dim": 8, "convnext_mult": 0})", "convnext_mult must be positive"},
      {R"({"dim": 8, "dim_mults": [1, 8], "convnext_mult": 4096})", "convnext_mult * (widest level 64) <= 65536"},
      {R"({"dim": 6, "use_convnext": false, "resnet_block_groups": 4})", "resnet_block_groups"},
      {R"({"dim": 8, "use_convnext": false, "resnet_block_groups": 0})", "resnet_block_groups must be positive"},
      {R"({"dim": 5})", "time embedding needs an even dim >= 4"},
      {R"({"dim": 2, "init_dim": 4})", "time embedding needs an even dim >= 4"},
  };
  for (const Case& c : cases) {
    INFO("config " << c.config);
    REQUIRE_THROWS_WITH(parse(c.config), Catch::Contains(c.expect) && Catch::Contains("file 'w.safetensors'"));
  }
  REQUIRE_THROWS_WITH(parse(R"({"dim": 8, "dim_mults": [1, 2]})", R"({"level_attention": ["full"]})"),
                      Catch::Contains("level_attention has 1 entries, expected 2"));
  REQUIRE_THROWS_WITH(parse(R"({"dim": 8})", R"({"attention_heads": 0})"), Catch::Contains("attention_heads"));
  REQUIRE_THROWS_WITH(parse(R"({"dim": 8})", R"({"attention_heads": 65536, "attention_dim_head": 2})"),
                      Catch::Contains("heads * dim_head <= 65536"));
  // The constructor validates too.
  UnetConfig c = tiny();
  c.dim_mults = {2};
  REQUIRE_THROWS_WITH(Unet<float>(c), Catch::Contains("dim_mults[0] must be 1"));
}

TEST_CASE("unet_min_parameter_count is a lower bound within a factor of 2.5 of the real count") {
  std::vector<UnetConfig> configs;
  configs.push_back(tiny());
  UnetConfig resnet = tiny();
  resnet.use_convnext = false;
  configs.push_back(resnet);
  UnetConfig one_level = tiny();
  one_level.dim_mults = {1};
  configs.push_back(one_level);
  UnetConfig no_time = tiny();
  no_time.with_time_emb = false;
  configs.push_back(no_time);
  UnetConfig mixed = tiny();
  mixed.dim_mults = {1, 2, 4};
  mixed.level_attention = {AttentionKind::None, AttentionKind::Full, AttentionKind::Linear};
  mixed.mid_attention = AttentionKind::None;
  mixed.attention_heads = 1;
  mixed.attention_dim_head = 4;
  configs.push_back(mixed);
  UnetConfig wide = tiny();
  wide.dim = 4;
  wide.convnext_mult = 1;
  wide.init_dim = 12;
  wide.out_dim = 3;
  configs.push_back(wide);
  configs.push_back(UnetConfig{});  // the primer's defaults: dim 28, 3 channels, (1, 2, 4, 8)
  for (const UnetConfig& c : configs) {
    const Unet<float> net(c);
    const double bound = unet_min_parameter_count(c), count = static_cast<double>(net.params().count());
    INFO("config " << c.to_json().dump() << " " << c.extensions_to_json().dump() << ": bound " << bound
                   << ", parameters " << count);
    REQUIRE(bound <= count);
    REQUIRE(bound >= count / 2.5);  // measured ratios 0.47 .. 0.94
  }
}

TEST_CASE("load_unet refuses a small file whose metadata describes a huge network, without building it") {
  UnetConfig huge;
  huge.dim = 4096;
  huge.dim_mults = {1, 2, 4, 8};
  huge.channels = 3;  // ~10^10 parameters: 40 GB in float
  io::SafetensorsWriter w;
  const float one = 1.0f;
  w.add("init_conv.bias", Shape{1}, &one);
  w.add_metadata(kUnetConfigKey, huge.to_json().dump());
  const std::string path = scratch("huge_config.safetensors");
  w.write(path);
  REQUIRE_NOTHROW(read_unet_config(path));  // a valid (if absurd) configuration
  const auto start = std::chrono::steady_clock::now();
  REQUIRE_THROWS_WITH(load_unet<float>(path),
                      Catch::Contains(path) && Catch::Contains("needs at least") && Catch::Contains("holds only 1 values"));
  REQUIRE(std::chrono::steady_clock::now() - start < std::chrono::seconds(1));
}

TEST_CASE("unet_config_from_metadata names the file and the key") {
  std::map<std::string, std::string> m;
  REQUIRE_THROWS_WITH(unet_config_from_metadata(m, "a.safetensors"),
                      Catch::Contains("a.safetensors") && Catch::Contains("no 'diffusion.unet'"));
  m[kUnetConfigKey] = "{\"dim\": 8,";
  REQUIRE_THROWS_WITH(unet_config_from_metadata(m, "a.safetensors"), Catch::Contains("not valid JSON"));
  m[kUnetConfigKey] = tiny().to_json().dump();
  m[kUnetExtensionsKey] = "[";
  REQUIRE_THROWS_WITH(unet_config_from_metadata(m, "a.safetensors"), Catch::Contains("not valid JSON"));
  m[kUnetExtensionsKey] = "{}";
  REQUIRE(unet_config_from_metadata(m, "a.safetensors").to_json() == tiny().to_json());
}

TEST_CASE("Unet::forward and backward check their inputs") {
  Unet<float> net(tiny());
  Tensor<float> y;
  REQUIRE_THROWS_WITH(net.backward(Tensor<float>(Shape{1, 1, 4, 4})), Catch::Contains("backward called before forward"));
  // forward keeps its input until backward, so it takes named tensors (a temporary does not compile).
  const Tensor<float> empty(Shape{0, 1, 4, 4}), rank3(Shape{1, 1, 4}), channels3(Shape{1, 3, 4, 4}),
      batch2(Shape{2, 1, 4, 4}), height5(Shape{1, 1, 5, 4});
  REQUIRE_THROWS_WITH(net.forward(empty, {}, y), Catch::Contains("N > 0"));  // empty batch
  REQUIRE_THROWS_WITH(net.forward(rank3, {0}, y), Catch::Contains("(1, 1, 4)"));
  REQUIRE_THROWS_WITH(net.forward(channels3, {0}, y), Catch::Contains("(1, 3, 4, 4)"));
  REQUIRE_THROWS_WITH(net.forward(batch2, {0}, y), Catch::Contains("1 timesteps"));
  REQUIRE_THROWS_WITH(net.forward(height5, {0}, y), Catch::Contains("divisible by 2"));
}
