// Instantiates the templates directly, as a consuming project would: a small U-Net in float and a schedule.
#include <cmath>
#include <cstdio>

#include <diffusion/diffusion.hpp>

int main() {
  diffusion::UnetConfig config;
  config.dim = 8;
  config.channels = 1;
  config.dim_mults = {1, 2};
  diffusion::Unet<float> net(config, 1);
  diffusion::Tensor<float> x(diffusion::Shape{2, 1, 8, 8}), eps;
  diffusion::Rng(7).normal(x.data(), x.numel());
  net.forward(x, {3, 4}, eps);
  bool ok = eps.shape() == x.shape();
  for (float v : eps) ok = ok && std::isfinite(v);
  std::printf("consumer: %zu parameters, output %s: %s\n", net.params().count(), eps.shape().str().c_str(),
              ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
