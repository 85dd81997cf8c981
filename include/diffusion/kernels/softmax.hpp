#pragma once
// Softmax kernels along the rows or the columns of a row-major (rows, cols) matrix, as the attention layers need:
// full attention normalises each row of the similarity matrix, linear attention normalises q over its feature
// dimension (columns of the (d, P) block) and k over positions (rows). The maximum is subtracted first (the
// reference's `sim - amax`), exponentials are in the scalar type, sums in double.
//   softmax_*:          y ASSIGNED (in place allowed)
//   softmax_*_backward: dx ASSIGNED: dx = y * (dy - sum(y * dy))

#include <algorithm>
#include <cmath>
#include <vector>

#include "diffusion/kernels/dispatch.hpp"
#include "diffusion/kernels/simd.hpp"

namespace diffusion::kernels {

// Each row of x (rows, cols) -> softmax over that row.
template <class T>
void softmax_rows(Index rows, Index cols, const T* x, T* y) {
  for (Index r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    T mx = xr[0];
    for (Index c = 1; c < cols; ++c) mx = std::max(mx, xr[c]);
    if (reference_kernels()) {
      for (Index c = 0; c < cols; ++c) yr[c] = std::exp(xr[c] - mx);
    } else {
      const Batch<T> vm(mx);
      simd_map(cols, xr, yr, [&](Batch<T> v) { return xsimd::exp(v - vm); });
    }
    double sum = 0.0;
    for (Index c = 0; c < cols; ++c) sum += static_cast<double>(yr[c]);
    const T inv = static_cast<T>(1.0 / sum);
    for (Index c = 0; c < cols; ++c) yr[c] *= inv;
  }
}

template <class T>
void softmax_rows_backward(Index rows, Index cols, const T* y, const T* dy, T* dx) {
  for (Index r = 0; r < rows; ++r) {
    const T* yr = y + r * cols;
    const T* dr = dy + r * cols;
    double dot = 0.0;
    for (Index c = 0; c < cols; ++c) dot += static_cast<double>(yr[c]) * static_cast<double>(dr[c]);
    const T d = static_cast<T>(dot);
    T* xr = dx + r * cols;
    for (Index c = 0; c < cols; ++c) xr[c] = yr[c] * (dr[c] - d);
  }
}

// Each column of x (rows, cols) -> softmax over that column. Works row by row (contiguous) with per-column
// accumulators; `work` needs 2 * cols doubles. The exponentials of a row are one SIMD pass against the row of
// column maxima.
template <class T>
void softmax_cols(Index rows, Index cols, const T* x, T* y, double* work) {
  // Column maxima in T (stored at the start of `work`, which has room for 2 * cols doubles >= cols T's), sums in
  // double after them.
  T* mx = reinterpret_cast<T*>(work);
  double* sum = work + cols;
  for (Index c = 0; c < cols; ++c) mx[c] = x[c], sum[c] = 0.0;
  for (Index r = 1; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) mx[c] = std::max(mx[c], x[r * cols + c]);
  for (Index r = 0; r < rows; ++r) {
    T* yr = y + r * cols;
    if (reference_kernels()) {
      for (Index c = 0; c < cols; ++c) yr[c] = std::exp(x[r * cols + c] - mx[c]);
    } else {
      std::copy(mx, mx + cols, yr);
      simd_map3(cols, x + r * cols, x + r * cols, yr, [](Batch<T> v, Batch<T>, Batch<T> m) { return xsimd::exp(v - m); });
    }
    for (Index c = 0; c < cols; ++c) sum[c] += static_cast<double>(yr[c]);
  }
  for (Index c = 0; c < cols; ++c) mx[c] = static_cast<T>(1.0 / sum[c]);  // reuse: inverse sums
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) y[r * cols + c] *= mx[c];
}

// `work` needs cols doubles.
template <class T>
void softmax_cols_backward(Index rows, Index cols, const T* y, const T* dy, T* dx, double* work) {
  double* dot = work;
  for (Index c = 0; c < cols; ++c) dot[c] = 0.0;
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c)
      dot[c] += static_cast<double>(y[r * cols + c]) * static_cast<double>(dy[r * cols + c]);
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c)
      dx[r * cols + c] = y[r * cols + c] * (dy[r * cols + c] - static_cast<T>(dot[c]));
}

}  // namespace diffusion::kernels
