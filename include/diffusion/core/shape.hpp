#pragma once
// Shape: the dimensions of a tensor, rank 0 to 4, outermost first. Images are NCHW: (N, C, H, W).

#include <array>
#include <cstddef>
#include <initializer_list>
#include <ostream>
#include <sstream>
#include <string>

#include "diffusion/core/error.hpp"

namespace diffusion {

using Index = std::ptrdiff_t;

class Shape {
 public:
  static constexpr int kMaxRank = 4;

  Shape() = default;
  Shape(std::initializer_list<Index> dims) {
    DIFFUSION_CHECK(dims.size() <= static_cast<std::size_t>(kMaxRank),
                    "Shape: rank " << dims.size() << " exceeds the maximum of " << kMaxRank);
    for (Index d : dims) {
      DIFFUSION_CHECK(d >= 0, "Shape: negative dimension " << d);
      dims_[rank_++] = d;
    }
  }

  int rank() const { return rank_; }
  Index operator[](int i) const { return dims_[i]; }
  Index& operator[](int i) { return dims_[i]; }
  Index numel() const {
    Index n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[i];
    return n;
  }

  friend bool operator==(const Shape& a, const Shape& b) {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a.dims_[i] != b.dims_[i]) return false;
    return true;
  }
  friend bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }

  // "(2, 3, 7, 7)": the form used in every error message.
  std::string str() const {
    std::ostringstream s;
    s << *this;
    return s.str();
  }
  friend std::ostream& operator<<(std::ostream& os, const Shape& s) {
    os << '(';
    for (int i = 0; i < s.rank_; ++i) os << (i ? ", " : "") << s.dims_[i];
    return os << ')';
  }

 private:
  std::array<Index, kMaxRank> dims_{};
  int rank_ = 0;
};

}  // namespace diffusion
