#pragma once
// UnetConfig: the constructor arguments of the reference `Unet` (same names, same defaults), plus optional
// extensions that the reference does not have (attention kind per level, attention heads). A config that leaves
// the extensions at their defaults builds exactly the reference network, parameter for parameter.
//
// to_json()/from_json() use the reference's keyword names, so the JSON stored in a weights file's metadata can be
// passed to the PyTorch reference as Unet(**config).

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/core/error.hpp"
#include "diffusion/core/shape.hpp"

namespace diffusion {

enum class AttentionKind { None, Linear, Full };

inline const char* attention_kind_name(AttentionKind k) {
  switch (k) {
    case AttentionKind::None: return "none";
    case AttentionKind::Linear: return "linear";
    case AttentionKind::Full: return "full";
  }
  return "?";
}

inline AttentionKind parse_attention_kind(const std::string& s) {
  if (s == "none") return AttentionKind::None;
  if (s == "linear") return AttentionKind::Linear;
  if (s == "full") return AttentionKind::Full;
  throw Error("attention kind '" + s + "' is not one of none, linear, full");
}

struct UnetConfig {
  // --- the reference's arguments ---
  Index dim = 28;                          // base channel count
  Index init_dim = 0;                      // 0: dim / 3 * 2, as the reference
  Index out_dim = 0;                       // 0: channels
  std::vector<Index> dim_mults = {1, 2, 4, 8};
  Index channels = 3;                      // image channels
  bool with_time_emb = true;
  Index resnet_block_groups = 8;           // GroupNorm groups in ResNet blocks
  bool use_convnext = true;                // ConvNeXt blocks (true) or ResNet blocks (false)
  Index convnext_mult = 2;
  // --- extensions (defaults reproduce the reference) ---
  std::vector<AttentionKind> level_attention;  // per resolution level; empty: linear everywhere
  AttentionKind mid_attention = AttentionKind::Full;
  Index attention_heads = 4;
  Index attention_dim_head = 32;

  Index levels() const { return static_cast<Index>(dim_mults.size()); }
  Index resolved_init_dim() const { return init_dim > 0 ? init_dim : dim / 3 * 2; }
  Index resolved_out_dim() const { return out_dim > 0 ? out_dim : channels; }
  AttentionKind attention_at(Index level) const {
    return level_attention.empty() ? AttentionKind::Linear : level_attention[static_cast<std::size_t>(level)];
  }
  bool is_reference_architecture() const {
    for (Index l = 0; l < levels(); ++l)
      if (attention_at(l) != AttentionKind::Linear) return false;
    return mid_attention == AttentionKind::Full && attention_heads == 4 && attention_dim_head == 32;
  }

  // Throws an Error naming the first invalid field.
  void validate() const {
    DIFFUSION_CHECK(dim > 0, "UnetConfig: dim must be positive, got " << dim);
    DIFFUSION_CHECK(resolved_init_dim() > 0, "UnetConfig: init_dim resolves to " << resolved_init_dim()
                                                                              << " (dim " << dim << " too small)");
    DIFFUSION_CHECK(channels > 0, "UnetConfig: channels must be positive, got " << channels);
    DIFFUSION_CHECK(!dim_mults.empty(), "UnetConfig: dim_mults must not be empty");
    for (Index m : dim_mults) DIFFUSION_CHECK(m > 0, "UnetConfig: dim_mults entries must be positive, got " << m);
    DIFFUSION_CHECK(level_attention.empty() || static_cast<Index>(level_attention.size()) == levels(),
                    "UnetConfig: level_attention has " << level_attention.size() << " entries, expected "
                                                       << levels() << " (one per dim_mults entry)");
    DIFFUSION_CHECK(attention_heads > 0 && attention_dim_head > 0, "UnetConfig: attention heads/dim_head must be positive");
    if (use_convnext) {
      DIFFUSION_CHECK(convnext_mult > 0, "UnetConfig: convnext_mult must be positive, got " << convnext_mult);
    } else {
      DIFFUSION_CHECK(resnet_block_groups > 0, "UnetConfig: resnet_block_groups must be positive");
      for (Index c : channel_counts())
        DIFFUSION_CHECK(c % resnet_block_groups == 0,
                        "UnetConfig: ResNet blocks need channel counts divisible by resnet_block_groups "
                            << resnet_block_groups << ", but a block has " << c << " output channels");
    }
    if (with_time_emb) DIFFUSION_CHECK(dim >= 4 && dim % 2 == 0, "UnetConfig: the time embedding needs an even dim >= 4, got " << dim);
  }

  // Output channel counts of every block (for the GroupNorm divisibility check).
  std::vector<Index> channel_counts() const {
    std::vector<Index> out;
    for (Index m : dim_mults) out.push_back(dim * m);
    out.push_back(dim);
    return out;
  }

  // The reference's keyword arguments, resolved (init_dim and out_dim filled in).
  nlohmann::json to_json() const {
    nlohmann::json j;
    j["dim"] = dim;
    j["init_dim"] = resolved_init_dim();
    j["out_dim"] = resolved_out_dim();
    j["dim_mults"] = dim_mults;
    j["channels"] = channels;
    j["with_time_emb"] = with_time_emb;
    j["resnet_block_groups"] = resnet_block_groups;
    j["use_convnext"] = use_convnext;
    j["convnext_mult"] = convnext_mult;
    return j;
  }
  // The extensions; empty when the architecture is the reference's.
  nlohmann::json extensions_to_json() const {
    nlohmann::json j = nlohmann::json::object();
    if (is_reference_architecture()) return j;
    std::vector<std::string> levels_json;
    for (Index l = 0; l < levels(); ++l) levels_json.push_back(attention_kind_name(attention_at(l)));
    j["level_attention"] = levels_json;
    j["mid_attention"] = attention_kind_name(mid_attention);
    j["attention_heads"] = attention_heads;
    j["attention_dim_head"] = attention_dim_head;
    return j;
  }

  // Parses the reference keywords (and optionally the extensions); `source` names the file for error messages.
  static UnetConfig from_json(const nlohmann::json& j, const nlohmann::json& ext, const std::string& source) {
    UnetConfig c;
    DIFFUSION_CHECK(j.is_object(), source << ": U-Net config is not a JSON object");
    auto get = [&](const char* key, auto& field) {
      if (!j.contains(key) || j[key].is_null()) return;
      try {
        j.at(key).get_to(field);
      } catch (const nlohmann::json::exception& e) {
        throw Error(source + ": U-Net config field '" + key + "' has the wrong type (" + e.what() + ")");
      }
    };
    get("dim", c.dim);
    get("init_dim", c.init_dim);
    get("out_dim", c.out_dim);
    get("dim_mults", c.dim_mults);
    get("channels", c.channels);
    get("with_time_emb", c.with_time_emb);
    get("resnet_block_groups", c.resnet_block_groups);
    get("use_convnext", c.use_convnext);
    get("convnext_mult", c.convnext_mult);
    if (ext.is_object()) {
      try {
        if (ext.contains("level_attention")) {
          c.level_attention.clear();
          for (const auto& s : ext.at("level_attention")) c.level_attention.push_back(parse_attention_kind(s.get<std::string>()));
        }
        if (ext.contains("mid_attention")) c.mid_attention = parse_attention_kind(ext.at("mid_attention").get<std::string>());
        if (ext.contains("attention_heads")) c.attention_heads = ext.at("attention_heads").get<Index>();
        if (ext.contains("attention_dim_head")) c.attention_dim_head = ext.at("attention_dim_head").get<Index>();
      } catch (const nlohmann::json::exception& e) {
        throw Error(source + ": U-Net extensions are malformed (" + e.what() + ")");
      } catch (const Error& e) {
        throw Error(source + ": " + e.what());
      }
    }
    try {
      c.validate();
    } catch (const Error& e) {
      throw Error(source + ": " + e.what());
    }
    return c;
  }
};

}  // namespace diffusion
