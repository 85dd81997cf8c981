#pragma once
// Decoding one image file into a training example: the per-file pipeline of the image-folder data set
// (io/image_folder.hpp), usable on its own (and the libFuzzer target's entry point, tests/fuzz/fuzz_image.cpp).
//
//   bytes --probe_image--> header (stbi_info: size and channels, nothing decoded; dimensions checked here)
//         --decode_image--> Image8 with the file's channels (stb_image: PNG, JPEG, BMP, TGA, GIF's first frame;
//                           8 bits per channel, 16-bit PNGs reduced to their high byte as stb does)
//         --convert_channels--> 1 (gray) or 3 (RGB) channels:
//                           alpha (gray + alpha, RGBA) composited over `background`, per channel
//                             out = floor((c a + b (255 - a) + 127) / 255)     (round to nearest, as Pillow's paste)
//                           gray -> RGB: the value repeated; RGB -> gray: Rec. 601 luma in Pillow's fixed point
//                             Y = (19595 R + 38470 G + 7471 B + 32768) >> 16  (0.299, 0.587, 0.114)
//         --resize_cover--> the smallest size that covers H x W at the image's aspect ratio (for a square target,
//                           the shorter side becomes the target, as torchvision's Resize(size)):
//                             if W h >= H w:  (W, floor(h W / w))   else  (floor(w H / h), H)
//                           shrinking: stb_image_resize v0.97's box filter (STBIR_FILTER_BOX: exact area coverage
//                           for any ratio), enlarging (only with `upscale`): its triangle filter (bilinear);
//                           8-bit in, float inside, rounded once; edges clamped; no gamma (as Pillow)
//         --center_crop--> H x W from (floor((h' - H) / 2), floor((w' - W) / 2))
//                           (resize_and_crop does both steps computing only the crop's window)
//
// Limits, checked on the header before anything is decoded or allocated: width * height <= max_pixels (and so is
// the resized size), and the file no larger than max_file_bytes. Every error is a diffusion::Error naming the file
// (the `name` argument) and, for a file stb cannot read, stb's reason.

#include <algorithm>
#include <array>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/io/image.hpp"
#include "diffusion/io/stb.hpp"

namespace diffusion::io {

struct DecodeOptions {
  int channels = 3;                                        // 1 (gray) or 3 (RGB)
  int height = 64, width = 64;                             // the output: a centre crop of H x W
  std::array<std::uint8_t, 3> background = {255, 255, 255};  // RGB under transparent pixels
  bool upscale = false;                                    // an image smaller than H x W: Error, or enlarge it
  std::uint64_t max_pixels = std::uint64_t{1} << 25;       // per image (decoded and resized): 32 Mpx, 128 MiB RGBA
  std::uint64_t max_file_bytes = std::uint64_t{1} << 28;   // 256 MiB
};

// Throws unless the options make sense (channels 1 or 3, sizes in [1, 2^16], limits >= 1).
inline void check_decode_options(const DecodeOptions& o, const char* what) {
  DIFFUSION_CHECK(o.channels == 1 || o.channels == 3, what << ": channels must be 1 or 3, got " << o.channels);
  DIFFUSION_CHECK(o.height >= 1 && o.height <= 65536 && o.width >= 1 && o.width <= 65536,
                  what << ": the image size must be in [1, 65536] per side, got " << o.height << " x " << o.width);
  DIFFUSION_CHECK(o.max_pixels >= 1 && o.max_file_bytes >= 1, what << ": max_pixels and max_file_bytes must be >= 1");
  DIFFUSION_CHECK(static_cast<std::uint64_t>(o.height) * static_cast<std::uint64_t>(o.width) <= o.max_pixels,
                  what << ": the output size " << o.height << " x " << o.width << " exceeds max_pixels = "
                       << o.max_pixels);
}

// The Error decode_example throws for an image smaller than the crop when enlarging is off (ImageFolder can skip
// such images separately from undecodable files).
class ImageTooSmall : public Error {
 public:
  using Error::Error;
};

// What a file's header says, read by stb without decoding the pixels.
struct ImageHeader {
  int width = 0, height = 0;
  int channels = 0;  // as stored: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA (stb reports 4 for every GIF)
};

namespace detail {

inline int stb_size(std::size_t size, const std::string& name) {
  DIFFUSION_CHECK(size <= static_cast<std::size_t>(INT32_MAX), "image '" << name << "': " << size
                                                                         << " bytes, more than stb can read");
  return static_cast<int>(size);
}

inline const char* stb_reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown error";
}

// Refuses JPEG data that Debian 12's stb_image (v2.27) would decode unsafely, before stb sees it: a Huffman table
// (DHT) with more than 256 codes makes stbi__build_huffman and the DHT reader write past their 257- and 256-entry
// arrays (found by tests/fuzz/fuzz_image.cpp; fixed in stb_image 2.28, "bad DHT header"). Walks the marker
// segments, skipping entropy-coded data (a DHT may follow any scan of a progressive JPEG); anything else it does
// not understand is left for stb to judge. Not a JPEG (no FF D8 at the start, after fill bytes): nothing to do.
inline void check_jpeg_tables(const std::uint8_t* data, std::size_t size, const std::string& name) {
  // stb finds the start-of-image marker after any number of 0xFF fill bytes (stbi__get_marker).
  std::size_t i = 0;
  while (i < size && data[i] == 0xFF) ++i;
  if (i == 0 || i >= size || data[i] != 0xD8) return;
  ++i;
  while (i + 1 < size) {
    if (data[i] != 0xFF) {  // entropy-coded data (or junk): skip to the next 0xFF
      ++i;
      continue;
    }
    std::size_t j = i + 1;
    while (j < size && data[j] == 0xFF) ++j;  // fill bytes
    if (j >= size) return;
    const std::uint8_t marker = data[j];
    i = j + 1;
    if (marker == 0x00 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01 || marker == 0xD8) continue;
    if (marker == 0xD9) return;  // end of image
    if (i + 2 > size) return;
    const std::size_t length = (static_cast<std::size_t>(data[i]) << 8) | data[i + 1];
    if (marker != 0xC4 && (length < 2 || i + length > size)) return;  // stb reports it
    if (marker == 0xC4) {
      // DHT: tables of 1 + 16 + n bytes, read the way stb reads them: while the segment's remaining length is
      // positive, even when a table runs past the segment's end (stb builds it before it checks the length),
      // bytes past the end of the data reading as 0 (stbi__get8).
      const auto byte = [&](std::size_t k) -> std::size_t { return k < size ? data[k] : 0; };
      std::int64_t left = static_cast<std::int64_t>(length) - 2;
      std::size_t t = i + 2;
      while (left > 0 && t < size) {
        std::size_t n = 0;
        for (std::size_t k = 1; k <= 16; ++k) n += byte(t + k);
        DIFFUSION_CHECK(n <= 256, "image '" << name << "': cannot decode: Corrupt JPEG (a Huffman table declares " << n
                                            << " codes, at most 256 exist)");
        t += 17 + n;
        left -= 17 + static_cast<std::int64_t>(n);
      }
      if (left != 0 || i + length > size) return;  // stb stops here ("Corrupt JPEG")
    }
    i += length;
  }
}

}  // namespace detail

// The header of an image file's bytes; Error naming `name` with stb's reason when stb does not recognise it, when
// width * height exceeds max_pixels (such a file is never decoded), and for JPEG data stb 2.27 cannot read safely
// (detail::check_jpeg_tables).
inline ImageHeader probe_image(const std::uint8_t* data, std::size_t size, const std::string& name,
                               std::uint64_t max_pixels) {
  const int n = detail::stb_size(size, name);
  ImageHeader h;
  DIFFUSION_CHECK(n > 0, "image '" << name << "': the file is empty");
  detail::check_jpeg_tables(data, size, name);  // stbi_info already reads the tables before the frame header
  DIFFUSION_CHECK(stbi_info_from_memory(data, n, &h.width, &h.height, &h.channels) != 0,
                  "image '" << name << "': cannot decode: " << detail::stb_reason());
  DIFFUSION_CHECK(h.width >= 1 && h.height >= 1 && h.channels >= 1 && h.channels <= 4,
                  "image '" << name << "': the header declares " << h.width << " x " << h.height << " pixels of "
                            << h.channels << " channels");
  const std::uint64_t pixels = static_cast<std::uint64_t>(h.width) * static_cast<std::uint64_t>(h.height);
  DIFFUSION_CHECK(pixels <= max_pixels, "image '" << name << "': " << h.width << " x " << h.height << " = " << pixels
                                                  << " pixels, more than the limit of " << max_pixels
                                                  << " (max_pixels); not decoded");
  return h;
}

// Decodes the bytes of an image file (after probe_image's checks) into 8-bit pixels with the file's channels.
inline Image8 decode_image(const std::uint8_t* data, std::size_t size, const std::string& name,
                           std::uint64_t max_pixels) {
  const ImageHeader h = probe_image(data, size, name, max_pixels);
  int w = 0, ht = 0, c = 0;
  stbi_uc* decoded = stbi_load_from_memory(data, static_cast<int>(size), &w, &ht, &c, 0);
  DIFFUSION_CHECK(decoded != nullptr, "image '" << name << "': cannot decode: " << detail::stb_reason());
  struct Free {
    stbi_uc* p;
    ~Free() { stbi_image_free(p); }
  } free_decoded{decoded};
  // stb decodes what its header said; a mismatch would be an stb bug, refused rather than trusted.
  DIFFUSION_CHECK(w == h.width && ht == h.height && c == h.channels,
                  "image '" << name << "': decoded " << w << " x " << ht << " x " << c << " but the header said "
                            << h.width << " x " << h.height << " x " << h.channels);
  Image8 image;
  image.width = w;
  image.height = ht;
  image.channels = c;
  image.pixels.assign(decoded, decoded + static_cast<std::size_t>(w) * static_cast<std::size_t>(ht) *
                                             static_cast<std::size_t>(c));
  return image;
}

// Gray (1) or RGB (3) from 1-4 channels: alpha composited over `background`, then gray <-> RGB (see the header).
inline Image8 convert_channels(const Image8& in, int channels, const std::array<std::uint8_t, 3>& background) {
  DIFFUSION_CHECK(channels == 1 || channels == 3, "convert_channels: channels must be 1 or 3, got " << channels);
  DIFFUSION_CHECK(in.channels >= 1 && in.channels <= 4 &&
                      in.pixels.size() == static_cast<std::size_t>(in.width) * static_cast<std::size_t>(in.height) *
                                              static_cast<std::size_t>(in.channels),
                  "convert_channels: bad image " << in.width << " x " << in.height << " x " << in.channels);
  const std::size_t n = static_cast<std::size_t>(in.width) * static_cast<std::size_t>(in.height);
  const auto blend = [](unsigned c, unsigned b, unsigned a) {
    return static_cast<std::uint8_t>((c * a + b * (255u - a) + 127u) / 255u);
  };
  const auto luma = [](unsigned r, unsigned g, unsigned b) {
    return static_cast<std::uint8_t>((r * 19595u + g * 38470u + b * 7471u + 32768u) >> 16);
  };
  Image8 out;
  out.width = in.width;
  out.height = in.height;
  out.channels = channels;
  out.pixels.resize(n * static_cast<std::size_t>(channels));
  const std::uint8_t* p = in.pixels.data();
  std::uint8_t* q = out.pixels.data();
  for (std::size_t i = 0; i < n; ++i) {
    unsigned r, g, b;
    switch (in.channels) {
      case 1: r = g = b = p[i]; break;
      case 2: {
        const unsigned v = p[2 * i], a = p[2 * i + 1];
        r = blend(v, background[0], a), g = blend(v, background[1], a), b = blend(v, background[2], a);
        break;
      }
      case 3: r = p[3 * i], g = p[3 * i + 1], b = p[3 * i + 2]; break;
      default: {
        const unsigned a = p[4 * i + 3];
        r = blend(p[4 * i], background[0], a), g = blend(p[4 * i + 1], background[1], a);
        b = blend(p[4 * i + 2], background[2], a);
        break;
      }
    }
    if (channels == 3) {
      q[3 * i] = static_cast<std::uint8_t>(r), q[3 * i + 1] = static_cast<std::uint8_t>(g);
      q[3 * i + 2] = static_cast<std::uint8_t>(b);
    } else {
      // A gray source stays exactly itself: (19595 + 38470 + 7471) v + 32768 = 65536 v + 32768.
      q[i] = luma(r, g, b);
    }
  }
  return out;
}

// The size resize_cover gives a w x h image for an H x W crop (see the header); 64-bit arithmetic, no overflow.
struct CoverSize {
  std::uint64_t width = 0, height = 0;
};
inline CoverSize cover_size(int w, int h, int W, int H) {
  const std::uint64_t uw = static_cast<std::uint64_t>(w), uh = static_cast<std::uint64_t>(h);
  const std::uint64_t uW = static_cast<std::uint64_t>(W), uH = static_cast<std::uint64_t>(H);
  if (uW * uh >= uH * uw) return {uW, uh * uW / uw};
  return {uw * uH / uh, uH};
}

// Resizes an 8-bit image to new_w x new_h: box filter (area) when no side grows, triangle filter otherwise.
inline Image8 resize_image(const Image8& in, int new_w, int new_h) {
  DIFFUSION_CHECK(new_w >= 1 && new_h >= 1, "resize_image: bad size " << new_w << " x " << new_h);
  if (new_w == in.width && new_h == in.height) return in;
  Image8 out;
  out.width = new_w;
  out.height = new_h;
  out.channels = in.channels;
  out.pixels.resize(static_cast<std::size_t>(new_w) * static_cast<std::size_t>(new_h) *
                    static_cast<std::size_t>(in.channels));
  const bool grow = new_w > in.width || new_h > in.height;
  const stbir_filter filter = grow ? STBIR_FILTER_TRIANGLE : STBIR_FILTER_BOX;
  const int ok = stbir_resize_uint8_generic(in.pixels.data(), in.width, in.height, 0, out.pixels.data(), new_w, new_h,
                                            0, in.channels, STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP, filter,
                                            STBIR_COLORSPACE_LINEAR, nullptr);
  DIFFUSION_CHECK(ok != 0, "resize_image: stb_image_resize failed (" << in.width << " x " << in.height << " -> "
                                                                     << new_w << " x " << new_h << ")");
  return out;
}

// The H x W window of `in` at (top, left) = (floor((h - H) / 2), floor((w - W) / 2)); requires h >= H, w >= W.
inline Image8 center_crop(const Image8& in, int H, int W) {
  DIFFUSION_CHECK(in.height >= H && in.width >= W && H >= 1 && W >= 1,
                  "center_crop: cannot crop " << H << " x " << W << " from " << in.height << " x " << in.width);
  const int top = (in.height - H) / 2, left = (in.width - W) / 2;
  Image8 out;
  out.width = W;
  out.height = H;
  out.channels = in.channels;
  const std::size_t row = static_cast<std::size_t>(W) * static_cast<std::size_t>(in.channels);
  out.pixels.resize(row * static_cast<std::size_t>(H));
  for (int y = 0; y < H; ++y) {
    const std::uint8_t* src = in.pixels.data() + (static_cast<std::size_t>(top + y) * static_cast<std::size_t>(in.width) +
                                                  static_cast<std::size_t>(left)) *
                                                     static_cast<std::size_t>(in.channels);
    std::copy(src, src + row, out.pixels.data() + static_cast<std::size_t>(y) * row);
  }
  return out;
}

// resize_image to cover_w x cover_h followed by center_crop to H x W, computed for the H x W window only
// (stbir_resize_subpixel: the same filter, scale cover / size and an offset of the crop's corner), so that the cost
// does not grow with the covering size: stb_image_resize v0.97 normalises its downsampling weights in
// O(output size x input size) per axis, which took 0.6 s (and over 10 s under the fuzzer's sanitizers) to cover a
// 7 x 10 crop with a 26 x 24832 image (7 x 6685; found by tests/fuzz/fuzz_image.cpp). Equal to resize_image +
// center_crop up to float rounding of the filter positions (at most one level, rarely; see the tests).
inline Image8 resize_and_crop(const Image8& in, int cover_w, int cover_h, int H, int W) {
  DIFFUSION_CHECK(cover_w >= W && cover_h >= H && H >= 1 && W >= 1,
                  "resize_and_crop: a " << cover_w << " x " << cover_h << " image does not cover " << W << " x " << H);
  const int top = (cover_h - H) / 2, left = (cover_w - W) / 2;
  if (cover_w == in.width && cover_h == in.height) return center_crop(in, H, W);
  Image8 out;
  out.width = W;
  out.height = H;
  out.channels = in.channels;
  out.pixels.resize(static_cast<std::size_t>(W) * static_cast<std::size_t>(H) * static_cast<std::size_t>(in.channels));
  const bool grow = cover_w > in.width || cover_h > in.height;
  const stbir_filter filter = grow ? STBIR_FILTER_TRIANGLE : STBIR_FILTER_BOX;
  const float x_scale = static_cast<float>(cover_w) / static_cast<float>(in.width);
  const float y_scale = static_cast<float>(cover_h) / static_cast<float>(in.height);
  const int ok = stbir_resize_subpixel(in.pixels.data(), in.width, in.height, 0, out.pixels.data(), W, H, 0,
                                       STBIR_TYPE_UINT8, in.channels, STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP,
                                       STBIR_EDGE_CLAMP, filter, filter, STBIR_COLORSPACE_LINEAR, nullptr, x_scale,
                                       y_scale, static_cast<float>(left), static_cast<float>(top));
  DIFFUSION_CHECK(ok != 0, "resize_and_crop: stb_image_resize failed (" << in.width << " x " << in.height << " -> "
                                                                        << cover_w << " x " << cover_h << ")");
  return out;
}

// The whole pipeline on a file's bytes: an H x W image with options.channels channels, interleaved (Image8).
// Error naming `name` for anything that stops it (unreadable by stb, too many pixels, smaller than H x W without
// upscale).
inline Image8 decode_example(const std::uint8_t* data, std::size_t size, const std::string& name,
                             const DecodeOptions& options) {
  const ImageHeader h = probe_image(data, size, name, options.max_pixels);
  const CoverSize cover = cover_size(h.width, h.height, options.width, options.height);
  const bool grow = cover.width > static_cast<std::uint64_t>(h.width) ||
                    cover.height > static_cast<std::uint64_t>(h.height);
  if (grow && !options.upscale) {
    std::ostringstream m;
    m << "image '" << name << "': " << h.width << " x " << h.height << " (width x height) is smaller than the "
      << options.width << " x " << options.height << " crop; enlarging is off (upscale)";
    throw ImageTooSmall(m.str());
  }
  DIFFUSION_CHECK(cover.width * cover.height <= options.max_pixels,
                  "image '" << name << "': resizing " << h.width << " x " << h.height << " to cover "
                            << options.width << " x " << options.height << " gives " << cover.width << " x "
                            << cover.height << " pixels, more than max_pixels = " << options.max_pixels);
  const Image8 decoded = decode_image(data, size, name, options.max_pixels);
  const Image8 converted = convert_channels(decoded, options.channels, options.background);
  return resize_and_crop(converted, static_cast<int>(cover.width), static_cast<int>(cover.height), options.height,
                         options.width);
}

// The same for a file on disk (at most options.max_file_bytes).
inline Image8 decode_example_file(const std::string& path, const DecodeOptions& options) {
  const std::vector<std::uint8_t> bytes = read_file(path, options.max_file_bytes);
  return decode_example(bytes.data(), bytes.size(), path, options);
}

}  // namespace diffusion::io
