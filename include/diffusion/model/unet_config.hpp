#pragma once
// UnetConfig: the constructor arguments of the reference `Unet` (same names, same defaults), plus optional
// extensions that the reference does not have (attention kind per level, attention heads). A config that leaves
// the extensions at their defaults builds exactly the reference network, parameter for parameter.
//
// to_json()/from_json() use the reference's keyword names, so the JSON stored in a weights file's metadata can be
// passed to the PyTorch reference as Unet(**config).

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/core/enum_names.hpp"
#include "diffusion/core/error.hpp"
#include "diffusion/core/shape.hpp"

namespace diffusion {

enum class AttentionKind { None, Linear, Full };

namespace detail {
inline constexpr NameEntry<AttentionKind> kAttentionKindNames[] = {
    {AttentionKind::None, "none"}, {AttentionKind::Linear, "linear"}, {AttentionKind::Full, "full"}};
}  // namespace detail

inline const char* attention_kind_name(AttentionKind k) { return detail::enum_name(detail::kAttentionKindNames, k); }
// "none" | "linear" | "full".
inline AttentionKind parse_attention_kind(const std::string& s) {
  return detail::parse_enum(detail::kAttentionKindNames, s, "attention kind");
}

struct UnetConfig {
  // {1, 2, 4, 8}, copied from a static array: a braced default here makes GCC 12 warn (-Wmaybe-uninitialized, a
  // false positive on the initializer_list's backing array) wherever a default UnetConfig is inlined.
  static std::vector<Index> default_dim_mults() {
    static constexpr Index kMults[] = {1, 2, 4, 8};
    return std::vector<Index>(std::begin(kMults), std::end(kMults));
  }

  // --- the reference's arguments ---
  Index dim = 28;                          // base channel count
  Index init_dim = 0;                      // 0: dim / 3 * 2, as the reference
  Index out_dim = 0;                       // 0: channels
  std::vector<Index> dim_mults = default_dim_mults();
  Index channels = 3;                      // image channels
  bool with_time_emb = true;
  Index resnet_block_groups = 8;           // GroupNorm groups in ResNet blocks
  bool use_convnext = true;                // ConvNeXt blocks (true) or ResNet blocks (false)
  Index convnext_mult = 2;
  // Class-conditional network (denoising-diffusion-pytorch's classifier_free_guidance.py Unet): 0 builds the
  // unconditional network. With num_classes > 0 the network takes a class id per image in [0, num_classes), or
  // kNullClass (-1, nn/class_embedding.hpp) for the learned "no class" embedding. Stored under the reference's
  // keyword, only when > 0.
  Index num_classes = 0;
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

  // Sanity limits, far beyond any real network. A config read from a file is untrusted input: the caps keep every
  // channel count, shape and product in the code well inside 64 bits and 2^(levels - 1) a valid shift, and
  // kMaxParameters (checked by plan_unet, model/unet_plan.hpp, before anything is allocated) keeps a configuration
  // from asking for terabytes: 2^32 parameters are 16 GiB of float values (and as much again for gradients),
  // above the largest published diffusion U-Nets (SDXL's, 2.6e9).
  static constexpr Index kMaxWidth = Index(1) << 16;  // any channel count, incl. dim * mult * convnext_mult
  static constexpr Index kMaxLevels = 16;
  static constexpr Index kMaxParameters = Index(1) << 32;
  static constexpr Index kMaxClasses = Index(1) << 24;  // classes_emb is num_classes x dim: under 2^40 elements

  // Throws an Error naming the first invalid field and its allowed range.
  void validate() const {
    DIFFUSION_CHECK(dim > 0 && dim <= kMaxWidth, "UnetConfig: dim must be in [1, " << kMaxWidth << "], got " << dim);
    DIFFUSION_CHECK(init_dim >= 0 && init_dim <= kMaxWidth,
                    "UnetConfig: init_dim must be in [0, " << kMaxWidth << "] (0: dim / 3 * 2), got " << init_dim);
    DIFFUSION_CHECK(resolved_init_dim() > 0, "UnetConfig: init_dim resolves to " << resolved_init_dim()
                                                                              << " (dim " << dim << " too small)");
    DIFFUSION_CHECK(out_dim >= 0 && out_dim <= kMaxWidth,
                    "UnetConfig: out_dim must be in [0, " << kMaxWidth << "] (0: channels), got " << out_dim);
    DIFFUSION_CHECK(channels > 0 && channels <= kMaxWidth,
                    "UnetConfig: channels must be in [1, " << kMaxWidth << "], got " << channels);
    DIFFUSION_CHECK(!dim_mults.empty() && levels() <= kMaxLevels,
                    "UnetConfig: dim_mults must have 1 to " << kMaxLevels << " entries, got " << dim_mults.size());
    for (std::size_t i = 0; i < dim_mults.size(); ++i)
      DIFFUSION_CHECK(dim_mults[i] > 0 && dim_mults[i] <= kMaxWidth / dim,
                      "UnetConfig: dim_mults entries must be positive with dim * mult <= "
                          << kMaxWidth << ", so in [1, " << kMaxWidth / dim << "] for dim " << dim << ", but dim_mults["
                          << i << "] is " << dim_mults[i]);
    // The up path ends with dim * dim_mults[0] channels and the final block takes dim (as in the reference; with
    // one level the middle's output goes there directly): anything else builds a network that cannot run.
    DIFFUSION_CHECK(dim_mults[0] == 1, "UnetConfig: dim_mults[0] must be 1 (the final block takes dim channels), got "
                                           << dim_mults[0]);
    DIFFUSION_CHECK(level_attention.empty() || static_cast<Index>(level_attention.size()) == levels(),
                    "UnetConfig: level_attention has " << level_attention.size() << " entries, expected "
                                                       << levels() << " (one per dim_mults entry)");
    DIFFUSION_CHECK(attention_heads > 0 && attention_heads <= kMaxWidth,
                    "UnetConfig: attention_heads must be in [1, " << kMaxWidth << "], got " << attention_heads);
    DIFFUSION_CHECK(attention_dim_head > 0 && attention_dim_head <= kMaxWidth / attention_heads,
                    "UnetConfig: attention_dim_head must be positive with heads * dim_head <= "
                        << kMaxWidth << ", so in [1, " << kMaxWidth / attention_heads << "] for " << attention_heads
                        << " heads, got " << attention_dim_head);
    // Both block parameters are bounded whichever block type is used (the unused one is stored in files too).
    DIFFUSION_CHECK(resnet_block_groups > 0 && resnet_block_groups <= kMaxWidth,
                    "UnetConfig: resnet_block_groups must be in [1, " << kMaxWidth << "], got " << resnet_block_groups);
    Index widest = 0;
    for (Index c : channel_counts()) widest = c > widest ? c : widest;
    const Index max_mult = use_convnext ? kMaxWidth / widest : kMaxWidth;
    DIFFUSION_CHECK(convnext_mult > 0 && convnext_mult <= max_mult,
                    "UnetConfig: convnext_mult must be in [1, " << max_mult << "]"
                        << (use_convnext ? " (convnext_mult * widest level " + std::to_string(widest) + " <= " +
                                               std::to_string(kMaxWidth) + ")"
                                         : std::string())
                        << ", got " << convnext_mult);
    if (!use_convnext) {
      for (Index c : channel_counts())
        DIFFUSION_CHECK(c % resnet_block_groups == 0,
                        "UnetConfig: ResNet blocks need channel counts divisible by resnet_block_groups "
                            << resnet_block_groups << ", but a block has " << c << " output channels");
    }
    if (with_time_emb) DIFFUSION_CHECK(dim >= 4 && dim % 2 == 0, "UnetConfig: the time embedding needs an even dim >= 4, got " << dim);
    DIFFUSION_CHECK(num_classes >= 0 && num_classes <= kMaxClasses,
                    "UnetConfig: num_classes must be in [0, " << kMaxClasses << "] (0: unconditional), got "
                                                              << num_classes);
    // The class embedding joins the time embedding at the blocks' MLPs (as in classifier_free_guidance.py, where
    // the time MLP always exists): without a time embedding there is nothing for it to join.
    DIFFUSION_CHECK(num_classes == 0 || with_time_emb,
                    "UnetConfig: num_classes " << num_classes << " needs with_time_emb (the class embedding is "
                                               << "concatenated to the time embedding)");
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
    // Only when conditional: the JSON (and so every file) of an unconditional network is unchanged, and a file
    // without the key reads as 0.
    if (num_classes > 0) j["num_classes"] = num_classes;
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
  // Types are checked strictly (integers must be JSON integers, flags JSON booleans): a JSON 1e300 would otherwise
  // be cast to an integer, which is undefined behaviour. `null` means "the default", as Python's None.
  static UnetConfig from_json(const nlohmann::json& j, const nlohmann::json& ext, const std::string& source) {
    UnetConfig c;
    DIFFUSION_CHECK(j.is_object(), source << ": U-Net config is " << json_brief(j) << ", not a JSON object");
    read_fields(j, source + ": U-Net config field", c);
    if (!ext.is_null()) {
      DIFFUSION_CHECK(ext.is_object(), source << ": U-Net extensions are " << json_brief(ext) << ", not a JSON object");
      const std::string what = source + ": U-Net extensions field";
      if (const nlohmann::json* v = field(ext, "level_attention")) {
        DIFFUSION_CHECK(v->is_array(), what << " 'level_attention' is " << json_brief(*v) << ", expected an array");
        c.level_attention.clear();
        for (const auto& s : *v) c.level_attention.push_back(attention_kind_field(s, what + " 'level_attention'"));
      }
      if (const nlohmann::json* v = field(ext, "mid_attention"))
        c.mid_attention = attention_kind_field(*v, what + " 'mid_attention'");
      if (const nlohmann::json* v = field(ext, "attention_heads"))
        c.attention_heads = integer_field(*v, what + " 'attention_heads'");
      if (const nlohmann::json* v = field(ext, "attention_dim_head"))
        c.attention_dim_head = integer_field(*v, what + " 'attention_dim_head'");
    }
    try {
      c.validate();
    } catch (const Error& e) {
      throw Error(source + ": " + e.what());
    }
    return c;
  }

 private:
  // A JSON value in an error message: scalars printed (at most 40 characters), containers by type.
  static std::string json_brief(const nlohmann::json& v) {
    if (!v.is_primitive()) return std::string("a JSON ") + v.type_name();
    std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return s.size() > 40 ? s.substr(0, 40) + "..." : s;
  }
  // The value of `key` in object o, or nullptr when absent or null.
  static const nlohmann::json* field(const nlohmann::json& o, const char* key) {
    const auto it = o.find(key);
    return it == o.end() || it->is_null() ? nullptr : &*it;
  }
  static Index integer_field(const nlohmann::json& v, const std::string& what) {
    DIFFUSION_CHECK(v.is_number_integer() &&
                        (!v.is_number_unsigned() ||
                         v.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<Index>::max())),
                    what << " is " << json_brief(v) << ", expected an integer");
    return v.get<Index>();
  }
  static bool bool_field(const nlohmann::json& v, const std::string& what) {
    DIFFUSION_CHECK(v.is_boolean(), what << " is " << json_brief(v) << ", expected true or false");
    return v.get<bool>();
  }
  static AttentionKind attention_kind_field(const nlohmann::json& v, const std::string& what) {
    DIFFUSION_CHECK(v.is_string(), what << " has " << json_brief(v) << ", expected \"none\", \"linear\" or \"full\"");
    try {
      return parse_attention_kind(v.get<std::string>());
    } catch (const Error& e) {
      throw Error(what + ": " + e.what());
    }
  }
  static void read_fields(const nlohmann::json& j, const std::string& what, UnetConfig& c) {
    const auto name = [&](const char* key) { return what + " '" + key + "'"; };
    const std::pair<const char*, Index*> integers[] = {{"dim", &c.dim},
                                                       {"init_dim", &c.init_dim},
                                                       {"out_dim", &c.out_dim},
                                                       {"channels", &c.channels},
                                                       {"resnet_block_groups", &c.resnet_block_groups},
                                                       {"convnext_mult", &c.convnext_mult},
                                                       {"num_classes", &c.num_classes}};
    for (const auto& [key, target] : integers)
      if (const nlohmann::json* v = field(j, key)) *target = integer_field(*v, name(key));
    if (const nlohmann::json* v = field(j, "with_time_emb")) c.with_time_emb = bool_field(*v, name("with_time_emb"));
    if (const nlohmann::json* v = field(j, "use_convnext")) c.use_convnext = bool_field(*v, name("use_convnext"));
    if (const nlohmann::json* v = field(j, "dim_mults")) {
      DIFFUSION_CHECK(v->is_array(), name("dim_mults") << " is " << json_brief(*v) << ", expected an array of integers");
      c.dim_mults.clear();
      for (std::size_t i = 0; i < v->size(); ++i)
        c.dim_mults.push_back(integer_field((*v)[i], name("dim_mults") + "[" + std::to_string(i) + "]"));
    }
  }
};

}  // namespace diffusion
