// Preconditions of model/: UnetConfig parsing (wrong JSON types, out-of-range and absurd values: every field has a
// stated maximum), the U-Net's input checks, and load_unet refusing a file whose metadata describes a network far
// larger than the file (more in test_unet_plan.cpp).
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

std::string precond_scratch(const std::string& name) {
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
      {R"({"dim": 8, "convnext_mult": 0})", "convnext_mult must be in [1, 1024]"},
      {R"({"dim": 8, "dim_mults": [1, 8], "convnext_mult": 4096})",
       "convnext_mult must be in [1, 1024] (convnext_mult * widest level 64 <= 65536), got 4096"},
      {R"({"dim": 8, "use_convnext": false, "convnext_mult": -1})", "convnext_mult must be in [1, 65536], got -1"},
      {R"({"dim": 6, "use_convnext": false, "resnet_block_groups": 4})", "resnet_block_groups"},
      {R"({"dim": 8, "use_convnext": false, "resnet_block_groups": 0})", "resnet_block_groups must be in [1, 65536], got 0"},
      {R"({"dim": 8, "resnet_block_groups": 100000})", "resnet_block_groups must be in [1, 65536], got 100000"},
      {R"({"dim": 8, "dim_mults": [1, 9000]})", "in [1, 8192] for dim 8, but dim_mults[1] is 9000"},
      {R"({"dim": 5})", "time embedding needs an even dim >= 4"},
      {R"({"dim": 2, "init_dim": 4})", "time embedding needs an even dim >= 4"},
  };
  for (const Case& c : cases) {
    INFO("config " << c.config);
    REQUIRE_THROWS_WITH(parse(c.config), Catch::Contains(c.expect) && Catch::Contains("file 'w.safetensors'"));
  }
  REQUIRE_THROWS_WITH(parse(R"({"dim": 8, "dim_mults": [1, 2]})", R"({"level_attention": ["full"]})"),
                      Catch::Contains("level_attention has 1 entries, expected 2"));
  REQUIRE_THROWS_WITH(parse(R"({"dim": 8})", R"({"attention_heads": 0})"),
                      Catch::Contains("attention_heads must be in [1, 65536], got 0"));
  REQUIRE_THROWS_WITH(parse(R"({"dim": 8})", R"({"attention_heads": 70000})"),
                      Catch::Contains("attention_heads must be in [1, 65536], got 70000"));
  REQUIRE_THROWS_WITH(parse(R"({"dim": 8})", R"({"attention_heads": 65536, "attention_dim_head": 2})"),
                      Catch::Contains("attention_dim_head must be positive with heads * dim_head <= 65536") &&
                          Catch::Contains("in [1, 1] for 65536 heads, got 2"));
  // The constructor validates too.
  UnetConfig c = tiny();
  c.dim_mults = {2};
  REQUIRE_THROWS_WITH(Unet<float>(c), Catch::Contains("dim_mults[0] must be 1"));
}

TEST_CASE("load_unet refuses a small file whose metadata describes a huge network, without building it") {
  UnetConfig huge;
  huge.dim = 4096;
  huge.dim_mults = {1, 2, 4, 8};
  huge.channels = 3;  // 2.3e11 parameters: 0.9 TB in float
  io::SafetensorsWriter w;
  const float one = 1.0f;
  w.add("init_conv.bias", Shape{1}, &one);
  w.add_metadata(kUnetConfigKey, huge.to_json().dump());
  const std::string path = precond_scratch("huge_config.safetensors");
  w.write(path);
  REQUIRE_NOTHROW(read_unet_config(path));  // every field within its cap; the total is checked by the plan
  const auto start = std::chrono::steady_clock::now();
  REQUIRE_THROWS_WITH(load_unet<float>(path), Catch::Contains(path) && Catch::Contains("total parameters must be at most"));
  // Within the cap, the file must hold exactly the plan's tensors.
  UnetConfig big = huge;
  big.dim = 256;  // 9.0e8 parameters: 3.6 GB in float
  w.add_metadata(kUnetConfigKey, big.to_json().dump());
  w.write(path);
  REQUIRE_THROWS_WITH(load_unet<float>(path),
                      Catch::Contains(path) && Catch::Contains("missing tensor 'init_conv.weight' (shape (170, 3, 7, 7))"));
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
  REQUIRE_THROWS_WITH(net.backward(Tensor<float>(Shape{1, 1, 4, 4})), Catch::Contains("backward needs a forward just before it"));
  // forward keeps its input until backward, so it takes named tensors (a temporary does not compile).
  const Tensor<float> empty(Shape{0, 1, 4, 4}), rank3(Shape{1, 1, 4}), channels3(Shape{1, 3, 4, 4}),
      batch2(Shape{2, 1, 4, 4}), height5(Shape{1, 1, 5, 4});
  REQUIRE_THROWS_WITH(net.forward(empty, {}, y), Catch::Contains("N > 0"));  // empty batch
  REQUIRE_THROWS_WITH(net.forward(rank3, {0}, y), Catch::Contains("(1, 1, 4)"));
  REQUIRE_THROWS_WITH(net.forward(channels3, {0}, y), Catch::Contains("(1, 3, 4, 4)"));
  REQUIRE_THROWS_WITH(net.forward(batch2, {0}, y), Catch::Contains("1 timesteps"));
  REQUIRE_THROWS_WITH(net.forward(height5, {0}, y), Catch::Contains("divisible by 2"));
}
