// Writes the seed corpora of the fuzzers into <out>/{safetensors,idx,unet_config,image,checkpoint_resume}: valid
// files of every kind the readers accept (each safetensors dtype, metadata, a tiny U-Net's weights, a training
// checkpoint, small golden fixtures; IDX images and labels, plain and gzip, empty dimensions; U-Net configurations
// with and without extensions; the image files of tests/golden/image_folder*; the metadata of a fashion_mnist
// checkpoint, when built with DIFFUSION_FUZZ_CHECKPOINT_RESUME). Usage: fuzz_make_seeds OUT_DIR GOLDEN_DIR
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "diffusion/io/idx.hpp"
#include "diffusion/io/safetensors.hpp"
#include "diffusion/model/unet_weights.hpp"
#include "diffusion/train/checkpoint.hpp"
#if DIFFUSION_FUZZ_CHECKPOINT_RESUME
#include "checkpoint_resume_seed.hpp"
#endif

namespace fs = std::filesystem;
using namespace diffusion;

namespace {

void spit(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Small enough that its weights file (~20 KB) and checkpoint (~80 KB) stay near libFuzzer's -max_len.
UnetConfig tiny_config() {
  UnetConfig c;
  c.dim = 4;
  c.channels = 1;
  c.dim_mults = {1};
  c.attention_heads = 1;
  c.attention_dim_head = 2;
  return c;
}

void safetensors_seeds(const fs::path& dir, const fs::path& golden) {
  io::SafetensorsWriter all;
  const std::vector<double> d = {0.5, -1.25, 3.0, 1e-3};
  const std::vector<float> f = {0.5f, -1.25f, 3.0f, 1e-3f};
  const std::vector<std::int8_t> i8 = {-128, 0, 1, 127};
  const std::vector<std::int16_t> i16 = {-300, 0, 1, 300};
  const std::vector<std::int32_t> i32 = {-70000, 0, 1, 70000};
  const std::vector<std::int64_t> i64 = {-(std::int64_t{1} << 40), 0, 1, std::int64_t{1} << 40};
  const std::vector<std::uint8_t> u8 = {0, 1, 128, 255};
  const std::uint16_t half_bits[4] = {0x3800, 0xbd00, 0x4200, 0x7c00};  // 0.5 -1.25 3 inf
  all.add("f64", Shape{2, 2}, d.data());
  all.add("f32", Shape{4}, f.data());
  all.add("i8", Shape{1, 4}, i8.data());
  all.add("i16", Shape{4, 1}, i16.data());
  all.add("i32", Shape{2, 1, 2}, i32.data());
  all.add("i64", Shape{1, 1, 2, 2}, i64.data());
  all.add("u8", Shape{4}, u8.data());
  all.add_raw("f16", io::DType::F16, {4}, half_bits, sizeof half_bits);
  all.add_raw("bf16", io::DType::BF16, {2, 2}, half_bits, sizeof half_bits);
  all.add_raw("bool", io::DType::BOOL, {4}, u8.data(), 4);  // 0 1 128 255: a hostile BOOL
  all.add_raw("rank5", io::DType::U8, {1, 1, 1, 2, 2}, u8.data(), 4);
  all.add_raw("empty", io::DType::F32, {0, 3}, nullptr, 0);
  all.add_metadata("format", "pt");
  all.write((dir / "dtypes.safetensors").string());

  io::SafetensorsWriter nothing;
  nothing.write((dir / "empty.safetensors").string());

  io::SafetensorsWriter one;
  one.add("x", Shape{}, &f[0]);
  one.add_metadata("diffusion.unet", tiny_config().to_json().dump());
  one.write((dir / "scalar_with_config.safetensors").string());

  Unet<float> net(tiny_config(), 1);
  save_unet_weights(net, (dir / "tiny_unet.safetensors").string());
  TrainerOptions o;
  Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 8), o);
  Tensor<float> x(Shape{2, 1, 4, 4}, 0.25f);
  trainer.step(x);
  save_checkpoint((dir / "tiny_checkpoint.safetensors").string(), trainer, {{"note", "seed"}});

  // Small golden fixtures (PyTorch-written files).
  if (fs::exists(golden))
    for (const auto& e : fs::directory_iterator(golden))
      if (e.path().extension() == ".safetensors" && e.file_size() <= 100000)
        fs::copy_file(e.path(), dir / ("golden_" + e.path().filename().string()), fs::copy_options::overwrite_existing);

  // The header-only form of each (fuzz_safetensors adds a 128 KiB data section to an input starting with '{').
  std::vector<fs::path> files;  // the .safetensors only: a second run finds the first run's .header files here
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") files.push_back(e.path());
  for (const fs::path& p : files) {
    const io::SafetensorsReader r(p.string());
    std::size_t data_end = 0;
    for (const auto& name : r.names()) data_end = std::max(data_end, r.info(name).end);
    if (data_end > 128 * 1024) continue;
    std::ifstream in(p, std::ios::binary);
    std::uint64_t n = 0;
    in.read(reinterpret_cast<char*>(&n), 8);
    std::string header(static_cast<std::size_t>(n), '\0');
    in.read(header.data(), static_cast<std::streamsize>(n));
    spit(fs::path(p.string() + ".header"), header);
  }
}

void idx_seeds(const fs::path& dir) {
  std::vector<std::uint8_t> pixels(3 * 4 * 5);
  for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<std::uint8_t>(i * 17);
  for (bool gzip : {true, false}) {
    const std::string suffix = gzip ? ".gz" : "";
    io::write_idx_images((dir / ("images3x4x5.idx" + suffix)).string(), pixels.data(), 3, 4, 5, gzip);
    io::IdxArray labels;
    labels.dims = {10};
    labels.data = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    io::write_idx((dir / ("labels10.idx" + suffix)).string(), labels, gzip);
    io::IdxArray empty;
    empty.dims = {0, 28, 28};
    io::write_idx((dir / ("empty0x28x28.idx" + suffix)).string(), empty, gzip);
    io::IdxArray four;
    four.dims = {1, 2, 2, 3};
    four.data.assign(12, 200);
    io::write_idx((dir / ("four_dims.idx" + suffix)).string(), four, gzip);
  }
}

void unet_config_seeds(const fs::path& dir) {
  UnetConfig reference;  // the primer's defaults
  UnetConfig resnet = tiny_config();
  resnet.use_convnext = false;
  resnet.resnet_block_groups = 2;
  resnet.dim_mults = {1, 2, 2};
  UnetConfig no_time = tiny_config();
  no_time.with_time_emb = false;
  no_time.dim_mults = {1};
  UnetConfig mixed = tiny_config();
  mixed.dim_mults = {1, 2};
  mixed.level_attention = {AttentionKind::None, AttentionKind::Full};
  mixed.mid_attention = AttentionKind::Linear;
  int n = 0;
  for (const UnetConfig& c : {reference, tiny_config(), resnet, no_time, mixed}) {
    std::string text = c.to_json().dump();
    const nlohmann::json ext = c.extensions_to_json();
    if (!ext.empty()) text += std::string(1, '\0') + ext.dump();
    spit(dir / ("config" + std::to_string(n++) + ".json"), text);
  }
  spit(dir / "python_style.json", R"({"dim": 4, "init_dim": null, "out_dim": null, "dim_mults": [1, 2], "channels": 1,)"
                                  R"( "with_time_emb": true, "resnet_block_groups": 2, "use_convnext": false})");
}

// Image files of every format and layout the image-folder data set reads: the committed test folder
// (tests/golden/image_folder: PNG 8/16-bit gray, gray+alpha, RGB, RGBA, palette; JPEG 4:2:0, 4:4:4, gray; BMP; TGA
// plain and RLE; GIF) and its bad files, each prefixed with the fuzzer's options byte.
void image_seeds(const fs::path& dir, const fs::path& golden) {
  int n = 0;
  for (const char* folder : {"image_folder", "image_folder_bad"}) {
    if (!fs::exists(golden / folder)) continue;
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(golden / folder))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const fs::path& p : files) {
      std::ifstream in(p, std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      const char knobs = static_cast<char>(n * 37 + 1);  // varied channels, crop sizes, upscale
      spit(dir / (std::to_string(n++) + "_" + p.filename().string()), std::string(1, knobs) + bytes);
    }
  }
}

#if DIFFUSION_FUZZ_CHECKPOINT_RESUME
// The metadata of a checkpoint written by the fashion_mnist example's code (checkpoint_resume_seed.hpp), as the
// NUL-separated sections fuzz_checkpoint_resume reads; and the same without the run info and with extensions.
void checkpoint_resume_seeds(const fs::path& dir) {
  const io::SafetensorsReader seed = fuzz::resume_seed_checkpoint();
  std::map<std::string, std::string> metadata = seed.metadata();
  spit(dir / "train_one_step", fuzz::resume_input(metadata));
  metadata.erase(fashion_mnist::kRunKey);
  UnetConfig config = unet_config_from_metadata(metadata, "seed");
  config.mid_attention = AttentionKind::Linear;
  metadata[kUnetExtensionsKey] = config.extensions_to_json().dump();
  spit(dir / "no_run_info_extensions", fuzz::resume_input(metadata));
}
#endif

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s OUT_DIR GOLDEN_DIR\n", argv[0]);
    return 2;
  }
  try {
    const fs::path out = argv[1];
    for (const char* sub : {"safetensors", "idx", "unet_config", "image", "checkpoint_resume"})
      fs::create_directories(out / sub);
    safetensors_seeds(out / "safetensors", argv[2]);
    idx_seeds(out / "idx");
    unet_config_seeds(out / "unet_config");
    image_seeds(out / "image", argv[2]);
#if DIFFUSION_FUZZ_CHECKPOINT_RESUME
    checkpoint_resume_seeds(out / "checkpoint_resume");
#endif
    std::printf("fuzz seeds written to %s\n", out.string().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_make_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
