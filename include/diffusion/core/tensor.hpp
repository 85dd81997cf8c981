#pragma once
// TensorView<T>: a read-only, non-owning view of a dense, row-major array with a Shape (Eigen's Map, std::span):
// what a function that only reads takes, so that data in the caller's own buffer needs no copy. The viewed memory
// must outlive the view and stay unchanged while it is read.
//
// Tensor<T>: a dense, contiguous, row-major array with a Shape, stored in 64-byte aligned memory. A Tensor is a
// TensorView of its own memory (public base), so it passes wherever a view is taken, template deduction included.
//
// Tensors own their memory and only grow it: resize() to a smaller or equal size keeps the allocation, so a
// layer's buffers, sized on the first batch, are reused by every later batch of the same (or smaller) size.
// Images are (N, C, H, W); element (n, c, h, w) lives at ((n * C + c) * H + h) * W + w.

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "diffusion/core/aligned_buffer.hpp"
#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/core/shape.hpp"

namespace diffusion {

template <class T>
class TensorView {
 public:
  using Scalar = T;

  TensorView() = default;
  // Views numel(shape) elements at `data` (the caller's buffer; nullptr only with an empty shape).
  TensorView(const T* data, const Shape& shape) : data_(data), shape_(shape) {
    DIFFUSION_CHECK(data != nullptr || shape.numel() == 0, "TensorView: null data for shape " << shape);
  }

  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  Index dim(int i) const { return shape_[i]; }
  Index numel() const { return shape_.numel(); }
  bool empty() const { return numel() == 0; }

  const T* data() const { return data_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + numel(); }
  const T& operator[](Index i) const { return data_[i]; }
  // Element access for rank-4 (N, C, H, W) data; for tests and reference code, not hot loops.
  const T& at(Index n, Index c, Index h, Index w) const { return data_[offset(n, c, h, w)]; }

 protected:
  Index offset(Index n, Index c, Index h, Index w) const {
    return ((n * shape_[1] + c) * shape_[2] + h) * shape_[3] + w;
  }

  const T* data_ = nullptr;  // Tensor keeps it equal to its storage
  Shape shape_;
};

template <class T>
class Tensor : public TensorView<T> {
  using View = TensorView<T>;

 public:
  Tensor() = default;
  // A zero-filled tensor of the given shape.
  explicit Tensor(const Shape& shape) {
    resize(shape);
    zero();
  }
  Tensor(const Shape& shape, T value) {
    resize(shape);
    fill(value);
  }
  Tensor(const Tensor& other) : View(), storage_(other.storage_) {
    this->shape_ = other.shape_;
    this->data_ = storage_.data();
  }
  Tensor(Tensor&& other) noexcept : View() { swap(other); }
  Tensor& operator=(const Tensor& other) {
    if (this != &other) {
      storage_ = other.storage_;
      this->shape_ = other.shape_;
      this->data_ = storage_.data();
    }
    return *this;
  }
  Tensor& operator=(Tensor&& other) noexcept {
    swap(other);
    return *this;
  }

  // Factories: a tensor of `shape` filled with zeros, with `value`, with N(0, 1) draws or with uniform draws in
  // [lo, hi) from `rng` (in element order; rng advances as Rng::normal / Rng::uniform over numel elements).
  static Tensor zeros(const Shape& shape) { return Tensor(shape); }
  static Tensor full(const Shape& shape, T value) { return Tensor(shape, value); }
  static Tensor normal(const Shape& shape, Rng& rng) {
    Tensor t;
    t.resize(shape);
    rng.normal(t.data(), t.numel());
    return t;
  }
  static Tensor normal(const Shape& shape, Rng&& rng) { return normal(shape, rng); }
  static Tensor uniform(const Shape& shape, Rng& rng, double lo, double hi) {
    Tensor t;
    t.resize(shape);
    rng.uniform(t.data(), t.numel(), lo, hi);
    return t;
  }
  static Tensor uniform(const Shape& shape, Rng&& rng, double lo, double hi) { return uniform(shape, rng, lo, hi); }
  // A copy of the viewed data.
  static Tensor copy_of(TensorView<T> view) {
    Tensor t;
    t.copy_from(view);
    return t;
  }

  // Sets the shape. Contents are unspecified afterwards (not zeroed); memory is reused when large enough.
  void resize(const Shape& shape) {
    this->shape_ = shape;
    storage_.resize(static_cast<std::size_t>(shape.numel()));
    this->data_ = storage_.data();
  }
  // Sets the shape only if it differs; returns true when it changed.
  bool ensure_shape(const Shape& shape) {
    if (shape == this->shape_ && storage_.size() == static_cast<std::size_t>(shape.numel())) return false;
    resize(shape);
    return true;
  }
  // Same number of elements, new dimensions (a view change, no data movement).
  void reshape(const Shape& shape) {
    DIFFUSION_CHECK(shape.numel() == this->shape_.numel(),
                    "Tensor::reshape: cannot view " << this->shape_ << " as " << shape);
    this->shape_ = shape;
  }

  using View::data;
  using View::begin;
  using View::end;
  using View::operator[];
  using View::at;
  T* data() { return storage_.data(); }
  T* begin() { return data(); }
  T* end() { return data() + this->numel(); }
  T& operator[](Index i) { return storage_[static_cast<std::size_t>(i)]; }
  T& at(Index n, Index c, Index h, Index w) { return data()[this->offset(n, c, h, w)]; }

  void zero() {
    if (this->numel() > 0) parallel_zero(data(), static_cast<std::size_t>(this->numel()));
  }
  void fill(T value) { std::fill(begin(), end(), value); }
  // Resizes to the other's shape and copies its elements (any view, e.g. a caller's buffer; not overlapping).
  void copy_from(TensorView<T> other) {
    resize(other.shape());
    if (this->numel() > 0 && other.data() != nullptr)
      std::memcpy(data(), other.data(), sizeof(T) * static_cast<std::size_t>(this->numel()));
  }

  void swap(Tensor& other) noexcept {
    std::swap(this->shape_, other.shape_);
    storage_.swap(other.storage_);
    this->data_ = storage_.data();
    other.data_ = other.storage_.data();
  }

 private:
  AlignedBuffer<T> storage_;
};

// Throws unless `t` has exactly `expected` as its shape; `what` names the caller and argument.
template <class T>
void check_shape(const TensorView<T>& t, const Shape& expected, const char* what) {
  DIFFUSION_CHECK(t.shape() == expected, what << ": expected shape " << expected << ", got " << t.shape());
}

// The same for a named layer: "<layer> '<name>' <what>: expected shape ..., got ...". The message is only built on
// failure (no allocation on the hot path).
template <class T>
void check_shape(const TensorView<T>& t, const Shape& expected, const char* layer, const std::string& name,
                 const char* what) {
  DIFFUSION_CHECK(t.shape() == expected, layer << " '" << name << "' " << what << ": expected shape " << expected
                                               << ", got " << t.shape());
}

}  // namespace diffusion
