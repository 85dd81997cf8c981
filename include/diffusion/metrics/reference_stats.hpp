#pragma once
// Reference statistics (the real data's Gaussian fit and a reservoir of its feature vectors, in one extractor's
// feature space), computed once and cached in a safetensors file keyed by the data set and the extractor:
//
//   tensors   "mean" (D) F64, "covariance" (D, D) F64, "features" (M', D) F64 (the reservoir, M' = min(n, M)),
//             "knn_squared_radii" (M') F64 when knn_k > 0 (precision's k-NN radii of the reservoir, computed once)
//   metadata  "diffusion.reference_stats" = JSON {"format": 1, "dataset": <key>, "extractor": <key>,
//             "count": n, "dim": D, "reservoir_size": M, "reservoir_seed": seed, "knn_k": k}
//
// Keys are content hashes, "fnv1a64:<16 hex digits>": of the images (shape, dtype and every byte) and of the
// extractor's weights (every parameter's name, shape and value bits). cached_reference_stats() loads the file only
// when its format, both keys and the reservoir options equal the expected ones; otherwise (missing, unreadable,
// stale) it recomputes, rewrites the file atomically and says why. A stale cache is never used.
// FNV-1a is not cryptographic: the key detects stale caches (changed data, retrained weights), not tampering.

#include <cstdint>
#include <cstring>
#include <string>
#include <sys/stat.h>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/core/enum_names.hpp"
#include "diffusion/core/error.hpp"
#include "diffusion/core/hash.hpp"
#include "diffusion/core/parameters.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/io/safetensors.hpp"
#include "diffusion/metrics/feature_statistics.hpp"
#include "diffusion/metrics/precision_recall.hpp"

namespace diffusion::metrics {

inline constexpr const char* kReferenceStatsKey = "diffusion.reference_stats";
inline constexpr int kReferenceStatsFormat = 1;

// Key of a data set: its shape, element size and bytes.
template <class T>
std::string tensor_key(const Tensor<T>& t) {
  std::uint64_t h = fnv1a64("tensor", 6);
  const std::int64_t header[2] = {static_cast<std::int64_t>(sizeof(T)), t.rank()};
  h = fnv1a64(header, sizeof(header), h);
  for (int i = 0; i < t.rank(); ++i) {
    const std::int64_t d = t.dim(i);
    h = fnv1a64(&d, sizeof(d), h);
  }
  return hash_key(fnv1a64(t.data(), sizeof(T) * static_cast<std::size_t>(t.numel()), h));
}

// Key of an extractor's weights: every parameter's name, shape and value bits, in registration order; `tag` names
// the architecture (two networks with equal weights but different wiring must not share a cache).
template <class T>
std::string parameters_key(const ParameterStore<T>& store, const std::string& tag) {
  std::uint64_t h = fnv1a64(tag.data(), tag.size());
  for (const auto& e : store.entries()) {
    h = fnv1a64(e.name.data(), e.name.size() + 1, h);  // with the terminating 0: "ab"+"c" != "a"+"bc"
    for (int i = 0; i < e.shape.rank(); ++i) {
      const std::int64_t d = e.shape[i];
      h = fnv1a64(&d, sizeof(d), h);
    }
    h = fnv1a64(store.values() + e.offset, sizeof(T) * static_cast<std::size_t>(e.shape.numel()), h);
  }
  return hash_key(h);
}

struct ReferenceStats {
  GaussianStats gaussian;
  Tensor<double> features;  // (M', D) reservoir of feature vectors
  Index knn_k = 0;          // k of knn_squared_radii (0: not computed)
  std::vector<double> knn_squared_radii;  // (M') squared distance of each reservoir vector to its k-th neighbour
  std::string dataset_key;
  std::string extractor_key;
  FeatureStatisticsOptions options;
  Index dim() const { return gaussian.dim(); }
};

// Reference statistics from accumulated features, with the k-NN radii of the reservoir for precision (knn_k = 0:
// none; skipped too when the reservoir has k rows or fewer).
inline ReferenceStats make_reference_stats(const FeatureStatistics& stats, std::string dataset_key,
                                           std::string extractor_key, Index knn_k = 3) {
  ReferenceStats r;
  r.gaussian = stats.gaussian();
  r.features = stats.reservoir();
  if (knn_k > 0 && r.features.dim(0) > knn_k) {
    r.knn_k = knn_k;
    r.knn_squared_radii = knn_squared_radii(r.features, knn_k);
  }
  r.dataset_key = std::move(dataset_key);
  r.extractor_key = std::move(extractor_key);
  r.options = stats.options();
  return r;
}

inline void save_reference_stats(const std::string& path, const ReferenceStats& r) {
  const Index D = r.dim();
  DIFFUSION_CHECK(D > 0 && r.gaussian.covariance.shape() == (Shape{D, D}) && r.features.rank() == 2 &&
                      r.features.dim(1) == D,
                  "save_reference_stats '" << path << "': inconsistent shapes: mean " << r.gaussian.mean.shape()
                                           << ", covariance " << r.gaussian.covariance.shape() << ", features "
                                           << r.features.shape());
  io::SafetensorsWriter writer;
  writer.add("mean", r.gaussian.mean);
  writer.add("covariance", r.gaussian.covariance);
  writer.add("features", r.features);
  if (r.knn_k > 0) {
    DIFFUSION_CHECK(static_cast<Index>(r.knn_squared_radii.size()) == r.features.dim(0),
                    "save_reference_stats '" << path << "': " << r.knn_squared_radii.size() << " k-NN radii for "
                                             << r.features.dim(0) << " feature vectors");
    writer.add("knn_squared_radii", Shape{r.features.dim(0)}, r.knn_squared_radii.data());
  }
  const nlohmann::json meta = {{"format", kReferenceStatsFormat},
                               {"knn_k", r.knn_k},
                               {"dataset", r.dataset_key},
                               {"extractor", r.extractor_key},
                               {"count", r.gaussian.count},
                               {"dim", D},
                               {"reservoir_size", r.options.reservoir_size},
                               {"reservoir_seed", r.options.reservoir_seed}};
  writer.add_metadata(kReferenceStatsKey, meta.dump());
  writer.write(path);
}

inline ReferenceStats load_reference_stats(const std::string& path) {
  const io::SafetensorsReader reader(path);
  const std::string where = "reference statistics '" + path + "'";
  const auto it = reader.metadata().find(kReferenceStatsKey);
  DIFFUSION_CHECK(it != reader.metadata().end(), where << ": no '" << kReferenceStatsKey << "' metadata");
  ReferenceStats r;
  Index dim = 0;
  try {
    const nlohmann::json m = nlohmann::json::parse(it->second);
    DIFFUSION_CHECK(m.at("format").get<int>() == kReferenceStatsFormat,
                    where << ": format " << m.at("format").dump() << ", this library reads " << kReferenceStatsFormat);
    r.dataset_key = m.at("dataset").get<std::string>();
    r.extractor_key = m.at("extractor").get<std::string>();
    r.gaussian.count = m.at("count").get<Index>();
    dim = m.at("dim").get<Index>();
    r.options.reservoir_size = m.at("reservoir_size").get<Index>();
    r.options.reservoir_seed = m.at("reservoir_seed").get<std::uint64_t>();
    r.knn_k = m.at("knn_k").get<Index>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": metadata '" + kReferenceStatsKey + "' is not valid (" + e.what() + ")");
  }
  DIFFUSION_CHECK(dim > 0 && r.gaussian.count >= 2, where << ": dim " << dim << " and count " << r.gaussian.count
                                                          << " (need dim > 0, count >= 2)");
  r.gaussian.mean.resize(Shape{dim});
  reader.read_into("mean", Shape{dim}, r.gaussian.mean.data());
  r.gaussian.covariance.resize(Shape{dim, dim});
  reader.read_into("covariance", Shape{dim, dim}, r.gaussian.covariance.data());
  const Shape fs = reader.shape("features");
  DIFFUSION_CHECK(fs.rank() == 2 && fs[1] == dim, where << ": features " << fs << ", expected (M, " << dim << ")");
  r.features.resize(fs);
  reader.read_into("features", fs, r.features.data());
  if (r.knn_k > 0) {
    r.knn_squared_radii.resize(static_cast<std::size_t>(fs[0]));
    reader.read_into("knn_squared_radii", Shape{fs[0]}, r.knn_squared_radii.data());
  }
  return r;
}

enum class CacheStatus { Loaded, Created, Recomputed };

namespace detail {
inline constexpr diffusion::detail::NameEntry<CacheStatus> kCacheStatusNames[] = {
    {CacheStatus::Loaded, "loaded"}, {CacheStatus::Created, "created"}, {CacheStatus::Recomputed, "recomputed"}};
}  // namespace detail

inline const char* cache_status_name(CacheStatus s) { return diffusion::detail::enum_name(detail::kCacheStatusNames, s); }

struct CachedReference {
  ReferenceStats stats;
  CacheStatus status = CacheStatus::Created;
  std::string reason;  // why the file was not used (empty when loaded or when there was no file)
};

// Loads `path` if it holds statistics for exactly (dataset_key, extractor_key, options); otherwise calls
// compute() -> ReferenceStats, writes the result to `path` (atomically) and returns it with the reason.
// An empty path disables the cache (always computes, writes nothing).
template <class Compute>
CachedReference cached_reference_stats(const std::string& path, const std::string& dataset_key,
                                       const std::string& extractor_key, const FeatureStatisticsOptions& options,
                                       Compute&& compute) {
  CachedReference out;
  struct stat st {};
  const bool exists = !path.empty() && ::stat(path.c_str(), &st) == 0;
  if (exists) {
    try {
      ReferenceStats r = load_reference_stats(path);
      if (r.dataset_key != dataset_key) {
        out.reason = "data set key " + r.dataset_key + " != " + dataset_key;
      } else if (r.extractor_key != extractor_key) {
        out.reason = "extractor key " + r.extractor_key + " != " + extractor_key;
      } else if (r.options.reservoir_size != options.reservoir_size ||
                 r.options.reservoir_seed != options.reservoir_seed) {
        out.reason = "reservoir options differ (file: size " + std::to_string(r.options.reservoir_size) + ", seed " +
                     std::to_string(r.options.reservoir_seed) + ")";
      } else {
        out.stats = std::move(r);
        out.status = CacheStatus::Loaded;
        return out;
      }
    } catch (const Error& e) {
      out.reason = std::string("unreadable: ") + e.what();
    }
  }
  out.stats = compute();
  DIFFUSION_CHECK(out.stats.dataset_key == dataset_key && out.stats.extractor_key == extractor_key,
                  "cached_reference_stats: compute() returned statistics keyed (" << out.stats.dataset_key << ", "
                                                                                  << out.stats.extractor_key
                                                                                  << "), expected (" << dataset_key
                                                                                  << ", " << extractor_key << ")");
  out.status = exists ? CacheStatus::Recomputed : CacheStatus::Created;
  if (!path.empty()) save_reference_stats(path, out.stats);
  return out;
}

}  // namespace diffusion::metrics
