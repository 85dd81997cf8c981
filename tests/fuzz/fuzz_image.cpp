// libFuzzer target: the image-folder data set's per-file decoder path (io/image_decode.hpp) on arbitrary bytes:
// stb's header probe, the pixel limit, stb's PNG / JPEG / BMP / TGA / GIF decoders, channel conversion, the
// resize (stb_image_resize) and the centre crop, for gray and RGB outputs of a size taken from the input.
// Properties: only diffusion::Error escapes; an image whose header declares more than max_pixels is refused and
// never decoded (libFuzzer's -malloc_limit_mb, which defaults to -rss_limit_mb, turns any allocation sized by a
// lying header into a crash); a decoded image has exactly the header's size and channels; an example has exactly
// the requested shape. Any crash, leak, hang or sanitizer report is a bug.
#include <cstdint>
#include <string>

#include "diffusion/io/image_decode.hpp"
#include "fuzz_common.hpp"

namespace {

// 1 Mpx: a 4 MB RGBA decode at most, far below the 2 GB RSS limit, far above the seeds; keeps the slowest inputs
// (the largest images: a 26 x 24832 TGA decodes, converts and resizes in 1.7 s under the sanitizers) well inside
// the 10 s timeout.
constexpr std::uint64_t kMaxPixels = std::uint64_t{1} << 20;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace diffusion::io;
  // The first byte chooses the output: channels, crop size (1-16 x 1-16), upscale; the rest is the file.
  if (size < 1) return 0;
  const std::uint8_t knobs = data[0];
  ++data, --size;
  ImageHeader header;
  try {
    header = probe_image(data, size, "fuzz", kMaxPixels);
  } catch (const diffusion::Error&) {
    // Refused at the header (not an image, or too many pixels): decode_example must refuse it too.
    DecodeOptions o;
    o.max_pixels = kMaxPixels;
    try {
      (void)decode_example(data, size, "fuzz", o);
    } catch (const diffusion::Error&) {
      return 0;
    }
    FUZZ_REQUIRE(false && "decode_example accepted bytes that probe_image refused");
  }
  FUZZ_REQUIRE(header.width >= 1 && header.height >= 1 && header.channels >= 1 && header.channels <= 4);
  FUZZ_REQUIRE(static_cast<std::uint64_t>(header.width) * static_cast<std::uint64_t>(header.height) <= kMaxPixels);
  try {
    const Image8 decoded = decode_image(data, size, "fuzz", kMaxPixels);
    FUZZ_REQUIRE(decoded.width == header.width && decoded.height == header.height &&
                 decoded.channels == header.channels);
    FUZZ_REQUIRE(decoded.pixels.size() == static_cast<std::size_t>(decoded.width) *
                                              static_cast<std::size_t>(decoded.height) *
                                              static_cast<std::size_t>(decoded.channels));
  } catch (const diffusion::Error&) {
    return 0;  // undecodable: named and refused
  }
  DecodeOptions o;
  o.channels = (knobs & 1) ? 3 : 1;
  o.height = 1 + ((knobs >> 1) & 15);
  o.width = 1 + ((knobs >> 5) & 7) * 2;
  o.upscale = (knobs & 0x80) != 0;
  o.max_pixels = kMaxPixels;
  o.background = {knobs, static_cast<std::uint8_t>(255 - knobs), 128};
  try {
    const Image8 example = decode_example(data, size, "fuzz", o);
    FUZZ_REQUIRE(example.width == o.width && example.height == o.height && example.channels == o.channels);
    FUZZ_REQUIRE(example.pixels.size() == static_cast<std::size_t>(o.width * o.height * o.channels));
  } catch (const diffusion::Error&) {
    // Smaller than the crop without upscale, or the resized size over the limit: refused with a message.
  }
  return 0;
}
