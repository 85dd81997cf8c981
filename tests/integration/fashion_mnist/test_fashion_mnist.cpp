// Integration test of the fashion_mnist example program (examples/fashion_mnist): runs the executable on a tiny
// synthetic IDX data set (64 images 28x28) with a tiny U-Net, and checks what it writes and how it fails.
//   - train, train --resume, sample: files exist and are well-formed (checkpoint step counts, PNG sizes, GIF frames,
//     tensor shapes, CSV log lines); a resumed run ends with bit-identical tensors to an uninterrupted one;
//   - sample: the checkpoint's EMA weights and model.safetensors give the same images; --x-T fixes the start;
//     a weights file without metadata works with the configuration given as flags, as does the PyTorch fixture;
//   - errors (missing data, corrupt gzip, bad IDX header, unwritable output folder, different configuration on
//     resume, divergence): exit status 1, one line on stderr naming the path, no checkpoint left behind;
//   - a checkpoint whose configuration asks for a network larger than its tensors is refused by train --resume and
//     sample before that network is built (peak memory of the program measured);
//   - content: trained on two constant-colour classes, the samples are images of those classes, not noise.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <gif_lib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/io/idx.hpp"
#include "diffusion/io/image.hpp"
#include "diffusion/io/safetensors.hpp"
#include "diffusion/kernels/precision.hpp"
#include "diffusion/train/checkpoint.hpp"

namespace fs = std::filesystem;
using diffusion::Index;
using diffusion::Shape;
using diffusion::Tensor;

namespace {

// A fresh, empty scratch folder for one test case.
std::string scratch(const std::string& name) {
  const fs::path dir = fs::path(FASHION_MNIST_TEST_DIR) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct Result {
  int status = -1;
  std::string out, err;
};

// Runs the program with `args`, stdout and stderr captured in files of `dir`.
Result run(const std::string& dir, const std::vector<std::string>& args) {
  std::string cmd = quote(FASHION_MNIST_EXE);
  for (const auto& a : args) cmd += " " + quote(a);
  const std::string out = dir + "/last.stdout", err = dir + "/last.stderr";
  cmd += " > " + quote(out) + " 2> " + quote(err);
  const int w = std::system(cmd.c_str());
  Result r;
  r.status = WIFEXITED(w) ? WEXITSTATUS(w) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

// Like run, without a shell (fork and exec), and with the program's peak resident memory (wait4's ru_maxrss, kB).
Result run_measured(const std::string& dir, const std::vector<std::string>& args, long long& peak_kb) {
  const std::string out = dir + "/last.stdout", err = dir + "/last.stderr";
  std::vector<std::string> argv_s = {FASHION_MNIST_EXE};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // only async-signal-safe calls until exec
    const int fo = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int fe = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fo < 0 || fe < 0 || ::dup2(fo, 1) < 0 || ::dup2(fe, 2) < 0) ::_exit(127);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  struct rusage usage {};
  REQUIRE(::wait4(pid, &status, 0, &usage) == pid);
  peak_kb = usage.ru_maxrss;
  Result r;
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

// 64 synthetic "garments": a bright rectangle with a darker stripe on a black background, 28x28 bytes each.
std::string make_data(const std::string& dir, Index n = 64) {
  std::vector<std::uint8_t> pixels(static_cast<std::size_t>(n * 28 * 28), 0);
  diffusion::Rng rng(2024);
  for (Index i = 0; i < n; ++i) {
    const Index top = 2 + rng.uniform_int(8), left = 2 + rng.uniform_int(8);
    const Index h = 10 + rng.uniform_int(8), w = 8 + rng.uniform_int(8);
    const auto level = static_cast<std::uint8_t>(150 + rng.uniform_int(100));
    for (Index y = top; y < top + h; ++y)
      for (Index x = left; x < left + w; ++x)
        pixels[static_cast<std::size_t>((i * 28 + y) * 28 + x)] = y == top + h / 2 ? level / 2 : level;
  }
  fs::create_directories(dir);
  diffusion::io::write_idx_images(dir + "/train-images-idx3-ubyte.gz", pixels.data(), n, 28, 28);
  return dir;
}

// The tiny configuration (88,529 parameters): each run takes about a second. It fixes what the default recipe
// would otherwise decide (a cosine decay over the run's length, which a resume that extends the run changes; bf16
// matmuls), so that the resume and output tests compare runs bit for bit in fp32 at a constant rate. The default
// recipe has its own test.
std::vector<std::string> tiny(const std::string& data, const std::string& out, const std::string& lr_decay = "none") {
  return {"train", "--data", data, "--out", out, "--dim", "8", "--dim-mults", "1,2", "--batch", "8",
          "--timesteps", "20", "--threads", "2", "--lr-decay", lr_decay, "--precision", "fp32"};
}

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::int64_t checkpoint_step(const std::string& path) {
  const diffusion::io::SafetensorsReader reader(path);
  return diffusion::read_train_state(reader).at("step").get<std::int64_t>();
}

// Every tensor of two safetensors files: same names, shapes and bytes. Returns the first difference ("" if none).
std::string compare_tensors(const std::string& a, const std::string& b) {
  const diffusion::io::SafetensorsReader ra(a), rb(b);
  if (ra.names() != rb.names()) return "different tensor names";
  for (const auto& name : ra.names()) {
    if (ra.info(name).dtype != rb.info(name).dtype) return "dtype of " + name;
    if (ra.shape(name) != rb.shape(name)) return "shape of " + name;
    const Tensor<double> ta = ra.read<double>(name), tb = rb.read<double>(name);
    for (Index i = 0; i < ta.numel(); ++i)
      if (!(ta.data()[i] == tb.data()[i]) && !(std::isnan(ta.data()[i]) && std::isnan(tb.data()[i])))
        return name + "[" + std::to_string(i) + "]: " + std::to_string(ta.data()[i]) + " vs " +
               std::to_string(tb.data()[i]);
  }
  return "";
}

Tensor<float> read_tensor(const std::string& path, const std::string& name) {
  return diffusion::io::SafetensorsReader(path).read<float>(name);
}

// Frames of a GIF and its logical screen size.
struct GifInfo {
  int frames = 0, width = 0, height = 0;
};
GifInfo read_gif(const std::string& path) {
  int error = 0;
  GifFileType* gif = DGifOpenFileName(path.c_str(), &error);
  REQUIRE(gif != nullptr);
  const int slurped = DGifSlurp(gif);
  GifInfo info{gif->ImageCount, gif->SWidth, gif->SHeight};
  DGifCloseFile(gif, &error);
  REQUIRE(slurped == GIF_OK);
  return info;
}

// The last frame of a gray GIF written by io/gif.hpp (full frames, palette index = gray level), row by row.
std::vector<std::uint8_t> gif_last_frame(const std::string& path, int& width, int& height) {
  int error = 0;
  GifFileType* gif = DGifOpenFileName(path.c_str(), &error);
  REQUIRE(gif != nullptr);
  const int slurped = DGifSlurp(gif);
  std::vector<std::uint8_t> pixels;
  width = gif->SWidth;
  height = gif->SHeight;
  if (slurped == GIF_OK && gif->ImageCount > 0) {
    const SavedImage& last = gif->SavedImages[gif->ImageCount - 1];
    if (last.ImageDesc.Width == width && last.ImageDesc.Height == height)
      pixels.assign(last.RasterBits, last.RasterBits + static_cast<std::size_t>(width) * static_cast<std::size_t>(height));
  }
  DGifCloseFile(gif, &error);
  REQUIRE(slurped == GIF_OK);
  REQUIRE(!pixels.empty());
  return pixels;
}

// make_grid geometry: `columns` images of 28 px per row with 2 px padding.
int grid_px(int count) { return count * 30 + 2; }

// A failed run: status 1, exactly one line on stderr starting with "fashion_mnist: " that mentions `needle`,
// and no checkpoint (nor a temporary of one) in `out`.
void require_clean_failure(const Result& r, const std::string& needle, const std::string& out) {
  INFO("stderr: " << r.err);
  INFO("stdout: " << r.out);
  REQUIRE(r.status == 1);
  const auto lines = lines_of(r.err);
  REQUIRE(lines.size() == 1);
  REQUIRE(lines[0].rfind("fashion_mnist: ", 0) == 0);
  REQUIRE(lines[0].find(needle) != std::string::npos);
  if (fs::is_directory(out)) {
    for (const auto& e : fs::directory_iterator(out)) {
      INFO("left in the output folder: " << e.path());
      REQUIRE(e.path().filename().string().find("checkpoint") == std::string::npos);
    }
  }
}

}  // namespace

TEST_CASE("train then resume: well-formed outputs and bit-identical to an uninterrupted run") {
  const std::string dir = scratch("train_resume");
  const std::string data = make_data(dir + "/data");
  const std::string a = dir + "/a", u = dir + "/uninterrupted";

  // 64 images, batch 8: 8 steps per epoch. Steps 0-4 with a checkpoint every 2 steps and a preview at step 4.
  // 16 final samples instead of 64 keep the test fast (sampling dominates its run time).
  Result r = run(dir, tiny(data, a) + std::vector<std::string>{"--steps", "4", "--checkpoint-every", "2",
                                                              "--sample-every", "4", "--final-samples", "16"});
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  REQUIRE(checkpoint_step(a + "/checkpoint.safetensors") == 4);
  REQUIRE(r.out.find(a + "/samples.png") != std::string::npos);

  // The final grid and the preview: 16 samples, 4x4, 8-bit gray.
  for (const char* name : {"/samples.png", "/preview_step_000004.png"}) {
    INFO(name);
    const auto grid = diffusion::io::read_png(a + name);
    CHECK(grid.channels == 1);
    CHECK(grid.width == grid_px(4));
    CHECK(grid.height == grid_px(4));
  }
  CHECK_FALSE(fs::exists(a + "/preview_step_000002.png"));
  // The GIF: 8 images in a row at twice the size; x_T plus one frame per DDPM step (T = 20 < 50 frames).
  const GifInfo gif = read_gif(a + "/denoising.gif");
  CHECK(gif.frames == 21);
  CHECK(gif.width == 2 * grid_px(8));
  CHECK(gif.height == 2 * grid_px(1));
  // model.safetensors: a plain state_dict holding the checkpoint's EMA weights.
  {
    const diffusion::io::SafetensorsReader ckpt(a + "/checkpoint.safetensors"), model(a + "/model.safetensors");
    REQUIRE(model.metadata().count(diffusion::kUnetConfigKey) == 1);
    REQUIRE(model.metadata().count(diffusion::kTrainStateKey) == 0);
    for (const auto& name : model.names()) {
      INFO("tensor " << name);
      REQUIRE(name.rfind("ema.", 0) != 0);
      REQUIRE(name.rfind("adam.", 0) != 0);
      const Tensor<float> m = model.read<float>(name), e = ckpt.read<float>("ema." + name);
      REQUIRE(m.shape() == e.shape());
      for (Index i = 0; i < m.numel(); ++i) REQUIRE(m.data()[i] == e.data()[i]);
    }
  }
  // The log: header, then one line at step 4 (half an epoch).
  {
    const auto log = lines_of(slurp(a + "/train_log.csv"));
    REQUIRE(log.size() == 2);
    CHECK(log[0] == "step,epoch,loss,images_per_s,elapsed_s");
    CHECK(log[1].rfind("4,0.500,", 0) == 0);
  }

  // Resume to step 6 (outputs go to the checkpoint's folder), and an uninterrupted run of 6 steps.
  r = run(dir, {"train", "--resume", a + "/checkpoint.safetensors", "--steps", "6", "--threads", "1"});
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  REQUIRE(checkpoint_step(a + "/checkpoint.safetensors") == 6);
  CHECK(lines_of(slurp(a + "/train_log.csv")).size() == 3);
  r = run(dir, tiny(data, u) + std::vector<std::string>{"--steps", "6", "--final-samples", "16"});
  REQUIRE(r.status == 0);
  REQUIRE(checkpoint_step(u + "/checkpoint.safetensors") == 6);

  // Raw weights, EMA, Adam moments, schedule: all bit-identical; so are the final weights and samples.
  std::string diff = compare_tensors(a + "/checkpoint.safetensors", u + "/checkpoint.safetensors");
  INFO("first difference in the checkpoints: " << diff);
  REQUIRE(diff.empty());
  {
    const diffusion::io::SafetensorsReader ra(a + "/checkpoint.safetensors"), ru(u + "/checkpoint.safetensors");
    const auto sa = diffusion::read_train_state(ra), su = diffusion::read_train_state(ru);
    CHECK(sa.at("adam_step") == su.at("adam_step"));
    CHECK(sa.at("ema_step") == su.at("ema_step"));
    CHECK(sa.at("last_loss") == su.at("last_loss"));
  }
  diff = compare_tensors(a + "/model.safetensors", u + "/model.safetensors");
  INFO("first difference in model.safetensors: " << diff);
  REQUIRE(diff.empty());
  CHECK(slurp(a + "/samples.png") == slurp(u + "/samples.png"));
}

TEST_CASE("sample from a checkpoint or model.safetensors or bare weights or the PyTorch fixture and with --x-T") {
  const std::string dir = scratch("sample");
  const std::string data = make_data(dir + "/data");
  const std::string t = dir + "/trained";
  Result r = run(dir, tiny(data, t) + std::vector<std::string>{"--steps", "3", "--final-samples", "4"});
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  const std::string ckpt = t + "/checkpoint.safetensors", model = t + "/model.safetensors";
  auto sample = [&](const std::string& file, const std::string& name, std::vector<std::string> extra = {},
                    const std::string& seed = "3") {
    return run(dir, std::vector<std::string>{"sample", "--checkpoint", file, "--sampler", "ddim", "--steps", "5",
                                             "--n", "10", "--seed", seed, "--out", dir + "/" + name + ".png",
                                             "--tensor-out", dir + "/" + name + ".safetensors", "--threads", "2"} +
                        extra);
  };

  r = sample(ckpt, "ckpt", {"--gif", dir + "/ckpt.gif"});
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  const auto png = diffusion::io::read_png(dir + "/ckpt.png");  // 10 images: 4 per row, 3 rows
  CHECK(png.width == grid_px(4));
  CHECK(png.height == grid_px(3));
  const Tensor<float> x0 = read_tensor(dir + "/ckpt.safetensors", "x_0");
  REQUIRE(x0.shape() == Shape{10, 1, 28, 28});
  REQUIRE(diffusion::io::SafetensorsReader(dir + "/ckpt.safetensors").info("x_0").dtype == diffusion::io::DType::F32);
  for (Index i = 0; i < x0.numel(); ++i) REQUIRE(std::isfinite(x0.data()[i]));
  CHECK(read_gif(dir + "/ckpt.gif").frames == 6);  // x_T + 5 DDIM steps

  // The checkpoint's EMA weights and model.safetensors are the same model with the same schedule.
  r = sample(model, "model");
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  std::string diff = compare_tensors(dir + "/ckpt.safetensors", dir + "/model.safetensors");
  INFO("first difference: " << diff);
  REQUIRE(diff.empty());

  // Without metadata (a PyTorch state_dict exported to safetensors) the flags give the configuration.
  {
    const diffusion::io::SafetensorsReader in(model);
    diffusion::io::SafetensorsWriter w;
    for (const auto& name : in.names()) w.add(name, in.read<float>(name));
    w.write(dir + "/bare.safetensors");
  }
  r = sample(dir + "/bare.safetensors", "bare", {"--dim", "8", "--dim-mults", "1,2", "--timesteps", "20"});
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  diff = compare_tensors(dir + "/ckpt.safetensors", dir + "/bare.safetensors");
  INFO("first difference: " << diff);
  REQUIRE(diff.empty());
  // ... and wrong flags are an error naming the file.
  r = sample(dir + "/bare.safetensors", "wrong", {"--dim", "16", "--dim-mults", "1,2", "--timesteps", "20"});
  require_clean_failure(r, dir + "/bare.safetensors", dir + "/none");
  CHECK(r.err.find("--dim") != std::string::npos);
  // A flag that contradicts a file that carries its configuration is refused.
  r = sample(ckpt, "contradiction", {"--dim", "16"});
  require_clean_failure(r, "--dim 16", dir + "/none");

  // --x-T fixes the start: with eta = 0 the seed no longer matters.
  {
    Tensor<float> x_T(Shape{10, 1, 28, 28});
    diffusion::Rng(77).normal(x_T.data(), x_T.numel());
    diffusion::io::SafetensorsWriter w;
    w.add("x_T", x_T);
    w.write(dir + "/x_T.safetensors");
    Tensor<float> small(Shape{10, 1, 27, 27});
    diffusion::io::SafetensorsWriter ws;
    ws.add("x_T", small);
    ws.write(dir + "/x_T_small.safetensors");
  }
  REQUIRE(sample(ckpt, "xt1", {"--x-T", dir + "/x_T.safetensors"}, "1").status == 0);
  REQUIRE(sample(ckpt, "xt2", {"--x-T", dir + "/x_T.safetensors"}, "2").status == 0);
  REQUIRE(sample(ckpt, "seed1", {}, "1").status == 0);
  REQUIRE(sample(ckpt, "seed2", {}, "2").status == 0);
  CHECK(compare_tensors(dir + "/xt1.safetensors", dir + "/xt2.safetensors").empty());
  CHECK_FALSE(compare_tensors(dir + "/seed1.safetensors", dir + "/seed2.safetensors").empty());
  CHECK_FALSE(compare_tensors(dir + "/xt1.safetensors", dir + "/seed1.safetensors").empty());
  // --spacing places the sampler's steps: linspace is the default, karras and trailing are other timesteps (so other
  // images from the same start), and the tensor's metadata says which was used.
  REQUIRE(sample(ckpt, "xt_linspace", {"--x-T", dir + "/x_T.safetensors", "--spacing", "linspace"}, "1").status == 0);
  REQUIRE(sample(ckpt, "xt_karras", {"--x-T", dir + "/x_T.safetensors", "--spacing", "karras"}, "1").status == 0);
  REQUIRE(sample(ckpt, "xt_trailing", {"--x-T", dir + "/x_T.safetensors", "--spacing", "trailing"}, "1").status == 0);
  for (const char* name : {"xt_karras", "xt_trailing"}) {  // "differ" below must not be NaN against numbers
    const Tensor<float> x = read_tensor(dir + "/" + name + ".safetensors", "x_0");
    for (Index i = 0; i < x.numel(); ++i) REQUIRE(std::isfinite(x.data()[i]));
  }
  CHECK(compare_tensors(dir + "/xt1.safetensors", dir + "/xt_linspace.safetensors").empty());
  CHECK_FALSE(compare_tensors(dir + "/xt1.safetensors", dir + "/xt_karras.safetensors").empty());
  CHECK_FALSE(compare_tensors(dir + "/xt1.safetensors", dir + "/xt_trailing.safetensors").empty());
  CHECK_FALSE(compare_tensors(dir + "/xt_karras.safetensors", dir + "/xt_trailing.safetensors").empty());
  const auto sample_info = [](const std::string& file) {
    return nlohmann::json::parse(diffusion::io::SafetensorsReader(file).metadata().at("fashion_mnist.sample"));
  };
  CHECK(sample_info(dir + "/xt_karras.safetensors").at("spacing") == "karras");
  CHECK(sample_info(dir + "/xt1.safetensors").at("spacing") == "linspace");
  r = sample(ckpt, "bad_spacing", {"--spacing", "uniform"});
  CHECK(r.status == 2);
  CHECK(r.err.find("--spacing") != std::string::npos);
  CHECK(r.err.find("linspace, leading, trailing, karras") != std::string::npos);  // the library's list of names
  // --precision bf16: the model calls' matmuls with bf16 operands (where the CPU has AVX512_BF16): other, finite
  // images from the same start, close to fp32's; the metadata says which precision ran.
  REQUIRE(sample(ckpt, "xt_bf16", {"--x-T", dir + "/x_T.safetensors", "--precision", "bf16"}, "1").status == 0);
  {
    const Tensor<float> x32 = read_tensor(dir + "/xt1.safetensors", "x_0");
    const Tensor<float> x16 = read_tensor(dir + "/xt_bf16.safetensors", "x_0");
    double worst = 0.0;
    for (Index i = 0; i < x16.numel(); ++i) {
      REQUIRE(std::isfinite(x16.data()[i]));
      worst = std::max(worst, double(std::fabs(x16.data()[i] - x32.data()[i])));
    }
    CHECK(worst <= 0.25);  // pixels in [-1, 1]: a bf16 run follows the fp32 one, it does not draw another image
    const bool bf16 = diffusion::kernels::bf16_gemm_available();
    CHECK(sample_info(dir + "/xt_bf16.safetensors").at("matmul_precision") == (bf16 ? "bf16" : "fp32"));
    CHECK(sample_info(dir + "/xt1.safetensors").at("matmul_precision") == "fp32");
    CHECK(compare_tensors(dir + "/xt1.safetensors", dir + "/xt_bf16.safetensors").empty() == !bf16);
  }
  r = sample(ckpt, "bad_precision", {"--precision", "fp16"});
  CHECK(r.status == 2);
  CHECK(r.err.find("--precision") != std::string::npos);
  r = sample(ckpt, "xt_small", {"--x-T", dir + "/x_T_small.safetensors"});
  require_clean_failure(r, "(10, 1, 27, 27)", dir + "/none");
  r = sample(dir + "/missing.safetensors", "missing");
  require_clean_failure(r, dir + "/missing.safetensors", dir + "/none");

  // The PyTorch reference's state_dict (tests/golden; dim 8, dim_mults 1,2,4, config in its metadata).
  r = run(dir, {"sample", "--checkpoint", std::string(DIFFUSION_GOLDEN_DIR) + "/unet_convnext.weights.safetensors",
                "--timesteps", "20", "--steps", "5", "--n", "2", "--out", dir + "/golden.png"});
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  CHECK(diffusion::io::read_png(dir + "/golden.png").width == grid_px(2));
}

TEST_CASE("a model trained on two constant-colour classes samples images of those classes and not noise") {
  // The content check: the other cases check files and formats, which a sampler returning x_T or a trainer that
  // changes nothing would pass. Data with known statistics: 64 images 8x8, half of them all 51 (-0.6 in [-1, 1]),
  // half all 204 (+0.6); no other structure. The tiny U-Net predicting x0 learns it in 100 steps (about 3 s).
  // Threshold from the data: the class centres c0, c1 are 1.2 apart; a sample is data-like when its RMS distance to
  // the nearer centre is under a quarter of that gap (0.3). Noise x_T ~ N(0, 1) is sqrt(1 + 0.36) = 1.17 away from
  // either centre, and an untrained network's samples measured 0.93 - 1.1; trained ones measured 0.03 - 0.04. Every
  // one of 32 samples must be data-like, for DDIM and for DDPM, and both classes must be among them (with balanced
  // classes, fewer than 4 of one in 32 has probability 1e-6).
  const std::string dir = scratch("content");
  const Index n = 64, side = 8;
  std::vector<std::uint8_t> pixels(static_cast<std::size_t>(n * side * side));
  for (Index i = 0; i < n; ++i)
    std::fill(pixels.begin() + i * side * side, pixels.begin() + (i + 1) * side * side, i % 2 == 0 ? 51 : 204);
  fs::create_directories(dir + "/data");
  diffusion::io::write_idx_images(dir + "/data/train-images-idx3-ubyte.gz", pixels.data(), n, side, side);
  // The class centres as the program sees the data ([0, 255] -> [-1, 1]).
  const Tensor<float> images = diffusion::io::load_idx_images<float>(dir + "/data/train-images-idx3-ubyte.gz");
  const double c0 = images[0], c1 = images[side * side];
  const double threshold = std::fabs(c1 - c0) / 4.0;
  REQUIRE(std::fabs(c0 + 0.6) < 1e-6);
  REQUIRE(std::fabs(c1 - 0.6) < 1e-6);

  const std::string out = dir + "/run";
  Result r = run(dir, {"train", "--data", dir + "/data", "--out", out, "--dim", "8", "--dim-mults", "1,2", "--batch", "16",
                       "--timesteps", "100", "--schedule", "cosine", "--prediction", "x0", "--lr", "5e-3",
                       "--ema-decay", "0.9", "--steps", "100", "--final-samples", "4", "--threads", "2"});
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  for (const char* sampler : {"ddim", "ddpm"}) {
    INFO("sampler " << sampler);
    const std::string tensor = dir + "/" + sampler + ".safetensors";
    r = run(dir, {"sample", "--checkpoint", out + "/checkpoint.safetensors", "--sampler", sampler, "--steps", "20",
                  "--n", "32", "--seed", "5", "--out", dir + "/" + sampler + ".png", "--tensor-out", tensor,
                  "--threads", "2"});
    INFO("stderr: " << r.err);
    REQUIRE(r.status == 0);
    const Tensor<float> x = read_tensor(tensor, "x_0");
    REQUIRE(x.shape() == (Shape{32, 1, side, side}));
    int near0 = 0, near1 = 0;
    double worst = 0.0;
    for (Index i = 0; i < 32; ++i) {
      double d0 = 0.0, d1 = 0.0;
      for (Index j = 0; j < side * side; ++j) {
        const double v = x[i * side * side + j];
        d0 += (v - c0) * (v - c0);
        d1 += (v - c1) * (v - c1);
      }
      d0 = std::sqrt(d0 / double(side * side));
      d1 = std::sqrt(d1 / double(side * side));
      const double d = std::min(d0, d1);
      INFO("sample " << i << ": RMS distance " << d0 << " to class 0, " << d1 << " to class 1, threshold " << threshold);
      REQUIRE(d < threshold);  // false for NaN
      worst = std::max(worst, d);
      (d0 < d1 ? near0 : near1) += 1;
    }
    WARN("content check (" << sampler << "): 32 samples, worst RMS distance to the nearer class " << worst
                           << " (threshold " << threshold << "), " << near0 << " of class 0 and " << near1
                           << " of class 1");
    REQUIRE(near0 >= 4);
    REQUIRE(near1 >= 4);
  }
}

TEST_CASE("train --resume refuses a different configuration but accepts a new learning rate") {
  const std::string dir = scratch("resume_config");
  const std::string data = make_data(dir + "/data");
  const std::string a = dir + "/a";
  REQUIRE(run(dir, tiny(data, a) + std::vector<std::string>{"--steps", "2", "--final-samples", "1"}).status == 0);
  const std::string ckpt = a + "/checkpoint.safetensors";
  const std::string before = slurp(ckpt);

  Result r = run(dir, {"train", "--resume", ckpt, "--steps", "4", "--dim", "16", "--schedule", "cosine"});
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 1);
  REQUIRE(lines_of(r.err).size() == 1);
  CHECK(r.err.find("--dim 16 (the checkpoint has 8)") != std::string::npos);
  CHECK(r.err.find("--schedule cosine (the checkpoint has linear)") != std::string::npos);
  CHECK(r.err.find(ckpt) != std::string::npos);
  REQUIRE(slurp(ckpt) == before);

  // Flags equal to the stored configuration are fine; --lr may change (with a note).
  r = run(dir, {"train", "--resume", ckpt, "--steps", "3", "--dim", "8", "--lr", "0.0005", "--final-samples", "1"});
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("note: --lr changes from 0.002 to 0.0005") != std::string::npos);
  REQUIRE(checkpoint_step(ckpt) == 3);

  // A checkpoint whose stored options and configuration ask for a network far larger than its tensors (dim 256:
  // 5.9e7 parameters, 470 MB with gradients): train --resume and sample refuse it before building that network.
  // Their peak memory is compared with a run refused before any network is built (another --dim).
  {
    const std::string big = dir + "/big.safetensors";
    const diffusion::io::SafetensorsReader in(ckpt);
    diffusion::io::SafetensorsWriter w;
    for (const auto& name : in.names()) w.add(name, in.read<double>(name));
    for (auto kv : in.metadata()) {
      if (kv.first == "fashion_mnist.options" || kv.first == diffusion::kUnetConfigKey) {
        nlohmann::json j = nlohmann::json::parse(kv.second);
        j["dim"] = 256;
        if (kv.first == diffusion::kUnetConfigKey) j["init_dim"] = 170;
        kv.second = j.dump();
      }
      w.add_metadata(kv.first, kv.second);
    }
    w.write(big);
    long long baseline_kb = 0, peak_kb = 0;
    r = run_measured(dir, {"train", "--resume", ckpt, "--steps", "4", "--dim", "16"}, baseline_kb);
    require_clean_failure(r, "--dim 16", dir + "/none");
    const std::string expect = "init_conv.weight' has shape (4, 1, 7, 7) but the U-Net expects (170, 1, 7, 7)";
    for (const std::string mode : {"train", "sample"}) {
      INFO(mode);
      r = run_measured(dir,
                       mode == "train" ? std::vector<std::string>{"train", "--resume", big, "--steps", "4"}
                                       : std::vector<std::string>{"sample", "--checkpoint", big, "--steps", "5", "--out",
                                                                  dir + "/big.png"},
                       peak_kb);
      require_clean_failure(r, big, dir + "/none");
      CHECK(r.err.find(expect) != std::string::npos);
      INFO("peak resident memory " << peak_kb << " kB, baseline " << baseline_kb << " kB");
      REQUIRE(peak_kb < baseline_kb + 100 * 1024);
    }
  }

  // Not a training checkpoint; no file at all.
  r = run(dir, {"train", "--resume", a + "/model.safetensors", "--steps", "4"});
  require_clean_failure(r, a + "/model.safetensors", dir + "/none");
  r = run(dir, {"train", "--resume", a + "/missing.safetensors", "--steps", "4"});
  require_clean_failure(r, a + "/missing.safetensors", dir + "/none");
}

TEST_CASE("train --lr-warmup / --lr-decay: printed, stored, exact on resume, and a decay without steps refused") {
  const std::string dir = scratch("lr_schedule");
  const std::string data = make_data(dir + "/data");
  const std::string a = dir + "/a", w = dir + "/warmup", h = dir + "/half", c = dir + "/constant";
  const std::vector<std::string> few = {"--final-samples", "1", "--final-sampler", "ddim"};

  // A warm-up and a cosine decay: the program says what the rate does, and the checkpoint keeps the flags.
  Result r = run(dir, tiny(data, a, "cosine") + std::vector<std::string>{"--steps", "4", "--lr-warmup", "2",
                                                                        "--lr-min", "0.1"} + few);
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("learning rate 0.002 after a warm-up of 2 steps, cosine decay to 0.0002 at step 4") !=
        std::string::npos);
  {
    const diffusion::io::SafetensorsReader ckpt(a + "/checkpoint.safetensors");
    const nlohmann::json stored = nlohmann::json::parse(ckpt.metadata().at("fashion_mnist.options"));
    CHECK(stored.at("lr-warmup") == 2);
    CHECK(stored.at("lr-decay") == "cosine");
    CHECK(stored.at("lr-min") == 0.1);
  }

  // A warm-up longer than the run, whole and cut in two: resumed without the flags (they come from the checkpoint),
  // the run equals the uninterrupted one bit for bit, and differs from one at the constant rate.
  r = run(dir, tiny(data, w) + std::vector<std::string>{"--steps", "4", "--lr-warmup", "8"} + few);
  REQUIRE(r.status == 0);
  r = run(dir, tiny(data, h) + std::vector<std::string>{"--steps", "2", "--lr-warmup", "8"} + few);
  REQUIRE(r.status == 0);
  r = run(dir, {"train", "--resume", h + "/checkpoint.safetensors", "--steps", "4"});
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("learning rate 0.002 after a warm-up of 8 steps, then constant") != std::string::npos);
  std::string diff = compare_tensors(w + "/checkpoint.safetensors", h + "/checkpoint.safetensors");
  INFO("first difference: " << diff);
  REQUIRE(diff.empty());
  r = run(dir, tiny(data, c) + std::vector<std::string>{"--steps", "4"} + few);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("learning rate") == std::string::npos);
  CHECK_FALSE(compare_tensors(w + "/checkpoint.safetensors", c + "/checkpoint.safetensors").empty());

  // A decay needs steps after the warm-up; an unknown decay is a usage error.
  r = run(dir, tiny(data, dir + "/none", "linear") + std::vector<std::string>{"--steps", "2", "--lr-warmup", "2"});
  require_clean_failure(r, "--lr-decay linear", dir + "/none");
  CHECK(r.err.find("--lr-warmup 2") != std::string::npos);
  r = run(dir, tiny(data, dir + "/none", "step") + std::vector<std::string>{"--steps", "2"});
  CHECK(r.status == 2);
}

TEST_CASE("train's default recipe: batch 64, lr 2e-3 warmed up and cosine-decayed, bf16, 2 epochs") {
  const std::string dir = scratch("default_recipe");
  const std::string data = make_data(dir + "/data");  // 64 images: one step of 64 per epoch
  const std::string a = dir + "/a", e = dir + "/epochs", w = dir + "/warmup";
  const std::vector<std::string> small = {"--data", data, "--dim", "8", "--dim-mults", "1,2", "--timesteps", "20",
                                          "--threads", "2", "--final-samples", "1", "--final-sampler", "ddim"};
  const auto stored_options = [](const std::string& out) {
    const diffusion::io::SafetensorsReader ckpt(out + "/checkpoint.safetensors");
    return nlohmann::json::parse(ckpt.metadata().at("fashion_mnist.options"));
  };

  // 20 steps, fewer than the default warm-up of 400: the run warms up for a tenth of them, says so, and stores it.
  Result r = run(dir, std::vector<std::string>{"train", "--out", a, "--steps", "20"} + small);
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("batch 64,") != std::string::npos);
  CHECK(r.err.find("note: the run's 20 steps are not more than the default --lr-warmup 400: warming up for 2 steps") !=
        std::string::npos);
  CHECK(r.err.find("learning rate 0.002 after a warm-up of 2 steps, cosine decay to 0 at step 20") !=
        std::string::npos);
  const bool bf16 = diffusion::kernels::effective_matmul_precision(diffusion::kernels::MatmulPrecision::Bf16) ==
                    diffusion::kernels::MatmulPrecision::Bf16;
  CHECK(r.err.find(bf16 ? ", bf16 matmuls" : ", fp32 matmuls (bf16 asked for") != std::string::npos);
  {
    const nlohmann::json stored = stored_options(a);
    CHECK(stored.at("batch") == 64);
    CHECK(stored.at("lr") == 0.002);
    CHECK(stored.at("lr-warmup") == 2);
    CHECK(stored.at("lr-decay") == "cosine");
    CHECK(stored.at("lr-min") == 0.0);
    CHECK(stored.at("precision") == "bf16");
    CHECK(stored.at("epochs") == 2);
  }

  // Without --steps: 2 epochs, i.e. 2 steps here; no warm-up is left of a tenth of 2.
  r = run(dir, std::vector<std::string>{"train", "--out", e} + small);
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("steps 0 to 2 (1 per epoch)") != std::string::npos);
  CHECK(stored_options(e).at("lr-warmup") == 0);
  CHECK(checkpoint_step(e + "/checkpoint.safetensors") == 2);

  // A warm-up given on the command line is the user's: kept as given, so one not shorter than the run leaves the
  // default decay no steps, which is refused with both flags named.
  r = run(dir, std::vector<std::string>{"train", "--out", w, "--steps", "20", "--lr-warmup", "20"} + small);
  require_clean_failure(r, "--lr-warmup 20", w);
  CHECK(r.err.find("--lr-decay cosine") != std::string::npos);
  r = run(dir, std::vector<std::string>{"train", "--out", w, "--steps", "20", "--lr-warmup", "5"} + small);
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("default --lr-warmup") == std::string::npos);
  CHECK(stored_options(w).at("lr-warmup") == 5);
}

TEST_CASE("train --min-snr-gamma: printed, stored, changes the run, and fixed on resume") {
  const std::string dir = scratch("min_snr");
  const std::string data = make_data(dir + "/data");
  const std::string g = dir + "/gamma", c = dir + "/constant";
  const std::vector<std::string> few = {"--final-samples", "1", "--final-sampler", "ddim"};

  Result r = run(dir, tiny(data, g) + std::vector<std::string>{"--steps", "2", "--min-snr-gamma", "5"} + few);
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("Min-SNR-gamma loss weighting, gamma 5") != std::string::npos);
  {
    const diffusion::io::SafetensorsReader ckpt(g + "/checkpoint.safetensors");
    CHECK(nlohmann::json::parse(ckpt.metadata().at("fashion_mnist.options")).at("min-snr-gamma") == 5.0);
    CHECK(nlohmann::json::parse(ckpt.metadata().at("diffusion.train")).at("min_snr_gamma") == 5.0);
  }
  // The weighting reaches the trainer: the same run without it ends with other weights.
  r = run(dir, tiny(data, c) + std::vector<std::string>{"--steps", "2"} + few);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("Min-SNR") == std::string::npos);
  CHECK_FALSE(compare_tensors(g + "/checkpoint.safetensors", c + "/checkpoint.safetensors").empty());
  // It defines the objective, so a resumed run keeps it: another gamma is refused, naming the flag and both values.
  r = run(dir, {"train", "--resume", g + "/checkpoint.safetensors", "--steps", "3", "--min-snr-gamma", "1"});
  INFO("stderr: " << r.err);
  CHECK(r.status == 1);
  CHECK(r.err.find("--min-snr-gamma 1.0 (the checkpoint has 5.0)") != std::string::npos);
}

TEST_CASE("train input and output errors: exit status 1 and one line on stderr and no checkpoint left") {
  const std::string dir = scratch("errors");
  const std::string good = make_data(dir + "/good");
  const std::string out = dir + "/out";

  SECTION("missing data folder") {
    const Result r = run(dir, tiny(dir + "/no/such/folder", out) + std::vector<std::string>{"--steps", "1"});
    require_clean_failure(r, dir + "/no/such/folder", out);
    CHECK(r.err.find("dataset-fashion-mnist") != std::string::npos);
    CHECK_FALSE(fs::exists(out));
  }
  SECTION("data folder without the images file") {
    fs::create_directories(dir + "/empty");
    const Result r = run(dir, tiny(dir + "/empty", out) + std::vector<std::string>{"--steps", "1"});
    require_clean_failure(r, dir + "/empty/train-images-idx3-ubyte.gz", out);
    CHECK(r.err.find("does not exist") != std::string::npos);
  }
  SECTION("corrupt gzip: a flipped byte in the compressed stream, and a truncated file") {
    const std::string bytes = slurp(good + "/train-images-idx3-ubyte.gz");
    REQUIRE(bytes.size() > 200);
    std::string flipped = bytes;
    flipped[bytes.size() / 2] = static_cast<char>(flipped[bytes.size() / 2] ^ 0x5a);
    fs::create_directories(dir + "/flipped");
    spit(dir + "/flipped/train-images-idx3-ubyte.gz", flipped);
    Result r = run(dir, tiny(dir + "/flipped", out) + std::vector<std::string>{"--steps", "1"});
    require_clean_failure(r, dir + "/flipped/train-images-idx3-ubyte.gz", out);
    fs::create_directories(dir + "/truncated");
    spit(dir + "/truncated/train-images-idx3-ubyte.gz", bytes.substr(0, bytes.size() / 2));
    r = run(dir, tiny(dir + "/truncated", out) + std::vector<std::string>{"--steps", "1"});
    require_clean_failure(r, dir + "/truncated/train-images-idx3-ubyte.gz", out);
  }
  SECTION("an IDX header that is not an image file (a labels file)") {
    fs::create_directories(dir + "/labels");
    diffusion::io::IdxArray labels;
    labels.dims = {64};
    labels.data.assign(64, 3);
    diffusion::io::write_idx(dir + "/labels/train-images-idx3-ubyte.gz", labels);
    const Result r = run(dir, tiny(dir + "/labels", out) + std::vector<std::string>{"--steps", "1"});
    require_clean_failure(r, dir + "/labels/train-images-idx3-ubyte.gz", out);
  }
  SECTION("an output folder that cannot be created (its parent is a file)") {
    spit(dir + "/a_file", "x");
    const Result r = run(dir, tiny(good, dir + "/a_file/out") + std::vector<std::string>{"--steps", "1"});
    require_clean_failure(r, dir + "/a_file/out", dir + "/a_file/out");
  }
  SECTION("an existing output folder that cannot be written") {
    // /proc refuses new files even to root; a read-only folder is tested too where permissions apply (not root).
    Result r = run(dir, tiny(good, "/proc") + std::vector<std::string>{"--steps", "1"});
    require_clean_failure(r, "'/proc'", "/proc");
    if (::geteuid() != 0) {
      fs::create_directories(dir + "/readonly");
      fs::permissions(dir + "/readonly", fs::perms::owner_read | fs::perms::owner_exec);
      r = run(dir, tiny(good, dir + "/readonly") + std::vector<std::string>{"--steps", "1"});
      fs::permissions(dir + "/readonly", fs::perms::owner_all);
      require_clean_failure(r, dir + "/readonly", dir + "/readonly");
    }
  }
}

TEST_CASE("train stops a diverging run with the step named and keeps the last good checkpoint") {
  const std::string dir = scratch("diverge");
  const std::string data = make_data(dir + "/data");
  const std::string out = dir + "/out";
  // lr = 1e30: Adam's first step moves every weight by ~1e30, the next forward pass overflows to inf/NaN.
  const Result r = run(dir, tiny(data, out) + std::vector<std::string>{"--steps", "5", "--lr", "1e30",
                                                                       "--checkpoint-every", "1"});
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 1);
  const auto lines = lines_of(r.err);
  REQUIRE(!lines.empty());
  const std::string& last = lines.back();
  CHECK(last.rfind("fashion_mnist: training diverged at step ", 0) == 0);
  CHECK(last.find(out + "/checkpoint.safetensors") != std::string::npos);
  // The checkpoint is the last step whose loss was finite; no final outputs were written.
  const std::int64_t kept = checkpoint_step(out + "/checkpoint.safetensors");
  CHECK(last.find("(step " + std::to_string(kept) + ")") != std::string::npos);
  CHECK(last.find("diverged at step " + std::to_string(kept)) != std::string::npos);
  CHECK_FALSE(fs::exists(out + "/model.safetensors"));
  CHECK_FALSE(fs::exists(out + "/samples.png"));
}

TEST_CASE("eval measures samples against the reference images reproducibly and names what is missing") {
  // A tiny model, the synthetic images as the "test set" (t10k), the committed classifier (the program's default).
  const std::string dir = scratch("eval");
  const std::string data = make_data(dir + "/data");
  fs::copy_file(data + "/train-images-idx3-ubyte.gz", data + "/t10k-images-idx3-ubyte.gz",
                fs::copy_options::overwrite_existing);
  const std::string t = dir + "/trained";
  // train --eval-every: a line of metrics in eval_log.csv at steps 2 and 4.
  Result r = run(dir, tiny(data, t) + std::vector<std::string>{"--steps", "4", "--final-samples", "1", "--eval-every",
                                                               "2", "--eval-n", "6"});
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  {
    const auto lines = lines_of(slurp(t + "/eval_log.csv"));
    REQUIRE(lines.size() == 3);
    REQUIRE(lines[0] == "step,epoch,n,fid,kid_mean,kid_std,precision,recall,eval_s");
    for (std::size_t i = 1; i < lines.size(); ++i) {
      INFO(lines[i]);
      REQUIRE(lines[i].rfind(std::to_string(2 * i) + ",", 0) == 0);
      std::vector<std::string> fields;
      std::stringstream ss(lines[i]);
      for (std::string f; std::getline(ss, f, ',');) fields.push_back(f);
      REQUIRE(fields.size() == 9);
      REQUIRE(fields[2] == "6");
      for (std::size_t k = 3; k < 8; ++k) REQUIRE(std::isfinite(std::stod(fields[k])));
      REQUIRE(std::stod(fields[3]) > 0.0);  // FID
    }
    REQUIRE(r.err.find("step 2: n 6  FID") != std::string::npos);
  }
  const std::string ckpt = t + "/checkpoint.safetensors";
  fs::remove(t + "/reference_test.safetensors");  // eval below creates it again
  auto eval = [&](const std::string& json, const std::string& threads, std::vector<std::string> extra = {}) {
    // 13 images in batches of 5: the last batch is short.
    return run(dir, std::vector<std::string>{"eval", "--checkpoint", ckpt, "--data", data, "--n", "13", "--batch", "5",
                                             "--sampler", "dpmpp_2m", "--steps", "3", "--threads", threads, "--json",
                                             json} + extra);
  };
  auto read_json = [](const std::string& path) { return nlohmann::json::parse(slurp(path)); };

  r = eval(dir + "/a.json", "2");
  INFO("stdout: " << r.out);
  REQUIRE(r.status == 0);
  REQUIRE(r.out.find("statistics created") != std::string::npos);  // the first run computes the reference
  for (const char* needle : {"FID", "KID", "precision", "recall", "classes:", "T-shirt/top", "Ankle boot", "time:"})
    REQUIRE(r.out.find(needle) != std::string::npos);
  const nlohmann::json a = read_json(dir + "/a.json");
  REQUIRE(a.at("count") == 13);
  REQUIRE(a.at("reference_count") == 64);
  REQUIRE(a.at("sampler") == "dpmpp_2m");
  REQUIRE(a.at("matmul_precision") == "fp32");  // beside the metric "precision", which it must not replace
  Index classified = 0;
  for (const auto& c : a.at("class_histogram")) classified += c.get<Index>();
  REQUIRE(classified == 13);
  for (const char* key : {"fid", "kid_mean", "kid_std", "precision", "recall"}) {
    INFO(key);
    REQUIRE(std::isfinite(a.at(key).get<double>()));
  }
  REQUIRE(a.at("fid").get<double>() > 0.0);
  REQUIRE(a.at("precision").get<double>() >= 0.0);
  REQUIRE(a.at("precision").get<double>() <= 1.0);
  REQUIRE(fs::exists(t + "/reference_test.safetensors"));

  // Again with 1 thread: the reference comes from the cache and every number is the same.
  r = eval(dir + "/b.json", "1");
  REQUIRE(r.status == 0);
  REQUIRE(r.out.find("statistics loaded") != std::string::npos);
  const nlohmann::json b = read_json(dir + "/b.json");
  for (const char* key : {"fid", "kid_mean", "kid_std", "precision", "recall", "class_histogram"}) {
    INFO(key);
    REQUIRE(a.at(key) == b.at(key));
  }
  // Another seed gives other samples.
  r = eval(dir + "/c.json", "2", {"--seed", "9"});
  REQUIRE(r.status == 0);
  REQUIRE(read_json(dir + "/c.json").at("fid") != a.at("fid"));

  // What is missing is named.
  require_clean_failure(eval(dir + "/d.json", "2", {"--classifier", dir + "/no_classifier.safetensors"}),
                        "no_classifier.safetensors' does not exist", dir + "/none");
  require_clean_failure(run(dir, {"eval", "--checkpoint", ckpt, "--data", dir + "/no_data", "--reference", "train", "--steps", "3",
                                 "--json", dir + "/d.json"}),
                        "holds no train-images-idx3-ubyte.gz", dir + "/none");
  REQUIRE_FALSE(fs::exists(dir + "/d.json"));
}

TEST_CASE("numeric flags out of range name the bound in words and exit with status 2") {
  const std::string dir = scratch("flag_ranges");
  const std::string none = dir + "/none.safetensors";
  struct Case {
    std::vector<std::string> args;
    std::string message;  // CLI11 prints "<flag>: <validator message>"
  };
  const std::vector<Case> cases = {
      {{"sample", "--checkpoint", none, "--eta", "-1"}, "--eta: must be >= 0, got -1"},
      {{"sample", "--checkpoint", none, "--eta", "nan"}, "--eta: must be >= 0, got nan"},
      {{"sample", "--checkpoint", none, "--eta", "inf"}, "--eta: must be >= 0, got inf"},
      {{"sample", "--checkpoint", none, "--n", "0"}, "--n: must be in [1, 4096], got 0"},
      {{"train", "--lr", "0"}, "--lr: must be > 0, got 0"},
      {{"train", "--lr", "-1e-3"}, "--lr: must be > 0, got -1e-3"},
      {{"train", "--grad-clip", "-0.5"}, "--grad-clip: must be >= 0, got -0.5"},
      {{"train", "--sample-every", "-1"}, "--sample-every: must be >= 0, got -1"},
      {{"train", "--checkpoint-every", "-2"}, "--checkpoint-every: must be >= 0, got -2"},
      {{"train", "--ema-decay", "1.5"}, "--ema-decay: must be in [0, 1], got 1.5"},
      {{"train", "--steps", "0"}, "--steps: must be in [1, 1099511627776], got 0"},
      {{"train", "--dim", "2"}, "--dim: must be in [4, 4096], got 2"},
  };
  for (const Case& c : cases) {
    const Result r = run(dir, c.args);
    INFO("args: " << c.args[0] << " ... " << c.args.back() << "\nstderr: " << r.err);
    REQUIRE(r.status == 2);
    REQUIRE(r.err.find(c.message) != std::string::npos);
    // No bound printed as DBL_MAX's 309 digits (CLI11's NonNegativeNumber / PositiveNumber did).
    std::size_t run_of_digits = 0, longest = 0;
    for (char ch : r.err) {
      run_of_digits = (ch >= '0' && ch <= '9') ? run_of_digits + 1 : 0;
      longest = std::max(longest, run_of_digits);
    }
    REQUIRE(longest <= 13);
  }
  // Values inside the ranges pass the flags and fail later, on the missing files (status 1).
  Result r = run(dir, {"sample", "--checkpoint", none, "--eta", "0.5", "--n", "4096"});
  INFO("stderr: " << r.err);
  CHECK(r.status == 1);
  CHECK(r.err.find(none) != std::string::npos);
  r = run(dir, {"train", "--data", dir + "/no/data", "--out", dir + "/out", "--lr", "1e-4", "--grad-clip", "0",
                "--ema-decay", "1", "--steps", "1099511627776", "--dim", "4"});
  CHECK(r.status == 1);
  CHECK(r.err.find(dir + "/no/data") != std::string::npos);
  // The help shows the ranges in the same words.
  r = run(dir, {"sample", "--help"});
  CHECK(r.status == 0);
  CHECK(r.out.find(">= 0") != std::string::npos);
}

TEST_CASE("a class-conditional model trained on two constant-colour classes samples the class it is asked for") {
  // The conditional analogue of the content check above: the same data (64 images 8x8, even ones all 51 = -0.6, odd
  // ones all 204 = +0.6), now with labels (0 for the dark images, 1 for the bright ones) in
  // train-labels-idx1-ubyte.gz, trained with --conditional (labels dropped with probability 0.1). `sample --class c`
  // must give images of class c. Without guidance the conditioning of so short a run is not absolute (a sample's x_T
  // can win: train_images' twin measured 2 of 16 on the wrong side; here 32 of 32 were right), so at least 28 of the
  // 32 samples (16 per class) must lie within a quarter of the centres' gap (0.3 RMS) of their class's centre; a
  // model that ignored the labels gets about 16 (P(>= 28) < 1e-4). Guidance w = 3 extrapolates away from the
  // unconditional prediction (about 0, the mean of the two classes): x0 = c + 3 (c - 0), clipped to [-1, 1], so those
  // samples measured -1 / +1 exactly, 0.4 from the centre; for them every sample must have its pixel mean at least as
  // far from 0 as the class (minus 0.3) on c's side, and be nearer c than the other class.
  const std::string dir = scratch("conditional_content");
  const Index n = 64, side = 8;
  std::vector<std::uint8_t> pixels(static_cast<std::size_t>(n * side * side));
  diffusion::io::IdxArray labels;
  labels.dims = {static_cast<std::int32_t>(n)};
  for (Index i = 0; i < n; ++i) {
    std::fill(pixels.begin() + i * side * side, pixels.begin() + (i + 1) * side * side, i % 2 == 0 ? 51 : 204);
    labels.data.push_back(static_cast<std::uint8_t>(i % 2));
  }
  fs::create_directories(dir + "/data");
  diffusion::io::write_idx_images(dir + "/data/train-images-idx3-ubyte.gz", pixels.data(), n, side, side);
  diffusion::io::write_idx(dir + "/data/train-labels-idx1-ubyte.gz", labels);
  const double centre[2] = {-0.6, 0.6};
  const double threshold = 1.2 / 4.0;

  const std::string out = dir + "/run";
  Result r = run(dir, {"train", "--data", dir + "/data", "--out", out, "--conditional", "--dim", "8", "--dim-mults",
                       "1,2", "--batch", "16", "--timesteps", "100", "--schedule", "cosine", "--prediction", "x0",
                       "--lr", "5e-3", "--ema-decay", "0.9", "--steps", "150", "--final-samples", "20",
                       "--final-sampler", "ddim", "--threads", "2",
                       // the constant rate and fp32 this test was sized with (150 steps of the default cosine decay
                       // and shortened warm-up learn the two classes less well)
                       "--lr-warmup", "0", "--lr-decay", "none", "--precision", "fp32"});
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  REQUIRE(r.err.find("class-conditional") != std::string::npos);
  // The final grid is a class grid: 10 rows (one per class), ceil(20 / 10) = 2 images each, 8 px + 2 px padding.
  {
    const diffusion::io::Image8 grid = diffusion::io::read_png(out + "/samples.png");
    REQUIRE(grid.width == 2 + 2 * (side + 2));
    REQUIRE(grid.height == 2 + 10 * (side + 2));
  }
  // Its denoising GIF shows the first image of each row, one per class, in one row (2x upscaled): the dark class 0
  // first, then the light class 1 (guided with the default w = 3; the classes never trained follow).
  {
    int width = 0, height = 0;
    const std::vector<std::uint8_t> frame = gif_last_frame(out + "/denoising.gif", width, height);
    REQUIRE(width == 2 * (2 + 10 * (side + 2)));
    REQUIRE(height == 2 * (2 + (side + 2)));
    double mean[2] = {0.0, 0.0};
    for (int c = 0; c < 2; ++c) {
      for (Index y = 0; y < 2 * side; ++y)
        for (Index x = 0; x < 2 * side; ++x)
          mean[c] += frame[static_cast<std::size_t>((4 + y) * width + 2 * (2 + c * (side + 2)) + x)];
      mean[c] /= double(4 * side * side);
    }
    INFO("mean gray of the GIF's first two images: " << mean[0] << ", " << mean[1] << " (class centres 51, 204)");
    CHECK(mean[0] < 100.0);
    CHECK(mean[1] > 155.0);
  }
  for (const char* guidance : {"0", "3"}) {
    int right = 0;
    for (int c = 0; c < 2; ++c) {
      INFO("guidance " << guidance << ", class " << c);
      const std::string tensor = dir + "/class" + std::to_string(c) + "_w" + guidance + ".safetensors";
      r = run(dir, {"sample", "--checkpoint", out + "/checkpoint.safetensors", "--class", std::to_string(c),
                    "--guidance", guidance, "--steps", "20", "--n", "16", "--seed", "5", "--out", dir + "/s.png",
                    "--tensor-out", tensor, "--threads", "2"});
      INFO("stderr: " << r.err);
      REQUIRE(r.status == 0);
      const Tensor<float> x = read_tensor(tensor, "x_0");
      REQUIRE(x.shape() == (Shape{16, 1, side, side}));
      double worst = 0.0;
      for (Index i = 0; i < 16; ++i) {
        double d_asked = 0.0, d_other = 0.0, mean = 0.0;
        for (Index j = 0; j < side * side; ++j) {
          const double v = x[i * side * side + j];
          d_asked += (v - centre[c]) * (v - centre[c]);
          d_other += (v - centre[1 - c]) * (v - centre[1 - c]);
          mean += v;
        }
        d_asked = std::sqrt(d_asked / double(side * side));
        d_other = std::sqrt(d_other / double(side * side));
        mean /= double(side * side);
        INFO("sample " << i << ": RMS distance " << d_asked << " to the class asked for, " << d_other
                       << " to the other; pixel mean " << mean);
        REQUIRE(std::isfinite(mean));
        if (std::string(guidance) == "0") {
          right += d_asked < threshold && d_asked < d_other;
        } else {
          REQUIRE(d_asked < d_other);
          REQUIRE(mean * centre[c] > 0.0);
          REQUIRE(std::fabs(mean) > std::fabs(centre[c]) - threshold);
        }
        worst = std::max(worst, d_asked);
      }
      WARN("conditional content check: class " << c << ", guidance " << guidance << ": 16 samples, worst RMS distance "
                                                << worst << " (threshold " << threshold << ")");
    }
    if (std::string(guidance) == "0") {
      WARN("conditional content check, no guidance: " << right << " of 32 samples of the class asked for");
      REQUIRE(right >= 28);
    }
  }
}

TEST_CASE("conditional runs: the labels file, the class grid of sample, eval's class accuracy, and their errors") {
  const std::string dir = scratch("conditional");
  const std::string data = make_data(dir + "/data");  // 64 images 28x28
  diffusion::io::IdxArray labels;
  labels.dims = {64};
  for (int i = 0; i < 64; ++i) labels.data.push_back(static_cast<std::uint8_t>(i % 10));
  diffusion::io::write_idx(data + "/train-labels-idx1-ubyte.gz", labels);
  fs::copy_file(data + "/train-images-idx3-ubyte.gz", data + "/t10k-images-idx3-ubyte.gz",
                fs::copy_options::overwrite_existing);
  const std::string t = dir + "/trained";
  Result r = run(dir, tiny(data, t) + std::vector<std::string>{"--conditional", "--steps", "2", "--final-samples", "10",
                                                               "--final-sampler", "ddim"});
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  const std::string ckpt = t + "/checkpoint.safetensors";

  SECTION("sample: a class grid by default, one class with --class, no class with --class -1") {
    r = run(dir, {"sample", "--checkpoint", ckpt, "--steps", "2", "--n", "25", "--guidance", "1.5", "--out",
                  dir + "/grid.png", "--tensor-out", dir + "/grid.safetensors"});
    INFO("stderr: " << r.err);
    REQUIRE(r.status == 0);
    REQUIRE(r.out.find("one row per class, guidance 1.5") != std::string::npos);
    const diffusion::io::Image8 grid = diffusion::io::read_png(dir + "/grid.png");
    REQUIRE(grid.width == grid_px(3));  // ceil(25 / 10) = 3 images per row
    REQUIRE(grid.height == grid_px(10));
    const diffusion::io::SafetensorsReader reader(dir + "/grid.safetensors");
    const nlohmann::json info = nlohmann::json::parse(reader.metadata().at("fashion_mnist.sample"));
    REQUIRE(info.at("guidance") == 1.5);
    const std::vector<std::int64_t> ids = info.at("classes").get<std::vector<std::int64_t>>();
    REQUIRE(ids.size() == 30);
    for (std::size_t i = 0; i < ids.size(); ++i) REQUIRE(ids[i] == static_cast<std::int64_t>(i / 3));
    r = run(dir, {"sample", "--checkpoint", ckpt, "--steps", "2", "--n", "3", "--class", "7", "--out", dir + "/7.png"});
    REQUIRE(r.status == 0);
    REQUIRE(r.out.find("class 7 (Sneaker)") != std::string::npos);
    r = run(dir, {"sample", "--checkpoint", ckpt, "--steps", "2", "--n", "3", "--class", "-1", "--out", dir + "/u.png"});
    REQUIRE(r.status == 0);
    REQUIRE(r.out.find("no class") != std::string::npos);
  }
  SECTION("eval: the classes in turn and the share of samples the classifier assigns to the class asked for") {
    r = run(dir, {"eval", "--checkpoint", ckpt, "--data", data, "--n", "13", "--batch", "5", "--steps", "2",
                  "--guidance", "3", "--json", dir + "/e.json"});
    INFO("stdout: " << r.out);
    INFO("stderr: " << r.err);
    REQUIRE(r.status == 0);
    REQUIRE(r.out.find("guidance 3") != std::string::npos);
    REQUIRE(r.out.find("class accuracy: ") != std::string::npos);
    const nlohmann::json j = nlohmann::json::parse(slurp(dir + "/e.json"));
    const double accuracy = j.at("class_accuracy").get<double>();
    REQUIRE(accuracy >= 0.0);
    REQUIRE(accuracy <= 1.0);
    REQUIRE(j.at("class_accuracy_per_class").size() == 10);  // 13 samples: every class asked for at least once
    REQUIRE(j.at("guidance") == 3.0);
    // One class: only it is measured.
    r = run(dir, {"eval", "--checkpoint", ckpt, "--data", data, "--n", "4", "--batch", "4", "--steps", "2", "--class",
                  "3", "--json", dir + "/e3.json"});
    REQUIRE(r.status == 0);
    const nlohmann::json j3 = nlohmann::json::parse(slurp(dir + "/e3.json"));
    REQUIRE(j3.at("class_accuracy_per_class").size() == 1);
    REQUIRE(j3.at("class_accuracy_per_class").contains("Dress"));
  }
  SECTION("errors: a class the model lacks, classes asked of an unconditional model, missing or mismatched labels") {
    require_clean_failure(run(dir, {"sample", "--checkpoint", ckpt, "--steps", "2", "--class", "10", "--out", dir + "/x.png"}),
                          "--class 10: the model knows classes 0-9", dir + "/none");
    const std::string u = dir + "/unconditional";
    REQUIRE(run(dir, tiny(data, u) + std::vector<std::string>{"--steps", "1", "--final-samples", "1"}).status == 0);
    require_clean_failure(run(dir, {"sample", "--checkpoint", u + "/checkpoint.safetensors", "--steps", "2", "--class", "3"}),
                          "holds an unconditional model", dir + "/none");
    require_clean_failure(run(dir, {"sample", "--checkpoint", u + "/model.safetensors", "--steps", "2", "--guidance", "2"}),
                          "holds an unconditional model", dir + "/none");
    // Resuming: the conditioning is part of the configuration.
    require_clean_failure(run(dir, {"train", "--resume", u + "/checkpoint.safetensors", "--conditional", "--steps", "2"}),
                          "--conditional true (the checkpoint has false)", dir + "/none");
    require_clean_failure(run(dir, {"train", "--resume", ckpt, "--cond-drop-prob", "0.3", "--steps", "3"}),
                          "--cond-drop-prob 0.3 (the checkpoint has 0.1)", dir + "/none");
    // The labels file: missing, or not one label per image.
    const std::string nolabels = make_data(dir + "/nolabels");
    require_clean_failure(run(dir, tiny(nolabels, dir + "/o1") + std::vector<std::string>{"--conditional", "--steps", "1"}),
                          "train-labels-idx1-ubyte.gz: file does not exist", dir + "/o1");
    diffusion::io::IdxArray short_labels;
    short_labels.dims = {63};
    short_labels.data.assign(63, 1);
    diffusion::io::write_idx(nolabels + "/train-labels-idx1-ubyte.gz", short_labels);
    require_clean_failure(run(dir, tiny(nolabels, dir + "/o2") + std::vector<std::string>{"--conditional", "--steps", "1"}),
                          "holds 63 labels for 64 training images", dir + "/o2");
    short_labels.dims = {64};
    short_labels.data.assign(64, 12);
    diffusion::io::write_idx(nolabels + "/train-labels-idx1-ubyte.gz", short_labels);
    require_clean_failure(run(dir, tiny(nolabels, dir + "/o3") + std::vector<std::string>{"--conditional", "--steps", "1"}),
                          "label 12 of image 0 is outside the 10 Fashion-MNIST classes", dir + "/o3");
  }
}
