#pragma once
// FidInceptionV3 (model/inception.hpp) as a metrics extractor (sample_evaluator.hpp): FID/KID/precision/recall in
// Inception's pool3 space, for natural images.
//
// Input convention of the library: images (N, C, H, W) in [-1, 1], C = 3 (RGB) or 1 (grey, repeated to RGB as
// PIL's convert("RGB") does). They are brought to exactly what pytorch-fid feeds its network from 8-bit image files:
// p = round((clamp(x, -1, 1) + 1) / 2 * 255), then p / 255 (torchvision's ToTensor), then the network's own resize
// to 299 x 299 and 2 x - 1. No classes (num_classes() = 0: no histogram).
//
//   metrics::InceptionExtractor inception("pt_inception-2015-12-05.safetensors");   // scripts/convert_fid_inception.py
//   ReferenceStats ref = compute_reference_stats(inception, real_images, tensor_key(real_images));
//   SampleEvaluator<InceptionExtractor> eval(inception, ref);

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/model/inception.hpp"

namespace diffusion::metrics {

class InceptionExtractor {
 public:
  explicit InceptionExtractor(const std::string& weights_path)
      : InceptionExtractor(FidInceptionV3::from_safetensors(weights_path)) {}
  explicit InceptionExtractor(std::unique_ptr<FidInceptionV3> net)
      : net_(std::move(net)), key_("FidInceptionV3:" + net_->weights_key()) {}

  Index feature_dim() const { return FidInceptionV3::kFeatures; }
  Index num_classes() const { return 0; }
  const std::string& key() const { return key_; }
  FidInceptionV3& network() { return *net_; }

  // images (N, 1 or 3, H, W) in [-1, 1] -> features (N, 2048).
  void extract(const Tensor<float>& images, Tensor<float>& features, std::vector<std::int64_t>* classes) {
    DIFFUSION_CHECK(images.rank() == 4 && (images.dim(1) == 1 || images.dim(1) == 3),
                    "InceptionExtractor: images must be (N, 1 or 3, H, W), got " << images.shape());
    const Index N = images.dim(0), C = images.dim(1), P = images.dim(2) * images.dim(3);
    rgb_.resize(Shape{N, 3, images.dim(2), images.dim(3)});
    for (Index n = 0; n < N; ++n)
      for (Index c = 0; c < 3; ++c) {
        const float* in = images.data() + (n * C + (C == 1 ? 0 : c)) * P;
        float* out = rgb_.data() + (n * 3 + c) * P;
        for (Index i = 0; i < P; ++i) out[i] = to_unit_8bit(in[i]);
      }
    net_->features(rgb_, features);
    if (classes) classes->clear();
  }

  // x in [-1, 1] -> p / 255 with p = round((clamp(x) + 1) / 2 * 255) (NaN -> 0), as ToTensor() of the 8-bit image.
  static float to_unit_8bit(float x) {
    const float v = std::isnan(x) ? -1.0f : std::min(1.0f, std::max(-1.0f, x));
    const long p = std::lround((static_cast<double>(v) + 1.0) * 0.5 * 255.0);
    return static_cast<float>(p) / 255.0f;
  }

 private:
  std::unique_ptr<FidInceptionV3> net_;
  std::string key_;
  Tensor<float> rgb_;
};

}  // namespace diffusion::metrics
