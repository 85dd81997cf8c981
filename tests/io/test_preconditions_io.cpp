// Preconditions of io/ beyond the malformed-file corpora of test_safetensors/test_idx: SafetensorsReader::from_bytes
// (same checks as the path reader, the name in every message), empty tensors whose other dimensions would overflow
// Shape, conversions the reader must refuse, IDX arguments (not a regular file, limits, writer dimensions), and
// image arguments. Each message names the file or argument.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "diffusion/io/atomic_file.hpp"
#include "diffusion/io/idx.hpp"
#include "diffusion/io/image.hpp"
#include "diffusion/io/safetensors.hpp"
#include "io/io_test_util.hpp"

using namespace diffusion;

namespace {

std::vector<std::uint8_t> file_bytes(const std::string& header, std::size_t data_bytes) {
  std::vector<std::uint8_t> out(8 + header.size() + data_bytes, 0);
  const std::uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

}  // namespace

TEST_CASE("SafetensorsReader::from_bytes applies the path reader's checks and names the source") {
  io::SafetensorsWriter w;
  const std::vector<float> v = {1.5f, -2.0f, 3.25f};
  w.add("v", Shape{3}, v.data());
  w.add_metadata("k", "value");
  const std::string dir = io_test::scratch_dir("preconditions_from_bytes");
  w.write(dir + "/v.safetensors");
  const io::SafetensorsReader from_path(dir + "/v.safetensors");
  const io::SafetensorsReader from_memory = io::SafetensorsReader::from_bytes(w.serialize(), "in-memory v");
  REQUIRE(from_memory.path() == "in-memory v");
  REQUIRE(from_memory.names() == from_path.names());
  REQUIRE(from_memory.metadata() == from_path.metadata());
  const Tensor<float> a = from_memory.read<float>("v"), b = from_path.read<float>("v");
  REQUIRE(std::memcmp(a.data(), b.data(), sizeof(float) * 3) == 0);

  REQUIRE_THROWS_WITH(io::SafetensorsReader::from_bytes({1, 2, 3}, "net packet 7"),
                      Catch::StartsWith("safetensors file 'net packet 7': ") && Catch::Contains("3 bytes"));
  REQUIRE_THROWS_WITH(io::SafetensorsReader::from_bytes(file_bytes("{\"a\": 1}", 0), "blob"),
                      Catch::Contains("'blob'") && Catch::Contains("tensor 'a'"));
}

TEST_CASE("an empty tensor whose other dimensions multiply past 2^63 is refused (Shape would overflow)") {
  // Zero elements, zero bytes: valid per the format, but Shape{2^32, 2^32, 0}.numel() would overflow int64 on the
  // way to 0. The reader refuses it up front.
  for (const char* shape : {"[4294967296, 4294967296, 0]", "[0, 4294967296, 4294967296]", "[3037000500, 3037000500, 0]"}) {
    INFO("shape " << shape);
    const std::string header = std::string(R"({"e":{"dtype":"F32","shape":)") + shape + R"(,"data_offsets":[0,0]}})";
    REQUIRE_THROWS_WITH(io::SafetensorsReader::from_bytes(file_bytes(header, 0), "empty-huge"),
                        Catch::Contains("tensor 'e'") && Catch::Contains("overflows 64 bits"));
  }
  // Just below the limit: accepted, and reads as an empty tensor.
  const std::string ok = R"({"e":{"dtype":"F32","shape":[0, 3037000499, 3037000499],"data_offsets":[0,0]}})";
  const io::SafetensorsReader r = io::SafetensorsReader::from_bytes(file_bytes(ok, 0), "empty-ok");
  REQUIRE(r.read<float>("e").numel() == 0);
}

TEST_CASE("SafetensorsReader refuses reads it cannot do exactly, naming the tensor") {
  io::SafetensorsWriter w;
  const std::vector<float> f = {0.5f, 1.0f};
  const std::vector<std::int64_t> big = {1, std::int64_t{1} << 40};
  const std::vector<std::uint8_t> five(5, 1);
  w.add("f", Shape{2}, f.data());
  w.add("big", Shape{2}, big.data());
  w.add_raw("r5", io::DType::U8, {1, 1, 1, 1, 5}, five.data(), five.size());
  const auto r = io::SafetensorsReader::from_bytes(w.serialize(), "conv");
  REQUIRE_THROWS_WITH(r.read<std::int32_t>("f"), Catch::Contains("tensor 'f'") && Catch::Contains("cannot be read as an integer"));
  REQUIRE_THROWS_WITH(r.read<std::int32_t>("big"), Catch::Contains("element 1") && Catch::Contains("does not fit"));
  REQUIRE_THROWS_WITH(r.read<float>("r5"), Catch::Contains("rank 5") && Catch::Contains("at most 4"));
  REQUIRE_THROWS_WITH(r.read<float>("nope"), Catch::Contains("no tensor named 'nope'"));
  std::vector<float> out(4);
  REQUIRE_THROWS_WITH(r.read_into("f", Shape{2, 2}, out.data()),
                      Catch::Contains("tensor 'f' has shape (2) but (2, 2) was expected"));
}

TEST_CASE("IDX reader and writers check their arguments") {
  const std::string dir = io_test::scratch_dir("preconditions_idx");
  REQUIRE_THROWS_WITH(io::read_idx(dir), Catch::Contains(dir) && Catch::Contains("not a regular file"));
  std::vector<std::uint8_t> pixels(2 * 3 * 4, 7);
  io::write_idx_images(dir + "/small.idx", pixels.data(), 2, 3, 4, false);
  REQUIRE_THROWS_WITH(io::read_idx(dir + "/small.idx", 23), Catch::Contains("more than the limit of 23 bytes"));
  REQUIRE(io::read_idx(dir + "/small.idx", 24).data.size() == 24);
  REQUIRE_THROWS_WITH(io::load_idx_images<float>(dir + "/small.idx", 23), Catch::Contains("limit"));

  io::IdxArray a;
  REQUIRE_THROWS_WITH(io::write_idx(dir + "/a.idx", a), Catch::Contains("0 dimensions"));
  a.dims = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  a.data = {1};
  REQUIRE_THROWS_WITH(io::write_idx(dir + "/a.idx", a), Catch::Contains("9 dimensions"));
  a.dims = {2, -1};
  REQUIRE_THROWS_WITH(io::write_idx(dir + "/a.idx", a), Catch::Contains("negative dimension -1"));
  a.dims = {2, 2};
  REQUIRE_THROWS_WITH(io::write_idx(dir + "/a.idx", a), Catch::Contains("hold 4 bytes but data has 1"));
  REQUIRE_THROWS_WITH(io::write_idx_images(dir + "/b.idx", pixels.data(), -1, 3, 4),
                      Catch::Contains("bad dimensions -1 x 3 x 4"));
  REQUIRE_THROWS_WITH(io::write_idx_images(dir + "/b.idx", pixels.data(), 1, std::int64_t{1} << 31, 1),
                      Catch::Contains("bad dimensions"));
  // A labels file (one dimension) is not an image file.
  a.dims = {3};
  a.data = {0, 1, 2};
  io::write_idx(dir + "/labels.idx", a);
  REQUIRE_THROWS_WITH(io::load_idx_images<float>(dir + "/labels.idx"), Catch::Contains("1 dimension(s)"));
}

TEST_CASE("image and file helpers check their arguments") {
  Tensor<float> images(Shape{2, 1, 3, 3});
  REQUIRE_THROWS_WITH(io::image_grid(images, 0), Catch::Contains("columns must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(io::image_grid(images, 2, -1), Catch::Contains("padding must be >= 0, got -1"));
  REQUIRE_THROWS_WITH(io::image_grid(Tensor<float>(Shape{0, 1, 3, 3}), 2), Catch::Contains("no images"));
  REQUIRE_THROWS_WITH(io::image_grid(Tensor<float>(Shape{2, 9}), 2), Catch::Contains("(N, C, H, W)"));
  const std::string dir = io_test::scratch_dir("preconditions_image");
  io::Image8 bad;
  bad.width = 2;
  bad.height = 2;
  bad.channels = 1;
  bad.pixels.assign(3, 0);
  REQUIRE_THROWS_WITH(io::write_png(dir + "/bad.png", bad), Catch::Contains("3 pixel bytes for a 2 x 2 x 1 image"));
  bad.channels = 5;
  REQUIRE_THROWS_WITH(io::write_png(dir + "/bad.png", bad), Catch::Contains("bad image 2 x 2 x 5"));
  io_test::spit(dir + "/garbage.png", {0x89, 'P', 'N', 'G', 1, 2, 3});
  REQUIRE_THROWS_WITH(io::read_png(dir + "/garbage.png"), Catch::Contains("garbage.png") && Catch::Contains("cannot decode"));
  REQUIRE_THROWS_WITH(io::write_file_atomically("", "x", 1), Catch::Contains("empty path"));
  REQUIRE_THROWS_WITH(io::read_file(dir + "/none"), Catch::Contains("does not exist"));
  REQUIRE_THROWS_WITH(io::read_file(dir + "/garbage.png", 3), Catch::Contains("more than the limit of 3"));
}
