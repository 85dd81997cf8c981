#pragma once
// UnetCensus: every layer of the U-Net that Unet<T> builds for a config and an image size, listed in forward order
// with its shapes and its multiply-accumulates (MACs) per image. The benchmarks use it to enumerate the distinct
// layer shapes (bench_kernels) and to count the forward FLOPs per image (bench_unet).
//
// It walks the stages of the U-Net's plan (model/unet_plan.hpp, which Unet::build walks too) and mirrors the
// insides of ConvNextBlock, ResnetBlock and PreNormResidual(LinearAttention | Attention) (kernel sizes, activations
// and map sizes, which the plan does not list); check_parameters() proves the mirror against a real Unet: every
// parameter the census names must exist with the same shape, and the parameter counts must be equal.
// benchmarks/pytorch_unet.py --print-layers counts the same FLOPs from the reference PyTorch module with forward
// hooks, so the two counts can be compared.
//
// FLOPs = 2 * MACs of the convolutions (incl. depthwise and transposed), the linear layers and the attention
// matrix products. Element-wise work (GroupNorm, GELU/SiLU, softmax, residual adds) is not counted.

#include <cstdint>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parameters.hpp"
#include "diffusion/model/unet_config.hpp"
#include "diffusion/model/unet_plan.hpp"

namespace diffusion::bench {

struct ConvSpec {
  std::string name;  // parameter prefix (the state_dict name without ".weight")
  Index in = 0, out = 0, kernel = 1, stride = 1, padding = 0, groups = 1;
  Index height = 0, width = 0;  // input map
  bool transposed = false;      // nn.ConvTranspose2d
  bool bias = true;

  Index out_height() const {
    return transposed ? (height - 1) * stride - 2 * padding + kernel : (height + 2 * padding - kernel) / stride + 1;
  }
  Index out_width() const {
    return transposed ? (width - 1) * stride - 2 * padding + kernel : (width + 2 * padding - kernel) / stride + 1;
  }
  bool depthwise() const { return groups == in && groups == out; }
  // Per image. A transposed conv scatters every input pixel through C_out / groups * K * K weights.
  double macs() const {
    const double taps = static_cast<double>(kernel * kernel);
    if (transposed) return static_cast<double>(height * width * in * (out / groups)) * taps;
    return static_cast<double>(out_height() * out_width() * out * (in / groups)) * taps;
  }
  Shape weight_shape() const {
    return transposed ? Shape{in, out / groups, kernel, kernel} : Shape{out, in / groups, kernel, kernel};
  }
  // Shape identity (name excluded): equal keys run exactly the same kernels.
  std::string key() const {
    std::ostringstream s;
    s << (transposed ? "T" : "C") << in << "-" << out << "k" << kernel << "s" << stride << "p" << padding << "g"
      << groups << "@" << height << "x" << width << (bias ? "b" : "");
    return s.str();
  }
  // e.g. "3x3/s1/c28-56/28x28", "dw7x7/s1/c28/28x28", "T4x4/s2/c56-56/7x7"
  std::string label() const {
    std::ostringstream s;
    s << (transposed ? "T" : "") << (depthwise() && !transposed ? "dw" : "") << kernel << "x" << kernel << "/s"
      << stride << "/c" << in;
    if (!depthwise()) s << "-" << out;
    if (groups != 1 && !depthwise()) s << "/g" << groups;
    s << "/" << height << "x" << width;
    return s.str();
  }
};

struct LinearSpec {
  std::string name;
  Index in = 0, out = 0;
  double macs() const { return static_cast<double>(in * out); }
};

struct NormSpec {  // nn.GroupNorm(groups, channels) on (N, channels, height, width)
  std::string name;
  Index groups = 1, channels = 0, height = 1, width = 1;
  std::string key() const {
    std::ostringstream s;
    s << "G" << groups << "/c" << channels << "/" << height << "x" << width;
    return s.str();
  }
};

struct ActivationSpec {  // an element-wise activation on (N, channels, height, width)
  std::string name;     // the activation module's path in the reference
  std::string kind;     // "gelu" or "silu"
  Index channels = 0, height = 1, width = 1;
  Index numel() const { return channels * height * width; }
};

struct AttentionSpec {  // the attention core, between its to_qkv and to_out convolutions (listed as ConvSpecs)
  std::string name;
  bool linear = true;  // LinearAttention (true) or Attention (false)
  Index dim = 0, heads = 4, dim_head = 32, height = 0, width = 0;
  Index pixels() const { return height * width; }
  // Per image and head: linear: context (d x d over P) + output (d x P over d); full: q^T k (P x P over d) + A v.
  double core_macs() const {
    const double P = static_cast<double>(pixels()), d = static_cast<double>(dim_head);
    return static_cast<double>(heads) * (linear ? 2.0 * d * d * P : 2.0 * P * P * d);
  }
  std::string key() const {
    std::ostringstream s;
    s << (linear ? "linear" : "full") << "/c" << dim << "/h" << heads << "x" << dim_head << "/" << height << "x"
      << width;
    return s.str();
  }
};

struct UnetCensus {
  std::vector<ConvSpec> convs;
  std::vector<LinearSpec> linears;
  std::vector<NormSpec> norms;
  std::vector<ActivationSpec> activations;
  std::vector<AttentionSpec> attentions;
  Index image_height = 0, image_width = 0;

  double conv_macs() const {
    double m = 0;
    for (const auto& c : convs) m += c.macs();
    return m;
  }
  double linear_macs() const {
    double m = 0;
    for (const auto& l : linears) m += l.macs();
    return m;
  }
  double attention_macs() const {
    double m = 0;
    for (const auto& a : attentions) m += a.core_macs();
    return m;
  }
  // Forward FLOPs per image: 2 * MACs (see the header comment for what is counted).
  double forward_flops_per_image() const { return 2.0 * (conv_macs() + linear_macs() + attention_macs()); }

  // Every parameter tensor the census implies: name -> shape.
  std::map<std::string, Shape> parameter_shapes() const {
    std::map<std::string, Shape> p;
    for (const auto& c : convs) {
      p[c.name + ".weight"] = c.weight_shape();
      if (c.bias) p[c.name + ".bias"] = Shape{c.out};
    }
    for (const auto& l : linears) {
      p[l.name + ".weight"] = Shape{l.out, l.in};
      p[l.name + ".bias"] = Shape{l.out};
    }
    for (const auto& n : norms) {
      p[n.name + ".weight"] = Shape{n.channels};
      p[n.name + ".bias"] = Shape{n.channels};
    }
    return p;
  }

  // Throws an Error naming the first parameter where the census and the real model's store disagree.
  template <class T>
  void check_parameters(const ParameterStore<T>& params) const {
    const auto expected = parameter_shapes();
    for (const auto& [name, shape] : expected) {
      const auto* e = params.find(name);
      DIFFUSION_CHECK(e != nullptr, "UnetCensus: parameter '" << name << "' " << shape << " is not in the Unet");
      DIFFUSION_CHECK(e->shape == shape, "UnetCensus: parameter '" << name << "' has shape " << e->shape
                                                                   << " in the Unet, the census expects " << shape);
    }
    DIFFUSION_CHECK(params.entries().size() == expected.size(),
                    "UnetCensus: the Unet has " << params.entries().size() << " parameter tensors, the census "
                                                << expected.size() << " (a layer is missing from the census)");
  }
};

namespace detail {

class CensusBuilder {
 public:
  CensusBuilder(const UnetConfig& config, Index height, Index width) : c_(config), h_(height), w_(width) {
    census_.image_height = height;
    census_.image_width = width;
  }

  // Walks the stages of the plan (model/unet_plan.hpp) in forward order, following the map size through the
  // down- and upsampling convolutions.
  UnetCensus build() {
    const UnetPlan plan = plan_unet(c_);
    conv(plan.init_conv);
    if (plan.time_dim > 0) {
      census_.linears.push_back({plan.time_linear1.name, plan.time_linear1.in, plan.time_linear1.out});
      census_.activations.push_back({"time_mlp.2", "gelu", plan.time_dim, 1, 1});
      census_.linears.push_back({plan.time_linear2.name, plan.time_linear2.in, plan.time_linear2.out});
    }
    for (const DownStagePlan& s : plan.downs) {
      block(s.block1);
      block(s.block2);
      attention(s.attn);
      if (s.has_downsample) {
        const ConvSpec& d = conv(s.downsample);
        h_ = d.out_height(), w_ = d.out_width();
      }
    }
    block(plan.mid.block1);
    attention(plan.mid.attn);
    block(plan.mid.block2);
    for (const UpStagePlan& s : plan.ups) {
      block(s.block1);
      block(s.block2);
      attention(s.attn);
      const ConvPlan& p = s.upsample;
      const ConvSpec& u = conv(p.name, p.in, p.out, p.kernel, p.stride, p.padding, 1, true, true);
      h_ = u.out_height(), w_ = u.out_width();
    }
    block(plan.final_block);
    conv(plan.final_conv);
    return census_;
  }

 private:
  const ConvSpec& conv(const std::string& name, Index in, Index out, Index k, Index stride = 1, Index pad = 0,
                       Index groups = 1, bool bias = true, bool transposed = false) {
    ConvSpec s;
    s.name = name, s.in = in, s.out = out, s.kernel = k, s.stride = stride, s.padding = pad, s.groups = groups;
    s.height = h_, s.width = w_, s.transposed = transposed, s.bias = bias;
    census_.convs.push_back(s);
    return census_.convs.back();
  }
  const ConvSpec& conv(const ConvPlan& p) { return conv(p.name, p.in, p.out, p.kernel, p.stride, p.padding); }
  void norm(const std::string& name, Index groups, Index channels) {
    census_.norms.push_back({name, groups, channels, h_, w_});
  }
  void act(const std::string& name, const char* kind, Index channels) {
    census_.activations.push_back({name, kind, channels, h_, w_});
  }

  // ConvNextBlock (nn/convnext_block.hpp) or ResnetBlock (nn/resnet_block.hpp).
  void block(const BlockPlan& b) {
    const std::string& p = b.name;
    const Index dim = b.in, dim_out = b.out, time_dim = b.time_dim;
    if (c_.use_convnext) {
      const Index hidden = dim_out * c_.convnext_mult;
      conv(p + ".ds_conv", dim, dim, 7, 1, 3, dim);
      if (time_dim > 0) {
        census_.activations.push_back({p + ".mlp.0", "gelu", time_dim, 1, 1});
        census_.linears.push_back({p + ".mlp.1", time_dim, dim});
      }
      norm(p + ".net.0", 1, dim);
      conv(p + ".net.1", dim, hidden, 3, 1, 1);
      act(p + ".net.2", "gelu", hidden);
      norm(p + ".net.3", 1, hidden);
      conv(p + ".net.4", hidden, dim_out, 3, 1, 1);
    } else {
      conv(p + ".block1.proj", dim, dim_out, 3, 1, 1);
      norm(p + ".block1.norm", c_.resnet_block_groups, dim_out);
      act(p + ".block1.act", "silu", dim_out);
      if (time_dim > 0) {
        census_.activations.push_back({p + ".mlp.0", "silu", time_dim, 1, 1});
        census_.linears.push_back({p + ".mlp.1", time_dim, dim_out});
      }
      conv(p + ".block2.proj", dim_out, dim_out, 3, 1, 1);
      norm(p + ".block2.norm", c_.resnet_block_groups, dim_out);
      act(p + ".block2.act", "silu", dim_out);
    }
    if (dim != dim_out) conv(p + ".res_conv", dim, dim_out, 1);
  }

  // Residual(PreNorm(dim, LinearAttention | Attention)) (nn/prenorm_residual.hpp), or nothing.
  void attention(const AttentionPlan& a) {
    if (a.kind == AttentionKind::None) return;
    const std::string& p = a.name;
    const AttentionKind kind = a.kind;
    const Index dim = a.channels;
    const Index hidden = a.heads * a.dim_head;
    norm(p + ".fn.norm", 1, dim);
    conv(p + ".fn.fn.to_qkv", dim, 3 * hidden, 1, 1, 0, 1, false);
    census_.attentions.push_back(
        {p + ".fn.fn", kind == AttentionKind::Linear, dim, a.heads, a.dim_head, h_, w_});
    if (kind == AttentionKind::Linear) {
      conv(p + ".fn.fn.to_out.0", hidden, dim, 1);
      norm(p + ".fn.fn.to_out.1", 1, dim);
    } else {
      conv(p + ".fn.fn.to_out", hidden, dim, 1);
    }
  }

  const UnetConfig& c_;
  Index h_, w_;
  UnetCensus census_;
};

}  // namespace detail

// The census of the U-Net built from `config` for images of height x width.
inline UnetCensus unet_census(const UnetConfig& config, Index height, Index width) {
  return detail::CensusBuilder(config, height, width).build();
}

// Human-readable listing, one layer a line (bench_unet --print-layers).
inline std::string describe(const UnetCensus& census) {
  std::ostringstream s;
  s << "# U-Net census for " << census.image_height << "x" << census.image_width
    << " images: layer, shape, MMACs per image\n";
  for (const auto& c : census.convs)
    s << "conv      " << c.name << "  " << c.label() << "  " << c.macs() / 1e6 << "\n";
  for (const auto& l : census.linears) s << "linear    " << l.name << "  " << l.in << "->" << l.out << "  " << l.macs() / 1e6 << "\n";
  for (const auto& a : census.attentions) s << "attention " << a.name << "  " << a.key() << "  " << a.core_macs() / 1e6 << "\n";
  for (const auto& n : census.norms) s << "groupnorm " << n.name << "  " << n.key() << "\n";
  for (const auto& a : census.activations)
    s << a.kind << "      " << a.name << "  c" << a.channels << "/" << a.height << "x" << a.width << "\n";
  s << "# forward MMACs per image: conv " << census.conv_macs() / 1e6 << ", linear " << census.linear_macs() / 1e6
    << ", attention " << census.attention_macs() / 1e6 << "; forward GFLOP per image "
    << census.forward_flops_per_image() / 1e9 << "\n";
  return s.str();
}

}  // namespace diffusion::bench
