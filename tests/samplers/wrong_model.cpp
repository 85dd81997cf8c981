// Must not compile: the model takes a single int timestep instead of the (N,) vector. The samplers' static_assert
// names the signature they expect; tests/extra.cmake's test "samplers.wrong_model_names_the_signature" compiles this
// file and requires that message (and nothing else is built from it).
#include <cstdint>
#include <vector>

#include "diffusion/samplers/sample.hpp"

int main() {
  using namespace diffusion;
  const NoiseSchedule schedule(BetaSchedule::Linear, 10);
  Tensor<float> x(Shape{1, 1, 2, 2});
  Rng rng(0);
  auto model = [](const Tensor<float>& x_t, int t, Tensor<float>& out) { out.copy_from(x_t), (void)t; };
  SamplerOptions options;
  options.steps = 5;
  sample(model, schedule, x, rng, options);
  return 0;
}
