#pragma once
// Animated GIF output through giflib 5 (Debian libgif-dev): e.g. the denoising trajectory of a sample.
//
// write_gif(path, frames, delay_cs, loop, final_delay_cs)
//   requires: frames non-empty, all 8-bit Image8 of one size and one channel count, 1 (gray) or 3 (RGB) (e.g.
//             from image_grid); 0 <= delay_cs <= 65535 (hundredths of a second).
//   ensures:  a GIF89a with one global palette: gray frames: 256 gray levels (index v is gray level v, so pixel
//             bytes are stored unchanged); RGB frames: a fixed 6 x 7 x 6 colour cube, each channel rounded to its
//             nearest level (error at most 26 levels in R and B, 22 in G); one full-size frame per image with a graphics control block carrying the delay
//             (final_delay_cs for the last frame when >= 0, to hold the end result), and a NETSCAPE2.0
//             application block for endless looping when loop is true. Encoded in memory, then written
//             atomically; errors are diffusion::Error naming the path and giflib's GifErrorString.

#include <gif_lib.h>

#include <cstdint>
#include <string>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/io/atomic_file.hpp"
#include "diffusion/io/image.hpp"

namespace diffusion::io {

namespace detail {

inline int gif_append(GifFileType* gif, const GifByteType* data, int size) {
  auto* out = static_cast<std::vector<std::uint8_t>*>(gif->UserData);
  out->insert(out->end(), data, data + size);
  return size;
}

inline std::string gif_error_text(int code) {
  const char* text = GifErrorString(code);
  return text ? std::string(text) : "giflib error " + std::to_string(code);
}

// Owns an encoder; closes (and frees) it on every path, reporting the close error only when asked.
class GifEncoder {
 public:
  GifEncoder(const std::string& path, std::vector<std::uint8_t>* out) : path_(path) {
    int error = 0;
    gif_ = EGifOpen(out, gif_append, &error);
    DIFFUSION_CHECK(gif_ != nullptr, "write_gif '" << path_ << "': EGifOpen failed: " << gif_error_text(error));
  }
  GifEncoder(const GifEncoder&) = delete;
  GifEncoder& operator=(const GifEncoder&) = delete;
  ~GifEncoder() {
    if (gif_) {
      int error = 0;
      EGifCloseFile(gif_, &error);
    }
  }
  GifFileType* get() { return gif_; }
  // Throws with giflib's message when a call returned GIF_ERROR.
  void check(int result, const char* what) {
    DIFFUSION_CHECK(result != GIF_ERROR,
                    "write_gif '" << path_ << "': " << what << " failed: " << gif_error_text(gif_->Error));
  }
  void close() {
    int error = 0;
    const int result = EGifCloseFile(gif_, &error);  // frees gif_ whatever the result
    gif_ = nullptr;
    DIFFUSION_CHECK(result != GIF_ERROR, "write_gif '" << path_ << "': EGifCloseFile failed: " << gif_error_text(error));
  }

 private:
  std::string path_;
  GifFileType* gif_ = nullptr;
};

}  // namespace detail

inline void write_gif(const std::string& path, const std::vector<Image8>& frames, int delay_cs, bool loop = true,
                      int final_delay_cs = -1) {
  DIFFUSION_CHECK(!frames.empty(), "write_gif '" << path << "': no frames");
  DIFFUSION_CHECK(delay_cs >= 0 && delay_cs <= 65535 && final_delay_cs <= 65535,
                  "write_gif '" << path << "': delay " << delay_cs << " / " << final_delay_cs
                                << " out of range (0 to 65535 hundredths of a second)");
  const int width = frames[0].width, height = frames[0].height;
  DIFFUSION_CHECK(width > 0 && height > 0 && width <= 65535 && height <= 65535,
                  "write_gif '" << path << "': frame size " << width << " x " << height << " (1 to 65535 each)");
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const Image8& f = frames[i];
    DIFFUSION_CHECK(f.channels == 1 || f.channels == 3, "write_gif '" << path << "': frame " << i << " has "
                                                                      << f.channels << " channels; 1 (gray) or 3 (RGB)");
    DIFFUSION_CHECK(f.channels == frames[0].channels, "write_gif '" << path << "': frame " << i << " has " << f.channels
                                                                    << " channels but frame 0 has " << frames[0].channels);
    DIFFUSION_CHECK(f.width == width && f.height == height,
                    "write_gif '" << path << "': frame " << i << " is " << f.width << " x " << f.height
                                  << " but frame 0 is " << width << " x " << height);
    DIFFUSION_CHECK(f.pixels.size() == static_cast<std::size_t>(width) * static_cast<std::size_t>(height) *
                                           static_cast<std::size_t>(f.channels),
                    "write_gif '" << path << "': frame " << i << " has " << f.pixels.size() << " pixel bytes");
  }

  std::vector<std::uint8_t> bytes;
  {
    detail::GifEncoder gif(path, &bytes);
    EGifSetGifVersion(gif.get(), true);  // GIF89a: needed for the extension blocks

    // Gray: the 256 gray levels. RGB: a fixed 6 x 7 x 6 colour cube (252 colours; green, to which the eye is most
    // sensitive, gets 7 levels), each channel rounded to its nearest level: no per-frame palette to flicker.
    const bool rgb = frames[0].channels == 3;
    GifColorType colours[256];
    for (int v = 0; v < 256; ++v) {
      if (!rgb) {
        colours[v] = GifColorType{static_cast<GifByteType>(v), static_cast<GifByteType>(v), static_cast<GifByteType>(v)};
      } else {
        const int r = v / 42 % 6, g = v / 6 % 7, b = v % 6;  // v >= 252: black
        colours[v] = v < 252 ? GifColorType{static_cast<GifByteType>(r * 51), static_cast<GifByteType>(g * 255 / 6 + (g * 255 % 6 >= 3)),
                                            static_cast<GifByteType>(b * 51)}
                             : GifColorType{0, 0, 0};
      }
    }
    ColorMapObject* palette = GifMakeMapObject(256, colours);
    DIFFUSION_CHECK(palette != nullptr, "write_gif '" << path << "': GifMakeMapObject failed (out of memory)");
    const int screen = EGifPutScreenDesc(gif.get(), width, height, 8, 0, palette);
    GifFreeMapObject(palette);  // EGifPutScreenDesc keeps its own copy
    gif.check(screen, "EGifPutScreenDesc");

    if (loop) {
      static const char kNetscape[] = "NETSCAPE2.0";
      const GifByteType forever[3] = {1, 0, 0};  // sub-block 1, loop count 0 = endless
      gif.check(EGifPutExtensionLeader(gif.get(), APPLICATION_EXT_FUNC_CODE), "EGifPutExtensionLeader");
      gif.check(EGifPutExtensionBlock(gif.get(), 11, kNetscape), "EGifPutExtensionBlock");
      gif.check(EGifPutExtensionBlock(gif.get(), 3, forever), "EGifPutExtensionBlock");
      gif.check(EGifPutExtensionTrailer(gif.get()), "EGifPutExtensionTrailer");
    }

    std::vector<GifPixelType> row(static_cast<std::size_t>(width));  // EGifPutLine takes a non-const line
    for (std::size_t i = 0; i < frames.size(); ++i) {
      GraphicsControlBlock gcb{};
      gcb.DisposalMode = DISPOSAL_UNSPECIFIED;
      gcb.UserInputFlag = false;
      gcb.DelayTime = (i + 1 == frames.size() && final_delay_cs >= 0) ? final_delay_cs : delay_cs;
      gcb.TransparentColor = NO_TRANSPARENT_COLOR;
      GifByteType extension[4];
      const auto length = static_cast<int>(EGifGCBToExtension(&gcb, extension));
      gif.check(EGifPutExtension(gif.get(), GRAPHICS_EXT_FUNC_CODE, length, extension), "EGifPutExtension");
      gif.check(EGifPutImageDesc(gif.get(), 0, 0, width, height, false, nullptr), "EGifPutImageDesc");
      const std::uint8_t* pixels = frames[i].pixels.data();
      for (int y = 0; y < height; ++y) {
        if (!rgb) {
          std::copy(pixels + static_cast<std::size_t>(y) * static_cast<std::size_t>(width),
                    pixels + static_cast<std::size_t>(y + 1) * static_cast<std::size_t>(width), row.begin());
        } else {
          const std::uint8_t* p = pixels + static_cast<std::size_t>(y) * static_cast<std::size_t>(width) * 3;
          for (int x = 0; x < width; ++x, p += 3) {  // nearest level: round(c * (levels - 1) / 255)
            const int r = (p[0] * 5 + 127) / 255, g = (p[1] * 6 + 127) / 255, b = (p[2] * 5 + 127) / 255;
            row[static_cast<std::size_t>(x)] = static_cast<GifPixelType>(r * 42 + g * 6 + b);
          }
        }
        gif.check(EGifPutLine(gif.get(), row.data(), width), "EGifPutLine");
      }
    }
    gif.close();
  }
  write_file_atomically(path, bytes.data(), bytes.size());
}

}  // namespace diffusion::io
