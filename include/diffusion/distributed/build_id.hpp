#pragma once
// What makes two builds of the library compute different bits from the same inputs: the compiler and its version,
// the instruction sets the kernels were compiled for (xsimd picks its vector width from them; FMA changes rounding),
// the GEMM backend and the Eigen version. Ranks of one data-parallel run compare it at the start (a run built
// twice must not mix), and benchmarks print it. Not a version number: two builds with equal ids compute equal bits.

#include <string>

#include <Eigen/Core>

namespace diffusion {

inline std::string build_id() {
  std::string id = "compiler ";
#if defined(__clang__)
  id += "clang " __clang_version__;
#elif defined(__GNUC__)
  id += "gcc " __VERSION__;
#else
  id += "unknown";
#endif
  id += ", Eigen " + std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
        std::to_string(EIGEN_MINOR_VERSION);
  id += ", instruction sets:";
#if defined(__AVX512F__)
  id += " avx512f";
#endif
#if defined(__AVX512BF16__)
  id += " avx512bf16";
#endif
#if defined(__AVX2__)
  id += " avx2";
#endif
#if defined(__FMA__)
  id += " fma";
#endif
#if defined(__SSE4_2__)
  id += " sse4.2";
#endif
#if defined(__ARM_NEON)
  id += " neon";
#endif
#if defined(__FAST_MATH__)
  id += ", -ffast-math";
#endif
#if defined(DIFFUSION_USE_ONEDNN)
  id += ", GEMM oneDNN";
#else
  id += ", GEMM Eigen";
#endif
  return id;
}

}  // namespace diffusion
