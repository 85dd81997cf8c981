// Fast kernels against their plain reference twins (kernels::use_reference_kernels), on awkward shapes: every
// GEMM transpose combination, convolutions with odd sizes, strides, padding and groups (including depthwise and
// pointwise fast paths), GroupNorm, activations. Tolerances are float rounding over the reduction length.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "diffusion/core/parallel.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/kernels/activations.hpp"
#include "diffusion/kernels/conv2d.hpp"
#include "diffusion/kernels/gemm.hpp"
#include "diffusion/kernels/group_norm.hpp"
#include "diffusion/kernels/softmax.hpp"
#include "support/compare.hpp"
#include "support/threads.hpp"

using namespace diffusion;
using namespace diffusion::kernels;

namespace {

std::vector<float> random_vector(Index n, std::uint64_t seed) {
  std::vector<float> v(static_cast<std::size_t>(n));
  Rng(seed).normal(v.data(), n);
  return v;
}

// max |a - b| / (max |b| + tiny); infinite when a has a NaN or an infinity where b is finite, or the sizes differ
// (support/compare.hpp).
double max_relative(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  const auto c = testing::compare(a.data(), b.data(), static_cast<Index>(a.size()));
  return c.max_abs_error / (c.max_abs_reference + 1e-30);
}

template <class F>
void fast_and_reference(F f, std::vector<float>& fast, std::vector<float>& ref) {
  {
    ReferenceKernelsScope off(false);
    f(fast);
  }
  {
    ReferenceKernelsScope on(true);
    f(ref);
  }
}

}  // namespace

TEST_CASE("GEMM matches the reference for all transpose combinations and leading dimensions") {
  const Index M = 13, N = 21, K = 37;
  for (Op a : {Op::NoTrans, Op::Trans})
    for (Op b : {Op::NoTrans, Op::Trans})
      for (float beta : {0.0f, 1.0f, 0.5f}) {
        const Index lda = (a == Op::NoTrans ? K : M) + 3, ldb = (b == Op::NoTrans ? N : K) + 2, ldc = N + 5;
        const auto A = random_vector(64 * lda, 1), B = random_vector(64 * ldb, 2), C0 = random_vector(M * ldc, 3);
        std::vector<float> fast, ref;
        fast_and_reference(
            [&](std::vector<float>& c) {
              c = C0;
              gemm(a, b, M, N, K, 0.7f, A.data(), lda, B.data(), ldb, beta, c.data(), ldc);
            },
            fast, ref);
        INFO("op_a " << int(a) << " op_b " << int(b) << " beta " << beta);
        REQUIRE(max_relative(fast, ref) < 1e-5);
      }
}

TEST_CASE("GEMM with beta = 0 ignores C's old contents, NaNs included") {
  const Index M = 37, N = 50, K = 29;
  const auto A = random_vector(M * K, 11), B = random_vector(K * N, 12);
  std::vector<float> fast, ref;
  fast_and_reference(
      [&](std::vector<float>& c) {
        c.assign(static_cast<std::size_t>(M * N), std::numeric_limits<float>::quiet_NaN());
        gemm(Op::NoTrans, Op::NoTrans, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, c.data(), N);
      },
      fast, ref);
  for (float v : fast) REQUIRE(std::isfinite(v));
  REQUIRE(max_relative(fast, ref) < 1e-5);
}

TEST_CASE("convolution kernels match the direct reference on many geometries") {
  struct Geo {
    Index n, cin, h, w, cout, k, stride, pad, groups;
  };
  const Geo geos[] = {
      {2, 3, 7, 7, 5, 3, 1, 1, 1},   // 3x3 same
      {3, 4, 7, 9, 6, 4, 2, 1, 2},   // Downsample-like, grouped, odd sizes
      {2, 6, 7, 7, 6, 7, 1, 3, 6},   // depthwise 7x7 (direct path)
      {2, 6, 5, 6, 9, 1, 1, 0, 3},   // pointwise grouped (no im2col)
      {1, 2, 9, 5, 4, 5, 3, 2, 1},   // stride 3, kernel 5
      {17, 3, 4, 4, 2, 3, 1, 0, 1},  // a batch of 17
      {2, 80, 6, 6, 100, 1, 1, 0, 1},   // pointwise, weight gradient in 2 blocks of output channels
      {2, 5, 6, 6, 40, 3, 1, 1, 1},     // depth 45: weight gradient in 2 blocks of output channels
      {3, 11, 5, 5, 7, 3, 1, 1, 1},     // depth 99: weight gradient in 2 blocks of im2col rows (56 + 43)
      {2, 3, 5, 70, 3, 3, 1, 1, 3},  // SIMD depthwise, rows wider than one register block
      {1, 4, 9, 9, 4, 5, 1, 0, 4},   // SIMD depthwise without padding
      {2, 2, 6, 6, 2, 3, 2, 1, 2},   // strided depthwise (direct path)
      {1, 256, 20, 20, 4, 3, 1, 1, 1},  // depth 2304: GEMMs over several cache blocks of depth
      {2, 8, 41, 45, 5, 3, 2, 1, 1},    // stride 2, odd sizes, 483 output pixels
      {2, 3, 6, 37, 5, 3, 1, 1, 1},     // 3x3 same, rows wider than a GEMM panel of 32 pixels
      {2, 1, 28, 28, 6, 7, 1, 3, 1},    // the init convolution's 7x7 padding 3 on 28x28 (K = 49)
      {2, 4, 5, 5, 3, 5, 1, 1, 1},      // stride 1 but output narrower than input: im2col rows in memory
  };
  for (const Geo& s : geos) {
    const auto g = Conv2dGeometry::make(s.n, s.cin, s.h, s.w, s.cout, s.k, s.stride, s.pad, s.groups);
    const Index xs = g.batch * g.in_channels * g.in_pixels(), ys = g.batch * g.out_channels * g.out_pixels();
    const auto x = random_vector(xs, 4), w = random_vector(g.weight_size(), 5), b = random_vector(g.out_channels, 6);
    const auto dy = random_vector(ys, 7), dx0 = random_vector(xs, 8), dw0 = random_vector(g.weight_size(), 9);
    INFO("geometry n=" << s.n << " cin=" << s.cin << " " << s.h << "x" << s.w << " cout=" << s.cout << " k=" << s.k
                       << " stride=" << s.stride << " pad=" << s.pad << " groups=" << s.groups);
    std::vector<float> fast, ref;
    fast_and_reference([&](std::vector<float>& y) {
      y.assign(static_cast<std::size_t>(ys), 0.0f);
      conv2d_forward(g, x.data(), w.data(), b.data(), y.data());
    }, fast, ref);
    CHECK(max_relative(fast, ref) < 1e-5);
    fast_and_reference([&](std::vector<float>& dx) {
      dx = dx0;  // accumulation onto existing values
      conv2d_backward_data(g, dy.data(), w.data(), dx.data());
    }, fast, ref);
    CHECK(max_relative(fast, ref) < 1e-5);
    fast_and_reference([&](std::vector<float>& dw) {
      dw = dw0;
      conv2d_backward_weight(g, x.data(), dy.data(), dw.data());
    }, fast, ref);
    CHECK(max_relative(fast, ref) < 1e-5);
    fast_and_reference([&](std::vector<float>& db) {
      db.assign(static_cast<std::size_t>(g.out_channels), 1.0f);
      channel_sum(g.batch, g.out_channels, g.out_pixels(), dy.data(), db.data());
    }, fast, ref);
    CHECK(max_relative(fast, ref) < 1e-5);
  }
}

TEST_CASE("GroupNorm kernels match the reference including their saved statistics") {
  // Each path computes its own statistics (saved for the backward pass) and its backward uses them; P = 61 is not a
  // multiple of the SIMD width, and an offset of 50 on the inputs tests the two-pass variance against cancellation.
  const Index N = 3, C = 6, P = 61;
  for (double offset : {0.0, 50.0})
    for (Index G : {1, 2, 3, 6}) {
      auto x = random_vector(N * C * P, 10);
      for (float& v : x) v += static_cast<float>(offset);
      const auto gamma = random_vector(C, 11), beta = random_vector(C, 12), dy = random_vector(N * C * P, 13);
      std::vector<double> mean_fast(static_cast<std::size_t>(N * G)), rstd_fast(mean_fast.size());
      std::vector<double> mean_ref(mean_fast.size()), rstd_ref(mean_fast.size());
      std::vector<float> y_fast(static_cast<std::size_t>(N * C * P)), y_ref(y_fast.size());
      {
        ReferenceKernelsScope off(false);
        group_norm_forward(N, C, P, G, 1e-5, x.data(), gamma.data(), beta.data(), y_fast.data(), mean_fast.data(),
                           rstd_fast.data());
      }
      {
        ReferenceKernelsScope on(true);
        group_norm_forward(N, C, P, G, 1e-5, x.data(), gamma.data(), beta.data(), y_ref.data(), mean_ref.data(),
                           rstd_ref.data());
      }
      INFO("groups " << G << ", offset " << offset);
      CHECK(max_relative(y_fast, y_ref) < 1e-5);
      // The statistics: the fast path sums in float lanes within blocks (then in double), the reference element by
      // element in double. Measured: mean error <= 5e-6 std with the offset (1e-7 of the mean), 2e-8 std without;
      // rstd within 1.7e-7 relative. Bounds 1e-6 (|mean| + std) and 2e-6: a variance off by one part in 1e5 (eps
      // counted twice) fails.
      for (std::size_t i = 0; i < mean_fast.size(); ++i) {
        CHECK(testing::element_error(mean_fast[i], mean_ref[i]) <= 1e-6 * (std::fabs(mean_ref[i]) + 1.0 / rstd_ref[i]));
        CHECK(testing::element_error(rstd_fast[i], rstd_ref[i]) <= 2e-6 * rstd_ref[i]);
      }
      // Backward, each with its own statistics, accumulating onto 0.5 everywhere.
      std::vector<float> out_fast(static_cast<std::size_t>(N * C * P + 2 * C), 0.5f), out_ref = out_fast;
      {
        ReferenceKernelsScope off(false);
        group_norm_backward(N, C, P, G, x.data(), gamma.data(), mean_fast.data(), rstd_fast.data(), dy.data(),
                            out_fast.data(), out_fast.data() + N * C * P, out_fast.data() + N * C * P + C);
      }
      {
        ReferenceKernelsScope on(true);
        group_norm_backward(N, C, P, G, x.data(), gamma.data(), mean_ref.data(), rstd_ref.data(), dy.data(),
                            out_ref.data(), out_ref.data() + N * C * P, out_ref.data() + N * C * P + C);
      }
      // With the offset the float inputs carry ~50 * 2^-24 of rounding per element: the bound scales with it.
      CHECK(max_relative(out_fast, out_ref) < (offset > 0.0 ? 1e-4 : 1e-5));
    }
}

TEST_CASE("fast softmax kernels match their reference twins on rows and columns") {
  // Rows of 3 .. 37 (tails of the SIMD width), logits up to +-40 (exp near its range), the same input on both paths.
  for (Index cols : {3, 8, 17, 37}) {
    const Index rows = 5;
    auto x = random_vector(rows * cols, 20 + static_cast<std::uint64_t>(cols));
    for (float& v : x) v *= 10.0f;
    x[1] = 40.0f, x[2] = -40.0f;
    std::vector<double> work(static_cast<std::size_t>(2 * cols));
    for (int by_cols = 0; by_cols < 2; ++by_cols) {
      std::vector<float> fast, ref;
      fast_and_reference([&](std::vector<float>& y) {
        y.assign(static_cast<std::size_t>(rows * cols), std::numeric_limits<float>::quiet_NaN());
        if (by_cols) softmax_cols(rows, cols, x.data(), y.data(), work.data());
        else softmax_rows(rows, cols, x.data(), y.data());
      }, fast, ref);
      INFO((by_cols ? "columns" : "rows") << ", " << cols << " columns");
      for (float v : fast) REQUIRE(std::isfinite(v));
      CHECK(max_relative(fast, ref) < 1e-6);
    }
  }
}

TEST_CASE("SIMD activations match the std:: reference and do not depend on where an element sits") {
  const Index n = 1000 + 3;  // not a multiple of the SIMD width
  auto x = random_vector(n, 14);
  for (float& v : x) v *= 4.0f;
  x[0] = 30.0f, x[1] = -30.0f, x[2] = 0.0f;
  const auto dy = random_vector(n, 15);
  using Fn = void (*)(Index, const float*, float*);
  using Bn = void (*)(Index, const float*, const float*, float*);
  const Fn forwards[] = {silu_forward<float>, gelu_forward<float>};
  const Bn backwards[] = {silu_backward<float>, gelu_backward<float>};
  for (int which = 0; which < 2; ++which) {
    std::vector<float> fast, ref;
    fast_and_reference([&](std::vector<float>& y) {
      y.assign(static_cast<std::size_t>(n), 0.0f);
      forwards[which](n, x.data(), y.data());
    }, fast, ref);
    CHECK(max_relative(fast, ref) < 1e-6);
    // Same element, different offset and length: identical bits (tails go through the same SIMD code).
    std::vector<float> shifted(static_cast<std::size_t>(n), 0.0f);
    forwards[which](n - 5, x.data() + 5, shifted.data() + 5);
    for (Index i = 5; i < n; ++i) REQUIRE(std::memcmp(&shifted[std::size_t(i)], &fast[std::size_t(i)], 4) == 0);
    fast_and_reference([&](std::vector<float>& dx) {
      dx.assign(static_cast<std::size_t>(n), 0.25f);
      backwards[which](n, x.data(), dy.data(), dx.data());
    }, fast, ref);
    CHECK(max_relative(fast, ref) < 1e-6);
  }
}

TEST_CASE("softmax kernels: rows and columns sum to one and backward matches the Jacobian") {
  const Index R = 5, C = 7;
  const auto x = random_vector(R * C, 16);
  std::vector<float> rows(static_cast<std::size_t>(R * C)), cols(rows.size());
  std::vector<double> work(static_cast<std::size_t>(2 * C));
  softmax_rows(R, C, x.data(), rows.data());
  softmax_cols(R, C, x.data(), cols.data(), work.data());
  for (Index r = 0; r < R; ++r) {
    double s = 0;
    for (Index c = 0; c < C; ++c) s += rows[std::size_t(r * C + c)];
    REQUIRE(std::abs(s - 1.0) < 1e-6);
  }
  for (Index c = 0; c < C; ++c) {
    double s = 0;
    for (Index r = 0; r < R; ++r) s += cols[std::size_t(r * C + c)];
    REQUIRE(std::abs(s - 1.0) < 1e-6);
  }
  // Backward against the explicit Jacobian J = diag(y) - y y^T of one row.
  const auto dy = random_vector(C, 17);
  std::vector<float> dx(static_cast<std::size_t>(C));
  softmax_rows_backward(1, C, rows.data(), dy.data(), dx.data());
  for (Index i = 0; i < C; ++i) {
    double expect = 0;
    for (Index j = 0; j < C; ++j)
      expect += ((i == j ? rows[std::size_t(i)] : 0.0) - double(rows[std::size_t(i)]) * rows[std::size_t(j)]) * dy[std::size_t(j)];
    REQUIRE(std::abs(dx[std::size_t(i)] - expect) < 1e-6);
  }
}

TEST_CASE("convolution weight gradients are bitwise identical with 1 2 3 and 7 threads") {
  const auto g = Conv2dGeometry::make(20, 6, 7, 7, 8, 3, 1, 1, 1);
  const auto x = random_vector(g.batch * g.in_channels * g.in_pixels(), 18);
  const auto dy = random_vector(g.batch * g.out_channels * g.out_pixels(), 19);
  std::vector<float> one(static_cast<std::size_t>(g.weight_size()), 0.0f);
  {
    testing::ScopedThreads threads(1);
    conv2d_backward_weight(g, x.data(), dy.data(), one.data());
  }
  for (int n : {2, 3, 7}) {
    std::vector<float> other(one.size(), 0.0f);
    {
      testing::ScopedThreads threads(n);
      conv2d_backward_weight(g, x.data(), dy.data(), other.data());
    }
    INFO(n << " threads");
    REQUIRE(std::memcmp(one.data(), other.data(), one.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("convolution dispatch picks the documented method per direction and ends each table with the reference") {
  struct Case {
    const char* what;
    Conv2dGeometry g;
    const char *forward, *backward_data, *backward_weight;
  };
  const Case cases[] = {
      {"ConvNeXt 7x7 depthwise", Conv2dGeometry::make(2, 8, 7, 7, 8, 7, 1, 3, 8), "depthwise_simd", "depthwise_simd",
       "depthwise_simd"},
      {"3x3 padding 1", Conv2dGeometry::make(2, 4, 6, 6, 8, 3, 1, 1, 1), "im2col_gemm", "flipped_kernel_gemm",
       "gemm_weight_blocks"},
      {"4x4 stride 2 (Downsample)", Conv2dGeometry::make(2, 4, 8, 8, 4, 4, 2, 1, 1), "im2col_gemm", "gemm_col2im",
       "gemm_weight_blocks"},
      {"1x1", Conv2dGeometry::make(2, 4, 5, 5, 6, 1, 1, 0, 1), "im2col_gemm", "gemm_col2im", "gemm_weight_blocks"},
      {"strided depthwise", Conv2dGeometry::make(2, 3, 6, 6, 3, 3, 2, 1, 3), "reference", "reference", "reference"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    CHECK(std::string(select_implementation(conv2d_forward_implementations<float>, c.g).name) == c.forward);
    CHECK(std::string(select_implementation(conv2d_backward_data_implementations<float>, c.g).name) == c.backward_data);
    CHECK(std::string(select_implementation(conv2d_backward_weight_implementations<float>, c.g).name) ==
          c.backward_weight);
    ReferenceKernelsScope reference(true);
    CHECK(std::string(select_implementation(conv2d_forward_implementations<float>, c.g).name) == "reference");
    CHECK(std::string(select_implementation(conv2d_backward_data_implementations<float>, c.g).name) == "reference");
    CHECK(std::string(select_implementation(conv2d_backward_weight_implementations<float>, c.g).name) == "reference");
  }
  // The reference closes every table and takes every geometry.
  const auto g = Conv2dGeometry::make(1, 2, 3, 5, 2, 2, 3, 0, 1);
  REQUIRE(std::string(std::end(conv2d_forward_implementations<double>)[-1].name) == "reference");
  REQUIRE(std::end(conv2d_forward_implementations<double>)[-1].applies(g));
  REQUIRE(std::string(std::end(conv2d_backward_data_implementations<double>)[-1].name) == "reference");
  REQUIRE(std::end(conv2d_backward_data_implementations<double>)[-1].applies(g));
  REQUIRE(std::string(std::end(conv2d_backward_weight_implementations<double>)[-1].name) == "reference");
  REQUIRE(std::end(conv2d_backward_weight_implementations<double>)[-1].applies(g));
}
