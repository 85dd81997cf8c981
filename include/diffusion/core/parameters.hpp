#pragma once
// ParameterStore<T>: every trainable tensor of a model, by name, in one flat buffer of values and one of gradients
// (llm.c style), so that zeroing gradients, optimizer steps, EMA and gradient norms are single loops.
//
// Layers register their parameters at construction with the name PyTorch's state_dict() would give them
// ("downs.0.0.ds_conv.weight") and keep a Ref. Values are initialised on registration from a counter-based stream
// keyed by (seed, name): the initial weights do not depend on construction order or threads. Each tensor starts on
// a 64-byte boundary; the padding between tensors stays zero in values and gradients.

#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "diffusion/core/aligned_buffer.hpp"
#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/core/shape.hpp"

namespace diffusion {

// How a parameter is initialised: PyTorch's defaults are uniform(-bound, bound) for conv/linear weights and biases
// (bound = 1/sqrt(fan_in)), ones and zeros for normalisation scales and shifts, N(0, 1) for nn.Embedding weights
// and torch.randn parameters (Normal: bound is the standard deviation).
struct Init {
  enum class Kind { Zeros, Ones, Uniform, Normal };
  Kind kind = Kind::Zeros;
  double bound = 0.0;
  static Init zeros() { return {Kind::Zeros, 0.0}; }
  static Init ones() { return {Kind::Ones, 0.0}; }
  static Init uniform(double bound) { return {Kind::Uniform, bound}; }
  static Init normal(double stddev) { return {Kind::Normal, stddev}; }
};

// "a" + "b" -> "a.b"; an empty prefix adds nothing.
inline std::string join_name(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// FNV-1a: a stable hash of a parameter name, used to key its initialisation stream.
inline std::uint64_t stable_hash(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

// Checks that `actual` lists the parameters of `expected`: the same count, and entry by entry the same name and
// shape (so the same offsets: the layout is a function of the list). Throws "<what>: ..." naming the first
// difference. Used wherever flat values move between stores or averages (copies, EMA, checkpoints).
template <class Entry>
void check_same_parameters(const std::vector<Entry>& expected, const std::vector<Entry>& actual,
                           const std::string& what) {
  const std::size_t n = std::min(expected.size(), actual.size());
  for (std::size_t i = 0; i < n; ++i) {
    DIFFUSION_CHECK(expected[i].name == actual[i].name,
                    what << ": parameter " << i << " is '" << actual[i].name << "' here but '" << expected[i].name
                         << "' in the source");
    DIFFUSION_CHECK(expected[i].shape == actual[i].shape,
                    what << ": parameter '" << actual[i].name << "' has shape " << actual[i].shape << " here but "
                         << expected[i].shape << " in the source");
  }
  DIFFUSION_CHECK(expected.size() == actual.size(),
                  what << ": the source has " << expected.size() << " parameters, here there are " << actual.size()
                       << (expected.size() > actual.size() ? " (first missing: '" + expected[n].name + "')"
                                                           : " (first extra: '" + actual[n].name + "')"));
}

template <class T>
class ParameterStore {
 public:
  struct Entry {
    std::string name;
    Shape shape;
    std::size_t offset;  // first element in values()/grads()
    Init init;
  };
  // A handle to one registered parameter; stays valid while the store grows.
  struct Ref {
    std::size_t index = static_cast<std::size_t>(-1);
    bool valid() const { return index != static_cast<std::size_t>(-1); }
  };

  explicit ParameterStore(std::uint64_t seed = 0) : seed_(seed) {}
  ParameterStore(const ParameterStore&) = delete;  // layers hold references to their store
  ParameterStore& operator=(const ParameterStore&) = delete;

  Ref add(const std::string& name, const Shape& shape, Init init) {
    DIFFUSION_CHECK(!name.empty(), "ParameterStore::add: empty parameter name");
    DIFFUSION_CHECK(by_name_.count(name) == 0, "ParameterStore::add: parameter '" << name << "' registered twice");
    constexpr std::size_t kPad = kAlignment / sizeof(T) > 0 ? kAlignment / sizeof(T) : 1;
    const std::size_t offset = (size_ + kPad - 1) / kPad * kPad;
    const std::size_t n = static_cast<std::size_t>(shape.numel());
    const std::size_t end = offset + n;
    grow(end);
    entries_.push_back({name, shape, offset, init});
    by_name_[name] = entries_.size() - 1;
    size_ = end;
    initialize_entry(entries_.back());
    return Ref{entries_.size() - 1};
  }

  T* value(Ref r) { return values_.data() + entries_[r.index].offset; }
  const T* value(Ref r) const { return values_.data() + entries_[r.index].offset; }
  T* grad(Ref r) { return grads_.data() + entries_[r.index].offset; }
  const T* grad(Ref r) const { return grads_.data() + entries_[r.index].offset; }
  const Entry& entry(Ref r) const { return entries_[r.index]; }

  const std::vector<Entry>& entries() const { return entries_; }
  // The entry named `name`, or nullptr.
  const Entry* find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &entries_[it->second];
  }

  // Flat buffers of size() elements: every parameter plus zero padding.
  std::size_t size() const { return size_; }
  T* values() { return values_.data(); }
  const T* values() const { return values_.data(); }
  T* grads() { return grads_.data(); }
  const T* grads() const { return grads_.data(); }
  // Copies every value and gradient of `other`, a store with the same parameters (names and shapes, in the same
  // order: e.g. the store of another network built from the same config); throws naming the first difference.
  void copy_from(const ParameterStore& other) {
    check_same_parameters(other.entries(), entries_, "ParameterStore::copy_from");
    std::copy(other.values_.data(), other.values_.data() + size_, values_.data());
    std::copy(other.grads_.data(), other.grads_.data() + size_, grads_.data());
  }
  // Number of trainable scalars (without padding).
  std::size_t count() const {
    std::size_t n = 0;
    for (const Entry& e : entries_) n += static_cast<std::size_t>(e.shape.numel());
    return n;
  }

  void zero_grad() {
    parallel_zero(grads_.data(), size_);
  }
  // Redraws every parameter from `seed` (as if the model had been built with it).
  void initialize(std::uint64_t seed) {
    seed_ = seed;
    for (const Entry& e : entries_) initialize_entry(e);
  }
  std::uint64_t seed() const { return seed_; }

 private:
  void grow(std::size_t n) {
    const std::size_t old = values_.size();
    if (n <= old) return;
    std::size_t cap = values_.capacity();
    if (n > cap) {
      cap = std::max(n, cap * 2);
      values_.reserve(cap);
      grads_.reserve(cap);
    }
    values_.resize(n);
    grads_.resize(n);
    for (std::size_t i = old; i < n; ++i) values_[i] = grads_[i] = T(0);
  }

  void initialize_entry(const Entry& e) {
    T* v = values_.data() + e.offset;
    const Index n = e.shape.numel();
    switch (e.init.kind) {
      case Init::Kind::Zeros:
        for (Index i = 0; i < n; ++i) v[i] = T(0);
        break;
      case Init::Kind::Ones:
        for (Index i = 0; i < n; ++i) v[i] = T(1);
        break;
      case Init::Kind::Uniform: {
        Rng rng = Rng(seed_).fork(stable_hash(e.name));
        rng.uniform(v, n, -e.init.bound, e.init.bound);
        break;
      }
      case Init::Kind::Normal: {
        Rng rng = Rng(seed_).fork(stable_hash(e.name));
        rng.normal(v, n);
        for (Index i = 0; i < n; ++i) v[i] = static_cast<T>(static_cast<double>(v[i]) * e.init.bound);
        break;
      }
    }
  }

  std::uint64_t seed_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, std::size_t> by_name_;
  AlignedBuffer<T> values_, grads_;
  std::size_t size_ = 0;
};

}  // namespace diffusion
