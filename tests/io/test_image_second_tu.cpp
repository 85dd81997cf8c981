// A second translation unit that includes the stb-backed headers: the test executable links only if their
// implementations have internal linkage, as stb.hpp promises.
#include <string>
#include <vector>

#include "diffusion/io/gif.hpp"
#include "diffusion/io/image.hpp"

std::vector<std::uint8_t> encode_and_decode_in_another_translation_unit(const std::string& path) {
  diffusion::io::write_png(path, diffusion::io::Image8{2, 1, 1, {7, 9}});
  return diffusion::io::read_png(path).pixels;
}
