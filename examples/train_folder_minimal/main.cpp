// train_folder_minimal: the shortest complete program with this library. Copy it and start from here.
//
//   train_folder_minimal --data my_images --out results/minimal --size 32 --steps 2000
//
// 1. loads every image under --data (PNG, JPEG, BMP, TGA, GIF; any size; resized and centre-cropped to --size),
// 2. builds a small U-Net for those images and trains it (the primer's recipe: L_simple, Adam, EMA of the weights),
// 3. saves the EMA weights as out/model.safetensors (a PyTorch-compatible state_dict with its configuration),
// 4. samples a grid of images with DDIM and writes it as out/samples.png.
// No resume, no previews: see examples/train_images for the full program.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "diffusion/diffusion.hpp"
#include "diffusion/io/image.hpp"         // PNG writing and grids (stb): not in the umbrella header
#include "diffusion/io/image_folder.hpp"  // the image-folder data set (stb)

int main(int argc, char** argv) {
  // --- the command line --------------------------------------------------------------------------------------------
  std::string data, out = "results/minimal";
  int size = 32, channels = 3, dim = 32, batch = 32, timesteps = 1000, samples = 16, sampling_steps = 50;
  std::vector<int> dim_mults = {1, 2, 4};
  long long steps = 2000;
  std::uint64_t seed = 0;
  CLI::App app{"Train a small diffusion model on a folder of images and sample from it.", "train_folder_minimal"};
  app.option_defaults()->always_capture_default();
  app.add_option("--data", data, "folder of images (searched recursively)")->required();
  app.add_option("--out", out, "output folder");
  app.add_option("--size", size, "image height and width after resize + centre crop")->check(CLI::Range(4, 1024));
  app.add_option("--channels", channels, "1 (gray) or 3 (RGB)")->check(CLI::IsMember({1, 3}));
  app.add_option("--dim", dim, "U-Net base channels")->check(CLI::Range(4, 1024));
  app.add_option("--dim-mults", dim_mults, "channel multipliers per resolution level")->delimiter(',');
  app.add_option("--batch", batch, "images per step")->check(CLI::Range(1, 4096));
  app.add_option("--steps", steps, "optimisation steps")->check(CLI::Range(1LL, 100000000LL));
  app.add_option("--timesteps", timesteps, "diffusion steps T")->check(CLI::Range(2, 100000));
  app.add_option("--samples", samples, "images in samples.png")->check(CLI::Range(1, 1024));
  app.add_option("--sampling-steps", sampling_steps, "DDIM steps for the samples")->check(CLI::Range(1, 100000));
  app.add_option("--seed", seed, "seed of everything random");
  CLI11_PARSE(app, argc, argv);

  try {
    // --- 1. the data: (N, C, H, W) bytes in memory, converted to [-1, 1] floats one batch at a time -----------------
    diffusion::io::ImageFolderOptions folder_options;
    folder_options.decode.channels = channels;
    folder_options.decode.height = folder_options.decode.width = size;
    const diffusion::io::ImageFolder images(data, folder_options);
    std::printf("%lld images %dx%d, %d channel(s) from %s\n", static_cast<long long>(images.size()), size, size,
                channels, data.c_str());

    // --- 2. the model: each resolution level halves the image, so the size must divide by 2^(levels - 1) ----------
    diffusion::UnetConfig config;
    config.channels = channels;
    config.dim = dim;
    config.dim_mults.assign(dim_mults.begin(), dim_mults.end());
    const int divisor = 1 << (static_cast<int>(config.levels()) - 1);
    if (size % divisor != 0) throw diffusion::Error("--size must be divisible by " + std::to_string(divisor));
    diffusion::Unet<float> net(config, seed);

    // --- 3. training: the Trainer draws t and the noise, computes L_simple, steps Adam and the EMA -----------------
    diffusion::TrainerOptions train_options;  // L2 loss, epsilon prediction, Adam lr 1e-3, EMA 0.995
    train_options.seed = seed;
    diffusion::Trainer<float> trainer(net, diffusion::NoiseSchedule(diffusion::BetaSchedule::Linear, timesteps),
                                      train_options);
    diffusion::BatchOptions batch_options;  // shuffled every epoch, random horizontal flips
    batch_options.batch_size = batch;
    batch_options.seed = seed;
    diffusion::BatchSampler<float> sampler(images.images(), batch_options);
    diffusion::Tensor<float> x0;  // (B, C, H, W) in [-1, 1]
    double loss_sum = 0.0;
    while (trainer.step_count() < steps) {
      sampler.batch(trainer.step_count(), x0);  // step s's batch depends on (seed, s) only
      loss_sum += trainer.step(x0).loss;
      const long long s = trainer.step_count();
      if (s % 100 == 0 || s == steps) {
        std::printf("step %lld/%lld  loss %.4f\n", s, steps, loss_sum / static_cast<double>(s % 100 ? s % 100 : 100));
        loss_sum = 0.0;
      }
    }

    // --- 4. save the EMA weights (load them back with diffusion::load_unet<float>(path)) ---------------------------
    std::filesystem::create_directories(out);
    const std::string model_path = out + "/model.safetensors", samples_path = out + "/samples.png";
    diffusion::save_unet_weights(net, model_path, trainer.sampling_weights());

    // --- 5. sample with the EMA weights: x_T ~ N(0, I), then DDIM from T to 0 ---------------------------------------
    const auto ema_net = diffusion::load_unet<float>(model_path);
    auto model = [&](const diffusion::Tensor<float>& x, const std::vector<std::int64_t>& t,
                     diffusion::Tensor<float>& eps) { ema_net->forward(x, t, eps); };
    diffusion::Rng rng(seed + 1);
    diffusion::Tensor<float> x = diffusion::Tensor<float>::normal({samples, channels, size, size}, rng);
    diffusion::SamplerOptions sampler_options;  // DDIM, eta 0, x0 clipped to [-1, 1]
    sampler_options.steps = std::min(sampling_steps, timesteps);
    diffusion::sample(model, trainer.schedule(), x, rng, sampler_options);

    // --- 6. write the samples as one PNG grid (ceil(sqrt(n)) per row) -----------------------------------------------
    int columns = 1;
    while (columns * columns < samples) ++columns;
    diffusion::io::write_png(samples_path, diffusion::io::image_grid<float>(x, columns));
    std::printf("weights: %s\nsamples: %s\n", model_path.c_str(), samples_path.c_str());
    return 0;
  } catch (const std::exception& e) {  // bad input (a file that does not decode, an empty folder, ...): one line
    std::fprintf(stderr, "train_folder_minimal: %s\n", e.what());
    return 1;
  }
}
