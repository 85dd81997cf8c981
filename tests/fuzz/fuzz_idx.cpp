// libFuzzer target: read_idx and load_idx_images on arbitrary bytes (plain or gzip, detected by the reader), through
// an in-memory file. An array that reads must have exactly prod(dims) bytes, images must map into [-1, 1], and
// write_idx (gzip and plain) must give back a file that reads to the same array.
// Any exception other than diffusion::Error, any crash, leak, hang or sanitizer report is a bug.
#include <stdlib.h>

#include <cstdint>
#include <string>

#include "diffusion/io/idx.hpp"
#include "fuzz_common.hpp"

namespace {

constexpr std::uint64_t kMaxBytes = std::uint64_t{1} << 22;  // bounds what a lying header or a gzip bomb costs

// A private scratch folder on tmpfs when there is one (write_idx renames within a folder).
const std::string& scratch_folder() {
  static const std::string folder = [] {
    std::string t = (::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + std::string("/diffusion_fuzz_idx.XXXXXX");
    if (::mkdtemp(t.data()) == nullptr) std::abort();
    return t;
  }();
  return folder;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static fuzz::MemFile file("fuzz_idx");
  const std::string& path = file.write(data, size);
  diffusion::io::IdxArray a;
  try {
    a = diffusion::io::read_idx(path, kMaxBytes);
  } catch (const diffusion::Error&) {
    return 0;
  }
  std::uint64_t total = 1;
  for (std::int32_t d : a.dims) {
    FUZZ_REQUIRE(d >= 0);
    total *= static_cast<std::uint64_t>(d);  // <= kMaxBytes unless a dimension is 0
  }
  FUZZ_REQUIRE(!a.dims.empty() && a.dims.size() <= 8);
  FUZZ_REQUIRE(a.data.size() == total);
  if (a.dims.size() == 3) {
    const diffusion::Tensor<float> images = diffusion::io::load_idx_images<float>(path, kMaxBytes);
    FUZZ_REQUIRE(static_cast<std::uint64_t>(images.numel()) == total);
    for (diffusion::Index i = 0; i < images.numel(); ++i) FUZZ_REQUIRE(images[i] >= -1.0f && images[i] <= 1.0f);
  }
  for (bool gzip : {true, false}) {
    const std::string out = scratch_folder() + "/roundtrip.idx";
    diffusion::io::write_idx(out, a, gzip);
    const diffusion::io::IdxArray b = diffusion::io::read_idx(out, kMaxBytes);
    FUZZ_REQUIRE(b.dims == a.dims && b.data == a.data);
  }
  return 0;
}
