// bench_unet: images/s of the Fashion-MNIST U-Net, training or forward, as one JSON line (read by compare.py).
//
//   bench_unet --mode train|forward|forward-keep [--batch B] [--threads N] [--iters K] [--warmup W]
//              [--dim 28] [--dim-mults 1,2,4] [--block convnext|resnet] [--channels 1] [--image-size 28]
//              [--timesteps 300] [--seed 0] [--precision fp32|bf16] [--print-layers]
//
// train:   one full Trainer<float>::step per iteration (t and eps drawn, q_sample, Unet forward, L_simple (L2) loss,
//          backward, global gradient norm, Adam lr 1e-3; EMA off), as benchmarks/pytorch_unet.py does in PyTorch.
// forward: Unet<float>::predict, the inference pass the samplers run (keeps nothing; PyTorch's no_grad forward).
// forward-keep: Unet<float>::forward, which also keeps the activations a backward would need.
// --precision bf16: every float GEMM with bf16 operands and fp32 accumulation (kernels/precision.hpp); the JSON's
// "matmul_precision" is what ran (fp32 where the CPU has no AVX512_BF16).
// The input batch is synthetic (uniform in [-1, 1]): speed does not depend on the pixel values.
// FLOPs per image are counted from the layer shapes (unet_census.hpp); for training the estimate is 3x forward
// (each GEMM-like op has two backward products of the same size), and the JSON says so.

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/core/parallel.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/kernels/precision.hpp"
#include "diffusion/model/unet.hpp"
#include "diffusion/process/schedule.hpp"
#include "diffusion/train/trainer.hpp"
#include "unet_census.hpp"

namespace {

using diffusion::Index;

struct Options {
  std::string mode = "train";
  Index batch = 128;
  int threads = 0;  // 0: OpenMP's default
  int iters = 10;
  int warmup = 2;
  Index dim = 28;
  std::vector<Index> dim_mults = {1, 2, 4};
  std::string block = "convnext";
  Index channels = 1;
  Index image_size = 28;
  int timesteps = 300;
  std::uint64_t seed = 0;
  std::string precision = "fp32";
  bool print_layers = false;
};

[[noreturn]] void usage(const std::string& msg) {
  std::cerr << "bench_unet: " << msg << "\n"
            << "usage: bench_unet --mode train|forward|forward-keep [--batch B] [--threads N] [--iters K]\n"
            << "                  [--warmup W] [--dim 28] [--dim-mults 1,2,4] [--block convnext|resnet] [--channels 1]\n"
            << "                  [--image-size 28] [--timesteps 300] [--seed 0] [--precision fp32|bf16]\n"
            << "                  [--print-layers]\n";
  std::exit(2);
}

long long parse_int(const std::string& flag, const std::string& s) {
  try {
    std::size_t used = 0;
    const long long v = std::stoll(s, &used);
    if (used != s.size()) throw std::invalid_argument(s);
    return v;
  } catch (const std::exception&) {
    usage(flag + " expects an integer, got '" + s + "'");
  }
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value after " + a);
      return argv[++i];
    };
    if (a == "--mode") o.mode = value();
    else if (a == "--batch") o.batch = parse_int(a, value());
    else if (a == "--threads") o.threads = static_cast<int>(parse_int(a, value()));
    else if (a == "--iters") o.iters = static_cast<int>(parse_int(a, value()));
    else if (a == "--warmup") o.warmup = static_cast<int>(parse_int(a, value()));
    else if (a == "--dim") o.dim = parse_int(a, value());
    else if (a == "--dim-mults") {
      o.dim_mults.clear();
      std::stringstream ss(value());
      for (std::string item; std::getline(ss, item, ',');) o.dim_mults.push_back(parse_int(a, item));
    } else if (a == "--block") o.block = value();
    else if (a == "--channels") o.channels = parse_int(a, value());
    else if (a == "--image-size") o.image_size = parse_int(a, value());
    else if (a == "--timesteps") o.timesteps = static_cast<int>(parse_int(a, value()));
    else if (a == "--seed") o.seed = static_cast<std::uint64_t>(parse_int(a, value()));
    else if (a == "--precision") o.precision = value();
    else if (a == "--print-layers") o.print_layers = true;
    else usage("unknown argument " + a);
  }
  if (o.mode != "train" && o.mode != "forward" && o.mode != "forward-keep")
    usage("--mode must be train, forward or forward-keep, got " + o.mode);
  try {
    diffusion::kernels::parse_matmul_precision(o.precision);
  } catch (const std::exception& e) {
    usage(std::string("--precision: ") + e.what());
  }
  if (o.block != "convnext" && o.block != "resnet") usage("--block must be convnext or resnet, got " + o.block);
  if (o.batch < 1 || o.iters < 1 || o.warmup < 0 || o.threads < 0 || o.timesteps < 1 || o.image_size < 1)
    usage("--batch, --iters, --timesteps, --image-size must be >= 1; --warmup, --threads >= 0");
  return o;
}

// Peak resident set of this process so far (Linux reports ru_maxrss in KiB).
double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const double baseline_rss = peak_rss_mib();
  if (o.threads > 0) diffusion::set_num_threads(o.threads);
  const int threads = diffusion::max_threads();

  diffusion::UnetConfig config;
  config.dim = o.dim;
  config.dim_mults = o.dim_mults;
  config.channels = o.channels;
  config.use_convnext = o.block == "convnext";

  try {
    const diffusion::bench::UnetCensus census = diffusion::bench::unet_census(config, o.image_size, o.image_size);
    if (o.print_layers) {
      std::cout << diffusion::bench::describe(census);
      return 0;
    }
    diffusion::Unet<float> model(config, o.seed);
    census.check_parameters(model.params());  // the FLOP count describes this very network
    Index param_count = 0;
    for (const auto& e : model.params().entries()) param_count += e.shape.numel();

    const diffusion::Shape shape{o.batch, o.channels, o.image_size, o.image_size};
    diffusion::Rng rng = diffusion::Rng(o.seed).fork(0xBE7C4);
    const auto x = diffusion::Tensor<float>::uniform(shape, rng, -1.0, 1.0);  // (N, C, H, W) synthetic, in [-1, 1]

    const auto precision =
        diffusion::kernels::effective_matmul_precision(diffusion::kernels::parse_matmul_precision(o.precision));
    const diffusion::kernels::MatmulPrecisionScope precision_scope(precision);
    std::vector<double> seconds;
    double last_loss = 0.0;
    using Clock = std::chrono::steady_clock;
    if (o.mode == "train") {
      diffusion::TrainerOptions topt;
      topt.use_ema = false;
      topt.seed = o.seed;
      topt.precision = precision;  // the Trainer sets its own precision around each step
      diffusion::Trainer<float> trainer(model, diffusion::NoiseSchedule(diffusion::BetaSchedule::Linear, o.timesteps),
                                        topt);
      for (int i = 0; i < o.warmup + o.iters; ++i) {
        const auto t0 = Clock::now();
        last_loss = trainer.step(x).loss;
        const auto t1 = Clock::now();
        if (i >= o.warmup) seconds.push_back(std::chrono::duration<double>(t1 - t0).count());
      }
    } else {
      std::vector<std::int64_t> t(static_cast<std::size_t>(o.batch));
      for (auto& ti : t) ti = rng.uniform_int(o.timesteps);
      diffusion::Tensor<float> y;
      for (int i = 0; i < o.warmup + o.iters; ++i) {
        const auto t0 = Clock::now();
        if (o.mode == "forward") model.predict(x, t, y);
        else model.forward(x, t, y);
        const auto t1 = Clock::now();
        if (i >= o.warmup) seconds.push_back(std::chrono::duration<double>(t1 - t0).count());
      }
      double sum = 0.0;
      for (Index i = 0; i < y.numel(); ++i) sum += y[i];
      last_loss = sum / static_cast<double>(y.numel());  // a checksum that keeps the output alive
    }

    const double B = static_cast<double>(o.batch);
    const double s_median = median(seconds);
    const double s_total = std::accumulate(seconds.begin(), seconds.end(), 0.0);
    const double ips_median = B / s_median;
    const double ips_mean = B * static_cast<double>(seconds.size()) / s_total;
    const double fwd_flops = census.forward_flops_per_image();
    const bool train = o.mode == "train";
    const double flops = train ? 3.0 * fwd_flops : fwd_flops;

    nlohmann::ordered_json j;
    j["impl"] = "diffusion-cpp";
    j["mode"] = o.mode;
    j["batch"] = o.batch;
    j["threads"] = threads;
    j["matmul_precision"] = diffusion::kernels::matmul_precision_name(precision);
    j["iters"] = o.iters;
    j["warmup"] = o.warmup;
    j["images_per_s_median"] = ips_median;
    j["images_per_s_mean"] = ips_mean;  // total images / total time of the timed iterations
    j["s_per_iter_median"] = s_median;
    j["s_per_iter_mean"] = s_total / static_cast<double>(seconds.size());
    j["s_per_iter_min"] = *std::min_element(seconds.begin(), seconds.end());
    j["s_per_iter_max"] = *std::max_element(seconds.begin(), seconds.end());
    j["peak_rss_mib"] = peak_rss_mib();
    j["baseline_rss_mib"] = baseline_rss;  // before the model was built
    j["flops_per_image"] = flops;
    j["forward_flops_per_image"] = fwd_flops;
    j["flops_note"] = train ? "estimate: 3 x forward (2*MACs of convs, linears, attention products)"
                            : "2*MACs of convs, linears, attention products (element-wise ops not counted)";
    j["gflops_per_s"] = flops * ips_median * 1e-9;
    j["parameters"] = param_count;
    j[train ? "last_loss" : "output_mean"] = last_loss;
    j["config"] = {{"dim", o.dim}, {"dim_mults", o.dim_mults}, {"block", o.block}, {"channels", o.channels},
                   {"image_size", o.image_size}, {"timesteps", o.timesteps}, {"seed", o.seed}};
    std::cout << j.dump() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "bench_unet: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
