// The test helpers themselves (support/compare.hpp, support/gradcheck.hpp, process/process_test_util.hpp): a NaN or
// an infinity anywhere, in particular at a middle element after smaller finite errors, must make every comparison
// fail, and report where it is. (The old helpers caught a NaN at element 0 only, or never.)
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "diffusion/core/parameters.hpp"
#include "process/process_test_util.hpp"
#include "support/compare.hpp"
#include "support/gradcheck.hpp"

using namespace diffusion;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// A reference of 9 values and a result equal to it up to small errors, with `bad` at element 4.
Tensor<double> reference() {
  Tensor<double> r(Shape{9});
  for (Index i = 0; i < 9; ++i) r[i] = 1.0 + 0.5 * static_cast<double>(i);
  return r;
}
Tensor<float> result_with(float bad) {
  const Tensor<double> r = reference();
  Tensor<float> g(Shape{9});
  for (Index i = 0; i < 9; ++i) g[i] = static_cast<float>(r[i] + 1e-3);  // error 1e-3 everywhere ...
  g[4] = bad;                                                            // ... and `bad` in the middle
  return g;
}

}  // namespace

TEST_CASE("element_error and max_keep_nan treat non-finite values as failures") {
  REQUIRE(testing::element_error(1.5, 1.0) == 0.5);
  REQUIRE(testing::element_error(kNaN, 1.0) == kInf);
  REQUIRE(testing::element_error(kInf, 1.0) == kInf);
  REQUIRE(testing::element_error(-kInf, 1.0) == kInf);
  REQUIRE(testing::element_error(1.0, kNaN) == kInf);  // a finite value where the reference has a NaN
  REQUIRE(testing::element_error(kNaN, kNaN) == 0.0);  // non-finite references must be matched exactly
  REQUIRE(testing::element_error(kInf, kInf) == 0.0);
  REQUIRE(testing::element_error(-kInf, kInf) == kInf);
  REQUIRE(std::isnan(testing::max_keep_nan(1.0, kNaN)));
  REQUIRE(std::isnan(testing::max_keep_nan(kNaN, 1.0)));
  REQUIRE(testing::max_keep_nan(1.0, 2.0) == 2.0);
}

TEST_CASE("compare reports a NaN or an infinity at a middle element as the worst and fails every bound") {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    INFO("bad value " << bad);
    const auto c = testing::compare(result_with(bad), reference());
    INFO(c.describe("result"));
    REQUIRE(c.worst == 4);
    REQUIRE(c.max_abs_error == kInf);
    REQUIRE_FALSE(c.max_abs_error <= 1e300 * c.max_abs_reference);
    REQUIRE_FALSE(c.within(1e300, 1e300));
    REQUIRE(c.max_abs_reference == 5.0);
    const Tensor<float> g = result_with(bad);
    const Tensor<double> r = reference();
    REQUIRE(testing::relative_norm_error(g.data(), r.data(), 9) == kInf);
    REQUIRE(testing::norm_error(g.data(), r.data(), 9).diff == kInf);
    // The helpers of the process, sampler and optimizer tests.
    const auto m = process_test::compare(g, r);
    INFO(m.str());
    REQUIRE(m.where == 4);
    REQUIRE_FALSE(m.max_abs <= 1e300);
    REQUIRE_FALSE(m.rel() <= 1e300);
  }
  // The finite case: error 1e-3 (float rounding of r + 1e-3 aside), and sizes must agree.
  const auto ok = testing::compare(result_with(3.001f), reference());
  REQUIRE(ok.max_abs_error < 1.1e-3);
  REQUIRE(ok.within(0.0, 1.1e-3));
  Tensor<double> shorter(Shape{8});
  REQUIRE(testing::compare(shorter, reference()).max_abs_error == kInf);
  REQUIRE_FALSE(process_test::compare(shorter, reference()).max_abs <= 1e300);
  // A NaN in the first element and another one later: the first stays reported, nothing hides either.
  Tensor<double> two_nans = reference();
  two_nans[0] = kNaN;
  two_nans[6] = kNaN;
  REQUIRE(testing::compare(two_nans, reference()).worst == 0);
  REQUIRE(testing::compare(two_nans, reference()).max_abs_error == kInf);
}

TEST_CASE("GradCheck fails on a NaN or an infinite gradient at a middle element and on an empty check") {
  // y = 2 x for a 9-element input and y += p for a 9-element parameter; backward is right except at element 4.
  for (double bad : {kNaN, kInf}) {
    for (bool in_parameter : {false, true}) {
      INFO("bad " << bad << (in_parameter ? " in the parameter gradient" : " in the input gradient"));
      ParameterStore<double> store(1);
      const auto ref = store.add("p", Shape{9}, Init::zeros());
      double* pv = store.value(ref);
      double* pg = store.grad(ref);
      for (Index i = 0; i < 9; ++i) pv[i] = 0.1 * static_cast<double>(i);
      Tensor<double> x(Shape{9});
      testing::randomize(x, 3);
      testing::GradCheck check;
      check.params = &store;
      check.inputs = {&x};
      check.forward = [&](Tensor<double>& y) {
        y.resize(Shape{9});
        for (Index i = 0; i < 9; ++i) y[i] = 2.0 * x[i] + pv[i];
      };
      check.backward = [&](const Tensor<double>& dy, std::vector<Tensor<double>*>& dx) {
        for (Index i = 0; i < 9; ++i) {
          (*dx[0])[i] += (!in_parameter && i == 4) ? bad : 2.0 * dy[i];
          pg[i] += (in_parameter && i == 4) ? bad : dy[i];
        }
      };
      const auto r = check.run();
      INFO(r.worst);
      REQUIRE(r.checked == 18);
      REQUIRE(r.max_error == kInf);
      REQUIRE_FALSE(r.max_error <= 1e-6);
      REQUIRE_THAT(r.worst, Catch::Contains(in_parameter ? "p[4]" : "input 0[4]"));
    }
  }
  testing::GradCheck nothing;
  nothing.forward = [](Tensor<double>& y) { y.resize(Shape{1}); };
  nothing.backward = [](const Tensor<double>&, std::vector<Tensor<double>*>&) {};
  const auto r = nothing.run();
  REQUIRE(r.checked == 0);
  REQUIRE_FALSE(r.max_error <= 1e-6);
}

TEST_CASE("GradCheck with max_per_tensor visits evenly spaced elements of every tensor, first and last included") {
  testing::GradCheck check;
  REQUIRE(check.visited(4) == std::vector<Index>{0, 1, 2, 3});  // 0: every element
  check.max_per_tensor = 3;
  REQUIRE(check.visited(9) == std::vector<Index>{0, 4, 8});
  REQUIRE(check.visited(10) == std::vector<Index>{0, 4, 9});
  REQUIRE(check.visited(2) == std::vector<Index>{0, 1});
  check.max_per_tensor = 1;
  REQUIRE(check.visited(5) == std::vector<Index>{0});

  // A wrong gradient at a visited element still fails the check; the count is the visited elements only.
  ParameterStore<double> store(1);
  const auto ref = store.add("p", Shape{9}, Init::zeros());
  double* pv = store.value(ref);
  double* pg = store.grad(ref);
  Tensor<double> x(Shape{9});
  testing::randomize(x, 3);
  check.max_per_tensor = 3;
  check.params = &store;
  check.inputs = {&x};
  check.forward = [&](Tensor<double>& y) {
    y.resize(Shape{9});
    for (Index i = 0; i < 9; ++i) y[i] = 2.0 * x[i] + pv[i];
  };
  for (bool wrong : {false, true}) {
    check.backward = [&](const Tensor<double>& dy, std::vector<Tensor<double>*>& dx) {
      for (Index i = 0; i < 9; ++i) {
        (*dx[0])[i] += 2.0 * dy[i];
        pg[i] += (wrong && i == 8) ? 3.0 * dy[i] : dy[i];
      }
    };
    const auto r = check.run();
    INFO(r.worst);
    REQUIRE(r.checked == 6);
    REQUIRE((r.max_error <= 1e-6) == !wrong);
  }
}
