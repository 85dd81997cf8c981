// Initialisation equal in distribution to PyTorch's defaults: conv/linear weights and biases uniform on
// [-b, b] with b = 1/sqrt(fan_in) (kaiming_uniform with a = sqrt(5)), fan_in = C_in/groups * K * K for Conv2d and
// Linear, C_out/groups * K * K for ConvTranspose2d (PyTorch reads weight.size(1)); GroupNorm weight 1, bias 0.
// Checked on the bound (no value outside, some close to it) and the moments of a uniform distribution:
// mean 0 and variance b^2/3, within 5 standard errors for the sample size.
#include <catch2/catch.hpp>

#include <cmath>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/conv_transpose2d.hpp"
#include "diffusion/nn/group_norm.hpp"
#include "diffusion/nn/linear.hpp"
#include "support/compare.hpp"

using namespace diffusion;

namespace {

void check_uniform(const float* v, Index n, double bound, const std::string& what) {
  double mean = 0, m2 = 0, maxabs = 0;
  for (Index i = 0; i < n; ++i) mean += v[i], maxabs = testing::max_keep_nan(maxabs, std::abs(double(v[i])));
  mean /= double(n);
  for (Index i = 0; i < n; ++i) m2 += (v[i] - mean) * (v[i] - mean);
  const double var = m2 / double(n - 1), expect = bound * bound / 3.0;
  // Uniform[-b, b]: sd of the sample mean b/sqrt(3n); sd of the sample variance ~ b^2 sqrt(4/(45 n)).
  INFO(what << ": n " << n << " bound " << bound << " max|v| " << maxabs << " mean " << mean << " var " << var
            << " (expected " << expect << ")");
  REQUIRE(maxabs <= bound);
  REQUIRE(maxabs > bound * (1.0 - 20.0 / double(n)));
  REQUIRE(std::abs(mean) < 5 * bound / std::sqrt(3.0 * double(n)));
  REQUIRE(std::abs(var - expect) < 5 * bound * bound * std::sqrt(4.0 / (45.0 * double(n))));
}

}  // namespace

TEST_CASE("layers initialise like PyTorch's defaults") {
  ParameterStore<float> s(42);
  nn::Conv2d<float> conv(s, "conv", 56, 112, 3, 1, 1);
  nn::Conv2d<float> depthwise(s, "dw", 56, 56, 7, 1, 3, 56);
  nn::ConvTranspose2d<float> up(s, "up", 64, 48, 4, 2, 1);
  nn::Linear<float> lin(s, "lin", 112, 448);
  nn::GroupNorm<float> norm(s, "norm", 4, 64);
  check_uniform(s.value(conv.weight()), 112 * 56 * 9, 1.0 / std::sqrt(56.0 * 9), "Conv2d weight");
  check_uniform(s.value(conv.bias()), 112, 1.0 / std::sqrt(56.0 * 9), "Conv2d bias");
  check_uniform(s.value(depthwise.weight()), 56 * 49, 1.0 / std::sqrt(49.0), "depthwise weight");
  const auto* upw = s.find("up.weight");
  REQUIRE(upw != nullptr);
  check_uniform(s.values() + upw->offset, 64 * 48 * 16, 1.0 / std::sqrt(48.0 * 16), "ConvTranspose2d weight");
  const auto* lw = s.find("lin.weight");
  check_uniform(s.values() + lw->offset, 448 * 112, 1.0 / std::sqrt(112.0), "Linear weight");
  for (Index i = 0; i < 64; ++i) {
    REQUIRE(s.values()[s.find("norm.weight")->offset + std::size_t(i)] == 1.0f);
    REQUIRE(s.values()[s.find("norm.bias")->offset + std::size_t(i)] == 0.0f);
  }
}

TEST_CASE("PyTorch's own initial weights in the U-Net fixture lie within the bounds we use") {
  // unet_resnet's weights are PyTorch defaults (GroupNorm affine randomised by the fixture script): every conv and
  // linear weight must fit the bound our layers draw from, and fill most of it.
  const io::SafetensorsReader r(std::string(DIFFUSION_GOLDEN_DIR) + "/unet_resnet.weights.safetensors");
  const Tensor<float> w = r.read<float>("downs.1.0.block1.proj.weight");  // Conv2d(8, 16, 3): fan_in 72
  check_uniform(w.data(), w.numel(), 1.0 / std::sqrt(72.0), "PyTorch Conv2d(8, 16, 3) weight");
  const Tensor<float> u = r.read<float>("ups.0.3.weight");  // ConvTranspose2d(16, 16, 4, 2, 1): fan_in 16 * 16
  check_uniform(u.data(), u.numel(), 1.0 / std::sqrt(16.0 * 16), "PyTorch ConvTranspose2d(16, 16, 4) weight");
}
