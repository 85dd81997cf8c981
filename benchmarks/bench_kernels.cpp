// bench_kernels: Google Benchmark suite of the library's layers at the shapes of the Fashion-MNIST U-Net
// (UnetConfig dim 28, dim_mults 1,2,4, ConvNeXt blocks, 1 channel, 28x28 images; maps 28x28, 14x14, 7x7), batch 128.
//
//   bench_kernels [--threads=N] [--batch=B] [--precision=fp32|bf16] [--list-shapes] [Google Benchmark flags, e.g.
//                 --benchmark_filter=Conv2d]
//
// The distinct layer shapes are enumerated from the network itself (unet_census.hpp, checked against a real Unet's
// parameters before anything runs); each benchmark's label says how many layers of the network have its shape and
// names the first. Benchmarks:
//   Conv2d/{fwd,bwd}/<shape>, ConvTranspose2d/{fwd,bwd}/<shape>   GFLOP/s (bwd = data + weight + bias gradients)
//   GroupNorm/{fwd,bwd}/<shape>, GELU/{fwd,bwd}/<size>             bytes/s (minimal traffic, see README.md)
//   LinearAttention/..., Attention/...                             GFLOP/s (1x1 convs + attention products)
//   gemm/{nn,tn,nt}/MxNxK                                          GFLOP/s, single thread (the GEMMs of the 3x3 convs)
//   gemm_bf16/{nn,tn,nt}/MxNxK                                     the same with bf16 operands (AVX512_BF16 only)
//   FmaPeak/1thread, FmaPeak/threads                               the float FMA peak, for reference
// Layer benchmarks use wall-clock time (they run on --threads OpenMP threads, default: OpenMP's default); the
// single-threaded GEMMs and FmaPeak/1thread use CPU time.

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "diffusion/core/parallel.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/kernels/gemm.hpp"
#include "diffusion/kernels/precision.hpp"
#include "diffusion/model/unet.hpp"
#include "diffusion/nn/activations.hpp"
#include "diffusion/nn/attention.hpp"
#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/conv_transpose2d.hpp"
#include "diffusion/nn/group_norm.hpp"
#include "diffusion/nn/linear_attention.hpp"
#include "fma_kernel.hpp"
#include "unet_census.hpp"

namespace {

using diffusion::Index;
using diffusion::Shape;
using diffusion::Tensor;
using diffusion::bench::ActivationSpec;
using diffusion::bench::AttentionSpec;
using diffusion::bench::ConvSpec;
using diffusion::bench::NormSpec;

Index g_batch = 128;

diffusion::UnetConfig fashion_mnist_config() {
  diffusion::UnetConfig c;
  c.dim = 28;
  c.dim_mults = {1, 2, 4};
  c.channels = 1;
  c.use_convnext = true;
  return c;
}

void fill_normal(Tensor<float>& t, std::uint64_t stream) {
  diffusion::Rng(20240611).fork(stream).normal(t.data(), t.numel());
}

void set_gflops(benchmark::State& st, double flops_per_iteration) {
  st.counters["GFLOP/s"] = benchmark::Counter(flops_per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void set_bytes(benchmark::State& st, double bytes_per_iteration) {
  st.SetBytesProcessed(static_cast<std::int64_t>(bytes_per_iteration * static_cast<double>(st.iterations())));
}

// Forward: y = layer(x) per iteration. Backward: one forward first (layers save what backward reads), then
// layer.backward(x, dy, &dx) per iteration; dx and the parameter gradients accumulate, which does not change the
// work done.
template <class Layer>
void run_layer(benchmark::State& st, Layer& layer, const Tensor<float>& x, bool backward) {
  Tensor<float> y;
  layer.forward(x, y);
  if (!backward) {
    for (auto _ : st) {
      layer.forward(x, y);
      benchmark::DoNotOptimize(y.data());
      benchmark::ClobberMemory();
    }
    return;
  }
  Tensor<float> dy(y.shape());
  fill_normal(dy, 2);
  Tensor<float> dx(x.shape());
  for (auto _ : st) {
    layer.backward(x, dy, &dx);
    benchmark::DoNotOptimize(dx.data());
    benchmark::ClobberMemory();
  }
}

void bm_conv(benchmark::State& st, const ConvSpec& s, bool backward) {
  diffusion::ParameterStore<float> params(1);
  Tensor<float> x(Shape{g_batch, s.in, s.height, s.width});  // (N, C_in, H, W)
  fill_normal(x, 1);
  if (s.transposed) {
    diffusion::nn::ConvTranspose2d<float> layer(params, "conv", s.in, s.out, s.kernel, s.stride, s.padding, s.groups,
                                                s.bias);
    run_layer(st, layer, x, backward);
  } else {
    diffusion::nn::Conv2d<float> layer(params, "conv", s.in, s.out, s.kernel, s.stride, s.padding, s.groups, s.bias);
    run_layer(st, layer, x, backward);
  }
  // Backward = data gradient + weight gradient, each as many MACs as the forward (bias sum not counted).
  set_gflops(st, (backward ? 2.0 : 1.0) * 2.0 * s.macs() * static_cast<double>(g_batch));
}

void bm_group_norm(benchmark::State& st, const NormSpec& s, bool backward) {
  diffusion::ParameterStore<float> params(1);
  diffusion::nn::GroupNorm<float> layer(params, "norm", s.groups, s.channels);
  Tensor<float> x(Shape{g_batch, s.channels, s.height, s.width});  // (N, C, H, W)
  fill_normal(x, 1);
  run_layer(st, layer, x, backward);
  // Minimal traffic: forward reads x, writes y; backward reads x and dy, reads and writes dx.
  set_bytes(st, (backward ? 4.0 : 2.0) * sizeof(float) * static_cast<double>(x.numel()));
}

void bm_activation(benchmark::State& st, const ActivationSpec& s, bool backward) {
  Tensor<float> x(Shape{g_batch, s.channels, s.height, s.width});  // (N, C, H, W)
  fill_normal(x, 1);
  if (s.kind == "gelu") {
    diffusion::nn::GELU<float> layer;
    run_layer(st, layer, x, backward);
  } else {
    diffusion::nn::SiLU<float> layer;
    run_layer(st, layer, x, backward);
  }
  set_bytes(st, (backward ? 4.0 : 2.0) * sizeof(float) * static_cast<double>(x.numel()));
}

void bm_attention(benchmark::State& st, const AttentionSpec& s, bool backward) {
  diffusion::ParameterStore<float> params(1);
  Tensor<float> x(Shape{g_batch, s.dim, s.height, s.width});  // (N, dim, H, W)
  fill_normal(x, 1);
  if (s.linear) {
    diffusion::nn::Standalone<diffusion::nn::LinearAttention<float>> layer(params, "attn", s.dim, s.heads, s.dim_head);
    run_layer(st, layer, x, backward);
  } else {
    diffusion::nn::Standalone<diffusion::nn::Attention<float>> layer(params, "attn", s.dim, s.heads, s.dim_head);
    run_layer(st, layer, x, backward);
  }
  const double hidden = static_cast<double>(s.heads * s.dim_head);
  const double conv_macs = static_cast<double>(s.pixels()) * static_cast<double>(s.dim) * 4.0 * hidden;  // qkv + out
  set_gflops(st, (backward ? 2.0 : 1.0) * 2.0 * (conv_macs + s.core_macs()) * static_cast<double>(g_batch));
}

struct GemmShape {
  diffusion::kernels::Op a, b;
  Index M, N, K;
  std::string name() const {
    const char* op = a == diffusion::kernels::Op::NoTrans ? (b == diffusion::kernels::Op::NoTrans ? "nn" : "nt") : "tn";
    return std::string("gemm/") + op + "/" + std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K);
  }
};

void bm_gemm(benchmark::State& st, const GemmShape& g, diffusion::kernels::MatmulPrecision precision) {
  using diffusion::kernels::Op;
  const diffusion::kernels::MatmulPrecisionScope scope(precision);
  Tensor<float> A(Shape{g.M * g.K}), B(Shape{g.K * g.N}), C(Shape{g.M * g.N});
  fill_normal(A, 1);
  fill_normal(B, 2);
  const Index lda = g.a == Op::NoTrans ? g.K : g.M, ldb = g.b == Op::NoTrans ? g.N : g.K;
  for (auto _ : st) {
    diffusion::kernels::gemm(g.a, g.b, g.M, g.N, g.K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, C.data(), g.N);
    benchmark::DoNotOptimize(C.data());
    benchmark::ClobberMemory();
  }
  set_gflops(st, 2.0 * static_cast<double>(g.M * g.N * g.K));
}

void bm_fma(benchmark::State& st, int threads) {
  constexpr int kChains = 16;
  const std::int64_t iters = threads > 1 ? 1 << 20 : 1 << 18;  // longer runs amortise the team barrier
  for (auto _ : st) {
    const auto r = diffusion::bench::measure_fma<kChains>(iters, threads);
    benchmark::DoNotOptimize(r.checksum);
  }
  set_gflops(st, diffusion::bench::fma_flops<kChains>(iters) * threads);
}

// "x3: downs.1.0.net.1" -- how many layers of the network share the shape, and the first one.
template <class Spec>
std::map<std::string, std::string> labels(const std::vector<Spec>& specs, std::vector<Spec>& distinct) {
  std::map<std::string, int> count;
  std::map<std::string, std::string> first;
  for (const auto& s : specs) {
    if (count[s.key()]++ == 0) {
      first[s.key()] = s.name;
      distinct.push_back(s);
    }
  }
  std::map<std::string, std::string> out;
  for (const auto& [key, n] : count) out[key] = "x" + std::to_string(n) + ": " + first[key];
  return out;
}

std::string activation_key(const ActivationSpec& a) {
  return a.kind + "/c" + std::to_string(a.channels) + "/" + std::to_string(a.height) + "x" + std::to_string(a.width);
}

// Removes "--name=value" or "--name value" from argv; returns the value or "".
std::string take_flag(int& argc, char** argv, const std::string& name) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    std::string value;
    int used = 0;
    if (a == name && i + 1 < argc) value = argv[i + 1], used = 2;
    else if (a.rfind(name + "=", 0) == 0) value = a.substr(name.size() + 1), used = 1;
    if (used) {
      for (int j = i; j + used < argc; ++j) argv[j] = argv[j + used];
      argc -= used;
      return value;
    }
  }
  return "";
}

bool take_switch(int& argc, char** argv, const std::string& name) {
  for (int i = 1; i < argc; ++i) {
    if (name == argv[i]) {
      for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
      --argc;
      return true;
    }
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string threads_flag = take_flag(argc, argv, "--threads");
  const std::string batch_flag = take_flag(argc, argv, "--batch");
  const bool list_shapes = take_switch(argc, argv, "--list-shapes");
  const std::string precision_flag = take_flag(argc, argv, "--precision");
  // --precision bf16: the layer benchmarks' float GEMMs (convolutions, attention) with bf16 operands.
  diffusion::kernels::MatmulPrecision requested = diffusion::kernels::MatmulPrecision::Fp32;
  try {
    if (!precision_flag.empty()) requested = diffusion::kernels::parse_matmul_precision(precision_flag);
  } catch (const std::exception& e) {
    std::cerr << "bench_kernels: --precision: " << e.what() << "\n";
    return 2;
  }
  const diffusion::kernels::MatmulPrecisionScope precision(requested);
  if (!threads_flag.empty()) diffusion::set_num_threads(std::atoi(threads_flag.c_str()));
  if (!batch_flag.empty()) g_batch = std::atoi(batch_flag.c_str());
  if (g_batch < 1) {
    std::cerr << "bench_kernels: --batch must be >= 1\n";
    return 2;
  }
  const int threads = diffusion::max_threads();

  const diffusion::UnetConfig config = fashion_mnist_config();
  const auto census = diffusion::bench::unet_census(config, 28, 28);
  {
    diffusion::Unet<float> model(config, 0);
    census.check_parameters(model.params());  // the census is this network
  }
  if (list_shapes) {
    std::cout << diffusion::bench::describe(census);
    return 0;
  }

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("omp_threads", std::to_string(threads));
  benchmark::AddCustomContext("batch", std::to_string(g_batch));
  benchmark::AddCustomContext("matmul_precision", diffusion::kernels::matmul_precision_name(
                                                      diffusion::kernels::effective_matmul_precision(
                                                          diffusion::kernels::matmul_precision())));
  benchmark::AddCustomContext("simd", diffusion::bench::simd_arch_name());
  benchmark::AddCustomContext("network", "Fashion-MNIST U-Net: dim 28, dim_mults 1,2,4, ConvNeXt, 1x28x28");

  std::vector<ConvSpec> convs;
  const auto conv_labels = labels(census.convs, convs);
  for (const char* pass : {"fwd", "bwd"}) {
    const bool bwd = std::strcmp(pass, "bwd") == 0;
    for (const auto& s : convs) {
      const std::string name = std::string(s.transposed ? "ConvTranspose2d/" : "Conv2d/") + pass + "/" + s.label();
      const std::string label = conv_labels.at(s.key());
      benchmark::RegisterBenchmark(name.c_str(), [s, bwd, label](benchmark::State& st) {
        st.SetLabel(label);
        bm_conv(st, s, bwd);
      })->UseRealTime()->Unit(benchmark::kMillisecond);
    }
  }

  std::vector<NormSpec> norms;
  const auto norm_labels = labels(census.norms, norms);
  for (const char* pass : {"fwd", "bwd"}) {
    const bool bwd = std::strcmp(pass, "bwd") == 0;
    for (const auto& s : norms) {
      const std::string name = std::string("GroupNorm/") + pass + "/" + s.key();
      const std::string label = norm_labels.at(s.key());
      benchmark::RegisterBenchmark(name.c_str(), [s, bwd, label](benchmark::State& st) {
        st.SetLabel(label);
        bm_group_norm(st, s, bwd);
      })->UseRealTime()->Unit(benchmark::kMillisecond);
    }
  }

  // Activations of the image maps (the (N, time_dim) ones of the time MLP are tiny and skipped).
  std::map<std::string, int> act_count;
  std::vector<ActivationSpec> acts;
  for (const auto& a : census.activations) {
    if (a.height * a.width == 1) continue;
    if (act_count[activation_key(a)]++ == 0) acts.push_back(a);
  }
  for (const char* pass : {"fwd", "bwd"}) {
    const bool bwd = std::strcmp(pass, "bwd") == 0;
    for (const auto& a : acts) {
      const std::string key = activation_key(a);
      const std::string name = (a.kind == "gelu" ? std::string("GELU/") : std::string("SiLU/")) + pass + "/" +
                               key.substr(key.find('/') + 1);
      const std::string label = "x" + std::to_string(act_count[key]) + ": " + a.name;
      benchmark::RegisterBenchmark(name.c_str(), [a, bwd, label](benchmark::State& st) {
        st.SetLabel(label);
        bm_activation(st, a, bwd);
      })->UseRealTime()->Unit(benchmark::kMillisecond);
    }
  }

  std::vector<AttentionSpec> attns;
  const auto attn_labels = labels(census.attentions, attns);
  for (const char* pass : {"fwd", "bwd"}) {
    const bool bwd = std::strcmp(pass, "bwd") == 0;
    for (const auto& s : attns) {
      const std::string key = s.key();
      const std::string name = std::string(s.linear ? "LinearAttention/" : "Attention/") + pass + "/" +
                               key.substr(key.find('/') + 1);
      const std::string label = attn_labels.at(key);
      benchmark::RegisterBenchmark(name.c_str(), [s, bwd, label](benchmark::State& st) {
        st.SetLabel(label);
        bm_attention(st, s, bwd);
      })->UseRealTime()->Unit(benchmark::kMillisecond);
    }
  }

  // The three GEMMs of every distinct 3x3 convolution, per image, as conv2d.hpp issues them: forward
  // (C_out x P x 9 C_in), data gradient (9 C_in x P x C_out, A transposed), weight gradient (C_out x 9 C_in x P,
  // B transposed). Plus one large square GEMM as the best case.
  using diffusion::kernels::Op;
  std::vector<GemmShape> gemms;
  std::map<std::string, std::string> gemm_labels;
  for (const auto& s : convs) {
    if (s.transposed || s.kernel != 3 || s.groups != 1) continue;
    const Index P = s.out_height() * s.out_width(), K = s.in * 9;
    for (const GemmShape& g : {GemmShape{Op::NoTrans, Op::NoTrans, s.out, P, K}, GemmShape{Op::Trans, Op::NoTrans, K, P, s.out},
                               GemmShape{Op::NoTrans, Op::Trans, s.out, K, P}}) {
      if (gemm_labels.count(g.name())) continue;
      gemm_labels[g.name()] = s.label();
      gemms.push_back(g);
    }
  }
  gemms.push_back(GemmShape{Op::NoTrans, Op::NoTrans, 512, 512, 512});
  gemm_labels[gemms.back().name()] = "square";
  // Each also with bf16 operands (gemm_bf16/...: kernels/gemm_bf16.hpp), where the CPU has AVX512_BF16.
  using diffusion::kernels::MatmulPrecision;
  for (const auto& g : gemms) {
    const std::string label = gemm_labels[g.name()];
    for (MatmulPrecision p : {MatmulPrecision::Fp32, MatmulPrecision::Bf16}) {
      if (p == MatmulPrecision::Bf16 && !diffusion::kernels::bf16_gemm_available()) continue;
      const std::string name = p == MatmulPrecision::Fp32 ? g.name() : "gemm_bf16" + g.name().substr(4);
      benchmark::RegisterBenchmark(name.c_str(), [g, label, p](benchmark::State& st) {
        st.SetLabel(label);
        bm_gemm(st, g, p);
      })->Unit(benchmark::kMicrosecond);
    }
  }

  // One thread: CPU time, like the GEMMs, so that the two are comparable; N threads: wall-clock time.
  benchmark::RegisterBenchmark("FmaPeak/1thread", [](benchmark::State& st) { bm_fma(st, 1); })
      ->Unit(benchmark::kMillisecond);
  if (threads > 1)
    benchmark::RegisterBenchmark("FmaPeak/threads", [threads](benchmark::State& st) { bm_fma(st, threads); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
