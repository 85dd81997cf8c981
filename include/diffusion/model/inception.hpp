#pragma once
// FidInceptionV3: Inception-v3's pool3 features (2048 per image) exactly as pytorch-fid defines them
// (src/pytorch_fid/inception.py: InceptionV3(output_blocks=[3]) built by fid_inception_v3()), forward only, float.
//
//   images (N, 3, H, W) in [0, 1]                    (pytorch-fid: TF.ToTensor() of 8-bit RGB images)
//   x = bilinear resize to 299 x 299                 (F.interpolate, align_corners=False; kernels/resize.hpp)
//   x = 2 x - 1
//   Conv2d_1a_3x3 (3->32, 3x3, stride 2), Conv2d_2a_3x3 (32->32, 3x3), Conv2d_2b_3x3 (32->64, 3x3, pad 1),
//   maxpool1 (3, stride 2), Conv2d_3b_1x1 (64->80), Conv2d_4a_3x3 (80->192, 3x3), maxpool2 (3, stride 2),
//   Mixed_5b/5c/5d  FIDInceptionA(192, 32), (256, 64), (288, 64)
//   Mixed_6a        InceptionB(288)
//   Mixed_6b..6e    FIDInceptionC(768, c7 = 128, 160, 160, 192)
//   Mixed_7a        InceptionD(768)
//   Mixed_7b        FIDInceptionE_1(1280),  Mixed_7c  FIDInceptionE_2(2048)
//   global average pool -> (N, 2048)
// Every conv is torchvision's BasicConv2d: Conv2d (no bias) + BatchNorm2d(eps = 0.001, eval mode: running
// statistics) + ReLU. The BatchNorm is folded into the convolution when the weights are loaded, in double:
//   s = gamma / sqrt(running_var + 0.001),  w' = w s,  b' = beta - running_mean s   (then rounded to float)
// The FID variants differ from torchvision's blocks only in their pooling branch: FIDInceptionA/C/E_1 average-pool
// with count_include_pad=False (TensorFlow's), FIDInceptionE_2 max-pools (3, stride 1, padding 1).
//
// Weights: a state_dict of pytorch-fid's network (torchvision names: "Mixed_6b.branch7x7_2.conv.weight",
// "Mixed_6b.branch7x7_2.bn.running_var", ...), from a safetensors file made by scripts/convert_fid_inception.py out
// of pytorch-fid's pt_inception-2015-12-05-6726825d.pth, or from any source (the tests generate random weights).
// fc.* (the 1008-class logits) and num_batches_tracked are not used.
//
// Images run through the network together; each convolution handles one image at a time, its output tiles in
// parallel (kernels/conv2d_rect.hpp), so results do not depend on the thread count. Cost: 5.7 G multiply-adds per
// image at 299 x 299.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/hash.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/io/safetensors.hpp"
#include "diffusion/kernels/conv2d_rect.hpp"
#include "diffusion/kernels/pooling.hpp"
#include "diffusion/kernels/resize.hpp"

namespace diffusion {

// Fills out[0 .. shape.numel()) with the parameter `name` (a state_dict name) of the given shape.
using InceptionWeightSource = std::function<void(const std::string& name, const Shape& shape, double* out)>;

namespace inception {

// Everything a forward pass needs besides the weights: the convolutions' shared im2col workspace.
struct Workspace {
  std::vector<float> col;
};

// torchvision's BasicConv2d with its BatchNorm folded in: y = relu(conv(x, w') + b').
class ConvBnRelu {
 public:
  ConvBnRelu(std::string name, Index in, Index out, Index kh, Index kw, Index sh = 1, Index sw = 1, Index ph = 0,
             Index pw = 0)
      : name_(std::move(name)), in_(in), out_(out), kh_(kh), kw_(kw), sh_(sh), sw_(sw), ph_(ph), pw_(pw) {}

  void load(const InceptionWeightSource& source) {
    const Index per = in_ * kh_ * kw_;
    std::vector<double> w(static_cast<std::size_t>(out_ * per)), gamma(static_cast<std::size_t>(out_)),
        beta(gamma.size()), mean(gamma.size()), var(gamma.size());
    source(name_ + ".conv.weight", Shape{out_, in_, kh_, kw_}, w.data());
    source(name_ + ".bn.weight", Shape{out_}, gamma.data());
    source(name_ + ".bn.bias", Shape{out_}, beta.data());
    source(name_ + ".bn.running_mean", Shape{out_}, mean.data());
    source(name_ + ".bn.running_var", Shape{out_}, var.data());
    weight_.resize(Shape{out_, in_, kh_, kw_});
    bias_.resize(Shape{out_});
    for (Index c = 0; c < out_; ++c) {
      const std::size_t ci = static_cast<std::size_t>(c);
      DIFFUSION_CHECK(var[ci] + 0.001 > 0.0, "Inception '" << name_ << "': bn.running_var[" << c << "] = " << var[ci]
                                                           << " makes the BatchNorm undefined");
      const double s = gamma[ci] / std::sqrt(var[ci] + 0.001);
      for (Index k = 0; k < per; ++k)
        weight_[c * per + k] = static_cast<float>(w[static_cast<std::size_t>(c * per + k)] * s);
      bias_[c] = static_cast<float>(beta[ci] - mean[ci] * s);
    }
  }

  Shape output_shape(const Shape& x) const {
    DIFFUSION_CHECK(x.rank() == 4 && x[1] == in_, "Inception '" << name_ << "': input " << x << ", expected (N, " << in_
                                                                << ", H, W)");
    const Index oh = kernels::Conv2dRectGeometry::output_size(x[2], kh_, sh_, ph_);
    const Index ow = kernels::Conv2dRectGeometry::output_size(x[3], kw_, sw_, pw_);
    DIFFUSION_CHECK(oh > 0 && ow > 0, "Inception '" << name_ << "': input " << x << " is smaller than its " << kh_
                                                    << "x" << kw_ << " kernel");
    return Shape{x[0], out_, oh, ow};
  }

  void forward(const Tensor<float>& x, Tensor<float>& y, Workspace& ws) const {
    DIFFUSION_CHECK(weight_.numel() > 0, "Inception '" << name_ << "': weights not loaded");
    y.resize(output_shape(x.shape()));
    const auto g = kernels::Conv2dRectGeometry::make(x.dim(0), in_, x.dim(2), x.dim(3), out_, kh_, kw_, sh_, sw_, ph_, pw_);
    kernels::conv2d_rect_forward(g, x.data(), weight_.data(), bias_.data(), y.data(), ws.col);
    float* v = y.data();
    const Index n = y.numel(), chunk = 1 << 15;
    parallel_for(0, (n + chunk - 1) / chunk, double(chunk), [&](Index c) {
      for (Index i = c * chunk, end = std::min(n, (c + 1) * chunk); i < end; ++i) v[i] = v[i] > 0.0f ? v[i] : 0.0f;
    });
  }

  Index out_channels() const { return out_; }
  const Tensor<float>& weight() const { return weight_; }  // (out, in, kh, kw), BatchNorm folded in
  const Tensor<float>& bias() const { return bias_; }      // (out)

 private:
  std::string name_;
  Index in_, out_, kh_, kw_, sh_, sw_, ph_, pw_;
  Tensor<float> weight_, bias_;
};

// y (N, 3, 3 stride s, padding p) pooling on x; `max` or average (count_include_pad false).
inline void pool3(const Tensor<float>& x, Tensor<float>& y, Index stride, Index pad, bool max) {
  const auto g = kernels::Pool2dGeometry::make(x.dim(0), x.dim(1), x.dim(2), x.dim(3), 3, stride, pad, false);
  DIFFUSION_CHECK(g.out_height > 0 && g.out_width > 0, "Inception pooling: input " << x.shape() << " is smaller than 3x3");
  y.resize(Shape{g.batch, g.channels, g.out_height, g.out_width});
  if (max) {
    kernels::max_pool2d_forward(g, x.data(), y.data());
  } else {
    kernels::avg_pool2d_forward(g, x.data(), y.data());
  }
}

// out (N, sum C_i, H, W) = torch.cat(parts, 1).
inline void concat(const std::vector<const Tensor<float>*>& parts, Tensor<float>& out) {
  const Shape& s = parts.front()->shape();
  Index channels = 0;
  for (const Tensor<float>* p : parts) {
    DIFFUSION_CHECK(p->dim(0) == s[0] && p->dim(2) == s[2] && p->dim(3) == s[3],
                    "Inception concat: " << p->shape() << " does not match " << s);
    channels += p->dim(1);
  }
  out.resize(Shape{s[0], channels, s[2], s[3]});
  const Index P = s[2] * s[3];
  for (Index n = 0; n < s[0]; ++n) {
    float* dst = out.data() + n * channels * P;
    for (const Tensor<float>* p : parts) {
      const Index c = p->dim(1);
      std::copy(p->data() + n * c * P, p->data() + (n + 1) * c * P, dst);
      dst += c * P;
    }
  }
}

class Block {
 public:
  virtual ~Block() = default;
  virtual void load(const InceptionWeightSource& source) = 0;
  virtual void forward(const Tensor<float>& x, Tensor<float>& y, Workspace& ws) = 0;
  virtual const std::string& name() const = 0;
};

// A single BasicConv2d (the stem's convolutions).
class ConvBlock : public Block {
 public:
  template <class... Args>
  explicit ConvBlock(const std::string& name, Args... args) : name_(name), conv_(name, args...) {}
  void load(const InceptionWeightSource& s) override { conv_.load(s); }
  void forward(const Tensor<float>& x, Tensor<float>& y, Workspace& ws) override { conv_.forward(x, y, ws); }
  const std::string& name() const override { return name_; }

 private:
  std::string name_;
  ConvBnRelu conv_;
};

// MaxPool2d(3, stride 2): maxpool1, maxpool2.
class MaxPoolBlock : public Block {
 public:
  explicit MaxPoolBlock(std::string name) : name_(std::move(name)) {}
  void load(const InceptionWeightSource&) override {}
  void forward(const Tensor<float>& x, Tensor<float>& y, Workspace&) override { pool3(x, y, 2, 0, true); }
  const std::string& name() const override { return name_; }

 private:
  std::string name_;
};

// FIDInceptionA: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avgpool (no pad count) -> 1x1.
class BlockA : public Block {
 public:
  BlockA(const std::string& p, Index in, Index pool_features)
      : name_(p), b1_(p + ".branch1x1", in, 64, 1, 1), b5_1_(p + ".branch5x5_1", in, 48, 1, 1),
        b5_2_(p + ".branch5x5_2", 48, 64, 5, 5, 1, 1, 2, 2), d1_(p + ".branch3x3dbl_1", in, 64, 1, 1),
        d2_(p + ".branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1, 1), d3_(p + ".branch3x3dbl_3", 96, 96, 3, 3, 1, 1, 1, 1),
        bp_(p + ".branch_pool", in, pool_features, 1, 1) {}
  void load(const InceptionWeightSource& s) override {
    for (ConvBnRelu* c : {&b1_, &b5_1_, &b5_2_, &d1_, &d2_, &d3_, &bp_}) c->load(s);
  }
  void forward(const Tensor<float>& x, Tensor<float>& y, Workspace& ws) override {
    b1_.forward(x, o1_, ws);
    b5_1_.forward(x, t1_, ws);
    b5_2_.forward(t1_, o2_, ws);
    d1_.forward(x, t1_, ws);
    d2_.forward(t1_, t2_, ws);
    d3_.forward(t2_, o3_, ws);
    pool3(x, t1_, 1, 1, false);
    bp_.forward(t1_, o4_, ws);
    concat({&o1_, &o2_, &o3_, &o4_}, y);
  }
  const std::string& name() const override { return name_; }

 private:
  std::string name_;
  ConvBnRelu b1_, b5_1_, b5_2_, d1_, d2_, d3_, bp_;
  Tensor<float> t1_, t2_, o1_, o2_, o3_, o4_;
};

// InceptionB (torchvision's): 3x3 stride 2 | 1x1 -> 3x3 -> 3x3 stride 2 | maxpool 3 stride 2.
class BlockB : public Block {
 public:
  BlockB(const std::string& p, Index in)
      : name_(p), b3_(p + ".branch3x3", in, 384, 3, 3, 2, 2), d1_(p + ".branch3x3dbl_1", in, 64, 1, 1),
        d2_(p + ".branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1, 1), d3_(p + ".branch3x3dbl_3", 96, 96, 3, 3, 2, 2) {}
  void load(const InceptionWeightSource& s) override {
    for (ConvBnRelu* c : {&b3_, &d1_, &d2_, &d3_}) c->load(s);
  }
  void forward(const Tensor<float>& x, Tensor<float>& y, Workspace& ws) override {
    b3_.forward(x, o1_, ws);
    d1_.forward(x, t1_, ws);
    d2_.forward(t1_, t2_, ws);
    d3_.forward(t2_, o2_, ws);
    pool3(x, o3_, 2, 0, true);
    concat({&o1_, &o2_, &o3_}, y);
  }
  const std::string& name() const override { return name_; }

 private:
  std::string name_;
  ConvBnRelu b3_, d1_, d2_, d3_;
  Tensor<float> t1_, t2_, o1_, o2_, o3_;
};

// FIDInceptionC: 1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 | avgpool (no pad count) -> 1x1.
class BlockC : public Block {
 public:
  BlockC(const std::string& p, Index in, Index c7)
      : name_(p), b1_(p + ".branch1x1", in, 192, 1, 1), s1_(p + ".branch7x7_1", in, c7, 1, 1),
        s2_(p + ".branch7x7_2", c7, c7, 1, 7, 1, 1, 0, 3), s3_(p + ".branch7x7_3", c7, 192, 7, 1, 1, 1, 3, 0),
        d1_(p + ".branch7x7dbl_1", in, c7, 1, 1), d2_(p + ".branch7x7dbl_2", c7, c7, 7, 1, 1, 1, 3, 0),
        d3_(p + ".branch7x7dbl_3", c7, c7, 1, 7, 1, 1, 0, 3), d4_(p + ".branch7x7dbl_4", c7, c7, 7, 1, 1, 1, 3, 0),
        d5_(p + ".branch7x7dbl_5", c7, 192, 1, 7, 1, 1, 0, 3), bp_(p + ".branch_pool", in, 192, 1, 1) {}
  void load(const InceptionWeightSource& s) override {
    for (ConvBnRelu* c : {&b1_, &s1_, &s2_, &s3_, &d1_, &d2_, &d3_, &d4_, &d5_, &bp_}) c->load(s);
  }
  void forward(const Tensor<float>& x, Tensor<float>& y, Workspace& ws) override {
    b1_.forward(x, o1_, ws);
    s1_.forward(x, t1_, ws);
    s2_.forward(t1_, t2_, ws);
    s3_.forward(t2_, o2_, ws);
    d1_.forward(x, t1_, ws);
    d2_.forward(t1_, t2_, ws);
    d3_.forward(t2_, t1_, ws);
    d4_.forward(t1_, t2_, ws);
    d5_.forward(t2_, o3_, ws);
    pool3(x, t1_, 1, 1, false);
    bp_.forward(t1_, o4_, ws);
    concat({&o1_, &o2_, &o3_, &o4_}, y);
  }
  const std::string& name() const override { return name_; }

 private:
  std::string name_;
  ConvBnRelu b1_, s1_, s2_, s3_, d1_, d2_, d3_, d4_, d5_, bp_;
  Tensor<float> t1_, t2_, o1_, o2_, o3_, o4_;
};

// InceptionD (torchvision's): 1x1 -> 3x3 stride 2 | 1x1 -> 1x7 -> 7x1 -> 3x3 stride 2 | maxpool 3 stride 2.
class BlockD : public Block {
 public:
  BlockD(const std::string& p, Index in)
      : name_(p), a1_(p + ".branch3x3_1", in, 192, 1, 1), a2_(p + ".branch3x3_2", 192, 320, 3, 3, 2, 2),
        s1_(p + ".branch7x7x3_1", in, 192, 1, 1), s2_(p + ".branch7x7x3_2", 192, 192, 1, 7, 1, 1, 0, 3),
        s3_(p + ".branch7x7x3_3", 192, 192, 7, 1, 1, 1, 3, 0), s4_(p + ".branch7x7x3_4", 192, 192, 3, 3, 2, 2) {}
  void load(const InceptionWeightSource& s) override {
    for (ConvBnRelu* c : {&a1_, &a2_, &s1_, &s2_, &s3_, &s4_}) c->load(s);
  }
  void forward(const Tensor<float>& x, Tensor<float>& y, Workspace& ws) override {
    a1_.forward(x, t1_, ws);
    a2_.forward(t1_, o1_, ws);
    s1_.forward(x, t1_, ws);
    s2_.forward(t1_, t2_, ws);
    s3_.forward(t2_, t1_, ws);
    s4_.forward(t1_, o2_, ws);
    pool3(x, o3_, 2, 0, true);
    concat({&o1_, &o2_, &o3_}, y);
  }
  const std::string& name() const override { return name_; }

 private:
  std::string name_;
  ConvBnRelu a1_, a2_, s1_, s2_, s3_, s4_;
  Tensor<float> t1_, t2_, o1_, o2_, o3_;
};

// FIDInceptionE_1 (avg pool, no pad count) / FIDInceptionE_2 (max pool 3, stride 1, padding 1):
// 1x1 | 1x1 -> [1x3, 3x1] | 1x1 -> 3x3 -> [1x3, 3x1] | pool -> 1x1.
class BlockE : public Block {
 public:
  BlockE(const std::string& p, Index in, bool max_pool)
      : name_(p), max_pool_(max_pool), b1_(p + ".branch1x1", in, 320, 1, 1), a1_(p + ".branch3x3_1", in, 384, 1, 1),
        a2a_(p + ".branch3x3_2a", 384, 384, 1, 3, 1, 1, 0, 1), a2b_(p + ".branch3x3_2b", 384, 384, 3, 1, 1, 1, 1, 0),
        d1_(p + ".branch3x3dbl_1", in, 448, 1, 1), d2_(p + ".branch3x3dbl_2", 448, 384, 3, 3, 1, 1, 1, 1),
        d3a_(p + ".branch3x3dbl_3a", 384, 384, 1, 3, 1, 1, 0, 1),
        d3b_(p + ".branch3x3dbl_3b", 384, 384, 3, 1, 1, 1, 1, 0), bp_(p + ".branch_pool", in, 192, 1, 1) {}
  void load(const InceptionWeightSource& s) override {
    for (ConvBnRelu* c : {&b1_, &a1_, &a2a_, &a2b_, &d1_, &d2_, &d3a_, &d3b_, &bp_}) c->load(s);
  }
  void forward(const Tensor<float>& x, Tensor<float>& y, Workspace& ws) override {
    b1_.forward(x, o1_, ws);
    a1_.forward(x, t1_, ws);
    a2a_.forward(t1_, o2_, ws);
    a2b_.forward(t1_, o3_, ws);
    d1_.forward(x, t1_, ws);
    d2_.forward(t1_, t2_, ws);
    d3a_.forward(t2_, o4_, ws);
    d3b_.forward(t2_, o5_, ws);
    pool3(x, t1_, 1, 1, max_pool_);
    bp_.forward(t1_, o6_, ws);
    concat({&o1_, &o2_, &o3_, &o4_, &o5_, &o6_}, y);
  }
  const std::string& name() const override { return name_; }

 private:
  std::string name_;
  bool max_pool_;
  ConvBnRelu b1_, a1_, a2a_, a2b_, d1_, d2_, d3a_, d3b_, bp_;
  Tensor<float> t1_, t2_, o1_, o2_, o3_, o4_, o5_, o6_;
};

}  // namespace inception

class FidInceptionV3 {
 public:
  static constexpr Index kFeatures = 2048;
  static constexpr Index kInputSize = 299;

  explicit FidInceptionV3(const InceptionWeightSource& source) {
    using namespace inception;
    blocks_.push_back(std::make_unique<ConvBlock>("Conv2d_1a_3x3", 3, 32, 3, 3, 2, 2));
    blocks_.push_back(std::make_unique<ConvBlock>("Conv2d_2a_3x3", 32, 32, 3, 3));
    blocks_.push_back(std::make_unique<ConvBlock>("Conv2d_2b_3x3", 32, 64, 3, 3, 1, 1, 1, 1));
    blocks_.push_back(std::make_unique<MaxPoolBlock>("maxpool1"));
    blocks_.push_back(std::make_unique<ConvBlock>("Conv2d_3b_1x1", 64, 80, 1, 1));
    blocks_.push_back(std::make_unique<ConvBlock>("Conv2d_4a_3x3", 80, 192, 3, 3));
    blocks_.push_back(std::make_unique<MaxPoolBlock>("maxpool2"));
    blocks_.push_back(std::make_unique<BlockA>("Mixed_5b", 192, 32));
    blocks_.push_back(std::make_unique<BlockA>("Mixed_5c", 256, 64));
    blocks_.push_back(std::make_unique<BlockA>("Mixed_5d", 288, 64));
    blocks_.push_back(std::make_unique<BlockB>("Mixed_6a", 288));
    blocks_.push_back(std::make_unique<BlockC>("Mixed_6b", 768, 128));
    blocks_.push_back(std::make_unique<BlockC>("Mixed_6c", 768, 160));
    blocks_.push_back(std::make_unique<BlockC>("Mixed_6d", 768, 160));
    blocks_.push_back(std::make_unique<BlockC>("Mixed_6e", 768, 192));
    blocks_.push_back(std::make_unique<BlockD>("Mixed_7a", 768));
    blocks_.push_back(std::make_unique<BlockE>("Mixed_7b", 1280, false));
    blocks_.push_back(std::make_unique<BlockE>("Mixed_7c", 2048, true));
    // The weights key hashes every tensor read (name, then its values as doubles) in load order.
    std::uint64_t h = fnv1a64("FidInceptionV3", 14);
    const InceptionWeightSource hashing = [&](const std::string& name, const Shape& shape, double* out) {
      source(name, shape, out);
      h = fnv1a64(name.c_str(), name.size() + 1, h);
      h = fnv1a64(out, sizeof(double) * static_cast<std::size_t>(shape.numel()), h);
    };
    for (auto& b : blocks_) b->load(hashing);
    key_ = hash_key(h);
  }
  FidInceptionV3(const FidInceptionV3&) = delete;
  FidInceptionV3& operator=(const FidInceptionV3&) = delete;

  // The weights of a safetensors file (scripts/convert_fid_inception.py); every tensor read must be present with
  // its shape. Tensors the network does not use (fc.*, num_batches_tracked) are ignored.
  static std::unique_ptr<FidInceptionV3> from_safetensors(const std::string& path) {
    const io::SafetensorsReader reader(path);
    return std::make_unique<FidInceptionV3>([&](const std::string& name, const Shape& shape, double* out) {
      DIFFUSION_CHECK(reader.contains(name), "Inception weights '" << path << "': missing tensor '" << name << "'");
      reader.read_into(name, shape, out);
    });
  }

  // Content key of the weights ("fnv1a64:..."): equal weights, equal key.
  const std::string& weights_key() const { return key_; }

  // The stages in order: Conv2d_1a_3x3, Conv2d_2a_3x3, Conv2d_2b_3x3, maxpool1, Conv2d_3b_1x1, Conv2d_4a_3x3,
  // maxpool2, Mixed_5b .. Mixed_7c (the global average pool follows).
  Index stages() const { return static_cast<Index>(blocks_.size()); }
  const std::string& stage_name(Index i) const { return blocks_.at(static_cast<std::size_t>(i))->name(); }
  // One stage on x (N, C, H, W), e.g. for layer-by-layer tests.
  void forward_stage(Index i, const Tensor<float>& x, Tensor<float>& y) {
    blocks_.at(static_cast<std::size_t>(i))->forward(x, y, workspace_);
  }

  // The network input: images (N, 3, H, W) in [0, 1] resized to 299 x 299 and mapped to 2 x - 1.
  void preprocess(const Tensor<float>& images, Tensor<float>& x) const {
    DIFFUSION_CHECK(images.rank() == 4 && images.dim(1) == 3 && images.dim(0) > 0,
                    "FidInceptionV3: images must be (N, 3, H, W), got " << images.shape());
    x.resize(Shape{images.dim(0), 3, kInputSize, kInputSize});
    kernels::bilinear_resize(images.dim(0) * 3, images.dim(2), images.dim(3), images.data(), kInputSize, kInputSize,
                             x.data());
    for (float& v : x) v = 2.0f * v - 1.0f;
  }

  // features (N, 2048): pool3 features of images (N, 3, H, W) in [0, 1].
  void features(const Tensor<float>& images, Tensor<float>& out) {
    preprocess(images, a_);
    Tensor<float>* cur = &a_;
    Tensor<float>* next = &b_;
    for (auto& block : blocks_) {
      block->forward(*cur, *next, workspace_);
      std::swap(cur, next);
    }
    const Index N = cur->dim(0), C = cur->dim(1), P = cur->dim(2) * cur->dim(3);
    out.resize(Shape{N, C});
    kernels::global_avg_pool_forward(N * C, P, cur->data(), out.data());
  }

 private:
  std::vector<std::unique_ptr<inception::Block>> blocks_;
  inception::Workspace workspace_;
  Tensor<float> a_, b_;  // activations between stages, ping-ponged
  std::string key_;
};

}  // namespace diffusion
