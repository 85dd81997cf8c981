// The U-Net against the PyTorch reference (tests/golden/unet_{convnext,resnet}.*.safetensors from
// make_unet_fixtures.py): both block types, batch 2, 28 -> 14 -> 7 (odd size after downsampling).
// Forward: max |y - y_ref| <= 1e-4 * max |y_ref|. Every parameter gradient of sum(y * g):
// ||grad - grad_ref|| / ||grad_ref|| <= 1e-3. Some gradients are exactly zero in exact arithmetic (the bias of a
// ResNet block's conv is cancelled by a GroupNorm with one channel per group; the float64 fixture holds ~1e-15):
// those (||grad_ref|| < 1e-9 ||all reference gradients||) must instead be float noise, ||grad|| <= 1e-6 ||all||.
// Plus weight round trips and bitwise thread-count independence.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "diffusion/core/parallel.hpp"
#include "diffusion/io/safetensors.hpp"
#include "diffusion/model/unet.hpp"
#include "diffusion/model/unet_weights.hpp"
#include "support/compare.hpp"
#include "support/threads.hpp"

using namespace diffusion;

namespace {

std::string golden(const std::string& name) { return std::string(DIFFUSION_GOLDEN_DIR) + "/" + name; }
std::string scratch(const std::string& name) { return std::string(DIFFUSION_TEST_BINARY_DIR) + "/" + name; }

std::vector<std::int64_t> timesteps(const io::SafetensorsReader& r) {
  const Tensor<double> t = r.read<double>("t");
  std::vector<std::int64_t> out;
  for (double v : t) out.push_back(static_cast<std::int64_t>(v));
  return out;
}

template <class T>
void check_against_reference(const std::string& cfg, double forward_tolerance) {
  auto net = load_unet<T>(golden(cfg + ".weights.safetensors"));
  const io::SafetensorsReader io(golden(cfg + ".io.safetensors"));
  const Tensor<T> x = io.read<T>("x");
  const auto t = timesteps(io);
  Tensor<T> y;
  net->forward(x, t, y);
  const Tensor<double> y_ref = io.read<double>("y");
  const auto cmp = testing::compare(y, y_ref);
  INFO(cmp.describe(cfg + " forward"));
  REQUIRE(cmp.max_abs_error <= forward_tolerance * cmp.max_abs_reference);

  net->params().zero_grad();
  Tensor<T> dx(x.shape());
  net->backward(io.read<T>("g"), &dx);
  double total = 0.0;  // ||all reference gradients||^2
  for (const auto& e : net->params().entries())
    for (double v : io.read<double>("grad." + e.name)) total += v * v;
  const double scale = std::sqrt(total);
  double worst = 0.0, worst_zero = 0.0;
  std::string worst_name;
  int zeros = 0;
  for (const auto& e : net->params().entries()) {
    const Tensor<double> ref = io.read<double>("grad." + e.name);
    double diff = 0.0, norm = 0.0;
    for (Index i = 0; i < ref.numel(); ++i) {
      const double d = static_cast<double>(net->params().grads()[e.offset + static_cast<std::size_t>(i)]) - ref[i];
      diff += d * d;
      norm += ref[i] * ref[i];
    }
    if (std::sqrt(norm) < 1e-9 * scale) {  // structurally zero
      ++zeros;
      worst_zero = std::max(worst_zero, std::sqrt(diff) / scale);
      continue;
    }
    const double err = std::sqrt(diff / norm);
    if (err > worst) worst = err, worst_name = e.name;
  }
  INFO(cfg << ": worst parameter gradient " << worst_name << " relative error " << worst << "; " << zeros
           << " structurally zero gradients, largest ||grad|| / ||all|| " << worst_zero);
  REQUIRE(worst_zero <= 1e-6);
  REQUIRE(worst <= 1e-3);
  const Tensor<double> dx_ref = io.read<double>("dx");
  const double dx_err = testing::relative_norm_error(dx.data(), dx_ref.data(), dx_ref.numel());
  INFO(cfg << ": input gradient relative error " << dx_err);
  REQUIRE(dx_err <= 1e-3);
}

}  // namespace

TEST_CASE("golden: U-Net with ConvNeXt blocks matches the PyTorch reference (float)") {
  check_against_reference<float>("unet_convnext", 1e-4);
}

TEST_CASE("golden: U-Net with ResNet blocks matches the PyTorch reference (float)") {
  check_against_reference<float>("unet_resnet", 1e-4);
}

TEST_CASE("golden: U-Net in double matches the float64 reference to float rounding") {
  // The fixtures hold float64 results rounded once to float32 (relative 6e-8): double must agree to ~1e-6.
  check_against_reference<double>("unet_convnext", 1e-6);
  check_against_reference<double>("unet_resnet", 1e-6);
}

TEST_CASE("U-Net parameter names and shapes are the reference state_dict's") {
  for (const std::string cfg : {"unet_convnext", "unet_resnet"}) {
    const io::SafetensorsReader reader(golden(cfg + ".weights.safetensors"));
    Unet<float> net(read_unet_config(reader.path()));
    REQUIRE(net.params().entries().size() == reader.names().size());
    for (const auto& e : net.params().entries()) {
      INFO(cfg << ": " << e.name);
      REQUIRE(reader.contains(e.name));
      REQUIRE(reader.shape(e.name) == e.shape);
    }
  }
}

TEST_CASE("U-Net results are bitwise identical with 1 and 2 threads") {
  auto run = [](int threads, Tensor<float>& y, std::vector<float>& grads) {
    testing::ScopedThreads scoped(threads);
    auto net = load_unet<float>(golden("unet_convnext.weights.safetensors"));
    const io::SafetensorsReader io(golden("unet_convnext.io.safetensors"));
    const Tensor<float> x = io.read<float>("x");
    net->forward(x, timesteps(io), y);
    net->params().zero_grad();
    net->backward(io.read<float>("g"));
    grads.assign(net->params().grads(), net->params().grads() + net->params().size());
  };
  Tensor<float> y1, y2;
  std::vector<float> g1, g2;
  run(1, y1, g1);
  run(2, y2, g2);
  REQUIRE(y1.numel() == y2.numel());
  REQUIRE(std::memcmp(y1.data(), y2.data(), sizeof(float) * static_cast<std::size_t>(y1.numel())) == 0);
  REQUIRE(g1 == g2);
}

TEST_CASE("U-Net weights round trip: save, load, identical outputs") {
  UnetConfig c;
  c.dim = 8;
  c.channels = 1;
  c.dim_mults = {1, 2};
  Unet<float> a(c, 11);
  const std::string path = scratch("roundtrip.safetensors");
  save_unet_weights(a, path);
  auto b = load_unet<float>(path);
  const auto x = Tensor<float>::normal(Shape{2, 1, 8, 8}, Rng(3));
  Tensor<float> ya, yb;
  a.forward(x, {5, 9}, ya);
  b->forward(x, {5, 9}, yb);
  REQUIRE(std::memcmp(ya.data(), yb.data(), sizeof(float) * static_cast<std::size_t>(ya.numel())) == 0);

  // Extensions survive the round trip too.
  UnetConfig e = c;
  e.level_attention = {AttentionKind::None, AttentionKind::Full};
  e.mid_attention = AttentionKind::Linear;
  Unet<float> ext(e, 12);
  save_unet_weights(ext, scratch("extensions.safetensors"));
  const UnetConfig back = read_unet_config(scratch("extensions.safetensors"));
  REQUIRE(back.attention_at(0) == AttentionKind::None);
  REQUIRE(back.attention_at(1) == AttentionKind::Full);
  REQUIRE(back.mid_attention == AttentionKind::Linear);
}

TEST_CASE("a U-Net saved here loads into the PyTorch reference (verify_export.py), when PyTorch is installed") {
  if (std::system("/usr/bin/python3 -c 'import torch' > /dev/null 2>&1") != 0) {
    WARN("python3-torch not installed: skipping the PyTorch load_state_dict(strict=True) check");
    return;
  }
  auto net = load_unet<float>(golden("unet_convnext.weights.safetensors"));
  const std::string path = scratch("export_convnext.safetensors");
  save_unet_weights(*net, path);
  const std::string cmd = "/usr/bin/python3 " + golden("verify_export.py") + " " + path + " --io " +
                          golden("unet_convnext.io.safetensors");
  REQUIRE(std::system(cmd.c_str()) == 0);
}

TEST_CASE("corrupt or mismatched weight files give clear errors") {
  const std::string good = golden("unet_resnet.weights.safetensors");
  std::ifstream in(good, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto write = [&](const std::string& name, const std::string& content) {
    const std::string p = scratch(name);
    std::ofstream(p, std::ios::binary) << content;
    return p;
  };
  Unet<float> net(read_unet_config(good));
  SECTION("truncated") {
    const auto p = write("truncated.safetensors", bytes.substr(0, bytes.size() / 2));
    REQUIRE_THROWS_WITH(load_unet_weights(net, p), Catch::Contains(p));
  }
  SECTION("header length beyond the file") {
    std::string b = bytes;
    b[0] = '\xff', b[1] = '\xff', b[2] = '\xff';
    const auto p = write("badlen.safetensors", b);
    REQUIRE_THROWS_WITH(load_unet_weights(net, p), Catch::Contains(p) && Catch::Contains("header"));
  }
  SECTION("shorter than 8 bytes") {
    const auto p = write("tiny.safetensors", "abc");
    REQUIRE_THROWS_WITH(load_unet<float>(p), Catch::Contains(p));
  }
  SECTION("wrong shape") {
    io::SafetensorsWriter w;
    const io::SafetensorsReader r(good);
    for (const auto& name : r.names()) {
      Tensor<float> t = r.read<float>(name);
      if (name == "init_conv.bias") t.resize(Shape{t.numel() + 1});
      w.add(name, t);
    }
    w.write(scratch("wrongshape.safetensors"));
    REQUIRE_THROWS_WITH(load_unet_weights(net, scratch("wrongshape.safetensors")),
                        Catch::Contains("init_conv.bias") && Catch::Contains("shape"));
  }
  SECTION("missing name, extra name, integer dtype") {
    const io::SafetensorsReader r(good);
    io::SafetensorsWriter missing, extra, integer;
    for (const auto& name : r.names()) {
      const Tensor<float> t = r.read<float>(name);
      if (name != "final_conv.1.bias") missing.add(name, t);
      extra.add(name, t);
      if (name == "final_conv.1.bias") {
        std::vector<std::int64_t> ints(static_cast<std::size_t>(t.numel()), 1);
        integer.add(name, t.shape(), ints.data());
      } else {
        integer.add(name, t);
      }
    }
    extra.add("surprise.weight", Tensor<float>(Shape{3}));
    missing.write(scratch("missing.safetensors"));
    extra.write(scratch("extra.safetensors"));
    integer.write(scratch("integer.safetensors"));
    REQUIRE_THROWS_WITH(load_unet_weights(net, scratch("missing.safetensors")),
                        Catch::Contains("missing tensor 'final_conv.1.bias'"));
    REQUIRE_THROWS_WITH(load_unet_weights(net, scratch("extra.safetensors")), Catch::Contains("surprise.weight"));
    WeightLoadOptions lenient;
    lenient.allow_extra_tensors = true;
    REQUIRE_NOTHROW(load_unet_weights(net, scratch("extra.safetensors"), lenient));
    REQUIRE_THROWS_WITH(load_unet_weights(net, scratch("integer.safetensors")),
                        Catch::Contains("final_conv.1.bias") && Catch::Contains("I64"));
  }
  SECTION("bad configuration metadata") {
    io::SafetensorsWriter w;
    w.add_metadata(kUnetConfigKey, "{\"dim\": \"eight\"}");
    w.write(scratch("badconfig.safetensors"));
    REQUIRE_THROWS_WITH(read_unet_config(scratch("badconfig.safetensors")), Catch::Contains("'dim'"));
    io::SafetensorsWriter none;
    none.write(scratch("noconfig.safetensors"));
    REQUIRE_THROWS_WITH(load_unet<float>(scratch("noconfig.safetensors")), Catch::Contains("diffusion.unet"));
  }
}

TEST_CASE("U-Net input checks name the problem") {
  UnetConfig c;
  c.dim = 8;
  c.channels = 1;
  c.dim_mults = {1, 2, 4};
  Unet<float> net(c);
  Tensor<float> y;
  // forward keeps its input until backward, so it takes named tensors (a temporary does not compile).
  const Tensor<float> channels3(Shape{2, 3, 8, 8}), batch2(Shape{2, 1, 8, 8}), size6(Shape{2, 1, 6, 6});
  REQUIRE_THROWS_WITH(net.forward(channels3, {1, 2}, y), Catch::Contains("(2, 3, 8, 8)"));
  REQUIRE_THROWS_WITH(net.forward(batch2, {1}, y), Catch::Contains("1 timesteps"));
  REQUIRE_THROWS_WITH(net.forward(size6, {1, 2}, y), Catch::Contains("divisible by 4"));
  UnetConfig bad = c;
  bad.use_convnext = false;
  bad.resnet_block_groups = 3;
  REQUIRE_THROWS_WITH(Unet<float>(bad), Catch::Contains("resnet_block_groups"));
}
