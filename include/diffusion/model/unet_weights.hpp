#pragma once
// U-Net weights in safetensors files, interchangeable with the PyTorch reference's state_dict():
// tensor names and shapes are exactly the reference's, and the configuration travels in the header's
// __metadata__ under "diffusion.unet" (the reference's Unet keyword arguments as JSON, so that PyTorch can build
// the module with Unet(**json.loads(...)) and load_state_dict(strict=True)). Architecture extensions, when used, go
// under "diffusion.unet.extensions".
//
//   save_unet_weights(net, path [, values, metadata])   writes atomically; `values` overrides the weights written
//                                                        (e.g. EMA weights), laid out like net.params().values()
//   check_unet_tensors(reader, plan [, options])         compares the file's tensors with a UnetPlan
//                                                        (model/unet_plan.hpp): names, shapes, dtypes, exact count
//   load_unet_weights(net, path [, options])             checks every name, shape and dtype first, then loads
//   read_unet_config(path)                               the config stored in a file (every field validated;
//                                                        plan_unet checks the total parameter count)
//   read_unet<T>(path [, options])                       plans the network a file describes, checks the file against
//                                                        the plan, and only then builds the network and loads it
//   load_unet<T>(path [, options])                       the same network in a unique_ptr
// A file therefore never makes the loader allocate more than it holds: the network built has exactly the
// parameters the file's tensors hold (each at least 2 bytes in the file), and a configuration beyond
// UnetConfig::kMaxParameters is refused from its plan alone. Loading converts F16, BF16, F32 and F64 to T.
// Errors name the file and the first tensor (or field) that differs.

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/model/unet.hpp"
#include "diffusion/model/unet_plan.hpp"

namespace diffusion {

inline constexpr const char* kUnetConfigKey = "diffusion.unet";
inline constexpr const char* kUnetExtensionsKey = "diffusion.unet.extensions";

struct WeightLoadOptions {
  bool allow_extra_tensors = false;  // tensors in the file that the model does not have
  std::string prefix;                // parameter p is stored as prefix + p (a training checkpoint's "ema.")
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

inline bool is_floating_dtype(io::DType d) {
  return d == io::DType::F32 || d == io::DType::F64 || d == io::DType::F16 || d == io::DType::BF16;
}

namespace detail {

// Every planned parameter stored as prefix + name with the planned shape and a floating dtype; `where` starts the
// error messages ("weights file 'x': "). The plan's order decides which problem is reported first.
inline void check_planned_tensors(const io::SafetensorsReader& reader, const UnetPlan& plan, const std::string& prefix,
                                  const std::string& where) {
  for (const PlannedParameter& p : plan.parameters) {
    const std::string name = prefix + p.name;
    DIFFUSION_CHECK(reader.contains(name), where << "missing tensor '" << name << "' (shape " << p.shape
                                                 << ") that the U-Net needs (the file has " << reader.names().size()
                                                 << " tensors, the U-Net " << plan.parameters.size() << ")");
    const io::TensorInfo& info = reader.info(name);
    DIFFUSION_CHECK(is_floating_dtype(info.dtype), where << "tensor '" << name << "' has dtype "
                                                         << io::dtype_name(info.dtype)
                                                         << ", expected a floating type (F32, F64, F16 or BF16)");
    const Shape stored = reader.shape(name);
    DIFFUSION_CHECK(stored == p.shape, where << "tensor '" << name << "' has shape " << stored
                                             << " but the U-Net expects " << p.shape);
  }
}

}  // namespace detail

// Compares the tensors of an open file with a plan, before anything is built or allocated: every planned parameter
// must be there (as options.prefix + name) with the planned shape and a floating dtype, and, unless
// options.allow_extra_tensors, nothing else: the file holds exactly plan.parameters.size() tensors. Throws an Error
// naming the file and the first tensor that is missing or differs (in plan order), or the first extra one.
inline void check_unet_tensors(const io::SafetensorsReader& reader, const UnetPlan& plan,
                               const WeightLoadOptions& options = {}) {
  const std::string where = "weights file '" + reader.path() + "': ";
  detail::check_planned_tensors(reader, plan, options.prefix, where);
  if (options.allow_extra_tensors) return;
  const std::size_t held = reader.names().size(), planned = plan.parameters.size();
  if (held == planned) return;  // all planned names are present and names are unique: nothing else is there
  std::vector<std::string> expected;
  for (const PlannedParameter& p : plan.parameters) expected.push_back(options.prefix + p.name);
  std::sort(expected.begin(), expected.end());
  for (const auto& name : reader.names())
    DIFFUSION_CHECK(std::binary_search(expected.begin(), expected.end(), name),
                    where << "tensor '" << name << "' is not a parameter of this U-Net (the file has " << held
                          << " tensors, the U-Net " << planned << "; allow extra tensors to ignore it)");
}

// Loads every parameter of `net` from an open reader: all names, shapes and dtypes are checked against the plan of
// net.config() before any value is copied, so a failed load leaves the network unchanged.
template <class T>
void load_unet_weights(Unet<T>& net, const io::SafetensorsReader& reader, const WeightLoadOptions& options = {}) {
  check_unet_tensors(reader, plan_unet(net.config()), options);
  ParameterStore<T>& store = net.params();
  for (const auto& e : store.entries()) reader.read_into(options.prefix + e.name, e.shape, store.values() + e.offset);
}

template <class T>
void load_unet_weights(Unet<T>& net, const std::string& path, const WeightLoadOptions& options = {}) {
  const io::SafetensorsReader reader(path);
  load_unet_weights(net, reader, options);
}

// Builds the U-Net described by the file's metadata and loads its weights. The configuration is planned and the
// file's tensors compared with the plan before the network is built: a small (or hostile) file whose metadata
// describes a large network is refused without allocating it.
template <class T>
Unet<T> read_unet(const std::string& path, const WeightLoadOptions& options = {}) {
  const io::SafetensorsReader reader(path);
  const UnetConfig config = unet_config_from_metadata(reader.metadata(), path);
  UnetPlan plan;
  try {
    plan = plan_unet(config);
  } catch (const Error& e) {
    throw Error("weights file '" + path + "': " + e.what());
  }
  check_unet_tensors(reader, plan, options);
  Unet<T> net(config);
  for (const auto& e : net.params().entries())
    reader.read_into(options.prefix + e.name, e.shape, net.params().values() + e.offset);
  return net;
}

// read_unet on the heap (the form from before Unet was movable).
template <class T>
std::unique_ptr<Unet<T>> load_unet(const std::string& path, const WeightLoadOptions& options = {}) {
  return std::make_unique<Unet<T>>(read_unet<T>(path, options));
}

}  // namespace diffusion
