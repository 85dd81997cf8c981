#include <cstdio>
#include <cstdlib>
#include <string>
#include <diffusion/diffusion.hpp>
#include <diffusion/io/image.hpp>
using namespace diffusion;

// usage: tour [train-images-idx3-ubyte.gz] [steps] [samples]   (defaults: Fashion-MNIST, 5 epochs, 64 images)
int main(int argc, char** argv) {
  const std::string data = argc > 1 ? argv[1] : "data/fashion_mnist/train-images-idx3-ubyte.gz";
  const int steps = argc > 2 ? std::atoi(argv[2]) : 2345, samples = argc > 3 ? std::atoi(argv[3]) : 64;

  UnetConfig config;  // the primer's Unet(dim=28, channels=1, dim_mults=(1, 2, 4)), ConvNeXt blocks
  config.dim = 28;
  config.channels = 1;
  config.dim_mults = {1, 2, 4};
  GaussianDiffusion<float> diffusion(config, /*image_size=*/28);  // T = 1000, L2 loss, eps, EMA, DDIM 50 steps
  const Tensor<float> images = io::load_idx_images<float>(data);  // (60000, 1, 28, 28) in [-1, 1]
  BatchSampler<float> batches(images, BatchOptions{});            // batch 128, shuffled, flipped
  Tensor<float> batch;
  for (int step = 0; step < steps; ++step) {
    batches.batch(step, batch);
    const double loss = diffusion.train_step(batch);
    if (step % 100 == 0) std::printf("step %d: loss %.4f\n", step, loss);
  }
  diffusion.save("tour.safetensors");  // a checkpoint: diffusion.load(...) resumes training or samples
  Rng rng(0);
  const Tensor<float> x = diffusion.sample(samples, rng);  // (64, 1, 28, 28)
  io::write_png("tour_samples.png", io::image_grid(x, 8));
  std::printf("samples: tour_samples.png\n");
}
