// gemm_f32, the fp32 GEMM of AVX-512 CPUs: the kernel against its reference loop (one fused multiply-add chain per
// element) bit for bit over every edge of its tiling (rows around its 2-, 4-, 8- and 14-row tiles, columns around 16
// and 32, K around 8, all four transpositions, alpha and beta), and kernels::gemm's choice of it.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "diffusion/kernels/gemm.hpp"
#include "diffusion/kernels/gemm_f32.hpp"
#include "support/gemm_operands.hpp"
#include "support/skip.hpp"

using namespace diffusion;
using kernels::Op;
using testing::random_matrix;
using testing::to_bits;

TEST_CASE("the reference fp32 gemm is one fused multiply-add chain per element") {
  // 3 x 2 times 2 x 1 by hand: acc = fma(a1, b1, fma(a0, b0, 0)), then alpha acc + beta C as one fma.
  const float A[] = {1.5f, -2.0f, 0.25f, 4.0f, 1e8f, 1.0f}, B[] = {3.0f, 0.5f};
  float C[] = {1.0f, 2.0f, 3.0f};
  kernels::reference::gemm_f32(Op::NoTrans, Op::NoTrans, 3, 1, 2, 2.0f, A, 2, B, 1, 0.5f, C, 1);
  CHECK(C[0] == std::fma(2.0f, std::fma(-2.0f, 0.5f, std::fma(1.5f, 3.0f, 0.0f)), 0.5f * 1.0f));
  CHECK(C[1] == std::fma(2.0f, std::fma(4.0f, 0.5f, std::fma(0.25f, 3.0f, 0.0f)), 0.5f * 2.0f));
  CHECK(C[2] == std::fma(2.0f, std::fma(1.0f, 0.5f, std::fma(1e8f, 3.0f, 0.0f)), 0.5f * 3.0f));
  CHECK(C[0] == 2.0f * 3.5f + 0.5f);
}

TEST_CASE("the AVX-512 fp32 gemm kernel computes the reference's bits on every edge of its tiling") {
  if (!kernels::f32_gemm_available()) {
    testing::skip("this build's CPU target has no AVX-512: fp32 GEMMs run Eigen, gemm_f32 its reference loop");
    return;
  }
  const Op ops[] = {Op::NoTrans, Op::Trans};
  const Index ms[] = {1, 2, 3, 5, 8, 9, 14, 15, 31}, ns[] = {1, 15, 16, 17, 32, 33, 70}, ks[] = {1, 7, 8, 9, 17, 40};
  int cases = 0;
  for (Op op_a : ops) {
    for (Op op_b : ops) {
      for (Index M : ms) {
        for (Index N : ns) {
          for (Index K : ks) {
            const Index a_rows = op_a == Op::NoTrans ? M : K, a_cols = op_a == Op::NoTrans ? K : M;
            const Index b_rows = op_b == Op::NoTrans ? K : N, b_cols = op_b == Op::NoTrans ? N : K;
            const Index lda = a_cols + 3, ldb = b_cols + 5, ldc = N + 2;
            const auto seed = static_cast<std::uint64_t>(cases);
            const std::vector<float> A = random_matrix(a_rows, a_cols, lda, 3 * seed + 1);
            const std::vector<float> B = random_matrix(b_rows, b_cols, ldb, 3 * seed + 2);
            const std::vector<float> C0 = random_matrix(M, N, ldc, 3 * seed + 3);
            for (const auto& [alpha, beta] : {std::pair{1.0f, 0.0f}, std::pair{0.37f, 1.0f}, std::pair{-2.0f, -0.5f}}) {
              std::vector<float> fast = C0, expected = C0;
              if (beta == 0.0f)  // beta = 0 must ignore C: NaN where the result goes (the padding keeps C0's NaN)
                for (Index i = 0; i < M; ++i)
                  std::fill(fast.begin() + i * ldc, fast.begin() + i * ldc + N,
                            std::numeric_limits<float>::quiet_NaN());
              kernels::gemm_f32(op_a, op_b, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, fast.data(), ldc);
              kernels::reference::gemm_f32(op_a, op_b, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta,
                                           expected.data(), ldc);
              const auto [mismatches, first] = testing::compare_results(
                  fast, expected, C0, M, N, ldc, [](Index, Index, float got, float want) { return to_bits(got) == to_bits(want); });
              INFO("op_a " << int(op_a) << " op_b " << int(op_b) << " M " << M << " N " << N << " K " << K
                           << " alpha " << alpha << " beta " << beta << ": " << mismatches
                           << " elements differ, first " << first);
              REQUIRE(mismatches == 0);
            }
            ++cases;
          }
        }
      }
    }
  }
  CHECK(cases == 4 * 9 * 7 * 6);
}

TEST_CASE("kernels::gemm runs fp32 through gemm_f32 on AVX-512 CPUs unless the build asks for oneDNN") {
  const Index M = 30, N = 45, K = 27;
  const std::vector<float> A = random_matrix(M, K, K, 41), B = random_matrix(N, K, K, 42);
  std::vector<float> via_gemm(M * N), direct(M * N);
  kernels::gemm(Op::NoTrans, Op::Trans, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, via_gemm.data(), N);
  kernels::gemm_f32(Op::NoTrans, Op::Trans, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, direct.data(), N);
  if (kernels::native_f32_gemm()) {
    CHECK(via_gemm == direct);
  } else {
    // Eigen or oneDNN: another summation order; the same product to fp32 rounding.
    for (std::size_t i = 0; i < direct.size(); ++i) CHECK(via_gemm[i] == Approx(direct[i]).margin(1e-4));
  }
}
