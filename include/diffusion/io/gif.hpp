#pragma once
// Animated GIF output through giflib 5 (Debian libgif-dev): e.g. the denoising trajectory of a sample.
//
// write_gif(path, frames, delay_cs, loop, final_delay_cs)
//   requires: frames non-empty, all 8-bit grayscale Image8 (channels == 1, e.g. from image_grid on C = 1 images)
//             of one size; 0 <= delay_cs <= 65535 (hundredths of a second).
//   ensures:  a GIF89a with a 256-level gray global palette (index v is gray level v, so pixel bytes are stored
//             unchanged), one full-size frame per image with a graphics control block carrying the delay
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
    DIFFUSION_CHECK(f.channels == 1, "write_gif '" << path << "': frame " << i << " has " << f.channels
                                                   << " channels; only grayscale (1) is supported");
    DIFFUSION_CHECK(f.width == width && f.height == height,
                    "write_gif '" << path << "': frame " << i << " is " << f.width << " x " << f.height
                                  << " but frame 0 is " << width << " x " << height);
    DIFFUSION_CHECK(f.pixels.size() == static_cast<std::size_t>(width) * static_cast<std::size_t>(height),
                    "write_gif '" << path << "': frame " << i << " has " << f.pixels.size() << " pixel bytes");
  }

  std::vector<std::uint8_t> bytes;
  {
    detail::GifEncoder gif(path, &bytes);
    EGifSetGifVersion(gif.get(), true);  // GIF89a: needed for the extension blocks

    GifColorType gray[256];
    for (int v = 0; v < 256; ++v) gray[v] = GifColorType{static_cast<GifByteType>(v), static_cast<GifByteType>(v),
                                                         static_cast<GifByteType>(v)};
    ColorMapObject* palette = GifMakeMapObject(256, gray);
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
        std::copy(pixels + static_cast<std::size_t>(y) * static_cast<std::size_t>(width),
                  pixels + static_cast<std::size_t>(y + 1) * static_cast<std::size_t>(width), row.begin());
        gif.check(EGifPutLine(gif.get(), row.data(), width), "EGifPutLine");
      }
    }
    gif.close();
  }
  write_file_atomically(path, bytes.data(), bytes.size());
}

}  // namespace diffusion::io
