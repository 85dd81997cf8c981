// libFuzzer target: the metadata path of load_unet. The input is the "diffusion.unet" JSON, optionally followed by
// a NUL byte and the "diffusion.unet.extensions" JSON (everything after the first NUL); the target wraps them in a
// safetensors file (in memory) and
//   1. read_unet_config and load_unet<float> on the file with no tensors: load_unet must refuse it (it cannot hold
//      the weights) from the configuration's plan alone, naming the first missing tensor or the parameter cap,
//      whatever sizes the JSON claims (any allocation of the network would show as a timeout or out-of-memory);
//   2. when the configuration is valid and its plan (model/unet_plan.hpp) small, builds that U-Net, requires its
//      parameters to be exactly the plan's, stores its weights under the same metadata, and requires load_unet to
//      give back the same configuration and bit-identical weights, and a forward pass on a
//      (1, channels, 2^(levels-1), 2^(levels-1)) input to give a finite output of the right shape.
// Any exception other than diffusion::Error, any crash, leak, hang or sanitizer report is a bug.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "diffusion/core/random.hpp"
#include "diffusion/io/safetensors.hpp"
#include "diffusion/model/unet_plan.hpp"
#include "diffusion/model/unet_weights.hpp"
#include "fuzz_common.hpp"

namespace {

using namespace diffusion;

constexpr Index kMaxParameters = 100000;  // larger networks are only planned, not built (keeps each run fast)

void write_file(fuzz::MemFile& file, const io::SafetensorsWriter& w) {
  const std::vector<std::uint8_t> bytes = w.serialize();
  file.write(bytes.data(), bytes.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static fuzz::MemFile file("fuzz_unet_config");
  const std::string input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = input.find('\0');
  const std::string config_text = input.substr(0, nul);
  const bool has_ext = nul != std::string::npos;
  const std::string ext_text = has_ext ? input.substr(nul + 1) : std::string();

  io::SafetensorsWriter empty;
  try {
    empty.add_metadata(kUnetConfigKey, config_text);
    if (has_ext) empty.add_metadata(kUnetExtensionsKey, ext_text);
    write_file(file, empty);
  } catch (const Error&) {
    return 0;  // not valid UTF-8: cannot be stored as safetensors metadata
  }
  UnetConfig config;
  try {
    config = read_unet_config(file.path());
  } catch (const Error&) {
    bool threw = false;
    try {
      (void)load_unet<float>(file.path());
    } catch (const Error&) {
      threw = true;
    }
    FUZZ_REQUIRE(threw);
    return 0;
  }
  {
    bool threw = false;
    try {
      (void)load_unet<float>(file.path());  // no tensors: refused from the plan, before the network is built
    } catch (const Error& e) {
      threw = std::strstr(e.what(), "missing tensor 'init_conv.weight'") != nullptr ||
              std::strstr(e.what(), "total parameters must be at most") != nullptr;
    }
    FUZZ_REQUIRE(threw);
  }
  const std::optional<UnetPlan> planned = [&]() -> std::optional<UnetPlan> {
    try {
      return plan_unet(config, kMaxParameters);
    } catch (const Error&) {
      return std::nullopt;  // too large to build here (or beyond UnetConfig::kMaxParameters)
    }
  }();
  if (!planned) return 0;
  const UnetPlan& plan = *planned;

  Unet<float> net(config, 7);
  const auto& entries = net.params().entries();
  FUZZ_REQUIRE(entries.size() == plan.parameters.size());
  for (std::size_t i = 0; i < entries.size(); ++i)
    FUZZ_REQUIRE(entries[i].name == plan.parameters[i].name && entries[i].shape == plan.parameters[i].shape);
  FUZZ_REQUIRE(static_cast<Index>(net.params().count()) == plan.parameter_count);
  io::SafetensorsWriter full;
  for (const auto& e : net.params().entries()) full.add(e.name, e.shape, net.params().values() + e.offset);
  full.add_metadata(kUnetConfigKey, config_text);
  if (has_ext) full.add_metadata(kUnetExtensionsKey, ext_text);
  write_file(file, full);
  const auto loaded = load_unet<float>(file.path());
  FUZZ_REQUIRE(loaded->config().to_json() == config.to_json());
  FUZZ_REQUIRE(loaded->config().extensions_to_json() == config.extensions_to_json());
  FUZZ_REQUIRE(loaded->params().size() == net.params().size());
  FUZZ_REQUIRE(std::memcmp(loaded->params().values(), net.params().values(), net.params().size() * sizeof(float)) == 0);

  const Index side = Index(1) << (config.levels() - 1);
  if (side > 16) return 0;
  Tensor<float> x(Shape{1, config.channels, side, side});
  Rng rng(1);
  rng.normal(x.data(), x.numel());
  Tensor<float> y;
  if (loaded->is_conditional())  // the last class: its embedding row is read
    loaded->forward(x, {5}, {config.num_classes - 1}, y);
  else
    loaded->forward(x, {5}, y);
  FUZZ_REQUIRE(y.shape() == (Shape{1, config.resolved_out_dim(), side, side}));
  for (Index i = 0; i < y.numel(); ++i) FUZZ_REQUIRE(std::isfinite(y[i]));
  return 0;
}
