#pragma once
// Sampling for the example programs: denoise a batch with a trained U-Net and any sampler of the library, write
// the samples as a PNG grid, record the denoising of a few of them as an animated GIF.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/io/image.hpp"
#include "diffusion/kernels/precision.hpp"
#include "diffusion/model/unet.hpp"
#include "diffusion/process/parameterization.hpp"
#include "diffusion/process/schedule.hpp"
#include "diffusion/samplers/timesteps.hpp"

namespace examples {

using diffusion::Index;
using Images = diffusion::Tensor<float>;  // (N, C, H, W), pixel values in [-1, 1]

// Stream ids under the seed (see core/random.hpp): x_T and the sampler's noise of `sample` and of the final grid;
// the fixed x_T of the previews during training (the same every time, so that previews show the model changing).
inline constexpr std::uint64_t kSampleStream = 0x53414d504c45ull;    // "SAMPLE"
inline constexpr std::uint64_t kPreviewStream = 0x50524556494557ull;  // "PREVIEW"

struct SamplerSettings {
  std::string sampler = "ddim";  // any name of diffusion::parse_sampler
  int ddim_steps = 50;           // steps of every sampler but ddpm
  // Where those steps fall among the T timesteps (samplers/timesteps.hpp; ddpm takes them all).
  diffusion::TimestepSpacing spacing = diffusion::TimestepSpacing::Linspace;
  std::optional<double> eta;     // unset: the sampler's default (0 for ddim, 1 for euler_ancestral and dpmpp_2m_sde)
  bool clip_x0 = true;  // clip the predicted x0 to [-1, 1] (the pixel range) at every step
  diffusion::Prediction prediction = diffusion::Prediction::Epsilon;
  // Class-conditional networks only: the class id of every image (diffusion::kNullClass: no class), and
  // classifier-free guidance (samplers/guidance.hpp): scale w (0: the conditional prediction alone) and rescaled_phi.
  std::vector<std::int64_t> classes;
  double guidance = 0.0;
  double rescaled_phi = 0.0;
  // The GEMMs of the model calls: fp32, or bf16 operands with fp32 accumulation where the CPU has AVX512_BF16.
  diffusion::kernels::MatmulPrecision precision = diffusion::kernels::MatmulPrecision::Fp32;

  // Steps the sampler takes with a schedule of T timesteps.
  int steps(int T) const { return sampler == "ddpm" ? T : ddim_steps; }
};

// The help of the programs' --precision flags (followed by what they apply to).
inline constexpr const char* kPrecisionHelp =
    "matmul precision: fp32, or bf16 (bf16 operands, fp32 accumulation and everything else fp32; runs fp32 on CPUs "
    "without AVX512_BF16)";

// What a program's summary line says about the matmul precision: nothing for fp32, ", bf16 matmuls" for bf16, and
// that fp32 ran instead where the CPU lacks AVX512_BF16.
std::string precision_note(diffusion::kernels::MatmulPrecision requested);

// Frames of the denoising of some images of the batch, one row, from x_T to x_0: about `frames` frames spread
// evenly over the steps, the last one held for 2 seconds.
class DenoisingRecorder {
 public:
  // The first `images` images of the batch.
  DenoisingRecorder(Index images, int sampler_steps, int frames = 50, int scale = 2);
  // The images at these batch indices, in this order (a class grid: class_grid_recorder).
  DenoisingRecorder(std::vector<Index> which, int sampler_steps, int frames = 50, int scale = 2);
  void start(const Images& x_T);                   // the first frame
  void after_step(int step_index, const Images& x);  // called after step 0 .. sampler_steps-1
  void write(const std::string& path) const;
  std::size_t frames() const { return frames_.size(); }

 private:
  void add(const Images& x);
  std::vector<Index> which_;
  int steps_, every_, scale_;
  std::vector<diffusion::io::Image8> frames_;
};

// Denoises x in place (x_T in, x_0 out) with `net`; rng supplies the sampler's noise; gif may be null. A
// class-conditional net needs settings.classes (one id per image of x) and is guided by settings.guidance; an
// unconditional one refuses classes and guidance.
void denoise(diffusion::Unet<float>& net, const diffusion::NoiseSchedule& schedule, const SamplerSettings& settings,
             Images& x, diffusion::Rng& rng, DenoisingRecorder* gif);

// x_T ~ N(0, I) of shape (n, channels, height, width) drawn from rng, then denoise().
void generate(diffusion::Unet<float>& net, const diffusion::NoiseSchedule& schedule, const SamplerSettings& settings,
              Index n, Index channels, Index height, Index width, diffusion::Rng& rng, Images& x,
              DenoisingRecorder* gif);

// The first k images of a batch.
Images first_images(const Images& x, Index k);

// A torchvision-style grid (2 px black padding), ceil(sqrt(N)) images per row, written atomically.
void write_grid_png(const std::string& path, const Images& images);
// The same with `columns` images per row (a class grid: one row per class).
void write_grid_png(const std::string& path, const Images& images, int columns);

// The ids of a class grid: `rows` classes 0 .. rows-1, `per_row` images each, row by row.
std::vector<std::int64_t> class_grid_ids(int rows, int per_row);
// The recorder of such a grid's denoising: the first image of each row (0, per_row, 2 per_row, ...), one per class,
// at most kGifClasses of them.
constexpr int kGifClasses = 16;
DenoisingRecorder class_grid_recorder(int rows, int per_row, int sampler_steps);
// The ids of n images that take `classes` classes in turn: 0, 1, ..., classes-1, 0, ...
std::vector<std::int64_t> classes_in_turn(Index n, Index classes);

}  // namespace examples
