// Ownership a compiler can check: an object that keeps a reference to its argument (Trainer its model, BatchSampler
// its images, Unet::forward its input until backward) refuses a temporary at compile time; a function that only
// reads takes a TensorView, so data in the caller's own buffer goes in without a copy and gives the same bits.
#include <catch2/catch.hpp>

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "diffusion/diffusion.hpp"
#include "diffusion/io/image.hpp"

using namespace diffusion;

namespace {

// Detection idiom: whether Unet<float>::forward accepts an input expression of type X.
template <class X, class = void>
struct ForwardAccepts : std::false_type {};
template <class X>
struct ForwardAccepts<X, std::void_t<decltype(std::declval<Unet<float>&>().forward(
                             std::declval<X>(), std::declval<const std::vector<std::int64_t>&>(),
                             std::declval<Tensor<float>&>()))>> : std::true_type {};

static_assert(ForwardAccepts<Tensor<float>&>::value && ForwardAccepts<const Tensor<float>&>::value,
              "Unet::forward takes a named tensor");
static_assert(ForwardAccepts<TensorView<float>>::value, "Unet::forward takes a view of the caller's buffer");
static_assert(!ForwardAccepts<Tensor<float>>::value && !ForwardAccepts<Tensor<float>&&>::value,
              "Unet::forward keeps its input until backward: a temporary must not compile");

static_assert(std::is_constructible_v<Trainer<float>, Unet<float>&, NoiseSchedule, const TrainerOptions&>,
              "a Trainer trains a named model");
static_assert(!std::is_constructible_v<Trainer<float>, Unet<float>, NoiseSchedule, const TrainerOptions&> &&
                  !std::is_constructible_v<Trainer<float>, Unet<float>&&, NoiseSchedule, const TrainerOptions&>,
              "Trainer keeps a reference to its model: Trainer<float>(Unet<float>(...), ...) must not compile");

static_assert(std::is_constructible_v<BatchSampler<float>, const Tensor<float>&, const BatchOptions&>,
              "a BatchSampler reads named images");
static_assert(!std::is_constructible_v<BatchSampler<float>, Tensor<float>, const BatchOptions&> &&
                  !std::is_constructible_v<BatchSampler<float>, Tensor<float>&&, const BatchOptions&>,
              "BatchSampler keeps a reference to its images: a temporary must not compile");

UnetConfig small() {
  UnetConfig c;
  c.dim = 8;
  c.channels = 2;
  c.dim_mults = {1, 2};
  return c;
}

bool bits_equal(const TensorView<float>& a, const TensorView<float>& b) {
  if (a.shape() != b.shape()) return false;
  for (Index i = 0; i < a.numel(); ++i)
    if (!(a[i] == b[i])) return false;
  return true;
}

}  // namespace

TEST_CASE("the caller's own buffer goes in as a view and gives the bits of a tensor copy") {
  const Shape shape{3, 2, 8, 8};
  std::vector<float> buffer(static_cast<std::size_t>(shape.numel()));  // e.g. images the caller decoded
  Rng(21).uniform(buffer.data(), shape.numel(), -1.0, 1.0);
  const TensorView<float> view(buffer.data(), shape);
  const Tensor<float> copy = Tensor<float>::copy_of(view);
  const std::vector<std::int64_t> t = {0, 7, 19};

  SECTION("Unet forward and backward") {
    Unet<float> a(small(), 5), b(small(), 5);
    Tensor<float> ya, yb;
    a.forward(view, t, ya);
    b.forward(copy, t, yb);
    REQUIRE(bits_equal(ya, yb));
    const Tensor<float> dy = Tensor<float>::normal(ya.shape(), Rng(22));
    Tensor<float> dxa(shape), dxb(shape);
    a.backward(dy, &dxa);  // reads the view kept by forward: the caller's buffer
    b.backward(dy, &dxb);
    REQUIRE(bits_equal(dxa, dxb));
    REQUIRE(std::vector<float>(a.params().grads(), a.params().grads() + a.params().size()) ==
            std::vector<float>(b.params().grads(), b.params().grads() + b.params().size()));
  }
  SECTION("q_sample and the training target") {
    const NoiseSchedule schedule(BetaSchedule::Linear, 20);
    const Tensor<float> noise = Tensor<float>::normal(shape, Rng(23));
    std::vector<float> noise_buffer(noise.begin(), noise.end());
    const TensorView<float> noise_view(noise_buffer.data(), shape);
    Tensor<float> xa, xb, ta, tb;
    q_sample(schedule, view, t, noise_view, xa);
    q_sample(schedule, copy, t, noise, xb);
    REQUIRE(bits_equal(xa, xb));
    training_target(Prediction::V, schedule, view, t, noise_view, ta);
    training_target(Prediction::V, schedule, copy, t, noise, tb);
    REQUIRE(bits_equal(ta, tb));
  }
  SECTION("writers") {
    const TensorView<float> gray(buffer.data(), Shape{6, 1, 8, 8});  // the same buffer as 6 one-channel images
    const io::Image8 ga = io::image_grid(gray, 3);
    const io::Image8 gb = io::image_grid(Tensor<float>::copy_of(gray), 3);
    REQUIRE(ga.pixels == gb.pixels);
    io::SafetensorsWriter wa, wb;
    wa.add("x", view);
    wb.add("x", copy);
    REQUIRE(wa.serialize() == wb.serialize());
  }
}
