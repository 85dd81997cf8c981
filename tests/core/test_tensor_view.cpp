// TensorView (a read-only view of any buffer) and Tensor (which is a view of its own memory): the view a Tensor
// hands out always points at its current storage, whatever resized, copied, moved or swapped it; the factories
// draw exactly what the Rng draws.
#include <catch2/catch.hpp>

#include <type_traits>
#include <utility>
#include <vector>

#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"

using namespace diffusion;

namespace {

// The base subobject, as a function taking a view sees it.
const float* view_data(const TensorView<float>& v) { return v.data(); }

bool bits_equal(const TensorView<float>& a, const TensorView<float>& b) {
  if (a.shape() != b.shape()) return false;
  for (Index i = 0; i < a.numel(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

}  // namespace

static_assert(std::is_same_v<decltype(std::declval<const TensorView<float>&>().data()), const float*>,
              "a view is read-only");
static_assert(std::is_convertible_v<const Tensor<float>&, TensorView<float>>, "a Tensor passes where a view is taken");
static_assert(!std::is_convertible_v<TensorView<float>, const Tensor<float>&>, "a view is not an owning tensor");

TEST_CASE("a Tensor's view follows its storage through resize copy move and swap") {
  Tensor<float> t(Shape{2, 3});
  REQUIRE(view_data(t) == t.data());
  t.resize(Shape{64, 1024});  // grows: a new allocation
  REQUIRE(view_data(t) == t.data());
  REQUIRE(static_cast<const TensorView<float>&>(t).shape() == Shape{64, 1024});
  t.fill(2.5f);

  Tensor<float> copy = t;
  REQUIRE(copy.data() != t.data());
  REQUIRE(view_data(copy) == copy.data());
  REQUIRE(bits_equal(copy, t));

  Tensor<float> assigned(Shape{1});
  assigned = t;
  REQUIRE(view_data(assigned) == assigned.data());
  REQUIRE(bits_equal(assigned, t));

  const float* storage = t.data();
  Tensor<float> moved = std::move(t);
  REQUIRE(moved.data() == storage);
  REQUIRE(view_data(moved) == storage);
  REQUIRE(view_data(t) == t.data());  // the moved-from tensor is empty and consistent

  Tensor<float> other(Shape{3}, 1.0f);
  const float* other_storage = other.data();
  moved.swap(other);
  REQUIRE(view_data(moved) == other_storage);
  REQUIRE(view_data(other) == storage);
  REQUIRE(moved.shape() == Shape{3});
  REQUIRE(other.shape() == Shape{64, 1024});

  const Tensor<float> empty, empty_copy = empty;  // a default tensor copies as one (no storage to read)
  REQUIRE(empty_copy.data() == nullptr);
  REQUIRE(empty_copy.shape() == empty.shape());

  Tensor<float> move_assigned;
  move_assigned = std::move(other);
  REQUIRE(view_data(move_assigned) == storage);
  REQUIRE(view_data(other) == other.data());
}

TEST_CASE("a view reads the caller's buffer in place") {
  std::vector<float> buffer = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  const TensorView<float> v(buffer.data(), Shape{1, 2, 2, 3});
  REQUIRE(v.data() == buffer.data());
  REQUIRE(v.numel() == 12);
  REQUIRE(v.at(0, 1, 0, 2) == 9.0f);
  buffer[8] = -1.0f;
  REQUIRE(v.at(0, 1, 0, 2) == -1.0f);  // no copy was made
  const Tensor<float> copy = Tensor<float>::copy_of(v);
  REQUIRE(copy.data() != buffer.data());
  REQUIRE(bits_equal(copy, v));
  REQUIRE_THROWS_WITH(TensorView<float>(nullptr, Shape{2}), Catch::Contains("null data"));
  REQUIRE(TensorView<float>(nullptr, Shape{0}).empty());
}

TEST_CASE("Tensor factories draw what the Rng draws") {
  const Shape shape{3, 2, 5, 7};
  std::vector<float> expected(static_cast<std::size_t>(shape.numel()));

  Rng a(11), b(11);
  const Tensor<float> n = Tensor<float>::normal(shape, a);
  b.normal(expected.data(), shape.numel());
  REQUIRE(n.shape() == shape);
  REQUIRE(bits_equal(n, TensorView<float>(expected.data(), shape)));
  REQUIRE(a.state().position == b.state().position);  // the caller's generator advanced as by Rng::normal

  const Tensor<float> u = Tensor<float>::uniform(shape, Rng(12), -1.0, 1.0);
  Rng(12).uniform(expected.data(), shape.numel(), -1.0, 1.0);
  REQUIRE(bits_equal(u, TensorView<float>(expected.data(), shape)));

  const Tensor<float> f = Tensor<float>::full(shape, 0.25f);
  const Tensor<float> z = Tensor<float>::zeros(shape);
  for (Index i = 0; i < shape.numel(); ++i) {
    REQUIRE(f[i] == 0.25f);
    REQUIRE(z[i] == 0.0f);
  }
}
