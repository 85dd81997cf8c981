#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "diffusion/io/image.hpp"
#include "io/io_test_util.hpp"

using diffusion::Error;
using diffusion::Index;
using diffusion::Shape;
using diffusion::Tensor;
using namespace diffusion::io;

// Defined in test_image_second_tu.cpp: proves image.hpp (and its stb implementation) links in two translation units.
std::vector<std::uint8_t> encode_and_decode_in_another_translation_unit(const std::string& path);

TEST_CASE("to_byte maps [-1, 1] like torchvision's save_image, clamps, and sends NaN to 0") {
  REQUIRE(to_byte(-1.0f) == 0);
  REQUIRE(to_byte(1.0f) == 255);
  REQUIRE(to_byte(0.0f) == 128);  // 127.5 + 0.5
  REQUIRE(to_byte(-3.0) == 0);
  REQUIRE(to_byte(7.0) == 255);
  REQUIRE(to_byte(std::numeric_limits<float>::infinity()) == 255);
  REQUIRE(to_byte(-std::numeric_limits<float>::infinity()) == 0);
  REQUIRE(to_byte(std::numeric_limits<float>::quiet_NaN()) == 0);
  // Every byte value survives the trip byte -> [-1, 1] -> byte.
  for (int p = 0; p < 256; ++p) {
    CAPTURE(p);
    REQUIRE(to_byte(static_cast<float>(p) / 255.0f * 2.0f - 1.0f) == p);
  }
}

TEST_CASE("image_grid lays images out like make_grid") {
  // 5 gray images of 2 x 3, 2 columns, padding 1: 3 rows, the last with one image.
  const Index N = 5, C = 1, H = 2, W = 3;
  Tensor<float> images(Shape{N, C, H, W});  // (N, C, H, W)
  for (Index i = 0; i < images.numel(); ++i) images[i] = static_cast<float>(i + 1) / 255.0f * 2.0f - 1.0f;  // byte i+1
  const Image8 grid = image_grid(images, 2, 1, 200);
  REQUIRE(grid.width == 2 * (W + 1) + 1);
  REQUIRE(grid.height == 3 * (H + 1) + 1);
  REQUIRE(grid.channels == 1);
  REQUIRE(grid.pixels.size() == 9u * 10u);
  int image_pixels = 0;
  for (int y = 0; y < grid.height; ++y) {
    for (int x = 0; x < grid.width; ++x) {
      CAPTURE(y, x);
      const int row = y / (H + 1), col = x / (W + 1);
      const int h = y % (H + 1) - 1, w = x % (W + 1) - 1;
      const int n = row * 2 + col;
      const bool inside = h >= 0 && w >= 0 && col < 2 && row < 3 && n < N;
      if (inside) {
        REQUIRE(grid.at(y, x) == static_cast<int>((n * H + h) * W + w + 1));
        ++image_pixels;
      } else {
        REQUIRE(grid.at(y, x) == 200);
      }
    }
  }
  REQUIRE(image_pixels == N * H * W);

  // More columns than images: one row, as wide as the images.
  const Image8 one_row = image_grid(images, 10, 0);
  REQUIRE(one_row.width == N * W);
  REQUIRE(one_row.height == H);
  REQUIRE(one_row.at(1, 2 * W + 2) == static_cast<int>((2 * H + 1) * W + 2 + 1));

  // RGB: channels interleaved.
  Tensor<double> rgb(Shape{1, 3, 1, 2});
  const double v[6] = {-1, 1, 0, -1, 1, 0};  // R = (-1, 1), G = (0, -1), B = (1, 0)
  std::copy(v, v + 6, rgb.data());
  const Image8 g = image_grid(rgb, 1, 0);
  REQUIRE(g.channels == 3);
  REQUIRE(g.pixels == std::vector<std::uint8_t>{0, 128, 255, 255, 0, 128});

  REQUIRE_THROWS_WITH(image_grid(Tensor<float>(Shape{1, 2, 3, 3}), 1), Catch::Contains("C must be 1 or 3") &&
                                                                           Catch::Contains("(1, 2, 3, 3)"));
  REQUIRE_THROWS_WITH(image_grid(Tensor<float>(Shape{0, 1, 3, 3}), 1), Catch::Contains("no images"));
  REQUIRE_THROWS_WITH(image_grid(Tensor<float>(Shape{3, 3}), 1), Catch::Contains("(N, C, H, W)"));
  REQUIRE_THROWS_WITH(image_grid(images, 0), Catch::Contains("columns"));
}

TEST_CASE("write_png then read_png returns the same pixels, gray and RGB") {
  const std::string dir = io_test::scratch_dir("png");
  for (int channels : {1, 3}) {
    Tensor<float> images(Shape{3, channels, 5, 4});
    for (Index i = 0; i < images.numel(); ++i) images[i] = std::sin(0.37f * static_cast<float>(i));
    const Image8 grid = image_grid(images, 2, 2);
    const std::string path = dir + "/grid" + std::to_string(channels) + ".png";
    write_png(path, grid);
    const auto bytes = io_test::slurp(path);
    REQUIRE(bytes.size() > 8);
    REQUIRE(std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + 8) ==
            std::vector<std::uint8_t>{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'});
    const Image8 back = read_png(path);
    REQUIRE(back.width == grid.width);
    REQUIRE(back.height == grid.height);
    REQUIRE(back.channels == channels);
    REQUIRE(back.pixels == grid.pixels);
  }
  REQUIRE(io_test::folder_entries(dir).size() == 2);  // no temporaries left

  const Image8 tiny{2, 1, 1, {7, 9}};
  REQUIRE(encode_and_decode_in_another_translation_unit(dir + "/other_tu.png") == tiny.pixels);

  const std::string nowhere = dir + "/missing/x.png";
  REQUIRE_THROWS_WITH(write_png(nowhere, tiny), Catch::Contains(nowhere));
  REQUIRE_THROWS_WITH(write_png(dir + "/bad.png", Image8{2, 2, 1, {1, 2, 3}}), Catch::Contains("3 pixel bytes"));
  io_test::spit(dir + "/garbage.png", {1, 2, 3, 4, 5, 6, 7, 8, 9});
  REQUIRE_THROWS_WITH(read_png(dir + "/garbage.png"), Catch::Contains(dir + "/garbage.png") &&
                                                          Catch::Contains("cannot decode"));
  REQUIRE_THROWS_WITH(read_png(dir + "/absent.png"), Catch::Contains("does not exist"));
}
