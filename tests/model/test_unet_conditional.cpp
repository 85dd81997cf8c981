// The class-conditional U-Net (UnetConfig::num_classes > 0; issue 15) against the PyTorch reference
// (tests/golden/unet_cfg_{convnext,resnet}.*.safetensors from make_cfg_fixtures.py: reference.Unet(num_classes=3),
// classifier_free_guidance.py's classes_emb / null_classes_emb / classes_mlp on the primer's network): forward, input
// gradient and every parameter gradient of sum(y * g) on a batch of 4 with ids [2, -1, 0, 2] (the null embedding,
// an unused class whose embedding row must get exactly no gradient, a class used twice), with the tolerances of
// test_unet_golden.cpp. A double finite-difference check of tiny conditional U-Nets of both block types, bitwise
// thread-count independence, the config JSON and weight files, and the errors of a wrong call.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/model/unet.hpp"
#include "diffusion/model/unet_plan.hpp"
#include "diffusion/model/unet_weights.hpp"
#include "support/build_kind.hpp"
#include "support/compare.hpp"
#include "support/gradcheck.hpp"
#include "support/threads.hpp"

using namespace diffusion;

namespace {

std::string cond_golden(const std::string& name) { return std::string(DIFFUSION_GOLDEN_DIR) + "/" + name; }
std::string cond_scratch(const std::string& name) { return std::string(DIFFUSION_TEST_BINARY_DIR) + "/" + name; }

std::vector<std::int64_t> ids(const io::SafetensorsReader& r, const std::string& name) {
  std::vector<std::int64_t> out;
  for (double v : r.read<double>(name)) out.push_back(static_cast<std::int64_t>(v));
  return out;
}

template <class T>
void check_against_reference(const std::string& cfg, double forward_tolerance, double grad_tolerance,
                             double zero_tolerance) {
  Unet<T> net = read_unet<T>(cond_golden(cfg + ".weights.safetensors"));
  REQUIRE(net.config().num_classes == 3);
  const io::SafetensorsReader io(cond_golden(cfg + ".io.safetensors"));
  const Tensor<T> x = io.read<T>("x");
  const auto classes = ids(io, "classes");
  REQUIRE(classes == std::vector<std::int64_t>{2, kNullClass, 0, 2});
  Tensor<T> y;
  net.forward(x, ids(io, "t"), classes, y);
  const auto cmp = testing::compare(y, io.read<double>("y"));
  INFO(cmp.describe(cfg + " forward"));
  REQUIRE(cmp.max_abs_error <= forward_tolerance * cmp.max_abs_reference);

  net.params().zero_grad();
  Tensor<T> dx(x.shape());
  dx.fill(T(0));
  net.backward(io.read<T>("g"), &dx);
  double total = 0.0;
  for (const auto& e : net.params().entries())
    for (double v : io.read<double>("grad." + e.name)) total += v * v;
  const double scale = std::sqrt(total);
  double worst = 0.0, worst_zero = 0.0;
  std::string worst_name;
  int zeros = 0, conditioning = 0;
  for (const auto& e : net.params().entries()) {
    const Tensor<double> ref = io.read<double>("grad." + e.name);
    const T* got = net.params().grads() + e.offset;
    if (e.name == "classes_emb.weight") {
      // Row 1 (class 1, unused in the batch) is exactly zero in both; the other rows are checked below with the rest.
      const Index dim = e.shape[1];
      for (Index j = 0; j < dim; ++j) {
        REQUIRE(ref[dim + j] == 0.0);
        REQUIRE(got[dim + j] == T(0));
      }
    }
    if (e.name.rfind("classes_", 0) == 0 || e.name == "null_classes_emb") ++conditioning;
    const testing::NormError err = testing::norm_error(got, ref.data(), ref.numel());
    if (err.ref < 1e-9 * scale) {
      ++zeros;
      worst_zero = testing::max_keep_nan(worst_zero, err.diff / scale);
      continue;
    }
    if (!(err.relative() <= worst)) worst = err.relative(), worst_name = e.name;
  }
  INFO(cfg << ": worst parameter gradient " << worst_name << " relative error " << worst << "; " << zeros
           << " structurally zero gradients, largest ||grad|| / ||all|| " << worst_zero);
  REQUIRE(conditioning == 6);  // classes_emb.weight, null_classes_emb, classes_mlp.{0,2}.{weight,bias}
  REQUIRE(worst_zero <= zero_tolerance);
  REQUIRE(worst <= grad_tolerance);
  const Tensor<double> dx_ref = io.read<double>("dx");
  const double dx_err = testing::relative_norm_error(dx.data(), dx_ref.data(), dx_ref.numel());
  INFO(cfg << ": input gradient relative error " << dx_err);
  REQUIRE(dx_err <= grad_tolerance);
}

UnetConfig tiny_conditional(bool convnext) {
  UnetConfig c;
  c.dim = 4;
  c.channels = convnext ? 1 : 2;
  c.dim_mults = {1, 2};
  c.num_classes = 3;
  c.use_convnext = convnext;
  c.resnet_block_groups = 2;
  c.attention_heads = convnext ? 2 : 1;
  c.attention_dim_head = convnext ? 3 : 4;
  return c;
}

}  // namespace

TEST_CASE("golden: conditional U-Net with ConvNeXt blocks matches the PyTorch reference (float)") {
  check_against_reference<float>("unet_cfg_convnext", 1e-4, 1e-3, 1e-6);
}

TEST_CASE("golden: conditional U-Net with ResNet blocks matches the PyTorch reference (float)") {
  check_against_reference<float>("unet_cfg_resnet", 1e-4, 1e-3, 1e-6);
}

TEST_CASE("golden: conditional U-Net in double matches the float64 reference to float rounding") {
  check_against_reference<double>("unet_cfg_convnext", 1e-6, 1e-6, 1e-12);
  check_against_reference<double>("unet_cfg_resnet", 1e-6, 1e-6, 1e-12);
}

TEST_CASE("gradient check: whole conditional U-Net, both block types, real and null class ids") {
  for (bool convnext : {true, false}) {
    INFO((convnext ? "ConvNeXt" : "ResNet") << " blocks");
    Unet<double> net(tiny_conditional(convnext), 5);
    Rng rng(6);
    auto& store = net.params();
    for (const auto& e : store.entries()) {
      rng.normal(store.values() + e.offset, e.shape.numel());
      for (Index i = 0; i < e.shape.numel(); ++i) store.values()[e.offset + static_cast<std::size_t>(i)] *= 0.4;
    }
    Tensor<double> x(Shape{3, net.config().channels, 4, 4});
    testing::randomize(x, 7);
    const std::vector<std::int64_t> t = {3, 17, 9};
    const std::vector<std::int64_t> classes = {2, kNullClass, 2};  // class 2 twice: its row sums two images
    testing::GradCheck check;
    check.params = &store;
    check.inputs = {&x};
    check.floor = 1e-3;
    if (testing::kSanitizedBuild) check.max_per_tensor = 6;
    check.forward = [&](Tensor<double>& y) { net.forward(x, t, classes, y); };
    check.backward = [&](const Tensor<double>& dy, std::vector<Tensor<double>*>& dx) { net.backward(dy, dx[0]); };
    const auto r = check.run();
    INFO("worst: " << r.worst << " (" << r.checked << " elements)");
    REQUIRE(r.checked > (testing::kSanitizedBuild ? store.entries().size() : 1000));
    REQUIRE(r.max_error <= 1e-6);
  }
}

TEST_CASE("conditional U-Net results are bitwise identical with 1 2 and 3 threads") {
  for (const std::string cfg : {"unet_cfg_convnext", "unet_cfg_resnet"}) {
    const io::SafetensorsReader io(cond_golden(cfg + ".io.safetensors"));
    const Tensor<float> x = io.read<float>("x");
    auto run = [&](int threads, Tensor<float>& y, Tensor<float>& dx, std::vector<float>& grads) {
      testing::ScopedThreads scoped(threads);
      Unet<float> net = read_unet<float>(cond_golden(cfg + ".weights.safetensors"));
      net.forward(x, ids(io, "t"), ids(io, "classes"), y);
      net.params().zero_grad();
      dx.resize(x.shape());
      dx.fill(0.0f);
      net.backward(io.read<float>("g"), &dx);
      grads.assign(net.params().grads(), net.params().grads() + net.params().size());
    };
    Tensor<float> y1, dx1;
    std::vector<float> g1;
    run(1, y1, dx1, g1);
    for (int threads : {2, 3}) {
      INFO(cfg << ": " << threads << " threads against 1");
      Tensor<float> y, dx;
      std::vector<float> g;
      run(threads, y, dx, g);
      REQUIRE(y.numel() == y1.numel());
      REQUIRE(std::memcmp(y.data(), y1.data(), sizeof(float) * static_cast<std::size_t>(y1.numel())) == 0);
      REQUIRE(std::memcmp(dx.data(), dx1.data(), sizeof(float) * static_cast<std::size_t>(dx1.numel())) == 0);
      REQUIRE(std::memcmp(g.data(), g1.data(), sizeof(float) * g1.size()) == 0);
    }
  }
}

TEST_CASE("conditional U-Net: the plan, parameter names and shapes, config JSON and weight files") {
  const UnetConfig c = tiny_conditional(true);
  const UnetPlan plan = plan_unet(c);
  Unet<float> net(c, 3);
  REQUIRE(static_cast<Index>(net.params().count()) == plan.parameter_count);
  REQUIRE(plan.find("classes_emb.weight")->shape == Shape{3, 4});
  REQUIRE(plan.find("null_classes_emb")->shape == Shape{4});
  REQUIRE(plan.find("classes_mlp.0.weight")->shape == Shape{16, 4});
  REQUIRE(plan.find("classes_mlp.2.weight")->shape == Shape{16, 16});
  // Every block's MLP takes cat(time, class) embeddings: 4 dim + 4 dim inputs (ConvNeXt: dim_in outputs).
  REQUIRE(plan.find("downs.0.0.mlp.1.weight")->shape == Shape{c.resolved_init_dim(), 32});
  REQUIRE(plan.find("mid_block1.mlp.1.weight")->shape == Shape{8, 32});
  REQUIRE(plan.find("final_conv.0.mlp.1.weight") == nullptr);  // the primer's final block takes no embedding
  // The unconditional plan of the same config has exactly the parameters without these four modules.
  UnetConfig u = c;
  u.num_classes = 0;
  const UnetPlan uplan = plan_unet(u);
  REQUIRE(uplan.parameters.size() + 6 == plan.parameters.size());
  REQUIRE(uplan.find("downs.0.0.mlp.1.weight")->shape == Shape{c.resolved_init_dim(), 16});
  REQUIRE(uplan.find("null_classes_emb") == nullptr);

  // JSON: num_classes written only when > 0 (unconditional files are unchanged), read back, absent = 0.
  REQUIRE(c.to_json().at("num_classes") == 3);
  REQUIRE_FALSE(u.to_json().contains("num_classes"));
  REQUIRE(UnetConfig::from_json(c.to_json(), c.extensions_to_json(), "test").num_classes == 3);
  REQUIRE(UnetConfig::from_json(u.to_json(), nullptr, "test").num_classes == 0);
  nlohmann::json bad = c.to_json();
  bad["num_classes"] = 2.5;
  REQUIRE_THROWS_WITH(UnetConfig::from_json(bad, nullptr, "f"), Catch::Contains("'num_classes'") &&
                                                                    Catch::Contains("expected an integer"));
  bad["num_classes"] = -1;
  REQUIRE_THROWS_WITH(UnetConfig::from_json(bad, nullptr, "f"), Catch::Contains("num_classes must be in [0, "));
  UnetConfig no_time = c;
  no_time.with_time_emb = false;
  REQUIRE_THROWS_WITH(no_time.validate(), Catch::Contains("num_classes 3 needs with_time_emb"));

  // Save and read back: the same network, identical outputs.
  const std::string path = cond_scratch("conditional_roundtrip.safetensors");
  save_unet_weights(net, path);
  Unet<float> back = read_unet<float>(path);
  REQUIRE(back.config().num_classes == 3);
  const auto x = Tensor<float>::normal(Shape{2, 1, 8, 8}, Rng(3));
  Tensor<float> ya, yb;
  net.forward(x, {5, 9}, {1, kNullClass}, ya);
  back.forward(x, {5, 9}, {1, kNullClass}, yb);
  REQUIRE(std::memcmp(ya.data(), yb.data(), sizeof(float) * static_cast<std::size_t>(ya.numel())) == 0);
  // The ids matter: another class, or the null embedding, gives another prediction.
  Tensor<float> y_other;
  net.forward(x, {5, 9}, {0, 2}, y_other);
  REQUIRE(std::memcmp(ya.data(), y_other.data(), sizeof(float) * static_cast<std::size_t>(ya.numel())) != 0);
  // A conditional file does not load into an unconditional network (the plans differ).
  Unet<float> plain(u, 1);
  REQUIRE_THROWS_WITH(load_unet_weights(plain, path), Catch::Contains("mlp.1.weight") && Catch::Contains("(2, 32)"));
  std::remove(path.c_str());
}

TEST_CASE("conditional U-Net: calls without class ids, with ids for an unconditional network, bad ids") {
  Unet<float> net(tiny_conditional(true), 1);
  const auto x = Tensor<float>::normal(Shape{2, 1, 4, 4}, Rng(2));
  Tensor<float> y;
  REQUIRE_THROWS_WITH(net.forward(x, {1, 2}, y), Catch::Contains("class-conditional (num_classes 3)") &&
                                                    Catch::Contains("class id per image"));
  REQUIRE_THROWS_WITH(net.forward(x, {1, 2}, {0, 3}, y),
                      Catch::Contains("class id 3 of image 1 is outside [0, 3)") && Catch::Contains("kNullClass"));
  REQUIRE_THROWS_WITH(net.forward(x, {1, 2}, {-2, 0}, y), Catch::Contains("class id -2 of image 0"));
  REQUIRE_THROWS_WITH(net.forward(x, {1, 2}, {0}, y), Catch::Contains("1 class ids for a batch of 2 images"));
  net.forward(x, {1, 2}, {kNullClass, 2}, y);  // the null id and the last class are valid
  REQUIRE(y.shape() == x.shape());

  UnetConfig u = tiny_conditional(true);
  u.num_classes = 0;
  Unet<float> plain(u, 1);
  REQUIRE_THROWS_WITH(plain.forward(x, {1, 2}, {0, 1}, y), Catch::Contains("unconditional network"));
}
