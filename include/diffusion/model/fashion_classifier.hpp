#pragma once
// FashionClassifier<T>: the feature extractor of the Fashion-MNIST sample-quality metrics, a small CNN built from
// the library's layers and trained by the library (examples/fashion_classifier/):
//
//   x (N, 1, 28, 28) in [-1, 1]
//   conv1  Conv2d(1, c1, 3, padding 1), GroupNorm(c1 / 4, c1), SiLU, MaxPool2d(2)     -> (N, c1, 14, 14)
//   conv2  Conv2d(c1, c2, 3, padding 1), GroupNorm(c2 / 4, c2), SiLU, MaxPool2d(2)    -> (N, c2, 7, 7)
//   fc1    Linear(c2 * 7 * 7, hidden), SiLU                                            -> features (N, hidden)
//   fc2    Linear(hidden, classes)                                                     -> logits (N, classes)
//
// The penultimate activations ("features", after fc1's SiLU) are the space of FID/KID/precision/recall; the
// argmax of the logits gives the class histogram. Defaults: c1 = 16, c2 = 32, hidden = 128, classes = 10
// (207,018 parameters, 0.83 MB in float32). Parameter names: conv1.weight, conv1.bias, norm1.weight, norm1.bias,
// conv2.*, norm2.*, fc1.*, fc2.* (PyTorch-style; the config travels in the weights file's metadata under
// "diffusion.fashion_classifier").
//
// forward(x, logits) keeps every activation for backward(dlogits), which accumulates parameter gradients into
// params() (the input gradient is not computed). Buffers are sized on the first batch and reused.

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "diffusion/core/parameters.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/io/safetensors.hpp"
#include "diffusion/nn/activations.hpp"
#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/group_norm.hpp"
#include "diffusion/nn/linear.hpp"
#include "diffusion/nn/pooling.hpp"

namespace diffusion {

inline constexpr const char* kFashionClassifierKey = "diffusion.fashion_classifier";

struct FashionClassifierConfig {
  Index channels1 = 16;
  Index channels2 = 32;
  Index hidden = 128;
  Index classes = 10;
  Index image_size = 28;  // H = W; must be divisible by 4

  void validate() const {
    DIFFUSION_CHECK(channels1 > 0 && channels1 % 4 == 0 && channels2 > 0 && channels2 % 4 == 0,
                    "FashionClassifierConfig: channels1 and channels2 must be positive multiples of 4, got "
                        << channels1 << " and " << channels2);
    DIFFUSION_CHECK(hidden > 0 && classes > 1, "FashionClassifierConfig: needs hidden > 0 and classes > 1, got "
                                                   << hidden << " and " << classes);
    DIFFUSION_CHECK(image_size >= 4 && image_size % 4 == 0,
                    "FashionClassifierConfig: image_size must be a positive multiple of 4, got " << image_size);
  }
  nlohmann::json to_json() const {
    return {{"channels1", channels1}, {"channels2", channels2}, {"hidden", hidden}, {"classes", classes},
            {"image_size", image_size}};
  }
  static FashionClassifierConfig from_json(const nlohmann::json& j, const std::string& where) {
    FashionClassifierConfig c;
    try {
      c.channels1 = j.at("channels1").get<Index>();
      c.channels2 = j.at("channels2").get<Index>();
      c.hidden = j.at("hidden").get<Index>();
      c.classes = j.at("classes").get<Index>();
      c.image_size = j.at("image_size").get<Index>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(where + ": '" + kFashionClassifierKey + "' is not a valid classifier configuration (" + e.what() +
                  ")");
    }
    c.validate();
    return c;
  }
};

template <class T>
class FashionClassifier {
 public:
  explicit FashionClassifier(const FashionClassifierConfig& config = {}, std::uint64_t seed = 0)
      : config_(config), params_(seed) {
    config_.validate();
    const Index c1 = config_.channels1, c2 = config_.channels2, s = config_.image_size / 4;
    conv1_ = std::make_unique<nn::Conv2d<T>>(params_, "conv1", 1, c1, 3, 1, 1);
    norm1_ = std::make_unique<nn::GroupNorm<T>>(params_, "norm1", c1 / 4, c1);
    conv2_ = std::make_unique<nn::Conv2d<T>>(params_, "conv2", c1, c2, 3, 1, 1);
    norm2_ = std::make_unique<nn::GroupNorm<T>>(params_, "norm2", c2 / 4, c2);
    fc1_ = std::make_unique<nn::Linear<T>>(params_, "fc1", c2 * s * s, config_.hidden);
    fc2_ = std::make_unique<nn::Linear<T>>(params_, "fc2", config_.hidden, config_.classes);
  }
  FashionClassifier(const FashionClassifier&) = delete;  // layers hold references to params_
  FashionClassifier& operator=(const FashionClassifier&) = delete;

  const FashionClassifierConfig& config() const { return config_; }
  ParameterStore<T>& params() { return params_; }
  const ParameterStore<T>& params() const { return params_; }
  Index feature_dim() const { return config_.hidden; }
  Index num_classes() const { return config_.classes; }

  // logits (N, classes) for x (N, 1, S, S). Keeps the activations for backward; features() holds (N, hidden).
  void forward(const Tensor<T>& x, Tensor<T>& logits) {
    const Index S = config_.image_size;
    DIFFUSION_CHECK(x.rank() == 4 && x.dim(1) == 1 && x.dim(2) == S && x.dim(3) == S && x.dim(0) > 0,
                    "FashionClassifier: input must be (N, 1, " << S << ", " << S << "), got " << x.shape());
    input_ = &x;
    conv1_->forward(x, c1_);          // (N, c1, S, S)
    norm1_->forward(c1_, n1_);
    silu_.forward(n1_, a1_);
    pool_.forward(a1_, p1_);          // (N, c1, S/2, S/2)
    conv2_->forward(p1_, c2_);        // (N, c2, S/2, S/2)
    norm2_->forward(c2_, n2_);
    silu_.forward(n2_, a2_);
    pool_.forward(a2_, p2_);          // (N, c2, S/4, S/4)
    p2_.reshape(Shape{x.dim(0), p2_.numel() / x.dim(0)});  // flatten: (N, c2 S^2 / 16)
    fc1_->forward(p2_, h_);           // (N, hidden)
    silu_.forward(h_, features_);     // (N, hidden)
    fc2_->forward(features_, logits); // (N, classes)
  }

  // The penultimate activations of the last forward: (N, hidden).
  const Tensor<T>& features() const { return features_; }

  // Accumulates d(loss)/d(parameters) into params().grads() for dlogits = d(loss)/d(logits) of the last forward.
  void backward(const Tensor<T>& dlogits) {
    DIFFUSION_CHECK(input_ != nullptr, "FashionClassifier::backward called before forward");
    grad(d_features_, features_);
    fc2_->backward(features_, dlogits, &d_features_);
    grad(d_h_, h_);
    silu_.backward(h_, d_features_, &d_h_);
    grad(d_p2_, p2_);
    fc1_->backward(p2_, d_h_, &d_p2_);
    const Shape pooled{input_->dim(0), config_.channels2, config_.image_size / 4, config_.image_size / 4};
    p2_.reshape(pooled);
    d_p2_.reshape(pooled);
    grad(d_a2_, a2_);
    pool_.backward(a2_, d_p2_, &d_a2_);
    grad(d_n2_, n2_);
    silu_.backward(n2_, d_a2_, &d_n2_);
    grad(d_c2_, c2_);
    norm2_->backward(c2_, d_n2_, &d_c2_);
    grad(d_p1_, p1_);
    conv2_->backward(p1_, d_c2_, &d_p1_);
    grad(d_a1_, a1_);
    pool_.backward(a1_, d_p1_, &d_a1_);
    grad(d_n1_, n1_);
    silu_.backward(n1_, d_a1_, &d_n1_);
    grad(d_c1_, c1_);
    norm1_->backward(c1_, d_n1_, &d_c1_);
    conv1_->backward(*input_, d_c1_, nullptr);
    p2_.reshape(Shape{input_->dim(0), p2_.numel() / input_->dim(0)});
  }

 private:
  static void grad(Tensor<T>& g, const Tensor<T>& like) {
    g.resize(like.shape());
    g.zero();
  }

  FashionClassifierConfig config_;
  ParameterStore<T> params_;
  std::unique_ptr<nn::Conv2d<T>> conv1_, conv2_;
  std::unique_ptr<nn::GroupNorm<T>> norm1_, norm2_;
  std::unique_ptr<nn::Linear<T>> fc1_, fc2_;
  nn::SiLU<T> silu_;
  nn::MaxPool2d<T> pool_{2};
  const Tensor<T>* input_ = nullptr;
  // Activations of the last forward, and their gradients (shapes in forward's comments).
  Tensor<T> c1_, n1_, a1_, p1_, c2_, n2_, a2_, p2_, h_, features_;
  Tensor<T> d_c1_, d_n1_, d_a1_, d_p1_, d_c2_, d_n2_, d_a2_, d_p2_, d_h_, d_features_;
};

// Writes the classifier's weights (float32, whatever T) with its config under kFashionClassifierKey and any
// extra metadata, atomically.
template <class T>
void save_fashion_classifier(const FashionClassifier<T>& net, const std::string& path,
                             const std::map<std::string, std::string>& metadata = {}) {
  io::SafetensorsWriter writer;
  const ParameterStore<T>& store = net.params();
  for (const auto& e : store.entries()) {
    Tensor<float> t(e.shape);
    for (Index i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(store.values()[e.offset + static_cast<std::size_t>(i)]);
    writer.add(e.name, t);
  }
  writer.add_metadata(kFashionClassifierKey, net.config().to_json().dump());
  for (const auto& kv : metadata) writer.add_metadata(kv.first, kv.second);
  writer.write(path);
}

// Builds the classifier a weights file describes and loads it: every parameter must be present with its shape;
// extra tensors are an error.
template <class T>
std::unique_ptr<FashionClassifier<T>> load_fashion_classifier(const std::string& path) {
  const io::SafetensorsReader reader(path);
  const auto it = reader.metadata().find(kFashionClassifierKey);
  DIFFUSION_CHECK(it != reader.metadata().end(), "classifier weights '" << path << "': no '" << kFashionClassifierKey
                                                                        << "' entry in the metadata");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    throw Error("classifier weights '" + path + "': metadata '" + kFashionClassifierKey + "' is not JSON (" +
                e.what() + ")");
  }
  auto net = std::make_unique<FashionClassifier<T>>(
      FashionClassifierConfig::from_json(j, "classifier weights '" + path + "'"));
  ParameterStore<T>& store = net->params();
  for (const auto& e : store.entries()) {
    DIFFUSION_CHECK(reader.contains(e.name), "classifier weights '" << path << "': missing tensor '" << e.name << "'");
    reader.read_into(e.name, e.shape, store.values() + e.offset);
  }
  DIFFUSION_CHECK(reader.names().size() == store.entries().size(),
                  "classifier weights '" << path << "': " << reader.names().size() << " tensors, expected "
                                         << store.entries().size());
  return net;
}

}  // namespace diffusion
