// fma_peak: measures this machine's float FMA peak (GFLOP/s), on one thread and on N threads (OpenMP).
//
//   fma_peak [--threads N] [--seconds S] [--repeats R] [--json]
//
// Each measurement runs long enough to take about S seconds (default 0.3) and is repeated R times (default 5);
// the best repeat is reported (the peak is a maximum: interference only ever slows a run down). Chain counts 12,
// 16 and 24 are tried on one thread and the fastest is used for the N-thread run. With --json, one JSON line.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "fma_kernel.hpp"

namespace {

using diffusion::bench::FmaResult;
using diffusion::bench::measure_fma;

template <int Chains>
FmaResult best_of(int threads, double seconds, int repeats) {
  // Calibrate the iteration count on a short run, then aim at `seconds` per measurement.
  std::int64_t iters = 1 << 20;
  FmaResult probe = measure_fma<Chains>(iters, threads);
  while (probe.seconds < 0.02) {
    iters *= 4;
    probe = measure_fma<Chains>(iters, threads);
  }
  iters = std::max<std::int64_t>(1, static_cast<std::int64_t>(static_cast<double>(iters) * seconds / probe.seconds));
  FmaResult best;
  for (int r = 0; r < repeats; ++r) {
    const FmaResult m = measure_fma<Chains>(iters, threads);
    if (m.gflops > best.gflops) best = m;
  }
  return best;
}

FmaResult run_chains(int chains, int threads, double seconds, int repeats) {
  switch (chains) {
    case 12: return best_of<12>(threads, seconds, repeats);
    case 16: return best_of<16>(threads, seconds, repeats);
    default: return best_of<24>(threads, seconds, repeats);
  }
}

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr, "fma_peak: %s\nusage: fma_peak [--threads N] [--seconds S] [--repeats R] [--json]\n", msg);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  double seconds = 0.3;
  int repeats = 5;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    if (a == "--threads") threads = std::atoi(value());
    else if (a == "--seconds") seconds = std::atof(value());
    else if (a == "--repeats") repeats = std::atoi(value());
    else if (a == "--json") json = true;
    else usage(("unknown argument " + a).c_str());
  }
  if (threads < 1 || seconds <= 0 || repeats < 1) usage("--threads, --seconds and --repeats must be positive");

  int best_chains = 12;
  FmaResult single;
  for (int chains : {12, 16, 24}) {
    const FmaResult r = run_chains(chains, 1, seconds, repeats);
    if (!json) std::printf("1 thread,  %2d chains: %8.1f GFLOP/s\n", chains, r.gflops);
    if (r.gflops > single.gflops) single = r, best_chains = chains;
  }
  const FmaResult multi = threads == 1 ? single : run_chains(best_chains, threads, seconds, repeats);
  const std::string arch = diffusion::bench::simd_arch_name();
  if (json) {
    std::printf(
        "{\"arch\": \"%s\", \"lanes\": %d, \"chains\": %d, \"gflops_1thread\": %.2f, \"threads\": %d, "
        "\"gflops_threads\": %.2f, \"checksum\": %g}\n",
        arch.c_str(), diffusion::bench::kFloatLanes, best_chains, single.gflops, multi.threads, multi.gflops,
        static_cast<double>(single.checksum + multi.checksum));
  } else {
    std::printf("float FMA peak (%s, %d lanes, %d chains): %.1f GFLOP/s on 1 thread, %.1f GFLOP/s on %d threads\n",
                arch.c_str(), diffusion::bench::kFloatLanes, best_chains, single.gflops, multi.gflops, multi.threads);
  }
  return 0;
}
