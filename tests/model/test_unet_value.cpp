// Models as values: a Unet copies deeply (its own store, independent weights), moves (the layers keep working on the
// moved store), and is itself the model callable the samplers take.
#include <catch2/catch.hpp>

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "diffusion/diffusion.hpp"
#include "support/tiny_unet.hpp"

using namespace diffusion;

namespace {

static_assert(std::is_copy_constructible_v<Unet<float>> && std::is_copy_assignable_v<Unet<float>>,
              "a Unet is a value: copyable");
static_assert(std::is_move_constructible_v<Unet<float>> && std::is_move_assignable_v<Unet<float>>,
              "a Unet is a value: movable");
static_assert(detail::is_model_v<Unet<float>, float>, "a Unet is the model callable the samplers take");
static_assert(std::is_invocable_v<Unet<float>&, Tensor<float>, const std::vector<std::int64_t>&, Tensor<float>&>,
              "net(x, t, out) is predict, which reads x during the call only: a temporary is fine");

UnetConfig small() { return testing::tiny_unet_config(2); }

using testing::bits_equal;

struct Probe {
  Tensor<float> x = Tensor<float>::normal(Shape{2, 2, 8, 8}, Rng(5));
  std::vector<std::int64_t> t{3, 17};
  Tensor<float> run(Unet<float>& net) const {
    Tensor<float> y;
    net.forward(x, t, y);
    return y;
  }
};

}  // namespace

TEST_CASE("a copied Unet is deep and independent of the original") {
  Unet<float> original(small(), 7);
  float* w = original.params().values();  // weights no longer those the seed draws: a copy must take them over
  for (std::size_t i = 0; i < original.params().size(); ++i) w[i] *= 1.25f;
  const Probe probe;
  const Tensor<float> before = probe.run(original);

  Unet<float> copy(original);
  REQUIRE(&copy.params() != &original.params());
  REQUIRE(copy.params().values() != original.params().values());
  REQUIRE(copy.params().size() == original.params().size());
  REQUIRE(bits_equal(probe.run(copy), before));

  // Change the original's weights: the copy's forward must not move.
  for (std::size_t i = 0; i < original.params().size(); ++i) w[i] *= 1.5f;
  const Tensor<float> changed = probe.run(original);
  REQUIRE_FALSE(bits_equal(changed, before));
  REQUIRE(bits_equal(probe.run(copy), before));

  // Copy assignment over a network of another config takes the source's config and weights.
  UnetConfig other = small();
  other.use_convnext = false;
  Unet<float> assigned(other, 1);
  assigned = original;
  REQUIRE(assigned.config().use_convnext);
  REQUIRE(bits_equal(probe.run(assigned), changed));

  // Gradients go to the copy's own store.
  original.params().zero_grad();
  copy.params().zero_grad();
  Tensor<float> y = probe.run(copy);
  Tensor<float> dy = Tensor<float>::full(y.shape(), 1.0f);
  copy.backward(dy);
  double copy_grad = 0.0, original_grad = 0.0;
  for (std::size_t i = 0; i < copy.params().size(); ++i) copy_grad += std::abs(copy.params().grads()[i]);
  for (std::size_t i = 0; i < original.params().size(); ++i) original_grad += std::abs(original.params().grads()[i]);
  REQUIRE(copy_grad > 0.0);
  REQUIRE(original_grad == 0.0);
}

TEST_CASE("a moved Unet keeps working and needs a new forward before backward") {
  Unet<float> source(small(), 9);
  const Probe probe;
  Unet<float> reference(small(), 9);
  const Tensor<float> expected = probe.run(reference);
  Tensor<float> y0 = probe.run(source);  // a forward pass, not carried by the move

  Unet<float> moved(std::move(source));
  Tensor<float> dy = Tensor<float>::full(expected.shape(), 1.0f);
  REQUIRE_THROWS_WITH(moved.backward(dy), Catch::Contains("backward needs a forward just before it"));
  REQUIRE(bits_equal(probe.run(moved), expected));

  // Forward and backward on the moved network give the reference network's gradients bit for bit.
  reference.params().zero_grad();
  moved.params().zero_grad();
  reference.backward(dy);
  moved.backward(dy);
  REQUIRE(std::equal(moved.params().grads(), moved.params().grads() + moved.params().size(),
                     reference.params().grads()));

  Unet<float> assigned(small(), 1);
  assigned = std::move(moved);
  REQUIRE(bits_equal(probe.run(assigned), expected));
  std::vector<Unet<float>> nets;  // a vector of networks reallocates, moving them
  for (int i = 0; i < 4; ++i) nets.emplace_back(small(), 9);
  for (auto& net : nets) REQUIRE(bits_equal(probe.run(net), expected));
}

TEST_CASE("a Unet is the model callable the samplers take") {
  Unet<float> net(small(), 3);
  const Probe probe;
  Tensor<float> direct, called;
  net.forward(probe.x, probe.t, direct);
  net(probe.x, probe.t, called);
  REQUIRE(bits_equal(direct, called));

  const NoiseSchedule schedule(BetaSchedule::Linear, 20);
  SamplerOptions options;
  options.steps = 4;
  Tensor<float> a = Tensor<float>::normal(Shape{2, 2, 8, 8}, Rng(1));
  Tensor<float> b = a;
  Rng ra(2), rb(2);
  sample(net, schedule, a, ra, options);
  auto lambda = [&](const Tensor<float>& x, const std::vector<std::int64_t>& t, Tensor<float>& out) {
    net.forward(x, t, out);
  };
  sample(lambda, schedule, b, rb, options);
  REQUIRE(bits_equal(a, b));
}
