// The sample-quality metrics against the independent numpy/scipy/mpmath reference of
// tests/golden/make_metric_fixtures.py (metrics.safetensors): streaming mean and covariance, the Frechet distance,
// KID and precision/recall; plus the properties the reference cannot see (batching and thread-count independence,
// the reservoir's uniformity, errors on bad input).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/metrics/feature_statistics.hpp"
#include "diffusion/metrics/frechet.hpp"
#include "diffusion/metrics/kid.hpp"
#include "diffusion/metrics/precision_recall.hpp"
#include "metrics/metrics_test_util.hpp"
#include "support/threads.hpp"

using namespace diffusion;
using namespace diffusion::metrics;
using metrics_test::compare;
using metrics_test::golden;
using metrics_test::rel_error;

namespace {

const io::SafetensorsReader& fixture() {
  static const io::SafetensorsReader reader(golden("metrics.safetensors"));
  return reader;
}
Tensor<double> fx(const std::string& name) { return fixture().read<double>(name); }
double fx_scalar(const std::string& name) { return fx(name)[0]; }

// Feeds x (n, D) in batches of the given sizes (cycled), the rest in one batch.
FeatureStatistics stream(const Tensor<double>& x, const std::vector<Index>& batches, FeatureStatisticsOptions o = {}) {
  FeatureStatistics stats(x.dim(1), o);
  Index at = 0, b = 0;
  while (at < x.dim(0)) {
    const Index n = std::min(batches.empty() ? x.dim(0) : batches[static_cast<std::size_t>(b++) % batches.size()],
                             x.dim(0) - at);
    stats.add(x.data() + at * x.dim(1), n);
    at += n;
  }
  return stats;
}

bool bitwise_equal(const Tensor<double>& a, const Tensor<double>& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(double) * static_cast<std::size_t>(a.numel())) == 0;
}

}  // namespace

TEST_CASE("streaming mean and covariance match numpy mean and cov") {
  // Tolerances: the two-pass numpy result and the chunked pairwise update both have relative errors of a few
  // 1e-16 times the condition of the data; 1e-12 is ~1e4 ulps of room. The "offset" case (means ~1e4, spread ~1)
  // makes the naive sum(x x^T) - n mean mean^T lose ~8 digits (error ~1e-8), which this bound rejects.
  for (const char* name : {"full", "offset", "singular"}) {
    for (const char* side : {"a", "b"}) {
      const std::string key = std::string("fd.") + name + ".";
      const Tensor<double> x = fx(key + side);
      for (const std::vector<Index>& batches : {std::vector<Index>{}, std::vector<Index>{1}, std::vector<Index>{7, 33}}) {
        INFO("case " << name << "." << side << ", " << batches.size() << " batch sizes");
        const GaussianStats g = stream(x, batches).gaussian();
        REQUIRE(g.count == x.dim(0));
        const auto dm = compare(g.mean, fx(key + "mean_" + side));
        const auto dc = compare(g.covariance, fx(key + "cov_" + side));
        INFO("mean: " << dm.str() << "\ncov: " << dc.str());
        REQUIRE(dm.error <= 1e-12);
        REQUIRE(dc.error <= 1e-12);
      }
    }
  }
}

TEST_CASE("streaming statistics are bitwise independent of batching and thread count") {
  const Tensor<double> x = fx("fd.offset.a");
  FeatureStatisticsOptions o;
  o.reservoir_size = 30;  // fewer than the 100 rows: the reservoir replaces
  o.reservoir_seed = 5;
  GaussianStats ref;
  Tensor<double> ref_reservoir;
  {
    diffusion::testing::ScopedThreads one(1);
    const FeatureStatistics s = stream(x, {}, o);
    ref = s.gaussian();
    ref_reservoir = s.reservoir();
  }
  for (int threads : {1, 3}) {
    diffusion::testing::ScopedThreads scoped(threads);
    for (const std::vector<Index>& batches : {std::vector<Index>{1}, std::vector<Index>{5, 17}, std::vector<Index>{99}}) {
      INFO(threads << " threads, first batch size " << batches[0]);
      const FeatureStatistics s = stream(x, batches, o);
      REQUIRE(bitwise_equal(s.gaussian().mean, ref.mean));
      REQUIRE(bitwise_equal(s.gaussian().covariance, ref.covariance));
      REQUIRE(bitwise_equal(s.reservoir(), ref_reservoir));
    }
  }
  // Asking for the statistics midway does not change the stream.
  FeatureStatistics s(x.dim(1), o);
  s.add(x.data(), 60);
  (void)s.gaussian();
  s.add(x.data() + 60 * x.dim(1), 40);
  REQUIRE(bitwise_equal(s.gaussian().covariance, ref.covariance));
}

TEST_CASE("the feature reservoir keeps everything below its size and a uniform sample above") {
  const Index D = 2, n = 40, M = 10;
  Tensor<double> x(Shape{n, D});
  for (Index i = 0; i < n; ++i) x[i * D] = double(i), x[i * D + 1] = -double(i);
  {
    FeatureStatisticsOptions o;
    o.reservoir_size = 64;
    const Tensor<double> r = stream(x, {3}, o).reservoir();
    REQUIRE(bitwise_equal(r, x));
  }
  // Inclusion frequency of each index over many seeds: M / n = 0.25 each. 4000 seeds: mean 1000, sd 27.4; every
  // count must be within 5 sd, and each kept set must be M distinct rows of x.
  std::vector<int> counts(static_cast<std::size_t>(n), 0);
  const int seeds = 4000;
  for (int seed = 0; seed < seeds; ++seed) {
    FeatureStatisticsOptions o;
    o.reservoir_size = M;
    o.reservoir_seed = static_cast<std::uint64_t>(seed);
    const Tensor<double> r = stream(x, {n}, o).reservoir();
    REQUIRE(r.shape() == (Shape{M, D}));
    std::set<Index> kept;
    for (Index i = 0; i < M; ++i) {
      const Index idx = static_cast<Index>(r[i * D]);
      REQUIRE(r[i * D + 1] == -double(idx));
      kept.insert(idx);
      ++counts[static_cast<std::size_t>(idx)];
    }
    REQUIRE(kept.size() == static_cast<std::size_t>(M));
  }
  const double mean = seeds * double(M) / double(n), sd = std::sqrt(seeds * 0.25 * 0.75);
  for (Index i = 0; i < n; ++i) {
    INFO("index " << i << " kept " << counts[static_cast<std::size_t>(i)] << " times, expected " << mean << " +- " << sd);
    REQUIRE(std::fabs(counts[static_cast<std::size_t>(i)] - mean) <= 5 * sd);
  }
}

TEST_CASE("Frechet distance matches a 50-digit evaluation and pytorch-fid") {
  // Against mpmath (the exact value for the stored float64 covariances): 1e-10. Against pytorch-fid's scipy.sqrtm
  // route: the brief's 1e-6 (scipy itself is 1e-8 off the exact value on the rank-deficient case).
  for (const char* name : {"full", "offset", "singular"}) {
    const std::string key = std::string("fd.") + name + ".";
    const FrechetResult r = frechet_distance(fx(key + "mean_a"), fx(key + "cov_a"), fx(key + "mean_b"), fx(key + "cov_b"));
    const double exact = fx_scalar(key + "exact"), scipy = fx_scalar(key + "scipy");
    INFO(name << ": got " << r.distance << ", relative error " << rel_error(r.distance, exact) << " to the exact "
              << exact << ", " << rel_error(r.distance, scipy) << " to pytorch-fid's " << scipy);
    CHECK(rel_error(r.trace_sqrt, fx_scalar(key + "exact_trace_sqrt")) <= 1e-10);
    CHECK(rel_error(r.distance, exact) <= 1e-10);
    CHECK(rel_error(r.distance, scipy) <= 1e-6);
    REQUIRE(r.distance == Approx(r.mean_term + r.trace_a + r.trace_b - 2 * r.trace_sqrt).epsilon(1e-15));
  }
}

TEST_CASE("Frechet distance of streamed statistics matches the reference end to end") {
  for (const char* name : {"full", "offset", "singular"}) {
    const std::string key = std::string("fd.") + name + ".";
    const GaussianStats a = stream(fx(key + "a"), {13}).gaussian();
    const GaussianStats b = stream(fx(key + "b"), {13}).gaussian();
    const double got = frechet_distance(a, b).distance;
    INFO(name << ": got " << got << ", relative error " << rel_error(got, fx_scalar(key + "exact")));
    REQUIRE(rel_error(got, fx_scalar(key + "exact")) <= 1e-9);
  }
}

TEST_CASE("Frechet distance of a distribution with itself is zero and bad input is refused") {
  const GaussianStats a = stream(fx("fd.full.a"), {}).gaussian();
  const FrechetResult self = frechet_distance(a, a);
  // Exactly 0 in exact arithmetic. In double, sqrt(lambda(S^2)) returns lambda_i with an absolute error of about
  // eps lambda_max^2 / lambda_i, so the trace difference is ~eps * cond(S) * tr(S): cond ~ 1e2 here, so 1e-10 tr(S)
  // leaves a factor ~40 of room.
  INFO("d(a, a) = " << self.distance << " (trace " << self.trace_a << ")");
  REQUIRE(std::isfinite(self.distance));
  REQUIRE(std::fabs(self.distance) <= 1e-10 * self.trace_a);
  GaussianStats bad = a;
  bad.covariance[5] = std::nan("");
  REQUIRE_THROWS_WITH(frechet_distance(a, bad), Catch::Contains("cov_b has a non-finite element"));
  GaussianStats small = stream(fx("fd.singular.a"), {}).gaussian();
  REQUIRE_THROWS_WITH(frechet_distance(a, small), Catch::Contains("means must be vectors of equal length"));
  FeatureStatistics one(4);
  const double row[4] = {1, 2, 3, 4};
  one.add(row, 1);
  REQUIRE_THROWS_WITH(one.gaussian(), Catch::Contains("needs at least 2 samples"));
}

TEST_CASE("KID on given subsets matches torch-fidelity's unbiased MMD") {
  const Tensor<double> x = fx("kid.x"), y = fx("kid.y");
  const io::SafetensorsReader& f = fixture();
  const Tensor<std::int64_t> ix = f.read<std::int64_t>("kid.subsets_x"), iy = f.read<std::int64_t>("kid.subsets_y");
  std::vector<std::vector<Index>> sx, sy;
  for (Index s = 0; s < ix.dim(0); ++s) {
    sx.emplace_back(ix.data() + s * ix.dim(1), ix.data() + (s + 1) * ix.dim(1));
    sy.emplace_back(iy.data() + s * iy.dim(1), iy.data() + (s + 1) * iy.dim(1));
  }
  const KidResult r = kid_from_subsets(x, y, sx, sy);
  REQUIRE(r.subsets == 10);
  REQUIRE(r.subset_size == 50);
  const auto dv = compare(r.values.data(), fx("kid.values").data(), 10);
  INFO("per-subset values: " << dv.str() << "; mean " << r.mean << " vs " << fx_scalar("kid.mean") << ", std "
                             << r.std << " vs " << fx_scalar("kid.std"));
  REQUIRE(dv.error <= 1e-12);
  REQUIRE(rel_error(r.mean, fx_scalar("kid.mean")) <= 1e-12);
  REQUIRE(rel_error(r.std, fx_scalar("kid.std")) <= 1e-10);
}

TEST_CASE("KID draws distinct in-range subsets from its seed and is thread-count independent") {
  const Tensor<double> x = fx("kid.x"), y = fx("kid.y");
  KidOptions o;
  o.subsets = 6;
  o.subset_size = 1000;  // more than the samples: m = min(1000, 120, 100) = 100, as clean-fid
  o.seed = 9;
  KidResult ref;
  {
    diffusion::testing::ScopedThreads one(1);
    ref = kernel_inception_distance(x, y, o);
  }
  REQUIRE(ref.subset_size == 100);
  REQUIRE(ref.values.size() == 6);
  REQUIRE(std::isfinite(ref.mean));
  REQUIRE(ref.std > 0.0);
  {
    diffusion::testing::ScopedThreads three(3);
    const KidResult again = kernel_inception_distance(x, y, o);
    REQUIRE(std::memcmp(again.values.data(), ref.values.data(), sizeof(double) * 6) == 0);
  }
  o.seed = 10;
  REQUIRE(kernel_inception_distance(x, y, o).values != ref.values);
  for (std::uint64_t seed : {0u, 1u, 2u}) {
    const std::vector<Index> s = sample_without_replacement(120, 50, Rng(seed));
    REQUIRE(s.size() == 50);
    REQUIRE(std::set<Index>(s.begin(), s.end()).size() == 50);
    for (Index i : s) REQUIRE((i >= 0 && i < 120));
  }
  // Two disjoint halves of one sample: the unbiased estimator of MMD^2 = 0 averages near zero, far below the
  // distance between the two distributions. (Subsets of one set drawn twice would share rows, whose k(x, x) enter
  // the cross term and bias the estimate negative: not a valid use.)
  Tensor<double> h1(Shape{60, x.dim(1)}), h2(Shape{60, x.dim(1)});
  std::memcpy(h1.data(), x.data(), sizeof(double) * static_cast<std::size_t>(h1.numel()));
  std::memcpy(h2.data(), x.data() + h1.numel(), sizeof(double) * static_cast<std::size_t>(h2.numel()));
  KidOptions small;
  small.subsets = 20;
  small.subset_size = 40;
  const KidResult same = kernel_inception_distance(h1, h2, small);
  INFO("KID(x[:60], x[60:]) = " << same.mean << " +- " << same.std << ", KID(x, y) = " << ref.mean);
  REQUIRE(std::fabs(same.mean) < 0.1 * ref.mean);
  REQUIRE_THROWS_WITH(kernel_inception_distance(x, fx("fd.singular.a"), small), Catch::Contains("equal D"));
}

TEST_CASE("precision and recall match the k-NN reference") {
  const Tensor<double> real = fx("pr.real"), fake = fx("pr.fake");
  const Index k = static_cast<Index>(fx_scalar("pr.k"));
  REQUIRE(k == 3);
  for (const char* side : {"real", "fake"}) {
    const std::vector<double> r2 = knn_squared_radii(fx(std::string("pr.") + side), k);
    std::vector<double> r(r2.size());
    for (std::size_t i = 0; i < r2.size(); ++i) r[i] = std::sqrt(r2[i]);
    const Tensor<double> want = fx(std::string("pr.") + side + "_radius");
    REQUIRE(static_cast<Index>(r.size()) == want.numel());
    const auto d = compare(r.data(), want.data(), want.numel());
    INFO(side << " radii: " << d.str());
    REQUIRE(d.error <= 1e-12);
  }
  PrecisionRecall pr;
  {
    diffusion::testing::ScopedThreads three(3);
    pr = precision_recall(real, fake, k);
  }
  INFO("precision " << pr.precision << " vs " << fx_scalar("pr.precision") << ", recall " << pr.recall << " vs "
                    << fx_scalar("pr.recall"));
  REQUIRE(pr.precision == fx_scalar("pr.precision"));
  REQUIRE(pr.recall == fx_scalar("pr.recall"));
  REQUIRE(pr.real_count == 150);
  REQUIRE(pr.fake_count == 120);
  // A set covers itself entirely.
  REQUIRE(precision_recall(real, real, k).precision == 1.0);
  REQUIRE_THROWS_WITH(knn_squared_radii(fx("pr.real"), 150), Catch::Contains("more than k rows"));
  Tensor<double> nan_fake = fake;
  nan_fake[3] = std::nan("");
  REQUIRE_THROWS_WITH(precision_recall(real, nan_fake, k), Catch::Contains("non-finite"));
}
