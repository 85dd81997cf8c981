#pragma once
// U-Net weights in safetensors files, interchangeable with the PyTorch reference's state_dict():
// tensor names and shapes are exactly the reference's, and the configuration travels in the header's
// __metadata__ under "diffusion.unet" (the reference's Unet keyword arguments as JSON, so that PyTorch can build
// the module with Unet(**json.loads(...)) and load_state_dict(strict=True)). Architecture extensions, when used, go
// under "diffusion.unet.extensions".
//
//   save_unet_weights(net, path [, values, metadata])   writes atomically; `values` overrides the weights written
//                                                        (e.g. EMA weights), laid out like net.params().values()
//   load_unet_weights(net, path [, options])             checks every name, shape and dtype first, then loads
//   read_unet_config(path)                               the config stored in a file
//   load_unet<T>(path)                                   builds the network a file describes and loads it
// Loading converts F16, BF16, F32 and F64 to T. Errors name the file and the first problem found.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/model/unet.hpp"

namespace diffusion {

inline constexpr const char* kUnetConfigKey = "diffusion.unet";
inline constexpr const char* kUnetExtensionsKey = "diffusion.unet.extensions";

struct WeightLoadOptions {
  bool allow_extra_tensors = false;  // tensors in the file that the model does not have
};

template <class T>
void save_unet_weights(const Unet<T>& net, const std::string& path, const T* values = nullptr,
                       const std::map<std::string, std::string>& metadata = {}) {
  const ParameterStore<T>& store = net.params();
  const T* source = values ? values : store.values();
  io::SafetensorsWriter writer;
  for (const auto& e : store.entries()) writer.add(e.name, e.shape, source + e.offset);
  writer.add_metadata(kUnetConfigKey, net.config().to_json().dump());
  const nlohmann::json ext = net.config().extensions_to_json();
  if (!ext.empty()) writer.add_metadata(kUnetExtensionsKey, ext.dump());
  for (const auto& kv : metadata) writer.add_metadata(kv.first, kv.second);
  writer.write(path);
}

inline UnetConfig unet_config_from_metadata(const std::map<std::string, std::string>& metadata,
                                            const std::string& path) {
  const auto it = metadata.find(kUnetConfigKey);
  DIFFUSION_CHECK(it != metadata.end(), "weights file '" << path << "': no '" << kUnetConfigKey
                                                         << "' entry in the metadata; give the U-Net configuration explicitly");
  nlohmann::json config, ext;
  try {
    config = nlohmann::json::parse(it->second);
    const auto e = metadata.find(kUnetExtensionsKey);
    if (e != metadata.end()) ext = nlohmann::json::parse(e->second);
  } catch (const nlohmann::json::exception& ex) {
    throw Error("weights file '" + path + "': metadata '" + kUnetConfigKey + "' is not valid JSON (" + ex.what() + ")");
  }
  return UnetConfig::from_json(config, ext, "weights file '" + path + "'");
}

inline UnetConfig read_unet_config(const std::string& path) {
  const io::SafetensorsReader reader(path);
  return unet_config_from_metadata(reader.metadata(), path);
}

// Loads every parameter of `net` from an open reader: all names, shapes and dtypes are checked before any value
// is copied, so a failed load leaves the network unchanged.
template <class T>
void load_unet_weights(Unet<T>& net, const io::SafetensorsReader& reader, const WeightLoadOptions& options = {}) {
  ParameterStore<T>& store = net.params();
  const std::string where = "weights file '" + reader.path() + "': ";
  for (const auto& e : store.entries()) {
    DIFFUSION_CHECK(reader.contains(e.name), where << "missing tensor '" << e.name << "' (shape " << e.shape
                                                   << ") that the U-Net needs");
    const io::TensorInfo& info = reader.info(e.name);
    const io::DType d = info.dtype;
    DIFFUSION_CHECK(d == io::DType::F32 || d == io::DType::F64 || d == io::DType::F16 || d == io::DType::BF16,
                    where << "tensor '" << e.name << "' has dtype " << io::dtype_name(d)
                          << ", expected a floating type (F32, F64, F16 or BF16)");
    const Shape stored = reader.shape(e.name);
    DIFFUSION_CHECK(stored == e.shape, where << "tensor '" << e.name << "' has shape " << stored
                                             << " but the U-Net expects " << e.shape);
  }
  if (!options.allow_extra_tensors) {
    for (const auto& name : reader.names())
      DIFFUSION_CHECK(store.find(name) != nullptr,
                      where << "tensor '" << name << "' is not a parameter of this U-Net (allow extra tensors to ignore it)");
  }
  for (const auto& e : store.entries()) reader.read_into(e.name, e.shape, store.values() + e.offset);
}

template <class T>
void load_unet_weights(Unet<T>& net, const std::string& path, const WeightLoadOptions& options = {}) {
  const io::SafetensorsReader reader(path);
  load_unet_weights(net, reader, options);
}

// A lower bound on the number of parameters of Unet(config), counted in double (no overflow) from its largest
// weights only: the two 3x3 convolutions of every block (ResNet: din*dout*9 + dout*dout*9; ConvNeXt: the same times
// convnext_mult), the 4x4 down/upsampling convolutions, the attention projections (4 * dim * heads * dim_head),
// the time MLP (20 dim^2), the 7x7 input and 1x1 output convolutions. Tested against Unet::params().count().
inline double unet_min_parameter_count(const UnetConfig& c) {
  auto block = [](double din, double dout) { return 9.0 * din * dout + 9.0 * dout * dout; };
  const double hidden = static_cast<double>(c.attention_heads) * static_cast<double>(c.attention_dim_head);
  auto attention = [hidden](AttentionKind kind, double d) { return kind == AttentionKind::None ? 0.0 : 4.0 * d * hidden; };
  const double dim = static_cast<double>(c.dim);
  std::vector<double> dims = {static_cast<double>(c.resolved_init_dim())};
  for (Index m : c.dim_mults) dims.push_back(dim * static_cast<double>(m));
  const Index L = c.levels();
  double n = 49.0 * static_cast<double>(c.channels) * dims[0] + dim * static_cast<double>(c.resolved_out_dim());
  if (c.with_time_emb) n += 20.0 * dim * dim;
  for (Index l = 0; l < L; ++l) {
    const double din = dims[static_cast<std::size_t>(l)], dout = dims[static_cast<std::size_t>(l + 1)];
    n += block(din, dout) + block(dout, dout) + attention(c.attention_at(l), dout);
    if (l < L - 1) n += 16.0 * dout * dout;  // downsample
  }
  for (Index level = L - 1; level >= 1; --level) {
    const double din = dims[static_cast<std::size_t>(level)], dout = dims[static_cast<std::size_t>(level + 1)];
    n += block(2.0 * dout, din) + block(din, din) + attention(c.attention_at(level), din) + 16.0 * din * din;
  }
  n += 2.0 * block(dims.back(), dims.back()) + attention(c.mid_attention, dims.back());
  n += block(dim, dim);  // final block
  return n;
}

// Builds the U-Net described by the file's metadata and loads its weights. Before building, the configuration is
// checked against the number of values the file holds: a small (or hostile) file whose metadata describes a huge
// network is refused without allocating it.
template <class T>
std::unique_ptr<Unet<T>> load_unet(const std::string& path, const WeightLoadOptions& options = {}) {
  const io::SafetensorsReader reader(path);
  const UnetConfig config = unet_config_from_metadata(reader.metadata(), path);
  double held = 0.0;  // values in the file, every tensor counted
  for (const auto& name : reader.names()) {
    double numel = 1.0;
    for (std::int64_t d : reader.info(name).shape) numel *= static_cast<double>(d);
    held += numel;
  }
  const double needed = unet_min_parameter_count(config);
  DIFFUSION_CHECK(needed <= held, "weights file '" << path << "': the U-Net configuration " << config.to_json().dump()
                                                   << " needs at least " << needed << " parameters, but the file holds only "
                                                   << held << " values");
  auto net = std::make_unique<Unet<T>>(config);
  load_unet_weights(*net, reader, options);
  return net;
}

}  // namespace diffusion
