#pragma once
// 8-bit images: a grid of model samples, PNG output and input (through stb, see stb.hpp).
//
// Image8: width x height pixels of `channels` interleaved bytes, rows top to bottom: pixels[(y * width + x) *
//   channels + c].
// image_grid(images, columns, padding, pad_value)
//   requires: images (N, C, H, W) with N >= 1, C = 1 or 3; values meant to lie in [-1, 1]; columns >= 1,
//             padding >= 0.
//   ensures:  the layout of torchvision.utils.make_grid: min(columns, N) images per row, ceil(N / columns) rows,
//             `padding` pixels of pad_value around and between images; each value x is clamped to [-1, 1] and
//             stored as floor((x + 1) / 2 * 255 + 0.5) (torchvision's save_image rounding); NaN becomes 0.
// write_png(path, image): PNG encoded in memory, then written atomically; Error naming the path on failure.
// read_png(path): decodes a PNG (8-bit; 16-bit PNGs are reduced to 8 bits by stb) with its stored channels.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/io/atomic_file.hpp"
#include "diffusion/io/stb.hpp"

namespace diffusion::io {

struct Image8 {
  int width = 0;
  int height = 0;
  int channels = 0;                  // 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA
  std::vector<std::uint8_t> pixels;  // (height, width, channels)

  std::uint8_t& at(int y, int x, int c = 0) { return pixels[index(y, x, c)]; }
  std::uint8_t at(int y, int x, int c = 0) const { return pixels[index(y, x, c)]; }

 private:
  std::size_t index(int y, int x, int c) const {
    return (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x)) *
               static_cast<std::size_t>(channels) +
           static_cast<std::size_t>(c);
  }
};

// One value in [-1, 1] to a byte, as torchvision's save_image(normalize to [0, 1]) does.
template <class T>
std::uint8_t to_byte(T x) {
  const double v = static_cast<double>(x);
  if (std::isnan(v)) return 0;
  const double clamped = std::min(1.0, std::max(-1.0, v));
  return static_cast<std::uint8_t>(std::floor((clamped + 1.0) * 0.5 * 255.0 + 0.5));
}

template <class T>
Image8 image_grid(TensorView<T> images, int columns, int padding = 2, std::uint8_t pad_value = 0) {
  DIFFUSION_CHECK(images.rank() == 4, "image_grid: images must be (N, C, H, W), got " << images.shape());
  const Index N = images.dim(0), C = images.dim(1), H = images.dim(2), W = images.dim(3);
  DIFFUSION_CHECK(N >= 1, "image_grid: no images in " << images.shape());
  DIFFUSION_CHECK(C == 1 || C == 3, "image_grid: C must be 1 or 3, got " << images.shape());
  DIFFUSION_CHECK(columns >= 1, "image_grid: columns must be >= 1, got " << columns);
  DIFFUSION_CHECK(padding >= 0, "image_grid: padding must be >= 0, got " << padding);
  const Index cols = std::min<Index>(columns, N);
  const Index rows = (N + cols - 1) / cols;
  const Index width = cols * (W + padding) + padding;
  const Index height = rows * (H + padding) + padding;
  DIFFUSION_CHECK(width <= 1 << 20 && height <= 1 << 20,
                  "image_grid: a " << width << " x " << height << " grid is too large");
  Image8 grid;
  grid.width = static_cast<int>(width);
  grid.height = static_cast<int>(height);
  grid.channels = static_cast<int>(C);
  grid.pixels.assign(static_cast<std::size_t>(width * height * C), pad_value);
  const T* src = images.data();  // (N, C, H, W)
  for (Index n = 0; n < N; ++n) {
    const Index y0 = (n / cols) * (H + padding) + padding;
    const Index x0 = (n % cols) * (W + padding) + padding;
    for (Index c = 0; c < C; ++c)
      for (Index h = 0; h < H; ++h)
        for (Index w = 0; w < W; ++w)
          grid.pixels[static_cast<std::size_t>(((y0 + h) * width + (x0 + w)) * C + c)] =
              to_byte(src[((n * C + c) * H + h) * W + w]);
  }
  return grid;
}

inline void write_png(const std::string& path, const Image8& image) {
  DIFFUSION_CHECK(image.width > 0 && image.height > 0 && image.channels >= 1 && image.channels <= 4,
                  "write_png '" << path << "': bad image " << image.width << " x " << image.height << " x "
                                << image.channels);
  DIFFUSION_CHECK(image.pixels.size() == static_cast<std::size_t>(image.width) *
                                             static_cast<std::size_t>(image.height) *
                                             static_cast<std::size_t>(image.channels),
                  "write_png '" << path << "': " << image.pixels.size() << " pixel bytes for a " << image.width
                                << " x " << image.height << " x " << image.channels << " image");
  std::vector<std::uint8_t> png;
  const auto append = [](void* context, void* data, int size) {
    auto* out = static_cast<std::vector<std::uint8_t>*>(context);
    const auto* bytes = static_cast<const std::uint8_t*>(data);
    out->insert(out->end(), bytes, bytes + size);
  };
  const int ok = stbi_write_png_to_func(append, &png, image.width, image.height, image.channels,
                                        image.pixels.data(), image.width * image.channels);
  DIFFUSION_CHECK(ok != 0 && !png.empty(), "write_png '" << path << "': PNG encoding failed");
  write_file_atomically(path, png.data(), png.size());
}

inline Image8 read_png(const std::string& path) {
  const std::vector<std::uint8_t> bytes = read_file(path, std::uint64_t{1} << 30);
  DIFFUSION_CHECK(bytes.size() <= static_cast<std::size_t>(INT32_MAX), "read_png '" << path << "': file too large");
  int w = 0, h = 0, c = 0;
  stbi_uc* decoded = stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &w, &h, &c, 0);
  DIFFUSION_CHECK(decoded != nullptr, "read_png '" << path << "': cannot decode: " << stbi_failure_reason());
  Image8 image;
  image.width = w;
  image.height = h;
  image.channels = c;
  image.pixels.assign(decoded, decoded + static_cast<std::size_t>(w) * static_cast<std::size_t>(h) *
                                             static_cast<std::size_t>(c));
  stbi_image_free(decoded);
  return image;
}

}  // namespace diffusion::io
