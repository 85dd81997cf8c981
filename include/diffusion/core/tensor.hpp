#pragma once
// Tensor<T>: a dense, contiguous, row-major array with a Shape, stored in 64-byte aligned memory.
//
// Tensors own their memory and only grow it: resize() to a smaller or equal size keeps the allocation, so a
// layer's buffers, sized on the first batch, are reused by every later batch of the same (or smaller) size.
// Images are (N, C, H, W); element (n, c, h, w) lives at ((n * C + c) * H + h) * W + w.

#include <algorithm>
#include <cstring>
#include <string>

#include "diffusion/core/aligned_buffer.hpp"
#include "diffusion/core/error.hpp"
#include "diffusion/core/shape.hpp"

namespace diffusion {

template <class T>
class Tensor {
 public:
  using Scalar = T;

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

  // Sets the shape. Contents are unspecified afterwards (not zeroed); memory is reused when large enough.
  void resize(const Shape& shape) {
    shape_ = shape;
    storage_.resize(static_cast<std::size_t>(shape.numel()));
  }
  // Sets the shape only if it differs; returns true when it changed.
  bool ensure_shape(const Shape& shape) {
    if (shape == shape_ && storage_.size() == static_cast<std::size_t>(shape.numel())) return false;
    resize(shape);
    return true;
  }
  // Same number of elements, new dimensions (a view change, no data movement).
  void reshape(const Shape& shape) {
    DIFFUSION_CHECK(shape.numel() == shape_.numel(),
                    "Tensor::reshape: cannot view " << shape_ << " as " << shape);
    shape_ = shape;
  }

  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  Index dim(int i) const { return shape_[i]; }
  Index numel() const { return shape_.numel(); }
  bool empty() const { return numel() == 0; }

  T* data() { return storage_.data(); }
  const T* data() const { return storage_.data(); }
  T* begin() { return data(); }
  T* end() { return data() + numel(); }
  const T* begin() const { return data(); }
  const T* end() const { return data() + numel(); }
  T& operator[](Index i) { return storage_[static_cast<std::size_t>(i)]; }
  const T& operator[](Index i) const { return storage_[static_cast<std::size_t>(i)]; }

  // Element access for rank-4 (N, C, H, W) tensors; for tests and reference code, not hot loops.
  T& at(Index n, Index c, Index h, Index w) { return data()[offset(n, c, h, w)]; }
  const T& at(Index n, Index c, Index h, Index w) const { return data()[offset(n, c, h, w)]; }

  void zero() {
    if (numel() > 0) std::memset(data(), 0, sizeof(T) * static_cast<std::size_t>(numel()));
  }
  void fill(T value) { std::fill(begin(), end(), value); }
  void copy_from(const Tensor& other) {
    resize(other.shape());
    if (numel() > 0) std::memcpy(data(), other.data(), sizeof(T) * static_cast<std::size_t>(numel()));
  }

 private:
  Index offset(Index n, Index c, Index h, Index w) const {
    return ((n * shape_[1] + c) * shape_[2] + h) * shape_[3] + w;
  }

  Shape shape_;
  AlignedBuffer<T> storage_;
};

// Throws unless `t` has exactly `expected` as its shape; `what` names the caller and argument.
template <class T>
void check_shape(const Tensor<T>& t, const Shape& expected, const char* what) {
  DIFFUSION_CHECK(t.shape() == expected, what << ": expected shape " << expected << ", got " << t.shape());
}

// The same for a named layer: "<layer> '<name>' <what>: expected shape ..., got ...". The message is only built on
// failure (no allocation on the hot path).
template <class T>
void check_shape(const Tensor<T>& t, const Shape& expected, const char* layer, const std::string& name,
                 const char* what) {
  DIFFUSION_CHECK(t.shape() == expected, layer << " '" << name << "' " << what << ": expected shape " << expected
                                               << ", got " << t.shape());
}

}  // namespace diffusion
