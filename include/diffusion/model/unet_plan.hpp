#pragma once
// UnetPlan: the architecture of Unet(config), derived from the configuration alone, without building or allocating
// anything (a plan is a few hundred names and shapes, whatever size the network it describes):
//   - the stage list: init conv, time MLP, one down stage per level, the middle, the up stages (deepest first), the
//     final block and conv, each block with its name and channel counts, each attention with its kind and width,
//     each down/upsampling conv;
//   - every parameter, as the reference's state_dict names it, with its shape, in the order Unet::build registers
//     them (the order of Unet::params().entries()), and their total count.
// This is the one place the architecture is written: Unet::build constructs its layers with the plan's names and
// widths (and checks that what the layers registered is plan.parameters), the weight and checkpoint loaders compare
// a file's tensors with the plan before building anything, and the benchmarks' layer census walks its stages.
// The layers' own parameter lists (a Conv2d registers weight then bias, ...) are mirrored in `detail` below.
//
//   plan_unet(config [, max_parameters])   validates config (UnetConfig::validate), plans, and refuses a network of
//                                          more than max_parameters parameters (default UnetConfig::kMaxParameters)
//                                          naming the total; every count fits in Index (the field caps see to it).
//   check_parameters_match(store, plan)    throws unless a ParameterStore holds exactly the plan's parameters

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parameters.hpp"
#include "diffusion/core/shape.hpp"
#include "diffusion/model/unet_config.hpp"

namespace diffusion {

// One parameter tensor: its state_dict name ("downs.0.0.ds_conv.weight") and shape.
struct PlannedParameter {
  std::string name;
  Shape shape;
};

// A Conv2d (or, for the upsampling, a ConvTranspose2d) with bias: module name ("downs.0.3"), channels in -> out.
struct ConvPlan {
  std::string name;
  Index in = 0, out = 0, kernel = 1, stride = 1, padding = 0;
};

// A Linear with bias: module name ("time_mlp.1"), features in -> out.
struct LinearPlan {
  std::string name;
  Index in = 0, out = 0;
};

// A ResnetBlock or a ConvNextBlock (UnetConfig::use_convnext; groups and mult from the config): module name
// ("downs.0.0", "mid_block1", "final_conv.0"), channels in -> out, width of the time embedding it takes (0: none;
// a conditional network's blocks take cat(time embedding, class embedding): UnetPlan::cond_dim).
struct BlockPlan {
  std::string name;
  Index in = 0, out = 0;
  Index time_dim = 0;
};

// Residual(PreNorm(LinearAttention | Attention)) on `channels` channels, or the identity (no parameters) when kind
// is AttentionKind::None. Module name "downs.0.2", "mid_attn", ...
struct AttentionPlan {
  std::string name;
  AttentionKind kind = AttentionKind::None;
  Index channels = 0, heads = 0, dim_head = 0;
};

// Resolution level `level` on the way down: x -> block1 -> block2 -> attn (this is the skip) -> downsample.
struct DownStagePlan {
  Index level = 0;
  BlockPlan block1, block2;
  AttentionPlan attn;
  bool has_downsample = false;  // false on the last level (the reference's nn.Identity)
  ConvPlan downsample;          // 4x4 stride 2 conv, out -> out; meaningful when has_downsample
};

// x -> block1 -> attn -> block2, at the deepest level's width.
struct MiddlePlan {
  BlockPlan block1;
  AttentionPlan attn;
  BlockPlan block2;
};

// An up stage at resolution level `level` (levels - 1 down to 1): cat(x, skip of down stage `level`) -> block1 ->
// block2 -> attn -> upsample (every up stage upsamples, as in the reference; the skip of level 0 is never used).
struct UpStagePlan {
  Index level = 0;
  BlockPlan block1, block2;
  AttentionPlan attn;
  ConvPlan upsample;  // 4x4 stride 2 transposed conv, out -> out
};

struct UnetPlan {
  UnetConfig config;                          // the validated configuration planned
  ConvPlan init_conv;                         // 7x7, channels -> init_dim
  Index time_dim = 0;                         // 4 * dim; 0 without time embedding (then the time MLP is absent)
  Index time_embedding_dim = 0;               // the sinusoidal embedding's width (dim); 0 without time embedding
  LinearPlan time_linear1, time_linear2;      // "time_mlp.1" dim -> time_dim, "time_mlp.3" time_dim -> time_dim
  // Class conditioning (config.num_classes > 0; classifier_free_guidance.py's names): "classes_emb.weight"
  // (num_classes, dim), "null_classes_emb" (dim), classes_mlp "classes_mlp.0" dim -> classes_dim, GELU,
  // "classes_mlp.2" classes_dim -> classes_dim. The blocks' MLPs take cat(time embedding, class embedding).
  Index classes_dim = 0;                      // 4 * dim; 0 when unconditional
  LinearPlan classes_linear1, classes_linear2;
  Index cond_dim = 0;                         // time_dim + classes_dim: the width the blocks' MLPs take
  std::vector<DownStagePlan> downs;           // levels stages, level 0 first
  MiddlePlan mid;
  std::vector<UpStagePlan> ups;               // levels - 1 stages, deepest level first
  BlockPlan final_block;                      // "final_conv.0": dim -> dim, no time embedding
  ConvPlan final_conv;                        // "final_conv.1": 1x1, dim -> out_dim
  std::vector<PlannedParameter> parameters;   // registration order (Unet::params().entries())
  Index parameter_count = 0;                  // sum of the parameters' numel

  Index levels() const { return static_cast<Index>(downs.size()); }
  // The planned parameter named `name`, or nullptr.
  const PlannedParameter* find(const std::string& name) const {
    for (const PlannedParameter& p : parameters)
      if (p.name == name) return &p;
    return nullptr;
  }
};

namespace detail {

// The parameters each layer of nn/ registers, in its registration order. Names join with join_name.
class PlanWriter {
 public:
  PlanWriter(const UnetConfig& config, std::vector<PlannedParameter>& out) : c_(config), out_(out) {}

  // nn::Conv2d(in, out, k, stride, padding, groups, bias) and nn::ConvTranspose2d: weight, then bias.
  void conv(const std::string& name, Index in, Index out, Index kernel, Index groups = 1, bool bias = true) {
    add(name, "weight", Shape{out, in / groups, kernel, kernel});
    if (bias) add(name, "bias", Shape{out});
  }
  void conv_transpose(const std::string& name, Index in, Index out, Index kernel) {
    add(name, "weight", Shape{in, out, kernel, kernel});
    add(name, "bias", Shape{out});
  }
  void conv(const ConvPlan& p) { conv(p.name, p.in, p.out, p.kernel); }
  // nn::Linear(in, out): weight (out, in), bias.
  void linear(const std::string& name, Index in, Index out) {
    add(name, "weight", Shape{out, in});
    add(name, "bias", Shape{out});
  }
  void linear(const LinearPlan& p) { linear(p.name, p.in, p.out); }
  // nn.Embedding(count, width): weight (count, width). A bare nn.Parameter (width), named `name` itself.
  void embedding(const std::string& name, Index count, Index width) { add(name, "weight", Shape{count, width}); }
  void vector(const std::string& name, Index width) { out_.push_back({name, Shape{width}}); }
  // nn::GroupNorm(groups, channels): weight, bias.
  void group_norm(const std::string& name, Index channels) {
    add(name, "weight", Shape{channels});
    add(name, "bias", Shape{channels});
  }

  // nn::ResnetBlock: members block1.proj, block1.norm, block2.proj, block2.norm, then mlp.1 and res_conv.
  // nn::ConvNextBlock: members ds_conv (depthwise), net.1, net.3, net.4, then mlp.1, net.0 and res_conv.
  void block(const BlockPlan& b) {
    const std::string& p = b.name;
    if (c_.use_convnext) {
      const Index hidden = b.out * c_.convnext_mult;
      conv(join_name(p, "ds_conv"), b.in, b.in, 7, b.in);
      conv(join_name(p, "net.1"), b.in, hidden, 3);
      group_norm(join_name(p, "net.3"), hidden);
      conv(join_name(p, "net.4"), hidden, b.out, 3);
      if (b.time_dim > 0) linear(join_name(p, "mlp.1"), b.time_dim, b.in);
      group_norm(join_name(p, "net.0"), b.in);
    } else {
      conv(join_name(p, "block1.proj"), b.in, b.out, 3);
      group_norm(join_name(p, "block1.norm"), b.out);
      conv(join_name(p, "block2.proj"), b.out, b.out, 3);
      group_norm(join_name(p, "block2.norm"), b.out);
      if (b.time_dim > 0) linear(join_name(p, "mlp.1"), b.time_dim, b.out);
    }
    if (b.in != b.out) conv(join_name(p, "res_conv"), b.in, b.out, 1);
  }

  // nn::PreNormResidual: fn.norm, then the attention under fn.fn: to_qkv (no bias), then to_out (Attention) or
  // to_out.0 and the GroupNorm to_out.1 (LinearAttention).
  void attention(const AttentionPlan& a) {
    if (a.kind == AttentionKind::None) return;
    const Index hidden = a.heads * a.dim_head;
    const std::string fn = join_name(a.name, "fn.fn");
    group_norm(join_name(a.name, "fn.norm"), a.channels);
    conv(join_name(fn, "to_qkv"), a.channels, 3 * hidden, 1, 1, false);
    if (a.kind == AttentionKind::Linear) {
      conv(join_name(fn, "to_out.0"), hidden, a.channels, 1);
      group_norm(join_name(fn, "to_out.1"), a.channels);
    } else {
      conv(join_name(fn, "to_out"), hidden, a.channels, 1);
    }
  }

 private:
  void add(const std::string& module, const char* what, const Shape& shape) {
    out_.push_back({join_name(module, what), shape});
  }
  const UnetConfig& c_;
  std::vector<PlannedParameter>& out_;
};

}  // namespace detail

// The plan of Unet(config): see the top of this header. Throws an Error naming the field when the configuration is
// invalid (UnetConfig::validate), and when the network would have more than max_parameters parameters.
inline UnetPlan plan_unet(const UnetConfig& config, Index max_parameters = UnetConfig::kMaxParameters) {
  config.validate();
  UnetPlan plan;
  plan.config = config;
  const UnetConfig& c = plan.config;
  const Index L = c.levels();
  const Index init_dim = c.resolved_init_dim();
  // Channel count after each level: dims[0] = init_dim (the input of level 0), dims[l + 1] = dim * dim_mults[l].
  std::vector<Index> dims = {init_dim};
  for (Index m : c.dim_mults) dims.push_back(c.dim * m);
  const auto at = [&dims](Index i) { return dims[static_cast<std::size_t>(i)]; };

  plan.init_conv = {"init_conv", c.channels, init_dim, 7, 1, 3};
  if (c.with_time_emb) {
    plan.time_dim = 4 * c.dim;
    plan.time_embedding_dim = c.dim;
    plan.time_linear1 = {"time_mlp.1", c.dim, plan.time_dim};
    plan.time_linear2 = {"time_mlp.3", plan.time_dim, plan.time_dim};
  }
  if (c.num_classes > 0) {
    plan.classes_dim = 4 * c.dim;
    plan.classes_linear1 = {"classes_mlp.0", c.dim, plan.classes_dim};
    plan.classes_linear2 = {"classes_mlp.2", plan.classes_dim, plan.classes_dim};
  }
  plan.cond_dim = plan.time_dim + plan.classes_dim;
  const Index t = plan.cond_dim;  // what every block but the final one takes (validate: classes need time)
  const auto attention = [&c](const std::string& name, AttentionKind kind, Index channels) {
    return AttentionPlan{name, kind, channels, c.attention_heads, c.attention_dim_head};
  };
  for (Index l = 0; l < L; ++l) {
    const std::string p = "downs." + std::to_string(l);
    DownStagePlan s;
    s.level = l;
    s.block1 = {p + ".0", at(l), at(l + 1), t};
    s.block2 = {p + ".1", at(l + 1), at(l + 1), t};
    s.attn = attention(p + ".2", c.attention_at(l), at(l + 1));
    s.has_downsample = l < L - 1;
    if (s.has_downsample) s.downsample = {p + ".3", at(l + 1), at(l + 1), 4, 2, 1};
    plan.downs.push_back(s);
  }
  for (Index i = 0; i < L - 1; ++i) {
    const Index level = L - 1 - i;  // the reference's reversed(in_out[1:])
    const std::string p = "ups." + std::to_string(i);
    UpStagePlan s;
    s.level = level;
    // Input: the stage below (at(level + 1) channels) concatenated with the skip of this level (the same count).
    s.block1 = {p + ".0", 2 * at(level + 1), at(level), t};
    s.block2 = {p + ".1", at(level), at(level), t};
    s.attn = attention(p + ".2", c.attention_at(level), at(level));
    s.upsample = {p + ".3", at(level), at(level), 4, 2, 1};
    plan.ups.push_back(s);
  }
  const Index mid = at(L);
  plan.mid.block1 = {"mid_block1", mid, mid, t};
  plan.mid.attn = attention("mid_attn", c.mid_attention, mid);
  plan.mid.block2 = {"mid_block2", mid, mid, t};
  // The up path (or, with one level, the middle) ends with at(1) = dim * dim_mults[0] = dim channels (validate
  // requires dim_mults[0] == 1), which the final block takes.
  plan.final_block = {"final_conv.0", c.dim, c.dim, 0};
  plan.final_conv = {"final_conv.1", c.dim, c.resolved_out_dim(), 1, 1, 0};

  // Registration order of Unet::build: init conv, time MLP, class embeddings and MLP, downs, ups (the reference
  // creates them before the middle), middle, final.
  detail::PlanWriter w(c, plan.parameters);
  w.conv(plan.init_conv);
  if (plan.time_dim > 0) {
    w.linear(plan.time_linear1);
    w.linear(plan.time_linear2);
  }
  if (plan.classes_dim > 0) {
    w.embedding("classes_emb", c.num_classes, c.dim);
    w.vector("null_classes_emb", c.dim);
    w.linear(plan.classes_linear1);
    w.linear(plan.classes_linear2);
  }
  for (const DownStagePlan& s : plan.downs) {
    w.block(s.block1);
    w.block(s.block2);
    w.attention(s.attn);
    if (s.has_downsample) w.conv(s.downsample);
  }
  for (const UpStagePlan& s : plan.ups) {
    w.block(s.block1);
    w.block(s.block2);
    w.attention(s.attn);
    w.conv_transpose(s.upsample.name, s.upsample.in, s.upsample.out, s.upsample.kernel);
  }
  w.block(plan.mid.block1);
  w.attention(plan.mid.attn);
  w.block(plan.mid.block2);
  w.block(plan.final_block);
  w.conv(plan.final_conv);

  // No overflow: validate() caps every width at kMaxWidth = 2^16 (the widest tensor, a 3x3 conv of 2 * 2^16 inputs
  // and 2^16 outputs, has under 2^37 elements; classes_emb, at most 2^24 x 2^16, under 2^40) and a plan has fewer
  // than 2^11 tensors.
  for (const PlannedParameter& p : plan.parameters) plan.parameter_count += p.shape.numel();
  DIFFUSION_CHECK(plan.parameter_count <= max_parameters,
                  "UnetConfig: total parameters must be at most " << max_parameters << ", but this configuration "
                      << "asks for " << plan.parameter_count << " (" << plan.parameters.size() << " tensors; dim "
                      << c.dim << ", " << L << " levels, widest level " << mid
                      << (c.use_convnext ? ", convnext_mult " + std::to_string(c.convnext_mult) : std::string())
                      << ")");
  return plan;
}

// Throws an Error unless `store` holds exactly the plan's parameters: the same names and shapes in the same order.
template <class T>
void check_parameters_match(const ParameterStore<T>& store, const UnetPlan& plan) {
  const auto& entries = store.entries();
  const std::size_t n = std::min(entries.size(), plan.parameters.size());
  for (std::size_t i = 0; i < n; ++i) {
    const PlannedParameter& p = plan.parameters[i];
    DIFFUSION_CHECK(entries[i].name == p.name && entries[i].shape == p.shape,
                    "U-Net parameter " << i << " is '" << entries[i].name << "' " << entries[i].shape
                                       << " but the plan (model/unet_plan.hpp) has '" << p.name << "' " << p.shape);
  }
  DIFFUSION_CHECK(entries.size() == plan.parameters.size(),
                  "the U-Net registered " << entries.size() << " parameter tensors, the plan (model/unet_plan.hpp) has "
                                          << plan.parameters.size());
}

}  // namespace diffusion
