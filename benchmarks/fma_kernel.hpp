#pragma once
// The machine's float FMA peak: `Chains` independent accumulator chains of xsimd::batch<float> fused multiply-adds.
// A core with F FMA pipes of latency L cycles needs at least F * L independent chains to keep every pipe busy
// (Zen 4/5: 2 pipes x 4 cycles = 8); 16-24 chains cover that with margin and still fit in the 32 vector registers.
// acc = acc * a + b with a = 1 - 2^-20 and b tiny converges to b / (1 - a): no overflow, no denormals, and the
// values depend on run-time arguments, so the compiler cannot fold or drop the loop.

#include <chrono>
#include <cstdint>
#include <string>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <xsimd/xsimd.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace diffusion::bench {

using FloatBatch = xsimd::batch<float>;
inline constexpr int kFloatLanes = static_cast<int>(FloatBatch::size);

inline std::string simd_arch_name() { return FloatBatch::arch_type::name(); }

// Runs `iters` rounds of Chains FMAs on Chains independent batches; returns a value that depends on all of them.
// FLOPs done: 2 * Chains * kFloatLanes * iters.
template <int Chains>
float fma_chains(std::int64_t iters, float a_value, float b_value) {
  FloatBatch acc[Chains];
  for (int i = 0; i < Chains; ++i) acc[i] = FloatBatch(b_value * static_cast<float>(i + 1));
  const FloatBatch a(a_value), b(b_value);
  for (std::int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < Chains; ++i) acc[i] = xsimd::fma(acc[i], a, b);
  }
  FloatBatch sum = acc[0];
  for (int i = 1; i < Chains; ++i) sum += acc[i];
  return xsimd::hadd(sum);
}

template <int Chains>
double fma_flops(std::int64_t iters) {
  return 2.0 * Chains * kFloatLanes * static_cast<double>(iters);
}

struct FmaResult {
  double gflops = 0;  // total over all threads
  double seconds = 0;
  int threads = 1;
  float checksum = 0;
};

// GFLOP/s of `threads` threads each running fma_chains<Chains>(iters) at the same time (wall clock of the
// slowest). The thread team is started once beforehand so that its start-up is not timed.
template <int Chains>
FmaResult measure_fma(std::int64_t iters, int threads, float a_value = 1.0f - 1.0f / 1048576.0f,
                      float b_value = 1e-7f) {
  FmaResult r;
  r.threads = threads;
  float checksum = 0;
  using Clock = std::chrono::steady_clock;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  { (void)omp_get_thread_num(); }
  Clock::time_point t0, t1;
#pragma omp parallel num_threads(threads) reduction(+ : checksum)
  {
#pragma omp barrier
#pragma omp master
    t0 = Clock::now();
    checksum += fma_chains<Chains>(iters, a_value, b_value);
#pragma omp barrier
#pragma omp master
    t1 = Clock::now();
  }
  r.threads = threads;
#else
  r.threads = 1;
  const auto t0 = Clock::now();
  checksum = fma_chains<Chains>(iters, a_value, b_value);
  const auto t1 = Clock::now();
#endif
  r.seconds = std::chrono::duration<double>(t1 - t0).count();
  r.gflops = fma_flops<Chains>(iters) * r.threads / r.seconds * 1e-9;
  r.checksum = checksum;
  return r;
}

}  // namespace diffusion::bench
