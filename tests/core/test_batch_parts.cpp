// for_each_part / batch_part / copy_into_part: the parts cover the batch once, in order, at most `part` items each;
// a part is a view of the right items; copying every part's output back rebuilds the whole batch.
#include <catch2/catch.hpp>

#include <utility>
#include <vector>

#include "diffusion/core/batch_parts.hpp"

using namespace diffusion;

namespace {

std::vector<std::pair<Index, Index>> parts_of(Index n, Index part) {
  std::vector<std::pair<Index, Index>> parts;
  for_each_part(n, part, [&](Index start, Index count) { parts.emplace_back(start, count); });
  return parts;
}

}  // namespace

TEST_CASE("for_each_part covers the batch in order with parts of at most the given size") {
  using Parts = std::vector<std::pair<Index, Index>>;
  CHECK(parts_of(10, 4) == Parts{{0, 4}, {4, 4}, {8, 2}});
  CHECK(parts_of(8, 4) == Parts{{0, 4}, {4, 4}});
  CHECK(parts_of(3, 4) == Parts{{0, 3}});
  CHECK(parts_of(10, 0) == Parts{{0, 10}});  // 0: the whole batch at once
  CHECK(parts_of(0, 4) == Parts{{0, 0}});    // an empty batch is one empty part
  CHECK(parts_of(5, 1) == Parts{{0, 1}, {1, 1}, {2, 1}, {3, 1}, {4, 1}});
  CHECK_THROWS_WITH(parts_of(-1, 4), Catch::Contains("n >= 0"));
  CHECK_THROWS_WITH(parts_of(4, -2), Catch::Contains("part >= 0"));
}

TEST_CASE("batch_part views the items of a part and copy_into_part puts them back") {
  Tensor<float> x(Shape{5, 2, 1, 3});
  for (Index i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(i);
  const TensorView<float> middle = batch_part<float>(x, 1, 3);
  CHECK(middle.shape() == Shape{3, 2, 1, 3});
  CHECK(middle.data() == x.data() + 6);  // a view of the same memory, item 1 onwards
  CHECK(middle[0] == 6.0f);
  CHECK(middle[middle.numel() - 1] == 23.0f);
  CHECK(batch_part<float>(x, 5, 0).numel() == 0);
  CHECK_THROWS_WITH(batch_part<float>(x, 3, 3), Catch::Contains("items [3, 6) of a tensor (5, 2, 1, 3)"));

  // Every part negated into its own buffer and copied back: the whole batch, negated, nothing missed.
  Tensor<float> y(x.shape(), 0.0f), part_out;
  for_each_part(x.dim(0), 2, [&](Index start, Index count) {
    const TensorView<float> part = batch_part<float>(x, start, count);
    part_out.resize(part.shape());
    for (Index i = 0; i < part.numel(); ++i) part_out[i] = -part[i];
    copy_into_part<float>(part_out, y, start);
  });
  for (Index i = 0; i < x.numel(); ++i) REQUIRE(y[i] == -x[i]);

  Tensor<float> wrong_item(Shape{1, 2, 1, 4});
  CHECK_THROWS_WITH(copy_into_part<float>(wrong_item, y, 0), Catch::Contains("in a tensor (5, 2, 1, 3)"));
  Tensor<float> too_many(Shape{2, 2, 1, 3});
  CHECK_THROWS_WITH(copy_into_part<float>(too_many, y, 4), Catch::Contains("at 4 in a tensor"));
}
