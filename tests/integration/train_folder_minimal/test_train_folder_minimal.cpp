// Integration test of the template example (examples/train_folder_minimal): generates a tiny folder of PNGs (16 RGB
// images 16x16 in two class subfolders), runs the program for a few steps with a tiny U-Net, and checks what it
// writes: samples.png is a grid of the requested size, model.safetensors loads back with load_unet and holds the
// configuration asked for; a folder without images is a one-line error and exit status 1.
#include <catch2/catch.hpp>


#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "diffusion/core/random.hpp"
#include "diffusion/io/image.hpp"
#include "diffusion/model/unet_weights.hpp"
#include "../program_runner.hpp"

namespace fs = std::filesystem;

namespace {

using diffusion::testing::slurp;
using Result = diffusion::testing::ProgramResult;

std::string scratch(const std::string& name) { return diffusion::testing::fresh_folder(TRAIN_FOLDER_MINIMAL_TEST_DIR, name); }

Result run(const std::string& dir, const std::vector<std::string>& args) {
  return diffusion::testing::run_program(TRAIN_FOLDER_MINIMAL_EXE, dir, args);
}

// 16 RGB PNGs 16x16: class "red" (a red square on white) and class "blue" (a blue disc on black), 8 each.
std::string make_folder(const std::string& root) {
  diffusion::Rng rng(7);
  for (int cls = 0; cls < 2; ++cls) {
    const fs::path dir = fs::path(root) / (cls == 0 ? "red" : "blue");
    fs::create_directories(dir);
    for (int i = 0; i < 8; ++i) {
      diffusion::io::Image8 im;
      im.width = im.height = 16;
      im.channels = 3;
      im.pixels.assign(16 * 16 * 3, cls == 0 ? 255 : 0);
      const int cx = 4 + static_cast<int>(rng.uniform_int(8)), cy = 4 + static_cast<int>(rng.uniform_int(8));
      for (int y = 0; y < 16; ++y)
        for (int x = 0; x < 16; ++x) {
          const bool inside = cls == 0 ? (std::abs(x - cx) <= 3 && std::abs(y - cy) <= 3)
                                       : ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= 12);
          if (!inside) continue;
          im.at(y, x, 0) = cls == 0 ? 220 : 20;
          im.at(y, x, 1) = 30;
          im.at(y, x, 2) = cls == 0 ? 20 : 220;
        }
      diffusion::io::write_png((dir / ("im" + std::to_string(i) + ".png")).string(), im);
    }
  }
  return root;
}

}  // namespace

TEST_CASE("the template trains on a folder of PNGs and writes its weights and a grid of samples", "[example]") {
  const std::string dir = scratch("train");
  const std::string data = make_folder(dir + "/data"), out = dir + "/out";
  const Result r = run(dir, {"--data", data, "--out", out, "--size", "16", "--dim", "8", "--dim-mults", "1,2",
                             "--batch", "8", "--steps", "3", "--timesteps", "20", "--samples", "6",
                             "--sampling-steps", "5"});
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("16 images 16x16, 3 channel(s)") != std::string::npos);
  CHECK(r.out.find("step 3/3") != std::string::npos);

  // 6 samples: 3 per row, 2 rows, 2 px padding around each 16 x 16 image.
  const diffusion::io::Image8 grid = diffusion::io::read_png(out + "/samples.png");
  CHECK(grid.channels == 3);
  CHECK(grid.width == 3 * 16 + 4 * 2);
  CHECK(grid.height == 2 * 16 + 3 * 2);

  const auto net = diffusion::load_unet<float>(out + "/model.safetensors");
  CHECK(net->config().channels == 3);
  CHECK(net->config().dim == 8);
  CHECK(net->config().dim_mults == std::vector<diffusion::Index>{1, 2});
  // The weights are finite and not all zero (a trained network, not an empty file).
  const float* w = net->params().values();
  bool finite = true, nonzero = false;
  for (std::size_t i = 0; i < net->params().size(); ++i) {
    finite = finite && std::isfinite(w[i]);
    nonzero = nonzero || w[i] != 0.0f;
  }
  CHECK(finite);
  CHECK(nonzero);
}

TEST_CASE("the template reports a folder without images in one line", "[example]") {
  const std::string dir = scratch("empty");
  fs::create_directories(dir + "/data/nothing");
  std::ofstream(dir + "/data/readme.txt") << "no images here\n";
  const Result r = run(dir, {"--data", dir + "/data", "--out", dir + "/out", "--steps", "1"});
  INFO("stderr: " << r.err);
  CHECK(r.status == 1);
  CHECK(r.err.rfind("train_folder_minimal: ", 0) == 0);
  CHECK(r.err.find(dir + "/data") != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(!fs::exists(dir + "/out/model.safetensors"));
}
