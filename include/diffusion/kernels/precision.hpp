#pragma once
// The precision of the float GEMMs (every matrix product and convolution of the layers): fp32, or bf16 operands with
// fp32 accumulation (kernels/gemm_bf16.hpp) -- mixed precision, the primer's `amp = True`. Everything else stays
// fp32: weights, activations, GroupNorm, softmax, the loss, gradients, Adam and the EMA. Like reference_kernels()
// the setting is process-wide; MatmulPrecisionScope sets it for a block (the Trainer around its step, the samplers
// around their model calls) and restores it after. double GEMMs (gradient checks, metrics) are always exact.
//
// bf16 needs AVX512_BF16 in the build's CPU target; elsewhere a bf16 request runs fp32, and
// effective_matmul_precision() says so (the programs print a note).

#include <atomic>
#include <string>

#include "diffusion/core/enum_names.hpp"
#include "diffusion/kernels/gemm_bf16.hpp"

namespace diffusion::kernels {

enum class MatmulPrecision { Fp32, Bf16 };

namespace detail {
inline constexpr diffusion::detail::NameEntry<MatmulPrecision> kMatmulPrecisionNames[] = {
    {MatmulPrecision::Fp32, "fp32"}, {MatmulPrecision::Bf16, "bf16"}};
inline std::atomic<MatmulPrecision>& matmul_precision_setting() {
  static std::atomic<MatmulPrecision> value{MatmulPrecision::Fp32};
  return value;
}
}  // namespace detail

inline const char* matmul_precision_name(MatmulPrecision p) {
  return diffusion::detail::enum_name(detail::kMatmulPrecisionNames, p);
}
inline MatmulPrecision parse_matmul_precision(const std::string& name) {
  return diffusion::detail::parse_enum(detail::kMatmulPrecisionNames, name, "matmul precision");
}

// What was asked for, and what the GEMMs run (bf16 only where the CPU has it).
inline MatmulPrecision matmul_precision() { return detail::matmul_precision_setting().load(std::memory_order_relaxed); }
inline MatmulPrecision effective_matmul_precision(MatmulPrecision requested) {
  return requested == MatmulPrecision::Bf16 && bf16_gemm_available() ? MatmulPrecision::Bf16 : MatmulPrecision::Fp32;
}
inline void set_matmul_precision(MatmulPrecision p) {
  detail::matmul_precision_setting().store(p, std::memory_order_relaxed);
}

// Sets the precision for the lifetime of the object, then restores the previous one.
class MatmulPrecisionScope {
 public:
  explicit MatmulPrecisionScope(MatmulPrecision p) : previous_(matmul_precision()) { set_matmul_precision(p); }
  ~MatmulPrecisionScope() { set_matmul_precision(previous_); }
  MatmulPrecisionScope(const MatmulPrecisionScope&) = delete;
  MatmulPrecisionScope& operator=(const MatmulPrecisionScope&) = delete;

 private:
  MatmulPrecision previous_;
};

}  // namespace diffusion::kernels
