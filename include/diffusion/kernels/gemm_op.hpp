#pragma once
// How a GEMM reads a row-major operand: as stored (NoTrans) or transposed (Trans). Shared by gemm.hpp (fp32 and
// double) and gemm_bf16.hpp (mixed precision).

namespace diffusion::kernels {

enum class Op { NoTrans, Trans };

}  // namespace diffusion::kernels
