// The image-folder data set against Pillow (tests/golden/make_image_fixtures.py: the input files and
// image_folder.safetensors): decoding of every format, alpha compositing and gray conversion exact (JPEG within
// a stated tolerance: two different IDCTs), the box filter within one level of the exact area average (and of
// Pillow's BOX at integer ratios; Pillow's BOX is another filter at other ratios), the centre crop exact; the folder's order, classes and labels; bad input; the
// data set description a checkpoint stores.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/io/image_folder.hpp"
#include "diffusion/io/safetensors.hpp"
#include "io/io_test_util.hpp"
#include "support/threads.hpp"

using diffusion::Error;
using diffusion::Index;
using diffusion::Tensor;
using namespace diffusion::io;

namespace {

const std::string kGood = std::string(DIFFUSION_GOLDEN_DIR) + "/image_folder";
const std::string kBad = std::string(DIFFUSION_GOLDEN_DIR) + "/image_folder_bad";

struct Fixture {
  SafetensorsReader reader{std::string(DIFFUSION_GOLDEN_DIR) + "/image_folder.safetensors"};
  int H = 0, W = 0;
  std::array<std::uint8_t, 3> background{};
  std::vector<std::string> files;
  Fixture() {
    const auto crop = nlohmann::json::parse(reader.metadata().at("crop"));
    H = crop.at("height").get<int>();
    W = crop.at("width").get<int>();
    const auto bg = nlohmann::json::parse(reader.metadata().at("background"));
    for (int c = 0; c < 3; ++c) background[static_cast<std::size_t>(c)] = bg.at(static_cast<std::size_t>(c)).get<std::uint8_t>();
    files = nlohmann::json::parse(reader.metadata().at("files")).get<std::vector<std::string>>();
  }
  bool has(const std::string& file, const char* what) const { return reader.contains(file + "|" + what); }
  // A reference image as Image8 (rank 2: gray, rank 3: (h, w, c)).
  Image8 image(const std::string& file, const char* what) const {
    const Tensor<std::uint8_t> t = reader.read<std::uint8_t>(file + "|" + what);
    Image8 im;
    im.height = static_cast<int>(t.dim(0));
    im.width = static_cast<int>(t.dim(1));
    im.channels = t.rank() == 3 ? static_cast<int>(t.dim(2)) : 1;
    im.pixels.assign(t.begin(), t.end());
    return im;
  }
  DecodeOptions options(int channels) const {
    DecodeOptions o;
    o.channels = channels;
    o.height = H;
    o.width = W;
    o.background = background;
    o.upscale = true;
    return o;
  }
};

const Fixture& fixture() {
  static const Fixture f;
  return f;
}

bool is_jpeg(const std::string& f) { return f.size() > 4 && f.substr(f.size() - 4) == ".jpg"; }

struct Diff {
  int max = 0;
  std::size_t count = 0;  // elements that differ
  std::size_t size = 0;
  double mean = 0.0;      // mean |difference|
};

Diff diff(const Image8& a, const Image8& b) {
  REQUIRE(a.width == b.width);
  REQUIRE(a.height == b.height);
  REQUIRE(a.channels == b.channels);
  REQUIRE(a.pixels.size() == b.pixels.size());
  Diff d;
  d.size = a.pixels.size();
  double sum = 0;
  for (std::size_t i = 0; i < a.pixels.size(); ++i) {
    const int e = std::abs(int(a.pixels[i]) - int(b.pixels[i]));
    d.max = std::max(d.max, e);
    d.count += e != 0;
    sum += e;
  }
  d.mean = sum / static_cast<double>(d.size);
  return d;
}

Image8 decode_file(const std::string& path) {
  const std::vector<std::uint8_t> bytes = read_file(path);
  return decode_image(bytes.data(), bytes.size(), path, std::uint64_t{1} << 25);
}

// (C, H, W) image n of a byte tensor as an interleaved Image8.
Image8 planar_to_image(const Tensor<std::uint8_t>& images, Index n) {
  const Index C = images.dim(1), H = images.dim(2), W = images.dim(3);
  Image8 im;
  im.channels = static_cast<int>(C);
  im.height = static_cast<int>(H);
  im.width = static_cast<int>(W);
  im.pixels.resize(static_cast<std::size_t>(C * H * W));
  for (Index c = 0; c < C; ++c)
    for (Index p = 0; p < H * W; ++p) im.pixels[static_cast<std::size_t>(p * C + c)] = images[((n * C) + c) * H * W + p];
  return im;
}

}  // namespace

TEST_CASE("decoding, alpha compositing and gray conversion match Pillow exactly, JPEG within 3 levels") {
  const Fixture& f = fixture();
  REQUIRE(f.files.size() == 17);
  for (const std::string& file : f.files) {
    CAPTURE(file);
    const Image8 decoded = decode_file(kGood + "/" + file);
    const Image8 rgb = convert_channels(decoded, 3, f.background);
    const Image8 gray = convert_channels(decoded, 1, f.background);
    const Diff drgb = diff(rgb, f.image(file, "rgb")), dgray = diff(gray, f.image(file, "gray"));
    INFO("RGB: max |difference| " << drgb.max << ", " << drgb.count << " of " << drgb.size << " values differ; gray: max "
                                  << dgray.max << ", " << dgray.count << " differ");
    if (is_jpeg(file)) {
      // stb's JPEG decoder and libjpeg-turbo's (Pillow) use different integer IDCTs, chroma upsampling and YCbCr
      // conversions: measured here, max 2 levels (mean < 0.3) on 4:2:0, 4:4:4 and gray files.
      REQUIRE(drgb.max <= 3);
      REQUIRE(drgb.mean < 0.5);
      REQUIRE(dgray.max <= 3);
    } else {
      REQUIRE(drgb.max == 0);
      REQUIRE(dgray.max == 0);
    }
  }
}

TEST_CASE("the box filter is the exact area average within one level and Pillow's BOX at integer ratios") {
  const Fixture& f = fixture();
  int shrunk = 0;
  for (const std::string& file : f.files) {
    CAPTURE(file);
    const Image8 rgb = f.image(file, "rgb");  // Pillow's decoding: the resize is tested on its own
    const Image8 box = f.image(file, "box");
    const CoverSize cover = cover_size(rgb.width, rgb.height, f.W, f.H);
    REQUIRE(cover.width == static_cast<std::uint64_t>(box.width));
    REQUIRE(cover.height == static_cast<std::uint64_t>(box.height));
    const Image8 ours = resize_image(rgb, box.width, box.height);
    if (f.has(file, "bilinear")) {  // enlarging: stb's triangle filter, Pillow's BILINEAR (the same tent, edges
                                    // clamped there, renormalised here: the same values at 2x)
      const Diff d = diff(ours, f.image(file, "bilinear"));
      INFO("enlarged: max |difference| " << d.max << ", " << d.count << " of " << d.size);
      REQUIRE(d.max <= 1);
      continue;
    }
    if (!f.has(file, "area")) {  // already the size needed
      REQUIRE(diff(ours, rgb).max == 0);
      continue;
    }
    ++shrunk;
    // stb computes in float from p / 255 and rounds once: within one level of the exact average (a value within
    // float rounding of k + 0.5 may go either way).
    const Diff exact = diff(ours, f.image(file, "area"));
    INFO("against the exact area average: max " << exact.max << ", " << exact.count << " of " << exact.size);
    REQUIRE(exact.max <= 1);
    REQUIRE(exact.count * 50 <= exact.size);  // at most 2% of the values off by one
    const bool integer_ratio = rgb.width % box.width == 0 && rgb.height % box.height == 0 &&
                               rgb.width / box.width == rgb.height / box.height;
    if (integer_ratio) {
      // Every output pixel averages the same k x k input pixels in both; Pillow rounds its horizontal pass to
      // 8 bits before the vertical one, so it may land one level away.
      const Diff pil = diff(ours, box);
      INFO("against Pillow's BOX: max " << pil.max << ", " << pil.count << " of " << pil.size);
      REQUIRE(pil.max <= 1);
    }
    // Not compared with Pillow at other ratios: its BOX filter counts an input pixel fully when the pixel's centre
    // lies in the output pixel and not at all otherwise, where stb (and the exact average above) weigh the pixels
    // cut by an output pixel's edge by the area inside. The two differ by what the border pixels differ from the
    // rest: measured up to 22 levels (mean 4) on cat_rgb.png, 99 (mean 18) on the noise of dog_gray16.png.
  }
  REQUIRE(shrunk >= 10);
}

TEST_CASE("the centre crop is exactly Pillow's crop of the centre window") {
  const Fixture& f = fixture();
  for (const std::string& file : f.files) {
    CAPTURE(file);
    REQUIRE(diff(center_crop(f.image(file, "box"), f.H, f.W), f.image(file, "crop")).max == 0);
  }
  REQUIRE_THROWS_WITH(center_crop(f.image(f.files[0], "crop"), f.H + 1, f.W), Catch::Contains("cannot crop"));
}

TEST_CASE("an image folder loads in sorted path order with classes from its first-level subfolders") {
  const Fixture& f = fixture();
  for (int channels : {3, 1}) {
    CAPTURE(channels);
    ImageFolderOptions o;
    o.decode = f.options(channels);
    o.labels = true;
    const ImageFolder data(kGood, o);
    REQUIRE(data.files() == f.files);  // Python's sorted() on the same relative paths
    REQUIRE(std::is_sorted(data.files().begin(), data.files().end()));
    REQUIRE(data.classes() == std::vector<std::string>{"animals", "shapes", "symbols"});
    REQUIRE(data.ignored() == 1);  // symbols/README.txt
    REQUIRE(data.skipped().empty());
    REQUIRE(data.size() == 17);
    REQUIRE(data.images().shape() == diffusion::Shape{17, channels, f.H, f.W});
    REQUIRE(data.labels().size() == 17);
    for (Index n = 0; n < data.size(); ++n) {
      const std::string& file = data.files()[static_cast<std::size_t>(n)];
      CAPTURE(file);
      const std::string cls = file.substr(0, file.find('/'));
      REQUIRE(data.classes()[static_cast<std::size_t>(data.labels()[static_cast<std::size_t>(n)])] == cls);
      // The data set is the composition of the steps checked above, on our own decoding.
      const Image8 converted = convert_channels(decode_file(kGood + "/" + file), channels, f.background);
      const CoverSize cover = cover_size(converted.width, converted.height, f.W, f.H);
      const int cw = static_cast<int>(cover.width), ch = static_cast<int>(cover.height);
      const Image8 got = planar_to_image(data.images(), n);
      REQUIRE(diff(got, resize_and_crop(converted, cw, ch, f.H, f.W)).max == 0);
      // resize_and_crop computes only the crop's window: the same as resizing the whole image and cropping, up to
      // float rounding of the filter positions (no difference at all on these files).
      REQUIRE(diff(got, center_crop(resize_image(converted, cw, ch), f.H, f.W)).max <= 1);
      // End to end against the reference: Pillow's crop of the exact area average (of Pillow's BOX when the
      // ratio is an integer or there is nothing to resize, of its BILINEAR when enlarging), one level of rounding
      // apart; JPEG files add their decoding differences.
      if (channels == 3) {
        const char* resized = f.has(file, "area") ? "area" : f.has(file, "bilinear") ? "bilinear" : "box";
        const Image8 reference = center_crop(f.image(file, resized), f.H, f.W);
        const Diff d = diff(got, reference);
        INFO("end to end against the " << resized << " reference: max " << d.max << ", mean " << d.mean);
        REQUIRE(d.max <= (is_jpeg(file) ? 3 : 1));
      }
    }
    REQUIRE(data.info().to_json() == nlohmann::json{{"channels", channels}, {"height", f.H}, {"width", f.W},
                                                     {"classes", {"animals", "shapes", "symbols"}}});
  }
}

TEST_CASE("an image folder decodes the same bytes on any number of threads and reports progress") {
  const Fixture& f = fixture();
  ImageFolderOptions o;
  o.decode = f.options(3);
  o.chunk = 5;
  std::vector<std::pair<std::size_t, std::size_t>> calls;
  o.progress = [&](std::size_t done, std::size_t total) { calls.emplace_back(done, total); };
  Tensor<std::uint8_t> one, two;
  {
    diffusion::testing::ScopedThreads threads(1);
    one.copy_from(ImageFolder(kGood, o).images());
  }
  REQUIRE(calls == std::vector<std::pair<std::size_t, std::size_t>>{{5, 17}, {10, 17}, {15, 17}, {17, 17}});
  {
    diffusion::testing::ScopedThreads threads(2);
    o.progress = nullptr;
    two.copy_from(ImageFolder(kGood, o).images());
  }
  REQUIRE(one.shape() == two.shape());
  REQUIRE(std::memcmp(one.data(), two.data(), static_cast<std::size_t>(one.numel())) == 0);
}

TEST_CASE("bad files are named with stb's reason, and skipped and counted on request") {
  const Fixture& f = fixture();
  ImageFolderOptions o;
  o.decode = f.options(3);
  o.decode.upscale = false;
  // The first failing file in path order: corrupt.png (good/corrupt.png < good/fake.jpg < good/ok.png < ...).
  REQUIRE_THROWS_WITH(ImageFolder(kBad, o), Catch::Contains("good/corrupt.png") && Catch::Contains("cannot decode") &&
                                                 Catch::Contains("skip_bad_files"));
  o.skip_bad_files = true;
  REQUIRE_THROWS_AS(ImageFolder(kBad, o), Error);
  REQUIRE_THROWS_WITH(ImageFolder(kBad, o), Catch::Contains("good/tiny.png") && Catch::Contains("9 x 5") &&
                                                 Catch::Contains("smaller than the 12 x 16 crop") &&
                                                 Catch::Contains("skip_small_images"));
  o.skip_small_images = true;
  const ImageFolder data(kBad, o);
  REQUIRE(data.files() == std::vector<std::string>{"good/ok.png"});
  REQUIRE(data.ignored() == 1);  // empty_class/notes.txt
  REQUIRE(data.skipped().size() == 3);
  REQUIRE(data.skipped()[0].path == "good/corrupt.png");
  REQUIRE_THAT(data.skipped()[1].reason, Catch::Contains("fake.jpg") && Catch::Contains("cannot decode"));
  REQUIRE(data.skipped()[2].path == "good/tiny.png");
  // With upscale the tiny image is enlarged instead.
  o.skip_small_images = false;
  o.decode.upscale = true;
  REQUIRE(ImageFolder(kBad, o).size() == 2);
}

TEST_CASE("an empty folder, a class folder without images and an image outside the class folders are errors") {
  const Fixture& f = fixture();
  ImageFolderOptions o;
  o.decode = f.options(3);
  o.skip_bad_files = o.skip_small_images = true;
  o.labels = true;
  REQUIRE_THROWS_WITH(ImageFolder(kBad, o), Catch::Contains("class folder 'empty_class' has no images"));

  const std::string empty = io_test::scratch_dir("image_folder_empty");
  io_test::spit(empty + "/notes.txt", {'h', 'i'});
  o.labels = false;
  REQUIRE_THROWS_WITH(ImageFolder(empty, o), Catch::Contains(empty) && Catch::Contains("no images") &&
                                                 Catch::Contains("among its 1 files"));
  REQUIRE_THROWS_WITH(ImageFolder(empty + "/absent", o), Catch::Contains("not a folder"));
  o.labels = true;
  REQUIRE_THROWS_WITH(ImageFolder(empty, o), Catch::Contains("one subfolder per class"));

  // An image directly in the root of a labelled folder; a hidden folder is not a class.
  const std::string root = io_test::scratch_dir("image_folder_root_image");
  std::filesystem::create_directories(root + "/a");
  std::filesystem::create_directories(root + "/.hidden");
  std::filesystem::copy_file(kBad + "/good/ok.png", root + "/a/x.png");
  std::filesystem::copy_file(kBad + "/good/ok.png", root + "/.hidden/y.png");
  {
    const ImageFolder one(root, o);
    REQUIRE(one.classes() == std::vector<std::string>{"a"});
    REQUIRE(one.files() == std::vector<std::string>{"a/x.png"});
  }
  std::filesystem::copy_file(kBad + "/good/ok.png", root + "/top.png");
  REQUIRE_THROWS_WITH(ImageFolder(root, o), Catch::Contains("'top.png' is not inside a class folder"));

  // All images skipped: nothing left.
  const std::string bad_only = io_test::scratch_dir("image_folder_bad_only");
  std::filesystem::copy_file(kBad + "/good/fake.jpg", bad_only + "/fake.jpg");
  o.labels = false;
  REQUIRE_THROWS_WITH(ImageFolder(bad_only, o), Catch::Contains("none of its 1 image files") &&
                                                    Catch::Contains("fake.jpg"));
}

TEST_CASE("an image declaring more pixels than max_pixels is refused before decoding") {
  // A PNG signature and an IHDR of 8000 x 8000 RGBA (64 Mpx, 256 MB decoded; within stb's own limit of 2^30
  // bytes) and nothing else: the header check refuses it before stb allocates, naming the limit.
  std::vector<std::uint8_t> png = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                   0, 0, 0x1F, 0x40, 0, 0, 0x1F, 0x40, 8, 6, 0, 0, 0, 0, 0, 0, 0};
  REQUIRE(probe_image(png.data(), png.size(), "huge.png", std::uint64_t{1} << 30).width == 8000);
  REQUIRE_THROWS_WITH(decode_example(png.data(), png.size(), "huge.png", DecodeOptions{}),
                      Catch::Contains("huge.png") && Catch::Contains("8000 x 8000 = 64000000 pixels") &&
                          Catch::Contains("max_pixels") && Catch::Contains("not decoded"));
  // The resized size is capped too (an extreme aspect ratio enlarged): 1 x 4000 to cover 64 x 64 -> 64 x 256000.
  DecodeOptions o;
  o.upscale = true;
  o.max_pixels = 1 << 20;
  std::vector<std::uint8_t> tall = png;
  const std::uint8_t dims[8] = {0, 0, 0, 1, 0, 0, 0x0F, 0xA0};
  std::memcpy(tall.data() + 16, dims, 8);
  REQUIRE_THROWS_WITH(decode_example(tall.data(), tall.size(), "tall.png", o),
                      Catch::Contains("tall.png") && Catch::Contains("64 x 256000") && Catch::Contains("max_pixels"));
  REQUIRE_THROWS_WITH(decode_example(png.data(), 0, "empty.png", o), Catch::Contains("empty.png") &&
                                                                       Catch::Contains("empty"));
  o.channels = 2;
  REQUIRE_THROWS_WITH(check_decode_options(o, "test"), Catch::Contains("channels must be 1 or 3"));
}

TEST_CASE("JPEG Huffman tables that would overflow stb 2.27's arrays are refused before stb reads them") {
  // Inputs found by tests/fuzz/fuzz_image.cpp (its first byte is the fuzzer's options byte): a DHT table of 557
  // codes; one of 399 codes in a segment that runs past the end of the file (stb builds the table first); one of
  // 1861 codes in a file that starts with 0xFF fill bytes before its start-of-image marker (stb skips them).
  const std::string dir = std::string(DIFFUSION_GOLDEN_DIR) + "/../fuzz/regressions/image/";
  for (const char* file : {"jpeg_dht_more_than_256_codes.jpg", "jpeg_dht_truncated_segment.jpg",
                           "jpeg_dht_after_fill_bytes.jpg"}) {
    CAPTURE(file);
    const std::vector<std::uint8_t> bytes = read_file(dir + file);
    REQUIRE(bytes.size() > 1);
    REQUIRE_THROWS_WITH(probe_image(bytes.data() + 1, bytes.size() - 1, file, 1 << 20),
                        Catch::Contains(file) && Catch::Contains("Huffman table declares") &&
                            Catch::Contains("at most 256"));
  }
  // The valid JPEGs of the test folder pass the check (their tables hold at most 256 codes).
  for (const char* file : {"animals/fox_444.jpg", "animals/nested/deep/owl_420.jpg", "animals/nested/moth_gray.jpg"}) {
    const std::vector<std::uint8_t> bytes = read_file(kGood + "/" + file);
    REQUIRE_NOTHROW(probe_image(bytes.data(), bytes.size(), file, 1 << 20));
  }
}

TEST_CASE("the data set description round-trips through JSON and says what differs from a checkpoint's") {
  DatasetInfo a{3, 32, 32, {"faces", "flags", "food"}};
  REQUIRE(DatasetInfo::from_json(a.to_json(), "x").to_json() == a.to_json());
  REQUIRE(dataset_differences(a, a).empty());
  REQUIRE_NOTHROW(check_dataset_matches(a, a, "resume"));

  DatasetInfo b = a;
  b.channels = 1;
  b.height = 16;
  b.classes = {"faces", "food", "symbols"};
  const std::vector<std::string> d = dataset_differences(a, b);
  REQUIRE(d == std::vector<std::string>{"channels: 3 in the checkpoint, 1 in the data set",
                                        "image size (height x width): 32 x 32 in the checkpoint, 16 x 32 in the data set",
                                        "class 'flags' is in the checkpoint, not in the data set",
                                        "class 'symbols' is in the data set, not in the checkpoint"});
  REQUIRE_THROWS_WITH(check_dataset_matches(a, b, "resume 'ckpt'"),
                      Catch::StartsWith("resume 'ckpt': the data set differs") && Catch::Contains("channels: 3") &&
                          Catch::Contains("class 'symbols'"));
  DatasetInfo c = a;
  c.classes = {"flags", "faces", "food"};  // same names, another order: labels would mean other classes
  REQUIRE(dataset_differences(a, c) == std::vector<std::string>{"class 0: 'faces' in the checkpoint, 'flags' in the data set",
                                                                "class 1: 'flags' in the checkpoint, 'faces' in the data set"});
  DatasetInfo none = a;
  none.classes.clear();
  REQUIRE(dataset_differences(none, a) == std::vector<std::string>{"classes: the checkpoint has none, the data set has 3"});

  std::map<std::string, std::string> meta;
  DatasetInfo out;
  REQUIRE_FALSE(dataset_info_from_metadata(meta, "ckpt", out));
  meta[kDatasetInfoKey] = a.to_json().dump();
  REQUIRE(dataset_info_from_metadata(meta, "ckpt", out));
  REQUIRE(out.to_json() == a.to_json());
  meta[kDatasetInfoKey] = "{not json";
  REQUIRE_THROWS_WITH(dataset_info_from_metadata(meta, "ckpt", out), Catch::Contains("'ckpt'") &&
                                                                         Catch::Contains("not valid JSON"));
  REQUIRE_THROWS_WITH(DatasetInfo::from_json(nlohmann::json{{"channels", 2}, {"height", 1}, {"width", 1}}, "m"),
                      Catch::Contains("'channels' must be 1 or 3"));
  REQUIRE_THROWS_WITH(DatasetInfo::from_json(nlohmann::json{{"channels", 3}, {"height", 0}, {"width", 1}}, "m"),
                      Catch::Contains("'height' must be an integer in [1, 65536]"));
  REQUIRE_THROWS_WITH(DatasetInfo::from_json(nlohmann::json{{"channels", 3}, {"height", 1}, {"width", 1}, {"classes", {1}}}, "m"),
                      Catch::Contains("not a name"));
}
