#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "diffusion/core/random.hpp"
#include "diffusion/io/idx.hpp"
#include "io/io_test_util.hpp"
#include "support/skip.hpp"

using diffusion::Error;
using diffusion::Index;
using diffusion::Shape;
using namespace diffusion::io;

namespace {

// (N, H, W) bytes from a fixed seed, with 0 and 255 present.
std::vector<std::uint8_t> sample_pixels(Index n, Index h, Index w) {
  diffusion::Rng rng(3);
  std::vector<std::uint8_t> px(static_cast<std::size_t>(n * h * w));
  for (auto& p : px) p = static_cast<std::uint8_t>(rng.uniform_int(256));
  px[0] = 0;
  px[1] = 255;
  return px;
}

std::vector<std::uint8_t> idx_header(std::uint8_t type, const std::vector<std::uint32_t>& dims) {
  std::vector<std::uint8_t> h = {0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (std::uint32_t d : dims)
    for (int s : {24, 16, 8, 0}) h.push_back(static_cast<std::uint8_t>(d >> s));
  return h;
}

std::string error_of(const std::string& path) {
  try {
    read_idx(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("IDX images round trip, gzip and plain, and map pixels to [-1, 1]") {
  const std::string dir = io_test::scratch_dir("idx_roundtrip");
  const Index n = 5, h = 7, w = 3;
  const auto px = sample_pixels(n, h, w);
  for (bool gzip : {true, false}) {
    const std::string path = dir + (gzip ? "/img.idx3.gz" : "/img.idx3");
    write_idx_images(path, px.data(), n, h, w, gzip);
    const auto bytes = io_test::slurp(path);
    CAPTURE(gzip, bytes.size());
    REQUIRE(bytes.size() >= 2);
    REQUIRE((bytes[0] == 0x1f && bytes[1] == 0x8b) == gzip);
    if (!gzip) REQUIRE(bytes.size() == 16 + px.size());

    const IdxArray a = read_idx(path);
    REQUIRE(a.dims == std::vector<std::int32_t>{5, 7, 3});
    REQUIRE(a.data == px);

    const auto images = load_idx_images<float>(path);
    REQUIRE(images.shape() == (Shape{5, 1, 7, 3}));
    REQUIRE(images[0] == -1.0f);
    REQUIRE(images[1] == 1.0f);
    for (std::size_t i = 0; i < px.size(); ++i) {
      CAPTURE(i);
      REQUIRE(images[static_cast<Index>(i)] == static_cast<float>(px[i]) / 255.0f * 2.0f - 1.0f);
    }
    const auto images_d = load_idx_images<double>(path);
    REQUIRE(images_d[static_cast<Index>(px.size() - 1)] == static_cast<double>(px.back()) / 255.0 * 2.0 - 1.0);
  }
  // Deterministic gzip output: the same input gives the same file.
  write_idx_images(dir + "/again.gz", px.data(), n, h, w, true);
  REQUIRE(io_test::slurp(dir + "/again.gz") == io_test::slurp(dir + "/img.idx3.gz"));

  // Labels (1-D) through read_idx; load_idx_images refuses them.
  IdxArray labels;
  labels.dims = {4};
  labels.data = {3, 1, 4, 1};
  write_idx(dir + "/labels.gz", labels);
  REQUIRE(read_idx(dir + "/labels.gz").data == labels.data);
  REQUIRE_THROWS_WITH(load_idx_images<float>(dir + "/labels.gz"),
                      Catch::Contains(dir + "/labels.gz") && Catch::Contains("expected images") &&
                          Catch::Contains("1 dimension"));
  // Empty image set.
  write_idx_images(dir + "/none.gz", nullptr, 0, 28, 28);
  REQUIRE(load_idx_images<float>(dir + "/none.gz").shape() == (Shape{0, 1, 28, 28}));
}

TEST_CASE("read_idx rejects broken files with a message naming the file and the problem") {
  const std::string dir = io_test::scratch_dir("idx_broken");
  const auto px = sample_pixels(4, 6, 6);
  std::vector<std::uint8_t> plain = idx_header(0x08, {4, 6, 6});
  plain.insert(plain.end(), px.begin(), px.end());
  const auto gz = detail::gzip_compress(plain.data(), plain.size());

  struct Case {
    std::string label;
    std::vector<std::uint8_t> bytes;
    std::vector<std::string> expect;
  };
  std::vector<Case> cases;
  cases.push_back({"empty", {}, {"too short for an IDX header (0 bytes)"}});
  cases.push_back({"bad_magic", {0x12, 0x34, 0x08, 0x03}, {"not an IDX file"}});
  cases.push_back({"float_type", idx_header(0x0d, {2}), {"element type 0xd", "only unsigned bytes (0x08)"}});
  cases.push_back({"zero_dims", idx_header(0x08, {}), {"number of dimensions 0"}});
  cases.push_back({"negative_dim", idx_header(0x08, {0x80000000u, 2}), {"dimension 0 is negative"}});
  cases.push_back({"header_cut", std::vector<std::uint8_t>(plain.begin(), plain.begin() + 10),
                   {"truncated header (dimension 1 of 3)"}});
  cases.push_back({"plain_truncated", std::vector<std::uint8_t>(plain.begin(), plain.end() - 1),
                   {"truncated", "promises 144 data bytes", "holds only 143"}});
  auto plain_extra = plain;
  plain_extra.push_back(0);
  cases.push_back({"plain_trailing", plain_extra, {"more data than the 144 bytes the header promises"}});
  cases.push_back({"absurd_header", idx_header(0x08, {0x7fffffff, 0x7fffffff, 0x7fffffff}),
                   {"promises 2147483647 x 2147483647 x 2147483647 bytes", "limit of 1073741824"}});
  // A header promising 10^9 bytes (under the limit) with a few bytes behind it: an error, not a 1 GB allocation.
  auto liar = idx_header(0x08, {1000, 1000, 1000});
  liar.resize(liar.size() + 100, 7);
  cases.push_back({"lying_header", liar, {"promises 1000000000 data bytes", "holds only 100"}});

  cases.push_back({"gzip_truncated_half", std::vector<std::uint8_t>(gz.begin(), gz.begin() + static_cast<long>(gz.size() / 2)),
                   {"gzip stream is truncated"}});
  cases.push_back({"gzip_truncated_trailer", std::vector<std::uint8_t>(gz.begin(), gz.end() - 4),
                   {"gzip stream is truncated"}});
  auto bad_crc = gz;
  bad_crc[gz.size() - 8] ^= 0xff;  // the CRC-32 of the gzip trailer
  cases.push_back({"gzip_bad_crc", bad_crc, {"corrupt gzip stream", "incorrect data check"}});
  auto bad_block = gz;
  bad_block[10] |= 0x06;  // first deflate block header: BTYPE = 11, reserved
  cases.push_back({"gzip_bad_block", bad_block, {"corrupt gzip stream", "invalid block type"}});
  auto gz_after = gz;
  gz_after.insert(gz_after.end(), {'j', 'u', 'n', 'k'});
  cases.push_back({"gzip_junk_after", gz_after, {"unexpected bytes after the end of the gzip stream"}});
  cases.push_back({"gzip_content_trailing", detail::gzip_compress(plain_extra.data(), plain_extra.size()),
                   {"more data than the 144 bytes the header promises"}});
  const auto gz_short_plain = std::vector<std::uint8_t>(plain.begin(), plain.end() - 10);
  cases.push_back({"gzip_content_truncated", detail::gzip_compress(gz_short_plain.data(), gz_short_plain.size()),
                   {"holds only 134", "decompressed"}});

  for (const Case& c : cases) {
    const std::string path = dir + "/" + c.label;
    io_test::spit(path, c.bytes);
    const std::string message = error_of(path);
    INFO("case " << c.label);
    CAPTURE(message);
    REQUIRE(message.find("IDX file '" + path + "'") != std::string::npos);
    for (const auto& part : c.expect) {
      CAPTURE(part);
      REQUIRE(message.find(part) != std::string::npos);
    }
  }

  const std::string missing = dir + "/no-such-file.gz";
  REQUIRE_THROWS_WITH(read_idx(missing), Catch::Contains(missing) && Catch::Contains("does not exist"));
  REQUIRE_THROWS_WITH(read_idx(dir), Catch::Contains(dir) && Catch::Contains("not a regular file"));
  REQUIRE_THROWS_WITH(read_idx(dir + "/plain_truncated", 100), Catch::Contains("limit of 100"));
  REQUIRE_THROWS_WITH(write_idx_images(dir + "/nofolder/x.gz", px.data(), 4, 6, 6),
                      Catch::Contains(dir + "/nofolder/x.gz"));
}

TEST_CASE("read_idx survives random corruption of gzip and plain files") {
  const std::string dir = io_test::scratch_dir("idx_fuzz");
  const auto px = sample_pixels(3, 5, 5);
  std::vector<std::uint8_t> plain = idx_header(0x08, {3, 5, 5});
  plain.insert(plain.end(), px.begin(), px.end());
  const auto gz = detail::gzip_compress(plain.data(), plain.size());
  diffusion::Rng rng(11);
  int ok = 0, rejected = 0;
  const std::string path = dir + "/f";
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::uint8_t> bytes = trial % 2 ? gz : plain;
    const auto len = static_cast<std::size_t>(rng.uniform_int(static_cast<std::int64_t>(bytes.size()) + 1));
    if (trial % 5 == 0) bytes.resize(len);
    for (int e = 0; e < 3 && !bytes.empty(); ++e)
      bytes[static_cast<std::size_t>(rng.uniform_int(static_cast<std::int64_t>(bytes.size())))] =
          static_cast<std::uint8_t>(rng.uniform_int(256));
    io_test::spit(path, bytes);
    try {
      const IdxArray a = read_idx(path, 1 << 20);
      std::uint64_t total = 1;
      for (auto d : a.dims) total *= static_cast<std::uint64_t>(d);
      REQUIRE(total == a.data.size());
      ++ok;
    } catch (const Error&) {
      ++rejected;
    }
  }
  CAPTURE(ok, rejected);
  REQUIRE(rejected > 0);
  REQUIRE(ok > 0);
}

TEST_CASE("the Fashion-MNIST test set loads as 10000 images of 28x28 in [-1, 1]") {
  const std::string folder = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(folder + "/t10k-images-idx3-ubyte.gz")) {
    diffusion::testing::skip(folder + " is not present (Debian package dataset-fashion-mnist)", "DIFFUSION_REQUIRE_FASHION_MNIST");
    return;
  }
  const auto images = load_idx_images<float>(folder + "/t10k-images-idx3-ubyte.gz");
  REQUIRE(images.shape() == (Shape{10000, 1, 28, 28}));
  float lo = 2, hi = -2;
  double sum = 0;
  for (float v : images) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    sum += v;
  }
  const double mean = sum / static_cast<double>(images.numel());
  CAPTURE(lo, hi, mean);
  REQUIRE(lo == -1.0f);
  REQUIRE(hi == 1.0f);
  // Fashion-MNIST's mean pixel is about 0.286 of full scale, i.e. about -0.43 in [-1, 1].
  REQUIRE(mean > -0.5);
  REQUIRE(mean < -0.35);

  const IdxArray labels = read_idx(folder + "/t10k-labels-idx1-ubyte.gz");
  REQUIRE(labels.dims == std::vector<std::int32_t>{10000});
  std::array<int, 10> counts{};
  for (std::uint8_t l : labels.data) {
    REQUIRE(l < 10);
    ++counts[l];
  }
  for (int c : counts) REQUIRE(c == 1000);  // the test set is balanced
}
