// Every parameter-gradient kernel folds over the batch in image order, each image's contribution computed the same
// way whatever batch it is in: a batch's gradient equals the gradient accumulated over consecutive parts of it,
// bit for bit (what makes gradient accumulation exact, train/trainer.hpp), on one thread and on two. And the linear
// layer's products over the batch give each image the same result in any batch.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "diffusion/core/random.hpp"
#include "diffusion/kernels/conv2d.hpp"
#include "diffusion/kernels/group_norm.hpp"
#include "diffusion/kernels/linear.hpp"
#include "support/threads.hpp"

using namespace diffusion;
using namespace diffusion::kernels;

namespace {

std::vector<float> fold_random_vector(Index n, std::uint64_t seed) {
  std::vector<float> v(static_cast<std::size_t>(n));
  Rng(seed).normal(v.data(), n);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The batch [0, N) split at `cuts` (increasing, inside (0, N)).
std::vector<std::pair<Index, Index>> parts(Index N, const std::vector<Index>& cuts) {
  std::vector<std::pair<Index, Index>> p;
  Index begin = 0;
  for (Index c : cuts) p.emplace_back(begin, c), begin = c;
  p.emplace_back(begin, N);
  return p;
}

}  // namespace

TEST_CASE("convolution weight and bias gradients of a batch equal those accumulated over its parts, bit for bit") {
  struct Geo {
    Index n, cin, h, w, cout, k, stride, pad, groups;
  };
  const Geo geos[] = {
      {9, 3, 7, 7, 5, 3, 1, 1, 1},      // 3x3 same
      {9, 4, 7, 9, 6, 4, 2, 1, 2},      // strided, grouped
      {9, 6, 7, 7, 6, 7, 1, 3, 6},      // depthwise 7x7 (SIMD path)
      {9, 2, 6, 6, 2, 3, 2, 1, 2},      // strided depthwise (direct path)
      {9, 80, 5, 5, 100, 1, 1, 0, 1},   // pointwise, two blocks of output channels
      {9, 11, 5, 5, 7, 3, 1, 1, 1},     // two blocks of im2col rows
  };
  for (int threads : {1, 2}) {
    testing::ScopedThreads scoped(threads);
    for (const Geo& s : geos) {
      INFO(threads << " thread(s), geometry n=" << s.n << " cin=" << s.cin << " " << s.h << "x" << s.w
                   << " cout=" << s.cout << " k=" << s.k << " stride=" << s.stride << " groups=" << s.groups);
      const auto g = Conv2dGeometry::make(s.n, s.cin, s.h, s.w, s.cout, s.k, s.stride, s.pad, s.groups);
      const Index xper = g.in_channels * g.in_pixels(), yper = g.out_channels * g.out_pixels();
      const auto x = fold_random_vector(g.batch * xper, 1), dy = fold_random_vector(g.batch * yper, 2);
      const auto dw0 = fold_random_vector(g.weight_size(), 3), db0 = fold_random_vector(g.out_channels, 4);
      std::vector<float> dw = dw0, db = db0;
      conv2d_backward_weight(g, x.data(), dy.data(), dw.data());
      channel_sum(g.batch, g.out_channels, g.out_pixels(), dy.data(), db.data());
      for (const auto& cuts : {std::vector<Index>{4}, std::vector<Index>{1, 2, 7}}) {
        std::vector<float> dwp = dw0, dbp = db0;
        for (const auto& [n0, n1] : parts(g.batch, cuts)) {
          Conv2dGeometry gp = g;
          gp.batch = n1 - n0;
          conv2d_backward_weight(gp, x.data() + n0 * xper, dy.data() + n0 * yper, dwp.data());
          channel_sum(gp.batch, g.out_channels, g.out_pixels(), dy.data() + n0 * yper, dbp.data());
        }
        REQUIRE(same_bits(dw, dwp));
        REQUIRE(same_bits(db, dbp));
      }
    }
  }
}

TEST_CASE("GroupNorm parameter gradients of a batch equal those accumulated over its parts, bit for bit") {
  const Index N = 7, C = 6, P = 10, G = 3;
  for (int threads : {1, 2}) {
    testing::ScopedThreads scoped(threads);
    const auto x = fold_random_vector(N * C * P, 1), dy = fold_random_vector(N * C * P, 2);
    const auto gamma = fold_random_vector(C, 3), beta = fold_random_vector(C, 4);
    std::vector<float> y(x.size());
    std::vector<double> mean(static_cast<std::size_t>(N * G)), rstd(mean.size());
    group_norm_forward(N, C, P, G, 1e-5, x.data(), gamma.data(), beta.data(), y.data(), mean.data(), rstd.data());
    std::vector<float> dx(x.size(), 0.0f), dgamma(static_cast<std::size_t>(C), 0.5f), dbeta(dgamma);
    group_norm_backward(N, C, P, G, x.data(), gamma.data(), mean.data(), rstd.data(), dy.data(), dx.data(),
                        dgamma.data(), dbeta.data());
    std::vector<float> dxp(x.size(), 0.0f), dgp(static_cast<std::size_t>(C), 0.5f), dbp(dgp);
    for (const auto& [n0, n1] : parts(N, {3})) {
      group_norm_backward(n1 - n0, C, P, G, x.data() + n0 * C * P, gamma.data(), mean.data() + n0 * G,
                          rstd.data() + n0 * G, dy.data() + n0 * C * P, dxp.data() + n0 * C * P, dgp.data(), dbp.data());
    }
    REQUIRE(same_bits(dx, dxp));
    REQUIRE(same_bits(dgamma, dgp));
    REQUIRE(same_bits(dbeta, dbp));
  }
}

TEST_CASE("linear kernels give each image the same result in any batch and fold their gradients over it") {
  const Index N = 21, in = 28, out = 13;
  for (int threads : {1, 2}) {
    testing::ScopedThreads scoped(threads);
    const auto x = fold_random_vector(N * in, 1), w = fold_random_vector(out * in, 2), b = fold_random_vector(out, 3);
    const auto dy = fold_random_vector(N * out, 4), dx0 = fold_random_vector(N * in, 5);
    const auto dw0 = fold_random_vector(out * in, 6), db0 = fold_random_vector(out, 7);
    std::vector<float> y(static_cast<std::size_t>(N * out)), dx = dx0, dw = dw0, db = db0;
    linear_forward(N, in, out, x.data(), w.data(), b.data(), y.data());
    linear_backward_data(N, in, out, dy.data(), w.data(), dx.data());
    linear_backward_weight(N, out, in, dy.data(), x.data(), dw.data());
    linear_backward_bias(N, out, dy.data(), db.data());
    // Against the double-precision reference.
    std::vector<float> yr(y.size()), dxr = dx0, dwr = dw0, dbr = db0;
    {
      ReferenceKernelsScope on(true);
      linear_forward(N, in, out, x.data(), w.data(), b.data(), yr.data());
      linear_backward_data(N, in, out, dy.data(), w.data(), dxr.data());
      linear_backward_weight(N, out, in, dy.data(), x.data(), dwr.data());
      linear_backward_bias(N, out, dy.data(), dbr.data());
    }
    const auto close = [](const std::vector<float>& a, const std::vector<float>& r) {
      double err = 0, ref = 1e-30;
      for (std::size_t i = 0; i < a.size(); ++i)
        err = std::max(err, std::abs(double(a[i]) - double(r[i]))), ref = std::max(ref, std::abs(double(r[i])));
      return err / ref < 1e-5;
    };
    REQUIRE(close(y, yr));
    REQUIRE(close(dx, dxr));
    REQUIRE(close(dw, dwr));
    REQUIRE(close(db, dbr));
    // Parts of 1, 2, 5, 8 and 5 images: forward and input gradient per image identical, parameter gradients folded.
    std::vector<float> yp(y.size()), dxp = dx0, dwp = dw0, dbp = db0;
    for (const auto& [n0, n1] : parts(N, {1, 3, 8, 16})) {
      const Index n = n1 - n0;
      linear_forward(n, in, out, x.data() + n0 * in, w.data(), b.data(), yp.data() + n0 * out);
      linear_backward_data(n, in, out, dy.data() + n0 * out, w.data(), dxp.data() + n0 * in);
      linear_backward_weight(n, out, in, dy.data() + n0 * out, x.data() + n0 * in, dwp.data());
      linear_backward_bias(n, out, dy.data() + n0 * out, dbp.data());
    }
    REQUIRE(same_bits(y, yp));
    REQUIRE(same_bits(dx, dxp));
    REQUIRE(same_bits(dw, dwp));
    REQUIRE(same_bits(db, dbp));
  }
}
