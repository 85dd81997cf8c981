// The Fashion-MNIST feature extractor: the classifier's gradient (whole network, double finite differences), its
// weights file round trip, the committed weights' test accuracy (>= 90%, the bar), the 8-bit quantisation
// of generated samples, and FashionMnistMetrics end to end on real images.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "diffusion/io/idx.hpp"
#include "diffusion/metrics/fashion_mnist.hpp"
#include "diffusion/model/fashion_classifier.hpp"
#include "diffusion/nn/cross_entropy.hpp"
#include "support/gradcheck.hpp"
#include "support/skip.hpp"
#include "support/threads.hpp"

using namespace diffusion;

namespace {

const std::string kData = "/usr/share/datasets/fashion-mnist";
const std::string kWeights = std::string(DIFFUSION_GOLDEN_DIR) + "/../../examples/fashion_classifier/fashion_classifier.safetensors";

bool have_dataset() {
  if (std::filesystem::exists(kData + "/t10k-images-idx3-ubyte.gz")) return true;
  testing::skip(kData + " not present (Debian package dataset-fashion-mnist)", "DIFFUSION_REQUIRE_FASHION_MNIST");
  return false;
}

std::string temp_path(const std::string& name) { return std::string(DIFFUSION_TEST_BINARY_DIR) + "/" + name; }

}  // namespace

TEST_CASE("the classifier passes the finite-difference gradient check") {
  FashionClassifierConfig c;
  c.channels1 = 4;
  c.channels2 = 4;
  c.hidden = 5;
  c.classes = 3;
  c.image_size = 8;
  FashionClassifier<double> net(c, 3);
  // Non-trivial GroupNorm affine parameters (ones/zeros at init would hide a swapped weight and bias).
  Rng rng(4);
  for (const auto& e : net.params().entries())
    if (e.name.rfind("norm", 0) == 0)
      for (Index i = 0; i < e.shape.numel(); ++i)
        net.params().values()[e.offset + static_cast<std::size_t>(i)] = (e.name.find("weight") != std::string::npos ? 1.0 : 0.0) + 0.5 * (rng.uniform() - 0.5);
  Tensor<double> x(Shape{2, 1, 8, 8});
  diffusion::testing::randomize(x, 5);
  // Step 1e-4 instead of the layer tests' 1e-3: the network max-pools, and a perturbation that swaps the largest two
  // values of a window moves the objective along another linear piece. Measured on this network: at 1e-3 (stencil
  // reach 2e-3) 12 of 307 parameters crossed such a tie (worst error 0.09, conv1.weight[19]; 0 of them at 1e-4 and
  // at 1e-5, so the analytic gradient is right); at 1e-4 the worst error is 3.6e-9 (rounding ~1e-16 |f| / h).
  diffusion::testing::GradCheck check;
  check.params = &net.params();
  check.step = 1e-4;
  check.floor = 1e-3;
  check.forward = [&](Tensor<double>& y) { net.forward(x, y); };
  check.backward = [&](const Tensor<double>& dy, std::vector<Tensor<double>*>&) { net.backward(dy); };
  const auto r = check.run();
  INFO("worst: " << r.worst << " (" << r.checked << " elements)");
  REQUIRE(r.checked == net.params().count());
  REQUIRE(r.max_error <= 1e-6);
}

TEST_CASE("classifier weights round-trip through safetensors with the config") {
  FashionClassifierConfig c;
  c.channels1 = 8;
  c.hidden = 16;
  FashionClassifier<float> net(c, 11);
  const std::string path = temp_path("classifier_roundtrip.safetensors");
  save_fashion_classifier(net, path, {{"note", "test"}});
  const auto loaded = load_fashion_classifier<float>(path);
  REQUIRE(loaded->config().channels1 == 8);
  REQUIRE(loaded->config().hidden == 16);
  REQUIRE(loaded->params().size() == net.params().size());
  REQUIRE(std::equal(net.params().values(), net.params().values() + net.params().size(), loaded->params().values()));
  Tensor<float> x(Shape{3, 1, 28, 28}), a, b;
  Rng(2).normal(x.data(), x.numel());
  net.forward(x, a);
  loaded->forward(x, b);
  REQUIRE(std::equal(a.begin(), a.end(), b.begin()));
  REQUIRE(loaded->features().shape() == (Shape{3, 16}));
  REQUIRE_THROWS_WITH(load_fashion_classifier<float>(std::string(DIFFUSION_GOLDEN_DIR) + "/pool_loss.safetensors"),
                      Catch::Contains("no 'diffusion.fashion_classifier' entry"));
}

TEST_CASE("8-bit quantisation leaves real images unchanged and clamps samples") {
  std::vector<float> levels(256), out(256);
  for (int p = 0; p < 256; ++p) levels[static_cast<std::size_t>(p)] = static_cast<float>(p) / 255.0f * 2.0f - 1.0f;
  metrics::quantize_to_8bit(levels.data(), out.data(), 256);
  REQUIRE(out == levels);
  const float samples[5] = {-3.0f, 1.5f, 0.0f, 0.9961f, std::nanf("")};
  float q[5];
  metrics::quantize_to_8bit(samples, q, 5);
  REQUIRE(q[0] == -1.0f);
  REQUIRE(q[1] == 1.0f);
  REQUIRE(q[2] == levels[128]);  // 0 -> 127.5 -> rounds to 128
  REQUIRE(q[3] == levels[255]);  // 0.9961 -> 254.5 -> 255
  REQUIRE(q[4] == -1.0f);        // NaN maps to black rather than poisoning the statistics
}

TEST_CASE("the committed classifier reaches at least 90 percent test accuracy") {
  if (!have_dataset()) return;
  REQUIRE(std::filesystem::exists(kWeights));
  const Tensor<float> images = io::load_idx_images<float>(kData + "/t10k-images-idx3-ubyte.gz");
  const std::vector<std::int64_t> labels = metrics::load_idx_labels(kData + "/t10k-labels-idx1-ubyte.gz");
  REQUIRE(labels.size() == 10000);
  metrics::FashionMnistExtractor extractor(kWeights);
  const double acc = metrics::classifier_accuracy(extractor, images, labels);
  INFO("test accuracy " << acc);
  REQUIRE(acc >= 0.90);
}

TEST_CASE("Fashion-MNIST metrics: training images against the test set, cached reference") {
  if (!have_dataset()) return;
  const std::string cache = temp_path("fashion_reference_stats.safetensors");
  std::remove(cache.c_str());
  metrics::FashionMnistMetricsOptions o;
  o.classifier = kWeights;
  o.reference_images = kData + "/t10k-images-idx3-ubyte.gz";
  o.cache = cache;
  o.evaluation.kid.subsets = 10;  // keep the test short; the defaults are 100 subsets of 1000 and a reservoir
  o.evaluation.kid.subset_size = 500;  // of 10,000 vectors (whose k-NN radii alone cost 1.3e10 multiply-adds)
  o.evaluation.features.reservoir_size = 3000;
  Tensor<float> train = io::load_idx_images<float>(kData + "/train-images-idx3-ubyte.gz");
  Tensor<float> real(Shape{2000, 1, 28, 28});
  std::copy(train.data(), train.data() + real.numel(), real.data());
  metrics::SampleReport good;
  {
    metrics::FashionMnistMetrics fm(o);
    REQUIRE(fm.reference_status() == metrics::CacheStatus::Created);
    REQUIRE(fm.reference().gaussian.count == 10000);
    REQUIRE(fm.reference().features.dim(0) == 3000);
    REQUIRE(fm.reference().knn_k == 3);
    good = fm.evaluate(real);
  }
  metrics::FashionMnistMetrics fm(o);
  REQUIRE(fm.reference_status() == metrics::CacheStatus::Loaded);
  // Real training images against the test set: the floor. Noise images: far worse on FID, KID and recall. Not on
  // precision: measured 0.58 for noise (0.87 for real images). Noise features land inside the k-NN balls of the
  // real set's outliers (radii^2 >= 135 against a median of 54): the k-NN precision's known sensitivity to outliers
  // in the reference set (Kynkaanniemi et al. offer clamp_to_percentile for it), not a defect of this code, whose
  // precision matches the reference implementation (test_metrics.cpp). So precision is only required to drop.
  Tensor<float> noise(Shape{2000, 1, 28, 28});
  Rng(1).uniform(noise.data(), noise.numel(), -1.0, 1.0);
  const metrics::SampleReport bad = fm.evaluate(noise);
  INFO("real: " << good.summary() << "\nnoise: " << bad.summary());
  REQUIRE(good.count == 2000);
  REQUIRE(good.fid.distance < 0.05 * bad.fid.distance);
  REQUIRE(good.kid.mean < 0.05 * bad.kid.mean);
  REQUIRE(good.pr.precision > 0.6);
  REQUIRE(good.pr.recall > 0.6);
  REQUIRE(bad.pr.precision < good.pr.precision - 0.2);
  REQUIRE(bad.pr.recall < 0.05);
  Index total = 0;
  for (Index c : good.class_histogram) {
    REQUIRE(c > 100);  // 2000 training images: about 200 per class
    total += c;
  }
  REQUIRE(total == 2000);
}
