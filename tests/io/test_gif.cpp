#include <catch2/catch.hpp>

#include <gif_lib.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "diffusion/core/random.hpp"
#include "diffusion/io/gif.hpp"
#include "io/io_test_util.hpp"

using diffusion::Error;
using diffusion::Index;
using diffusion::Shape;
using diffusion::Tensor;
using namespace diffusion::io;

namespace {

// Closes a decoder opened by DGifOpenFileName.
struct GifReader {
  GifFileType* gif = nullptr;
  explicit GifReader(const std::string& path) {
    int error = 0;
    gif = DGifOpenFileName(path.c_str(), &error);
    INFO("DGifOpenFileName: " << (gif ? "ok" : GifErrorString(error)));
    REQUIRE(gif != nullptr);
  }
  ~GifReader() {
    int error = 0;
    if (gif) DGifCloseFile(gif, &error);
  }
};

}  // namespace

TEST_CASE("write_gif writes frames that giflib reads back with palette, delays and looping") {
  const std::string dir = io_test::scratch_dir("gif");
  // Three gray frames of 64 x 37 with random bytes (forces LZW code table resets) plus 0 and 255.
  diffusion::Rng rng(5);
  std::vector<Image8> frames;
  for (int f = 0; f < 3; ++f) {
    Image8 img{64, 37, 1, std::vector<std::uint8_t>(64 * 37)};
    for (auto& p : img.pixels) p = static_cast<std::uint8_t>(rng.uniform_int(256));
    img.pixels[0] = 0;
    img.pixels[1] = 255;
    img.pixels[2] = static_cast<std::uint8_t>(f);
    frames.push_back(img);
  }
  const std::string path = dir + "/anim.gif";
  write_gif(path, frames, 7, true, 50);
  REQUIRE(io_test::folder_entries(dir) == std::vector<std::string>{"anim.gif"});

  const auto bytes = io_test::slurp(path);
  REQUIRE(bytes.size() > 6);
  REQUIRE(std::string(bytes.begin(), bytes.begin() + 6) == "GIF89a");

  GifReader reader(path);
  GifFileType* gif = reader.gif;
  REQUIRE(DGifSlurp(gif) == GIF_OK);
  REQUIRE(gif->SWidth == 64);
  REQUIRE(gif->SHeight == 37);
  REQUIRE(gif->ImageCount == 3);
  REQUIRE(gif->SColorMap != nullptr);
  REQUIRE(gif->SColorMap->ColorCount == 256);
  for (int v = 0; v < 256; ++v) {
    CAPTURE(v);
    const GifColorType c = gif->SColorMap->Colors[v];
    REQUIRE((c.Red == v && c.Green == v && c.Blue == v));
  }
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    const SavedImage& s = gif->SavedImages[i];
    REQUIRE(s.ImageDesc.Width == 64);
    REQUIRE(s.ImageDesc.Height == 37);
    REQUIRE(s.ImageDesc.Left == 0);
    REQUIRE(s.ImageDesc.Top == 0);
    REQUIRE_FALSE(s.ImageDesc.Interlace);
    REQUIRE(std::memcmp(s.RasterBits, frames[static_cast<std::size_t>(i)].pixels.data(), 64 * 37) == 0);
    GraphicsControlBlock gcb{};
    REQUIRE(DGifSavedExtensionToGCB(gif, i, &gcb) == GIF_OK);
    REQUIRE(gcb.DelayTime == (i == 2 ? 50 : 7));
    REQUIRE(gcb.TransparentColor == NO_TRANSPARENT_COLOR);
  }
  // The NETSCAPE2.0 block (endless loop) is among the extension blocks read before the first image.
  bool found_loop = false;
  const SavedImage& first = gif->SavedImages[0];
  for (int b = 0; b + 1 < first.ExtensionBlockCount; ++b) {
    const ExtensionBlock& e = first.ExtensionBlocks[b];
    if (e.Function == APPLICATION_EXT_FUNC_CODE && e.ByteCount == 11 &&
        std::memcmp(e.Bytes, "NETSCAPE2.0", 11) == 0) {
      const ExtensionBlock& sub = first.ExtensionBlocks[b + 1];
      REQUIRE(sub.ByteCount == 3);
      REQUIRE(sub.Bytes[0] == 1);
      REQUIRE(sub.Bytes[1] == 0);
      REQUIRE(sub.Bytes[2] == 0);
      found_loop = true;
    }
  }
  REQUIRE(found_loop);
}

TEST_CASE("write_gif takes image_grid frames and rejects what it cannot write") {
  const std::string dir = io_test::scratch_dir("gif_grid");
  Tensor<float> images(Shape{4, 1, 6, 5});  // (N, C, H, W)
  std::vector<Image8> frames;
  for (int step = 0; step < 3; ++step) {
    for (Index i = 0; i < images.numel(); ++i) images[i] = static_cast<float>((i + step) % 11) / 5.0f - 1.0f;
    frames.push_back(image_grid(images, 2, 1));
  }
  const std::string path = dir + "/steps.gif";
  write_gif(path, frames, 10, false);
  GifReader reader(path);
  REQUIRE(DGifSlurp(reader.gif) == GIF_OK);
  REQUIRE(reader.gif->ImageCount == 3);
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    const auto& f = frames[static_cast<std::size_t>(i)];
    REQUIRE(std::memcmp(reader.gif->SavedImages[i].RasterBits, f.pixels.data(), f.pixels.size()) == 0);
    // No looping block was requested.
    for (int b = 0; b < reader.gif->SavedImages[i].ExtensionBlockCount; ++b)
      REQUIRE(reader.gif->SavedImages[i].ExtensionBlocks[b].Function != APPLICATION_EXT_FUNC_CODE);
  }

  REQUIRE_THROWS_WITH(write_gif(path, {}, 10), Catch::Contains(path) && Catch::Contains("no frames"));
  Image8 rgba{2, 2, 4, std::vector<std::uint8_t>(16)};
  REQUIRE_THROWS_WITH(write_gif(path, {rgba}, 10), Catch::Contains(path) && Catch::Contains("4 channels"));
  Image8 rgb{2, 2, 3, std::vector<std::uint8_t>(12)};
  Image8 small{2, 2, 1, std::vector<std::uint8_t>(4)};
  REQUIRE_THROWS_WITH(write_gif(path, {rgb, small}, 10), Catch::Contains(path) && Catch::Contains("frame 1 has 1"));
  Image8 other{3, 2, 1, std::vector<std::uint8_t>(6)};
  REQUIRE_THROWS_WITH(write_gif(path, {small, other}, 10), Catch::Contains("frame 1 is 3 x 2"));
  REQUIRE_THROWS_WITH(write_gif(path, {small}, 70000), Catch::Contains("out of range"));
  const std::string nowhere = dir + "/missing/x.gif";
  REQUIRE_THROWS_WITH(write_gif(nowhere, {small}, 10), Catch::Contains(nowhere));
  // The earlier good file is untouched by the failed writes.
  GifReader again(path);
  REQUIRE(DGifSlurp(again.gif) == GIF_OK);
  REQUIRE(again.gif->ImageCount == 3);
}

TEST_CASE("write_gif writes RGB frames through its fixed colour cube within half a level per channel") {
  const std::string dir = io_test::scratch_dir("gif_rgb");
  // Two RGB frames of varied bytes (every channel value appears).
  std::vector<Image8> frames;
  for (int f = 0; f < 2; ++f) {
    Image8 im{37, 11, 3, std::vector<std::uint8_t>(37 * 11 * 3)};
    for (std::size_t i = 0; i < im.pixels.size(); ++i) im.pixels[i] = static_cast<std::uint8_t>((i * 97 + f * 31) % 256);
    frames.push_back(im);
  }
  const std::string path = dir + "/rgb.gif";
  write_gif(path, frames, 10);
  GifReader reader(path);
  REQUIRE(DGifSlurp(reader.gif) == GIF_OK);
  REQUIRE(reader.gif->ImageCount == 2);
  const ColorMapObject* map = reader.gif->SColorMap;
  REQUIRE(map != nullptr);
  // Levels: 6 red (step 51), 7 green (step 42.5), 6 blue (step 51): at most half a step off.
  const int half[3] = {26, 22, 26};
  int worst[3] = {0, 0, 0};
  for (int f = 0; f < 2; ++f) {
    const GifByteType* bits = reader.gif->SavedImages[f].RasterBits;
    const auto& px = frames[static_cast<std::size_t>(f)].pixels;
    for (int p = 0; p < 37 * 11; ++p) {
      REQUIRE(bits[p] < map->ColorCount);
      const GifColorType c = map->Colors[bits[p]];
      const int got[3] = {c.Red, c.Green, c.Blue};
      for (int k = 0; k < 3; ++k) worst[k] = std::max(worst[k], std::abs(got[k] - px[static_cast<std::size_t>(p * 3 + k)]));
    }
  }
  INFO("worst error per channel " << worst[0] << " " << worst[1] << " " << worst[2]);
  for (int k = 0; k < 3; ++k) REQUIRE(worst[k] <= half[k]);
}
