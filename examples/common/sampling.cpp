#include "sampling.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

#include "diffusion/core/error.hpp"
#include "diffusion/io/gif.hpp"
#include "diffusion/samplers/guidance.hpp"
#include "diffusion/samplers/sample.hpp"

namespace examples {

using diffusion::Shape;

namespace {

constexpr int kFrameDelayCs = 5;    // 20 frames a second, as the primer's animation (interval=50 ms)
constexpr int kFinalDelayCs = 200;  // hold the result for 2 s

diffusion::io::Image8 upscale(const diffusion::io::Image8& in, int s) {
  if (s == 1) return in;
  diffusion::io::Image8 out;
  out.width = in.width * s;
  out.height = in.height * s;
  out.channels = in.channels;
  out.pixels.resize(static_cast<std::size_t>(out.width) * static_cast<std::size_t>(out.height) *
                    static_cast<std::size_t>(out.channels));
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x)
      for (int c = 0; c < out.channels; ++c) out.at(y, x, c) = in.at(y / s, x / s, c);
  return out;
}

int grid_columns(Index n) {
  int c = static_cast<int>(std::ceil(std::sqrt(static_cast<double>(n))));
  while (static_cast<Index>(c - 1) * (c - 1) >= n && c > 1) --c;  // guard against sqrt rounding up
  return std::max(1, c);
}

}  // namespace

DenoisingRecorder::DenoisingRecorder(Index images, int sampler_steps, int frames, int scale)
    : DenoisingRecorder(std::vector<Index>(), sampler_steps, frames, scale) {
  for (Index i = 0; i < images; ++i) which_.push_back(i);
}

DenoisingRecorder::DenoisingRecorder(std::vector<Index> which, int sampler_steps, int frames, int scale)
    : which_(std::move(which)),
      steps_(sampler_steps),
      every_(std::max(1, (sampler_steps + frames - 1) / std::max(1, frames))),
      scale_(scale) {}

void DenoisingRecorder::add(const Images& x) {
  // The chosen images that the batch has (a batch smaller than the recorder's choice shows what it has).
  std::vector<Index> present;
  for (const Index i : which_)
    if (i >= 0 && i < x.dim(0)) present.push_back(i);
  DIFFUSION_CHECK(!present.empty(), "DenoisingRecorder: none of the images to record is in a batch of " << x.dim(0));
  const Index per_image = x.dim(1) * x.dim(2) * x.dim(3);
  Images row(Shape{static_cast<Index>(present.size()), x.dim(1), x.dim(2), x.dim(3)});
  for (std::size_t k = 0; k < present.size(); ++k)
    std::copy(x.data() + present[k] * per_image, x.data() + (present[k] + 1) * per_image,
              row.data() + static_cast<Index>(k) * per_image);
  frames_.push_back(upscale(diffusion::io::image_grid(row, static_cast<int>(row.dim(0))), scale_));
}

void DenoisingRecorder::start(const Images& x_T) { add(x_T); }

void DenoisingRecorder::after_step(int step_index, const Images& x) {
  if ((step_index + 1) % every_ == 0 || step_index == steps_ - 1) add(x);
}

void DenoisingRecorder::write(const std::string& path) const {
  diffusion::io::write_gif(path, frames_, kFrameDelayCs, true, kFinalDelayCs);
}

std::string precision_note(diffusion::kernels::MatmulPrecision requested) {
  using diffusion::kernels::MatmulPrecision;
  if (requested == MatmulPrecision::Fp32) return "";
  if (diffusion::kernels::effective_matmul_precision(requested) == MatmulPrecision::Bf16) return ", bf16 matmuls";
  return ", fp32 matmuls (bf16 asked for, but this build's CPU target has no AVX512_BF16)";
}

void denoise(diffusion::Unet<float>& net, const diffusion::NoiseSchedule& schedule, const SamplerSettings& settings,
             Images& x, diffusion::Rng& rng, DenoisingRecorder* gif) {
  auto callback = [gif](int step, std::int64_t, const Images& xt) {
    if (gif) gif->after_step(step, xt);
  };
  if (gif) gif->start(x);
  // kernels::gemm runs fp32 where the CPU lacks AVX512_BF16 (precision_note says so).
  const diffusion::kernels::MatmulPrecisionScope precision(settings.precision);
  diffusion::SamplerOptions o;
  o.sampler = diffusion::parse_sampler(settings.sampler);
  o.steps = settings.ddim_steps;  // ddpm takes every one of the T steps
  o.spacing = settings.spacing;
  if (settings.eta) o.eta = *settings.eta;
  o.prediction = settings.prediction;
  o.clip = settings.clip_x0 ? diffusion::ClipX0::RederiveEps : diffusion::ClipX0::None;
  if (!net.is_conditional()) {
    DIFFUSION_CHECK(settings.classes.empty() && settings.guidance == 0.0 && settings.rescaled_phi == 0.0,
                    "the model is unconditional (trained without classes): class ids and guidance do not apply");
    auto model = [&net](const Images& x_t, const std::vector<std::int64_t>& t, Images& out) { net.predict(x_t, t, out); };
    diffusion::sample(model, schedule, x, rng, o, callback);
    return;
  }
  DIFFUSION_CHECK(static_cast<Index>(settings.classes.size()) == x.dim(0),
                  "the model is class-conditional: " << settings.classes.size() << " class ids for " << x.dim(0)
                                                     << " images");
  diffusion::ClassifierFreeGuidance<float, diffusion::Unet<float>> guided(
      net, settings.classes, diffusion::GuidanceOptions{settings.guidance, settings.rescaled_phi});
  auto model = [&guided](const Images& x_t, const std::vector<std::int64_t>& t, Images& out) { guided(x_t, t, out); };
  diffusion::sample(model, schedule, x, rng, o, callback);
}

void generate(diffusion::Unet<float>& net, const diffusion::NoiseSchedule& schedule, const SamplerSettings& settings,
              Index n, Index channels, Index height, Index width, diffusion::Rng& rng, Images& x,
              DenoisingRecorder* gif) {
  x = Images::normal(Shape{n, channels, height, width}, rng);  // x_T (N, C, H, W)
  denoise(net, schedule, settings, x, rng, gif);
}

Images first_images(const Images& x, Index k) {
  DIFFUSION_CHECK(k >= 1 && k <= x.dim(0), "first_images: " << k << " of " << x.shape());
  return Images::copy_of(diffusion::TensorView<float>(x.data(), Shape{k, x.dim(1), x.dim(2), x.dim(3)}));
}

void write_grid_png(const std::string& path, const Images& images) {
  write_grid_png(path, images, grid_columns(images.dim(0)));
}

void write_grid_png(const std::string& path, const Images& images, int columns) {
  diffusion::io::write_png(path, diffusion::io::image_grid(images, columns));
}

DenoisingRecorder class_grid_recorder(int rows, int per_row, int sampler_steps) {
  std::vector<Index> row_starts;
  for (int c = 0; c < std::min(rows, kGifClasses); ++c) row_starts.push_back(static_cast<Index>(c) * per_row);
  return DenoisingRecorder(std::move(row_starts), sampler_steps);
}

std::vector<std::int64_t> classes_in_turn(Index n, Index classes) {
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) ids[static_cast<std::size_t>(i)] = i % classes;
  return ids;
}

std::vector<std::int64_t> class_grid_ids(int rows, int per_row) {
  std::vector<std::int64_t> ids;
  ids.reserve(static_cast<std::size_t>(rows) * static_cast<std::size_t>(per_row));
  for (int c = 0; c < rows; ++c) ids.insert(ids.end(), static_cast<std::size_t>(per_row), c);
  return ids;
}

}  // namespace examples
