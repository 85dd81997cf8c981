#pragma once
// Pooling layers without parameters, PyTorch's nn.MaxPool2d, nn.AvgPool2d (ceil_mode = False) and
// nn.AdaptiveAvgPool2d((1, 1)), square windows. Kernels and their tie/padding rules: kernels/pooling.hpp.
// Contract as in conv2d.hpp: forward(x, y) assigns y; backward(x, dy, dx) accumulates into dx (may be null).
//   MaxPool2d(kernel, stride = kernel, padding = 0)                   (N, C, H, W) -> (N, C, OH, OW)
//   AvgPool2d(kernel, stride = kernel, padding = 0, count_include_pad = true)
//   GlobalAvgPool2d                                                   (N, C, H, W) -> (N, C, 1, 1)
// PyTorch requires padding <= kernel / 2 (every window then covers at least one input element); so do these.

#include "diffusion/core/tensor.hpp"
#include "diffusion/kernels/pooling.hpp"

namespace diffusion::nn {

namespace detail {

inline void check_pool_arguments(const char* layer, Index kernel, Index stride, Index padding) {
  DIFFUSION_CHECK(kernel > 0 && stride > 0 && padding >= 0 && 2 * padding <= kernel,
                  layer << ": invalid kernel_size " << kernel << ", stride " << stride << ", padding " << padding
                        << " (need kernel_size > 0, stride > 0, 0 <= padding <= kernel_size / 2)");
}

inline kernels::Pool2dGeometry pool_geometry(const char* layer, const Shape& x, Index kernel, Index stride,
                                             Index padding, bool count_include_pad) {
  DIFFUSION_CHECK(x.rank() == 4, layer << ": input must be (N, C, H, W), got " << x);
  const kernels::Pool2dGeometry g =
      kernels::Pool2dGeometry::make(x[0], x[1], x[2], x[3], kernel, stride, padding, count_include_pad);
  DIFFUSION_CHECK(x[2] + 2 * padding >= kernel && x[3] + 2 * padding >= kernel,
                  layer << ": input " << x << " is smaller than the window " << kernel << " with padding " << padding);
  return g;
}

inline Shape pool_output_shape(const kernels::Pool2dGeometry& g) {
  return Shape{g.batch, g.channels, g.out_height, g.out_width};
}

}  // namespace detail

template <class T>
class MaxPool2d {
 public:
  explicit MaxPool2d(Index kernel_size, Index stride = 0, Index padding = 0)
      : kernel_(kernel_size), stride_(stride > 0 ? stride : kernel_size), padding_(padding) {
    detail::check_pool_arguments("MaxPool2d", kernel_, stride_, padding_);
  }
  Shape output_shape(const Shape& x) const { return detail::pool_output_shape(geometry(x)); }

  void forward(const Tensor<T>& x, Tensor<T>& y) const {
    const kernels::Pool2dGeometry g = geometry(x.shape());
    y.resize(detail::pool_output_shape(g));
    kernels::max_pool2d_forward(g, x.data(), y.data());
  }
  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) const {
    const kernels::Pool2dGeometry g = geometry(x.shape());
    check_shape(dy, detail::pool_output_shape(g), "MaxPool2d backward: dy");
    if (!dx) return;
    check_shape(*dx, x.shape(), "MaxPool2d backward: dx");
    kernels::max_pool2d_backward(g, x.data(), dy.data(), dx->data());
  }

 private:
  kernels::Pool2dGeometry geometry(const Shape& x) const {
    return detail::pool_geometry("MaxPool2d", x, kernel_, stride_, padding_, true);
  }
  Index kernel_, stride_, padding_;
};

template <class T>
class AvgPool2d {
 public:
  explicit AvgPool2d(Index kernel_size, Index stride = 0, Index padding = 0, bool count_include_pad = true)
      : kernel_(kernel_size), stride_(stride > 0 ? stride : kernel_size), padding_(padding),
        count_include_pad_(count_include_pad) {
    detail::check_pool_arguments("AvgPool2d", kernel_, stride_, padding_);
  }
  Shape output_shape(const Shape& x) const { return detail::pool_output_shape(geometry(x)); }

  void forward(const Tensor<T>& x, Tensor<T>& y) const {
    const kernels::Pool2dGeometry g = geometry(x.shape());
    y.resize(detail::pool_output_shape(g));
    kernels::avg_pool2d_forward(g, x.data(), y.data());
  }
  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) const {
    const kernels::Pool2dGeometry g = geometry(x.shape());
    check_shape(dy, detail::pool_output_shape(g), "AvgPool2d backward: dy");
    if (!dx) return;
    check_shape(*dx, x.shape(), "AvgPool2d backward: dx");
    kernels::avg_pool2d_backward(g, dy.data(), dx->data());
  }

 private:
  kernels::Pool2dGeometry geometry(const Shape& x) const {
    return detail::pool_geometry("AvgPool2d", x, kernel_, stride_, padding_, count_include_pad_);
  }
  Index kernel_, stride_, padding_;
  bool count_include_pad_;
};

template <class T>
struct GlobalAvgPool2d {
  void forward(const Tensor<T>& x, Tensor<T>& y) const {
    DIFFUSION_CHECK(x.rank() == 4, "GlobalAvgPool2d: input must be (N, C, H, W), got " << x.shape());
    y.resize(Shape{x.dim(0), x.dim(1), 1, 1});
    kernels::global_avg_pool_forward(x.dim(0) * x.dim(1), x.dim(2) * x.dim(3), x.data(), y.data());
  }
  void backward(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx) const {
    DIFFUSION_CHECK(x.rank() == 4, "GlobalAvgPool2d backward: input must be (N, C, H, W), got " << x.shape());
    check_shape(dy, Shape{x.dim(0), x.dim(1), 1, 1}, "GlobalAvgPool2d backward: dy");
    if (!dx) return;
    check_shape(*dx, x.shape(), "GlobalAvgPool2d backward: dx");
    kernels::global_avg_pool_backward(x.dim(0) * x.dim(1), x.dim(2) * x.dim(3), dy.data(), dx->data());
  }
};

}  // namespace diffusion::nn
