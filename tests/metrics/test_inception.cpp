// FidInceptionV3 against torchvision's inception_v3 with pytorch-fid's FID blocks (tests/golden/inception.safetensors
// from make_inception_fixtures.py), stage by stage and end to end, with weights generated from their names by the
// same formula on both sides (inception_weight below; see the script's docstring for why and how).
// Tolerances (norm-wise: max |error| / max |reference|): the fixture is the float64 evaluation rounded to float32;
// the C++ runs in float with the BatchNorm folded into the weights. Measured: <= 5.3e-7 on every stage, 2.2e-7 on
// the end-to-end features and channel means; bound 1e-5 for all (the layer goldens' bound), ~20x above.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/metrics/inception.hpp"
#include "diffusion/model/inception.hpp"
#include "metrics/metrics_test_util.hpp"
#include "support/threads.hpp"

using namespace diffusion;
using metrics_test::compare;

namespace {

const io::SafetensorsReader& inception_fixture() {
  static const io::SafetensorsReader reader(metrics_test::golden("inception.safetensors"));
  return reader;
}

std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// v_i in [-1, 1), exact in float (make_inception_fixtures.py: unit).
std::vector<float> unit(const std::string& name, Index n) {
  const std::uint64_t key = fnv1a64(name.data(), name.size());
  std::vector<float> v(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    const std::int64_t u24 = static_cast<std::int64_t>(splitmix64(key + static_cast<std::uint64_t>(i)) >> 40);
    v[static_cast<std::size_t>(i)] = static_cast<float>(u24 - (std::int64_t{1} << 23)) * 0x1p-23f;
  }
  return v;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// make_inception_fixtures.py: weight(). One float operation per value, so both sides round identically.
void inception_weight(const std::string& name, const Shape& shape, double* out) {
  const std::vector<float> v = unit(name, shape.numel());
  for (Index i = 0; i < shape.numel(); ++i) {
    const float x = v[static_cast<std::size_t>(i)];
    float w;
    if (ends_with(name, ".conv.weight")) {
      w = x * static_cast<float>(std::sqrt(6.0 / static_cast<double>(shape[1] * shape[2] * shape[3])));
    } else if (ends_with(name, ".bn.weight")) {
      w = 1.0f + x * 0.25f;
    } else if (ends_with(name, ".bn.bias") || ends_with(name, ".bn.running_mean")) {
      w = x * 0.125f;
    } else if (ends_with(name, ".bn.running_var")) {
      w = 1.0f + x * 0.5f;
    } else {
      FAIL("unexpected parameter " << name);
      return;
    }
    out[i] = w;
  }
}

// One network with the generated weights for all tests (23.8 M weights: generating them costs seconds under ASan).
metrics::InceptionExtractor& extractor() {
  static metrics::InceptionExtractor ex(std::make_unique<FidInceptionV3>(inception_weight));
  return ex;
}
FidInceptionV3& network() { return extractor().network(); }

Shape input_shape(const std::string& key) {
  const auto j = nlohmann::json::parse(inception_fixture().metadata().at(key)).at("input_shape");
  return Shape{j[0].get<Index>(), j[1].get<Index>(), j[2].get<Index>(), j[3].get<Index>()};
}

Tensor<float> generated(const std::string& name, const Shape& shape) {
  Tensor<float> t(shape);
  const std::vector<float> v = unit(name, shape.numel());
  std::copy(v.begin(), v.end(), t.data());
  return t;
}

Tensor<float> e2e_image() {
  Tensor<float> image = generated("input.image", input_shape("e2e"));
  for (float& v : image) v = 0.5f + v * 0.5f;
  return image;
}

}  // namespace

TEST_CASE("Inception stages match torchvision with pytorch-fid's blocks") {
  FidInceptionV3& net = network();
  REQUIRE(net.stages() == 18);
  for (Index s = 0; s < net.stages(); ++s) {
    const std::string name = net.stage_name(s);
    const std::string key = "stage." + name;
    INFO("stage " << name);
    REQUIRE(inception_fixture().contains(key + ".y"));
    const Tensor<float> x = generated("input." + name, input_shape(key));
    Tensor<float> y;
    net.forward_stage(s, x, y);
    const Tensor<float> want = inception_fixture().read<float>(key + ".y");
    const auto d = compare(y, want);
    INFO(d.str());
    REQUIRE(d.error <= 1e-5);
  }
}

TEST_CASE("Inception end to end: resize, 18 stages and pooling match pytorch-fid's forward") {
  FidInceptionV3& net = network();
  const Tensor<float> image = e2e_image();
  // Stage by stage, checking the channel means the fixture keeps along the way.
  Tensor<float> a, b;
  net.preprocess(image, a);
  REQUIRE(a.shape() == (Shape{1, 3, 299, 299}));
  for (Index s = 0; s < net.stages(); ++s) {
    net.forward_stage(s, a, b);
    std::swap(a, b);
    const std::string key = "e2e.mean." + net.stage_name(s);
    if (!inception_fixture().contains(key)) continue;
    const Index C = a.dim(1), P = a.dim(2) * a.dim(3);
    Tensor<double> means(Shape{C});
    for (Index c = 0; c < C; ++c) {
      double sum = 0;
      for (Index p = 0; p < P; ++p) sum += a[c * P + p];
      means[c] = sum / double(P);
    }
    const auto d = compare(means, inception_fixture().read<float>(key));
    INFO("channel means after " << net.stage_name(s) << ": " << d.str());
    REQUIRE(d.error <= 1e-5);
  }
  Tensor<float> features;
  net.features(image, features);
  REQUIRE(features.shape() == (Shape{1, 2048}));
  const auto d = compare(features, inception_fixture().read<float>("e2e.features"));
  INFO("features: " << d.str());
  REQUIRE(d.error <= 1e-5);
}

TEST_CASE("Inception reads safetensors weights by state_dict name and is thread-count independent") {
  // A file with the first convolution's five tensors (as scripts/convert_fid_inception.py names them); the rest
  // from the generator. The network must equal the generated one bit for bit.
  const std::string path = std::string(DIFFUSION_TEST_BINARY_DIR) + "/inception_part.safetensors";
  io::SafetensorsWriter writer;
  const std::vector<std::pair<std::string, Shape>> tensors = {
      {"Conv2d_1a_3x3.conv.weight", Shape{32, 3, 3, 3}}, {"Conv2d_1a_3x3.bn.weight", Shape{32}},
      {"Conv2d_1a_3x3.bn.bias", Shape{32}},              {"Conv2d_1a_3x3.bn.running_mean", Shape{32}},
      {"Conv2d_1a_3x3.bn.running_var", Shape{32}}};
  for (const auto& [name, shape] : tensors) {
    std::vector<double> v(static_cast<std::size_t>(shape.numel()));
    inception_weight(name, shape, v.data());
    Tensor<float> t(shape);
    for (Index i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(v[static_cast<std::size_t>(i)]);
    writer.add(name, t);
  }
  writer.write(path);
  const io::SafetensorsReader reader(path);
  int from_file = 0;
  FidInceptionV3 mixed([&](const std::string& name, const Shape& shape, double* out) {
    if (reader.contains(name)) {
      ++from_file;
      reader.read_into(name, shape, out);
    } else {
      inception_weight(name, shape, out);
    }
  });
  REQUIRE(from_file == 5);
  REQUIRE(mixed.weights_key() == network().weights_key());
  const Tensor<float> x = generated("input.Conv2d_1a_3x3", input_shape("stage.Conv2d_1a_3x3"));
  Tensor<float> y1, y3, ref;
  {
    diffusion::testing::ScopedThreads one(1);
    mixed.forward_stage(0, x, y1);
    network().forward_stage(0, x, ref);
  }
  {
    diffusion::testing::ScopedThreads three(3);
    mixed.forward_stage(0, x, y3);
  }
  REQUIRE(std::memcmp(y1.data(), ref.data(), sizeof(float) * static_cast<std::size_t>(ref.numel())) == 0);
  REQUIRE(std::memcmp(y1.data(), y3.data(), sizeof(float) * static_cast<std::size_t>(ref.numel())) == 0);
  // A converted file must hold every tensor the network reads.
  REQUIRE_THROWS_WITH(FidInceptionV3::from_safetensors(path), Catch::Contains("missing tensor 'Conv2d_2a_3x3.conv.weight'"));
  // Other weights, other key.
  FidInceptionV3 other([&](const std::string& name, const Shape& shape, double* out) {
    inception_weight(name, shape, out);
    if (name == "Mixed_7c.branch_pool.bn.bias") out[0] += 1e-3;
  });
  REQUIRE(other.weights_key() != network().weights_key());
}

TEST_CASE("the Inception extractor feeds grey [-1, 1] samples as pytorch-fid feeds 8-bit images") {
  // A grey sample in [-1, 1] must give the features of the RGB image whose three channels are the 8-bit level
  // p / 255 of it (PIL's convert("RGB") then ToTensor()).
  metrics::InceptionExtractor& ex = extractor();
  REQUIRE(ex.feature_dim() == 2048);
  REQUIRE(ex.num_classes() == 0);
  REQUIRE(ex.key() == "FidInceptionV3:" + network().weights_key());
  Tensor<float> grey(Shape{1, 1, 20, 20});
  const std::vector<float> v = unit("input.grey", grey.numel());
  for (Index i = 0; i < grey.numel(); ++i) grey[i] = 1.2f * v[static_cast<std::size_t>(i)];  // some beyond [-1, 1]
  Tensor<float> rgb(Shape{1, 3, 20, 20});
  for (Index c = 0; c < 3; ++c)
    for (Index i = 0; i < 400; ++i) {
      const float x = std::min(1.0f, std::max(-1.0f, grey[i]));
      rgb[c * 400 + i] = static_cast<float>(std::lround((x + 1.0) * 0.5 * 255.0)) / 255.0f;
    }
  Tensor<float> f1, f2;
  ex.extract(grey, f1, nullptr);
  network().features(rgb, f2);
  REQUIRE(f1.shape() == (Shape{1, 2048}));
  REQUIRE(std::memcmp(f1.data(), f2.data(), sizeof(float) * 2048) == 0);
  REQUIRE(metrics::InceptionExtractor::to_unit_8bit(-1.0f) == 0.0f);
  REQUIRE(metrics::InceptionExtractor::to_unit_8bit(1.0f) == 1.0f);
  REQUIRE(metrics::InceptionExtractor::to_unit_8bit(5.0f) == 1.0f);
}
