// Reference statistics cached in a file: created when missing, loaded when its keys match, recomputed (never used)
// when the data set, the extractor's weights or the reservoir options changed or the file is unreadable; content
// keys that change with one byte; and the SampleEvaluator's plumbing against direct calls of the metrics.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "diffusion/metrics/reference_stats.hpp"
#include "diffusion/metrics/sample_evaluator.hpp"

using namespace diffusion;
using namespace diffusion::metrics;

namespace {

std::string cache_temp_path(const std::string& name) { return std::string(DIFFUSION_TEST_BINARY_DIR) + "/" + name; }

Tensor<double> random_features(Index n, Index d, std::uint64_t seed, double shift = 0.0) {
  Tensor<double> x(Shape{n, d});
  Rng(seed).normal(x.data(), x.numel());
  for (double& v : x) v += shift;
  return x;
}

ReferenceStats stats_of(const Tensor<double>& x, const std::string& dk, const std::string& ek,
                        FeatureStatisticsOptions o = {}) {
  FeatureStatistics s(x.dim(1), o);
  s.add(x);
  return make_reference_stats(s, dk, ek);
}

bool same_bits(const Tensor<double>& a, const Tensor<double>& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(double) * static_cast<std::size_t>(a.numel())) == 0;
}

// A toy extractor: 5 features per image (mean, mean of squares, first and last pixel, max), class = mean > 0.
struct ToyExtractor {
  std::string weights_key = "toy:1";
  Index calls = 0, largest_batch = 0;
  Index feature_dim() const { return 5; }
  Index num_classes() const { return 2; }
  const std::string& key() const { return weights_key; }
  void extract(const Tensor<float>& images, Tensor<float>& features, std::vector<std::int64_t>* classes) {
    ++calls;
    largest_batch = std::max(largest_batch, images.dim(0));
    const Index N = images.dim(0), P = images.numel() / N;
    features.resize(Shape{N, 5});
    if (classes) classes->resize(static_cast<std::size_t>(N));
    for (Index n = 0; n < N; ++n) {
      const float* p = images.data() + n * P;
      double s = 0, s2 = 0, mx = p[0];
      for (Index i = 0; i < P; ++i) s += p[i], s2 += double(p[i]) * p[i], mx = std::max(mx, double(p[i]));
      float* f = features.data() + n * 5;
      f[0] = float(s / P), f[1] = float(s2 / P), f[2] = p[0], f[3] = p[P - 1], f[4] = float(mx);
      if (classes) (*classes)[static_cast<std::size_t>(n)] = s > 0 ? 1 : 0;
    }
  }
};

Tensor<float> random_images(Index n, std::uint64_t seed, double shift) {
  Tensor<float> x(Shape{n, 1, 4, 4});
  Rng(seed).normal(x.data(), x.numel());
  for (float& v : x) v = static_cast<float>(v * 0.5 + shift);
  return x;
}

}  // namespace

TEST_CASE("reference statistics files round-trip bitwise") {
  const std::string path = cache_temp_path("reference_roundtrip.safetensors");
  FeatureStatisticsOptions o;
  o.reservoir_size = 40;
  o.reservoir_seed = 3;
  const ReferenceStats r = stats_of(random_features(100, 6, 1), "fnv1a64:0000000000000001", "fnv1a64:2", o);
  save_reference_stats(path, r);
  const ReferenceStats back = load_reference_stats(path);
  REQUIRE(back.dataset_key == r.dataset_key);
  REQUIRE(back.extractor_key == r.extractor_key);
  REQUIRE(back.gaussian.count == 100);
  REQUIRE(back.options.reservoir_size == 40);
  REQUIRE(back.options.reservoir_seed == 3);
  REQUIRE(same_bits(back.gaussian.mean, r.gaussian.mean));
  REQUIRE(same_bits(back.gaussian.covariance, r.gaussian.covariance));
  REQUIRE(same_bits(back.features, r.features));
  REQUIRE(back.features.shape() == (Shape{40, 6}));
  // Precision's k-NN radii of the reservoir travel with it.
  REQUIRE(r.knn_k == 3);
  REQUIRE(r.knn_squared_radii == knn_squared_radii(r.features, 3));
  REQUIRE(back.knn_k == 3);
  REQUIRE(back.knn_squared_radii == r.knn_squared_radii);
}

TEST_CASE("a stale reference cache is detected and recomputed, never used") {
  const std::string path = cache_temp_path("reference_cache.safetensors");
  std::remove(path.c_str());
  const Tensor<double> data_a = random_features(50, 4, 1), data_b = random_features(50, 4, 2, 1.0);
  int computed = 0;
  auto compute = [&](const Tensor<double>& x, const std::string& dk, const std::string& ek, FeatureStatisticsOptions o) {
    return [&computed, &x, dk, ek, o] {
      ++computed;
      return stats_of(x, dk, ek, o);
    };
  };
  const FeatureStatisticsOptions o;
  const std::string key_a = tensor_key(data_a), key_b = tensor_key(data_b);
  REQUIRE(key_a != key_b);

  CachedReference c = cached_reference_stats(path, key_a, "w1", o, compute(data_a, key_a, "w1", o));
  REQUIRE(c.status == CacheStatus::Created);
  REQUIRE(computed == 1);

  c = cached_reference_stats(path, key_a, "w1", o, compute(data_a, key_a, "w1", o));
  REQUIRE(c.status == CacheStatus::Loaded);
  REQUIRE(computed == 1);
  REQUIRE(same_bits(c.stats.gaussian.mean, stats_of(data_a, key_a, "w1").gaussian.mean));

  // The data set changed: the file's statistics (of data_a) must not come back.
  c = cached_reference_stats(path, key_b, "w1", o, compute(data_b, key_b, "w1", o));
  REQUIRE(c.status == CacheStatus::Recomputed);
  REQUIRE_THAT(c.reason, Catch::Contains("data set key " + key_a + " != " + key_b));
  REQUIRE(computed == 2);
  REQUIRE(same_bits(c.stats.gaussian.mean, stats_of(data_b, key_b, "w1").gaussian.mean));
  REQUIRE(load_reference_stats(path).dataset_key == key_b);  // the file now holds the fresh statistics

  // The extractor's weights changed.
  c = cached_reference_stats(path, key_b, "w2", o, compute(data_b, key_b, "w2", o));
  REQUIRE(c.status == CacheStatus::Recomputed);
  REQUIRE_THAT(c.reason, Catch::Contains("extractor key w1 != w2"));
  REQUIRE(computed == 3);

  // The reservoir options changed.
  FeatureStatisticsOptions o2;
  o2.reservoir_size = 7;
  c = cached_reference_stats(path, key_b, "w2", o2, compute(data_b, key_b, "w2", o2));
  REQUIRE(c.status == CacheStatus::Recomputed);
  REQUIRE_THAT(c.reason, Catch::Contains("reservoir options differ"));
  REQUIRE(c.stats.features.dim(0) == 7);

  // A damaged file.
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << "not a safetensors file";
  }
  c = cached_reference_stats(path, key_b, "w2", o2, compute(data_b, key_b, "w2", o2));
  REQUIRE(c.status == CacheStatus::Recomputed);
  REQUIRE_THAT(c.reason, Catch::Contains("unreadable"));
  REQUIRE(computed == 5);
  c = cached_reference_stats(path, key_b, "w2", o2, compute(data_b, key_b, "w2", o2));
  REQUIRE(c.status == CacheStatus::Loaded);
  REQUIRE(computed == 5);

  // compute() must return statistics under the keys it was asked for.
  REQUIRE_THROWS_WITH(cached_reference_stats("", key_b, "w2", o2, compute(data_b, key_b, "other", o2)),
                      Catch::Contains("expected (" + key_b + ", w2)"));
}

TEST_CASE("content keys change with any byte of the data or the weights") {
  Tensor<float> images(Shape{3, 1, 4, 4});
  Rng(1).normal(images.data(), images.numel());
  const std::string k0 = tensor_key(images);
  REQUIRE(k0.rfind("fnv1a64:", 0) == 0);
  REQUIRE(k0.size() == 8 + 16);
  REQUIRE(tensor_key(images) == k0);
  Tensor<float> changed = images;
  changed[47] = std::nextafter(changed[47], 10.0f);  // one bit of the last pixel
  REQUIRE(tensor_key(changed) != k0);
  Tensor<float> reshaped = images;
  reshaped.reshape(Shape{1, 3, 4, 4});
  REQUIRE(tensor_key(reshaped) != k0);

  ParameterStore<float> store(5);
  store.add("a.weight", Shape{4, 3}, Init::uniform(1.0));
  store.add("a.bias", Shape{4}, Init::uniform(1.0));
  const std::string p0 = parameters_key(store, "net");
  REQUIRE(parameters_key(store, "net") == p0);
  REQUIRE(parameters_key(store, "other-net") != p0);
  store.values()[store.entries()[1].offset] += 1e-6f;
  REQUIRE(parameters_key(store, "net") != p0);
}

TEST_CASE("SampleEvaluator streams batches and equals the metrics called directly") {
  ToyExtractor ex;
  EvaluationOptions o;
  o.batch_size = 7;
  o.features.reservoir_size = 60;
  o.kid.subsets = 5;
  o.kid.subset_size = 30;
  const Tensor<float> real = random_images(80, 1, 0.0), fake = random_images(70, 2, 0.3);
  const ReferenceStats ref = compute_reference_stats(ex, real, tensor_key(real), o);
  REQUIRE(ex.largest_batch == 7);
  REQUIRE(ref.gaussian.count == 80);
  REQUIRE(ref.features.dim(0) == 60);

  SampleEvaluator<ToyExtractor> eval(ex, ref, o);
  // Three uneven additions.
  for (Index begin : {Index{0}, Index{13}, Index{50}}) {
    const Index end = begin == 0 ? 13 : begin == 13 ? 50 : 70;
    Tensor<float> part(Shape{end - begin, 1, 4, 4});
    std::copy(fake.data() + begin * 16, fake.data() + end * 16, part.data());
    eval.add(part);
  }
  const SampleReport r = eval.finish();

  // The same by hand: features of all 70 at once, the sample reservoir with the sample seed.
  Tensor<float> f;
  std::vector<std::int64_t> classes;
  ex.extract(fake, f, &classes);
  FeatureStatisticsOptions so = o.features;
  so.reservoir_seed = o.sample_reservoir_seed;
  FeatureStatistics s(5, so);
  s.add(f);
  const FrechetResult fid = frechet_distance(s.gaussian(), ref.gaussian);
  const KidResult kid = kernel_inception_distance(ref.features, s.reservoir(), o.kid);
  const PrecisionRecall pr = precision_recall(ref.features, s.reservoir(), 3);
  REQUIRE(r.count == 70);
  REQUIRE(r.reference_count == 80);
  REQUIRE(r.fid.distance == fid.distance);
  REQUIRE(r.kid.values == kid.values);
  REQUIRE(r.pr.precision == pr.precision);
  REQUIRE(r.pr.recall == pr.recall);
  Index ones = 0;
  for (std::int64_t c : classes) ones += c;
  REQUIRE(r.class_histogram == std::vector<Index>{70 - ones, ones});
  REQUIRE(r.fid.distance > 0.0);
  REQUIRE(r.seconds() >= 0.0);
  REQUIRE(r.to_json().at("fid").get<double>() == r.fid.distance);

  // A reference made with other weights is refused.
  ToyExtractor other;
  other.weights_key = "toy:2";
  REQUIRE_THROWS_WITH(SampleEvaluator<ToyExtractor>(other, ref, o), Catch::Contains("not with this one"));
}
