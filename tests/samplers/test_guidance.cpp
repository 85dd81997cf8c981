// Classifier-free guidance (samplers/guidance.hpp; issue 15): the guided prediction of a conditional U-Net against
// the PyTorch reference's forward_with_cond_scale equivalent (tests/golden/unet_cfg_*.io.safetensors, keys
// guided.*: w = 0, 2, 2 with rescaled_phi 0.7, 5 with rescaled_phi 1; cond_scale = 1 + w), the call it makes to the
// network (one forward of 2N: x twice, ids then kNullClass), the rescaling's defining property, and a DDIM run
// through the guided model, bitwise identical on 1, 2 and 3 threads.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/model/unet.hpp"
#include "diffusion/model/unet_weights.hpp"
#include "diffusion/process/schedule.hpp"
#include "diffusion/samplers/guidance.hpp"
#include "diffusion/samplers/sample.hpp"
#include "support/compare.hpp"
#include "support/threads.hpp"

using namespace diffusion;

namespace {

std::string golden(const std::string& name) { return std::string(DIFFUSION_GOLDEN_DIR) + "/" + name; }

std::vector<std::int64_t> ids(const io::SafetensorsReader& r, const std::string& name) {
  std::vector<std::int64_t> out;
  for (double v : r.read<double>(name)) out.push_back(static_cast<std::int64_t>(v));
  return out;
}

template <class T>
void check_guided_against_reference(const std::string& cfg, double tolerance) {
  Unet<T> net = read_unet<T>(golden(cfg + ".weights.safetensors"));
  const io::SafetensorsReader io(golden(cfg + ".io.safetensors"));
  const Tensor<T> x = io.read<T>("x");
  const auto t = ids(io, "t");
  struct Case {
    const char* key;
    double w, phi;
  };
  int checked = 0;
  for (const Case& c : {Case{"guided.w0", 0.0, 0.0}, Case{"guided.w2", 2.0, 0.0}, Case{"guided.w2.phi0.7", 2.0, 0.7},
                        Case{"guided.w5.phi1", 5.0, 1.0}}) {
    ClassifierFreeGuidance guided(net, ids(io, "guided_classes"), GuidanceOptions{c.w, c.phi});
    Tensor<T> out;
    guided(x, t, out);
    const auto cmp = testing::compare(out, io.read<double>(c.key));
    INFO(cmp.describe(cfg + " " + c.key));
    REQUIRE(cmp.max_abs_error <= tolerance * cmp.max_abs_reference);
    ++checked;
  }
  REQUIRE(checked == 4);
}

// A conditional "network" that records its calls: out[n, i] = x[n, i] * (id + 2) + t / 100.
struct RecordingNet {
  std::vector<Index> batches;
  std::vector<std::int64_t> last_t, last_classes;
  void operator()(TensorView<double> x, const std::vector<std::int64_t>& t, const std::vector<std::int64_t>& classes,
                  Tensor<double>& out) {
    batches.push_back(x.dim(0));
    last_t = t;
    last_classes = classes;
    out.resize(x.shape());
    const Index P = x.numel() / x.dim(0);
    for (Index n = 0; n < x.dim(0); ++n)
      for (Index i = 0; i < P; ++i)
        out[n * P + i] = x[n * P + i] * double(classes[std::size_t(n)] + 2) + double(t[std::size_t(n)]) / 100.0;
  }
};

}  // namespace

TEST_CASE("golden: guided predictions of conditional U-Nets match the PyTorch reference (float)") {
  check_guided_against_reference<float>("unet_cfg_convnext", 1e-4);
  check_guided_against_reference<float>("unet_cfg_resnet", 1e-4);
}

TEST_CASE("golden: guided predictions in double match the float64 reference to float rounding") {
  check_guided_against_reference<double>("unet_cfg_convnext", 1e-6);
  check_guided_against_reference<double>("unet_cfg_resnet", 1e-6);
}

TEST_CASE("guidance runs one forward of 2N images (ids, then null ids) and combines (1 + w) c - w u") {
  RecordingNet net;
  const std::vector<std::int64_t> classes = {1, 0, 4};
  ClassifierFreeGuidance<double, RecordingNet> guided(net, classes, GuidanceOptions{3.0, 0.0});
  Tensor<double> x = Tensor<double>::normal(Shape{3, 2, 2, 2}, Rng(4));
  const std::vector<std::int64_t> t = {7, 8, 9};
  Tensor<double> out;
  guided(x, t, out);
  REQUIRE(net.batches == std::vector<Index>{6});
  REQUIRE(net.last_t == std::vector<std::int64_t>{7, 8, 9, 7, 8, 9});
  REQUIRE(net.last_classes == std::vector<std::int64_t>{1, 0, 4, kNullClass, kNullClass, kNullClass});
  REQUIRE(out.shape() == x.shape());
  const Index P = 8;
  double worst = 0.0;
  for (Index n = 0; n < 3; ++n)
    for (Index i = 0; i < P; ++i) {
      const double c = x[n * P + i] * double(classes[std::size_t(n)] + 2) + double(t[std::size_t(n)]) / 100.0;
      const double u = x[n * P + i] * 1.0 + double(t[std::size_t(n)]) / 100.0;
      worst = std::max(worst, testing::element_error(out[n * P + i], 4.0 * c - 3.0 * u));
    }
  INFO("worst |out - ((1 + w) c - w u)| " << worst);
  REQUIRE(worst <= 1e-12);

  // w = 0: the conditional prediction, one forward of N images.
  guided.set_options(GuidanceOptions{0.0, 0.5});
  guided(x, t, out);
  REQUIRE(net.batches == std::vector<Index>{6, 3});
  REQUIRE(net.last_classes == classes);

  // rescaled_phi = 1: every image's prediction has the conditional prediction's standard deviation.
  guided.set_options(GuidanceOptions{4.0, 1.0});
  guided(x, t, out);
  for (Index n = 0; n < 3; ++n) {
    double mc = 0, mo = 0, vc = 0, vo = 0;
    std::vector<double> c(P);
    for (Index i = 0; i < P; ++i) {
      c[std::size_t(i)] = x[n * P + i] * double(classes[std::size_t(n)] + 2) + double(t[std::size_t(n)]) / 100.0;
      mc += c[std::size_t(i)] / P;
      mo += out[n * P + i] / P;
    }
    for (Index i = 0; i < P; ++i) {
      vc += (c[std::size_t(i)] - mc) * (c[std::size_t(i)] - mc);
      vo += (out[n * P + i] - mo) * (out[n * P + i] - mo);
    }
    INFO("image " << n << ": std(out) " << std::sqrt(vo / P) << ", std(cond) " << std::sqrt(vc / P));
    REQUIRE(std::abs(std::sqrt(vo) - std::sqrt(vc)) <= 1e-12 * std::sqrt(vc));
  }

  // Errors name the problem.
  REQUIRE_THROWS_WITH(guided(x, {1, 2}, out), Catch::Contains("2 timesteps for a batch of 3"));
  guided.set_classes({1, 2});
  REQUIRE_THROWS_WITH(guided(x, t, out), Catch::Contains("2 class ids for a batch of shape"));
  REQUIRE_THROWS_WITH(guided.set_options(GuidanceOptions{1.0, 1.5}), Catch::Contains("rescaled_phi must be in [0, 1]"));
  REQUIRE_THROWS_WITH(guided.set_options(GuidanceOptions{std::nan(""), 0.0}), Catch::Contains("must be finite"));
}

TEST_CASE("DDIM through the guided conditional U-Net runs and is bitwise identical with 1 2 and 3 threads") {
  const NoiseSchedule schedule(BetaSchedule::Linear, 100);
  SamplerOptions o;
  o.sampler = SamplerKind::Ddim;
  o.steps = 4;
  auto run = [&](int threads, double w, Tensor<float>& x) {
    testing::ScopedThreads scoped(threads);
    Unet<float> net = read_unet<float>(golden("unet_cfg_convnext.weights.safetensors"));
    ClassifierFreeGuidance guided(net, {0, 1, 2}, GuidanceOptions{w, 0.7});
    Rng rng(21);
    x = Tensor<float>::normal(Shape{3, 1, 8, 8}, rng);
    sample(guided, schedule, x, rng, o);
  };
  Tensor<float> x1, x0;
  run(1, 3.0, x1);
  for (Index i = 0; i < x1.numel(); ++i) REQUIRE(std::isfinite(x1[i]));
  run(1, 0.0, x0);  // the guidance changes the samples
  REQUIRE(std::memcmp(x1.data(), x0.data(), sizeof(float) * static_cast<std::size_t>(x1.numel())) != 0);
  for (int threads : {2, 3}) {
    INFO(threads << " threads against 1");
    Tensor<float> x;
    run(threads, 3.0, x);
    REQUIRE(std::memcmp(x.data(), x1.data(), sizeof(float) * static_cast<std::size_t>(x1.numel())) == 0);
  }
}
