// gemm_bf16: the rounding to bfloat16 (ties to even, NaN and infinity kept), the reference loop against the exact
// product of the rounded operands, and the AVX512_BF16 kernel against the reference bit for bit over every edge of
// its tiling (rows around 14, columns around 16 and 32, odd K, all four transpositions, alpha and beta).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "diffusion/core/random.hpp"
#include "diffusion/kernels/conv2d.hpp"
#include "diffusion/kernels/gemm.hpp"
#include "diffusion/kernels/gemm_bf16.hpp"
#include "diffusion/kernels/precision.hpp"
#include "support/gemm_operands.hpp"
#include "support/skip.hpp"

using namespace diffusion;
using kernels::Op;
using testing::random_matrix;
using testing::to_bits;

namespace {

float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Whether this CPU's vdpbf16ps rounds as Intel's SDM pseudo-code says (and the reference transcribes): 4,096 random
// pairs through the instruction against the reference's step. A CPU that rounded otherwise (a fused pair sum, say)
// would still run gemm_bf16 correctly, but not bit for bit like the reference; the kernel test then checks the
// fp32 accumulation bound instead, and says so.
bool dot_instruction_matches_reference() {
#ifdef DIFFUSION_HAVE_AVX512_BF16
  std::vector<float> a(64 * 32), b(64 * 32), acc(64 * 16);
  Rng(99).normal(a.data(), Index(a.size()));
  Rng(98).normal(b.data(), Index(b.size()));
  Rng(97).normal(acc.data(), Index(acc.size()));
  for (std::size_t block = 0; block < 64; ++block) {
    alignas(64) std::uint32_t wa[16], wb[16];
    alignas(64) float c[16];
    for (int j = 0; j < 16; ++j) {
      const float* pa = &a[block * 32 + 2 * j];
      const float* pb = &b[block * 32 + 2 * j];
      wa[j] = kernels::bf16_round_bits(pa[1]) | (kernels::bf16_round_bits(pa[0]) >> 16);
      wb[j] = kernels::bf16_round_bits(pb[1]) | (kernels::bf16_round_bits(pb[0]) >> 16);
    }
    _mm512_store_ps(c, _mm512_dpbf16_ps(_mm512_loadu_ps(&acc[block * 16]), (__m512bh)_mm512_load_si512(wa),
                                        (__m512bh)_mm512_load_si512(wb)));
    for (int j = 0; j < 16; ++j) {
      const float* pa = &a[block * 32 + 2 * j];
      const float* pb = &b[block * 32 + 2 * j];
      float expected = acc[block * 16 + static_cast<std::size_t>(j)];
      expected += kernels::bf16_round(pa[1]) * kernels::bf16_round(pb[1]);
      expected += kernels::bf16_round(pa[0]) * kernels::bf16_round(pb[0]);
      if (to_bits(c[j]) != to_bits(expected)) return false;
    }
  }
#endif
  return true;
}

}  // namespace

TEST_CASE("bf16 rounding is to nearest with ties to even, keeps NaN and infinity and flushes subnormals") {
  using kernels::bf16_round;
  const float ulp = std::ldexp(1.0f, -7);  // bf16 keeps 7 fraction bits: the spacing just above 1
  CHECK(bf16_round(1.0f) == 1.0f);
  CHECK(bf16_round(1.0f + ulp) == 1.0f + ulp);
  CHECK(bf16_round(1.0f + 0.5f * ulp) == 1.0f);              // a tie: to the even neighbour, 1
  CHECK(bf16_round(1.0f + 1.5f * ulp) == 1.0f + 2.0f * ulp);  // a tie: to the even neighbour, 1 + 2 ulp
  CHECK(bf16_round(1.0f + 0.5f * ulp + std::ldexp(1.0f, -20)) == 1.0f + ulp);  // past the tie: up
  CHECK(bf16_round(-1.0f - 1.5f * ulp) == -1.0f - 2.0f * ulp);
  CHECK(bf16_round(std::numeric_limits<float>::infinity()) == std::numeric_limits<float>::infinity());
  CHECK(bf16_round(std::numeric_limits<float>::max()) == std::numeric_limits<float>::infinity());  // overflows
  CHECK(std::isnan(bf16_round(from_bits(0x7F800001u))));  // a NaN whose payload sits in the dropped bits
  CHECK(std::isnan(bf16_round(std::numeric_limits<float>::quiet_NaN())));
  // Subnormals become zeros of their sign, even those that would round up to the smallest normal (0x007FFFFF).
  CHECK(to_bits(bf16_round(from_bits(0x007FFFFFu))) == 0u);
  CHECK(to_bits(bf16_round(from_bits(0x80000001u))) == 0x80000000u);
  CHECK(to_bits(bf16_round(-0.0f)) == 0x80000000u);
  CHECK(bf16_round(std::numeric_limits<float>::min()) == std::numeric_limits<float>::min());  // the smallest normal
  // Every normal bf16 value is its own rounding, and every float rounds to one of its two bf16 neighbours.
  int changed = 0;
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const float x = from_bits(h << 16);
    if (!std::isnan(x) && std::fpclassify(x) != FP_SUBNORMAL && to_bits(bf16_round(x)) != to_bits(x)) ++changed;
  }
  REQUIRE(changed == 0);
  std::vector<float> xs(10000);
  Rng(7).uniform(xs.data(), Index(xs.size()), -1000.0, 1000.0);
  for (const float x : xs) {
    const std::uint32_t down = to_bits(x) & 0xFFFF0000u, r = to_bits(bf16_round(x));
    REQUIRE((r == down || r == down + 0x10000u));
    const double error = std::fabs(double(bf16_round(x)) - double(x));
    REQUIRE(error <= std::fabs(double(from_bits(down + 0x10000u)) - double(x)));  // the nearer of the two
    REQUIRE(error <= std::fabs(double(from_bits(down)) - double(x)));
  }
}

TEST_CASE("the packers' vcvtneps2bf16 rounds as bf16_round_bits on ties, subnormals, NaNs and overflow") {
  if (!kernels::bf16_gemm_available()) {
    testing::skip("this build's CPU target has no AVX512_BF16: no vector packers");
    return;
  }
#ifdef DIFFUSION_HAVE_AVX512_BF16
  // Hand-picked edges, then random bit patterns (every exponent, NaNs and subnormals included).
  std::vector<std::uint32_t> bits = {0x3F808000u, 0x3F818000u, 0x3F808001u, 0xBF818000u, 0x007FFFFFu, 0x007F8000u,
                                     0x00000001u, 0x80000001u, 0x80000000u, 0x00000000u, 0x00800000u, 0x7F7FFFFFu,
                                     0xFF7F8000u, 0x7F800000u, 0xFF800000u, 0x7F800001u, 0xFFC00000u, 0x7FBFFFFFu};
  Rng rng(31);
  while (bits.size() % 32 != 0 || bits.size() < 4096) bits.push_back(rng.next_u32());
  const auto word = [](std::uint32_t even, std::uint32_t odd) {  // the scalar packers' word
    return kernels::detail::bf16_pair(from_bits(even), from_bits(odd));
  };
  for (std::size_t i = 0; i < bits.size(); i += 32) {
    alignas(64) float x[32];
    for (std::size_t j = 0; j < 32; ++j) x[j] = from_bits(bits[i + j]);
    alignas(64) std::uint32_t across[16], along[8];
    _mm512_store_si512(across, kernels::detail::bf16_pairs_across(_mm512_load_ps(x), _mm512_load_ps(x + 16)));
    _mm256_store_si256(reinterpret_cast<__m256i*>(along), kernels::detail::bf16_pairs_along(_mm512_load_ps(x)));
    for (std::size_t j = 0; j < 16; ++j) REQUIRE(across[j] == word(bits[i + j], bits[i + 16 + j]));
    for (std::size_t p = 0; p < 8; ++p) REQUIRE(along[p] == word(bits[i + 2 * p], bits[i + 2 * p + 1]));
  }
#endif
}

TEST_CASE("the reference bf16 gemm is the product of the rounded operands accumulated in fp32") {
  const Index M = 9, N = 11, K = 301;
  const std::vector<float> A = random_matrix(M, K, K, 1), B = random_matrix(K, N, N, 2);
  std::vector<float> C(static_cast<std::size_t>(M * N));
  kernels::reference::gemm_bf16(Op::NoTrans, Op::NoTrans, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
  for (Index i = 0; i < M; ++i) {
    for (Index j = 0; j < N; ++j) {
      double exact = 0.0, magnitude = 0.0, unrounded = 0.0;
      for (Index k = 0; k < K; ++k) {
        const double a = kernels::bf16_round(A[i * K + k]), b = kernels::bf16_round(B[k * N + j]);
        exact += a * b;
        magnitude += std::fabs(a * b);
        unrounded += double(A[i * K + k]) * double(B[k * N + j]);
      }
      const double c = C[static_cast<std::size_t>(i * N + j)];
      // fp32 accumulation of K exact products: at most K roundings of 2^-24 relative each.
      REQUIRE(std::fabs(c - exact) <= double(K) * std::ldexp(1.0, -24) * magnitude);
      // The operands' rounding moves the dot product by at most 2^-8 relative each (2 per product).
      REQUIRE(std::fabs(c - unrounded) <= 2.0 * std::ldexp(1.0, -8) * magnitude + double(K) * std::ldexp(1.0, -24) * magnitude);
    }
  }
}

TEST_CASE("the AVX512_BF16 gemm kernel computes the reference's bits on every edge of its tiling") {
  if (!kernels::bf16_gemm_available()) {
    testing::skip("this build's CPU target has no AVX512_BF16: gemm_bf16 runs its reference loop");
    return;
  }
  const bool exact = dot_instruction_matches_reference();
  if (!exact)
    WARN("this CPU's vdpbf16ps does not round like Intel's SDM pseudo-code: checking the fp32 accumulation bound "
         "instead of equality with the reference");
  const Op ops[] = {Op::NoTrans, Op::Trans};
  const Index ms[] = {1, 13, 14, 15, 28, 31}, ns[] = {1, 15, 16, 17, 32, 33, 49, 70}, ks[] = {1, 2, 15, 16, 17, 40};
  int cases = 0;
  for (Op op_a : ops) {
    for (Op op_b : ops) {
      for (Index M : ms) {
        for (Index N : ns) {
          for (Index K : ks) {
            // Leading dimensions wider than the matrices (NaN between), so that reads past a row would show.
            const Index a_rows = op_a == Op::NoTrans ? M : K, a_cols = op_a == Op::NoTrans ? K : M;
            const Index b_rows = op_b == Op::NoTrans ? K : N, b_cols = op_b == Op::NoTrans ? N : K;
            const Index lda = a_cols + 3, ldb = b_cols + 5, ldc = N + 2;
            const auto seed = static_cast<std::uint64_t>(cases);
            const std::vector<float> A = random_matrix(a_rows, a_cols, lda, 3 * seed + 1);
            const std::vector<float> B = random_matrix(b_rows, b_cols, ldb, 3 * seed + 2);
            const std::vector<float> C0 = random_matrix(M, N, ldc, 3 * seed + 3);
            for (const auto& scales : {std::pair{1.0f, 0.0f}, std::pair{0.37f, 1.0f}, std::pair{-2.0f, -0.5f}}) {
              const float alpha = scales.first, beta = scales.second;  // plain variables: lambdas capture them
              // Where the CPU rounds its pair sums otherwise: both results within 2 K roundings of sum |alpha a b|
              // (+ |beta C|) of each other.
              const auto within_accumulation_bound = [&](float x, float y, Index i, Index j) {
                double magnitude = std::fabs(double(beta) * C0[static_cast<std::size_t>(i * ldc + j)]);
                for (Index k = 0; k < K; ++k) {
                  const float av = op_a == Op::NoTrans ? A[static_cast<std::size_t>(i * lda + k)]
                                                       : A[static_cast<std::size_t>(k * lda + i)];
                  const float bv = op_b == Op::NoTrans ? B[static_cast<std::size_t>(k * ldb + j)]
                                                       : B[static_cast<std::size_t>(j * ldb + k)];
                  magnitude += std::fabs(double(alpha) * kernels::bf16_round(av) * kernels::bf16_round(bv));
                }
                return std::fabs(double(x) - double(y)) <= 2.0 * double(K + 2) * std::ldexp(1.0, -24) * magnitude;
              };
              std::vector<float> fast = C0, expected = C0;
              if (beta == 0.0f) std::fill(fast.begin(), fast.end(), std::numeric_limits<float>::quiet_NaN());
              kernels::gemm_bf16(op_a, op_b, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, fast.data(), ldc);
              kernels::reference::gemm_bf16(op_a, op_b, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta,
                                            expected.data(), ldc);
              // Every element compared; one assertion per case, naming the first that differs.
              const auto [mismatches, first] =
                  testing::compare_results(fast, expected, C0, M, N, ldc, [&](Index i, Index j, float got, float want) {
                    return exact ? to_bits(got) == to_bits(want) : within_accumulation_bound(got, want, i, j);
                  });
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
  CHECK(cases == 4 * 6 * 8 * 6);
}

TEST_CASE("kernels::gemm runs float GEMMs in bf16 inside a MatmulPrecisionScope and double GEMMs exactly") {
  using kernels::MatmulPrecision;
  const Index M = 20, N = 37, K = 45;
  const std::vector<float> A = random_matrix(M, K, K, 11), B = random_matrix(K, N, N, 12);
  std::vector<float> fp32(M * N), inside(M * N), bf16(M * N), after(M * N);
  const auto run = [&](std::vector<float>& C) {
    kernels::gemm(Op::NoTrans, Op::NoTrans, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
  };
  run(fp32);
  std::vector<double> A64(A.begin(), A.end()), B64(B.begin(), B.end()), C64(M * N), C64_inside(M * N);
  kernels::gemm(Op::NoTrans, Op::NoTrans, M, N, K, 1.0, A64.data(), K, B64.data(), N, 0.0, C64.data(), N);
  {
    const kernels::MatmulPrecisionScope scope(MatmulPrecision::Bf16);
    run(inside);
    kernels::gemm(Op::NoTrans, Op::NoTrans, M, N, K, 1.0, A64.data(), K, B64.data(), N, 0.0, C64_inside.data(), N);
  }
  CHECK(kernels::matmul_precision() == MatmulPrecision::Fp32);
  run(after);
  kernels::gemm_bf16(Op::NoTrans, Op::NoTrans, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, bf16.data(), N);
  CHECK(C64_inside == C64);  // double is never rounded to bf16
  CHECK(after == fp32);      // the scope restored fp32
  if (kernels::bf16_gemm_available()) {
    CHECK(inside == bf16);
    CHECK(inside != fp32);
  } else {
    CHECK(inside == fp32);  // no AVX512_BF16: a bf16 request runs fp32
  }
  CHECK(std::string(kernels::matmul_precision_name(MatmulPrecision::Bf16)) == "bf16");
  CHECK(kernels::parse_matmul_precision("fp32") == MatmulPrecision::Fp32);
  CHECK_THROWS_WITH(kernels::parse_matmul_precision("fp16"), Catch::Contains("valid: fp32, bf16"));
}

TEST_CASE("a SharedA packed once gives every GEMM the bits of kernels::gemm, in fp32 and in bf16") {
  using kernels::MatmulPrecision;
  // Three "groups" of A side by side in one array (stride M * K), as a grouped convolution's weights; both
  // transpositions of A; M = 29 leaves a partial 14-row tile, N = 45 a partial 32-column panel, K = 27 is odd.
  const Index M = 29, N = 45, K = 27, groups = 3;
  const std::vector<float> B = random_matrix(K, N, N, 21);
  for (const Op op_a : {Op::NoTrans, Op::Trans}) {
    const Index lda = op_a == Op::NoTrans ? K : M;
    const std::vector<float> A = random_matrix(groups * M * K / lda, lda, lda, 22);  // rows x lda, no padding
    for (const MatmulPrecision precision : {MatmulPrecision::Fp32, MatmulPrecision::Bf16}) {
      const kernels::MatmulPrecisionScope scope(precision);
      const kernels::SharedA<float> shared(op_a, M, K, A.data(), lda, groups, M * K);
      for (Index g = 0; g < groups; ++g) {
        std::vector<float> expected(M * N, 1.0f), got(M * N, 1.0f);
        kernels::gemm(op_a, Op::NoTrans, M, N, K, 0.5f, A.data() + g * M * K, lda, B.data(), N, 2.0f,
                      expected.data(), N);
        kernels::gemm(shared, g, Op::NoTrans, N, 0.5f, B.data(), N, 2.0f, got.data(), N);
        INFO("op_a " << (op_a == Op::Trans ? "Trans" : "NoTrans") << ", "
                     << kernels::matmul_precision_name(precision) << ", group " << g);
        CHECK(got == expected);
      }
    }
  }
}

TEST_CASE("convolutions (packed weights and dy, fused im2col) equal kernels::gemm on the im2col matrix bit for bit") {
  using kernels::Conv2dGeometry;
  using kernels::MatmulPrecision;
  // In bf16 (gemm_bf16) and in fp32 (gemm_f32 on AVX-512 CPUs; Eigen or oneDNN elsewhere, through the same calls).
  for (const MatmulPrecision precision : {MatmulPrecision::Fp32, MatmulPrecision::Bf16}) {
    if (precision == MatmulPrecision::Bf16 && !kernels::bf16_gemm_available()) {
      testing::skip("this build's CPU target has no AVX512_BF16: bf16 convolutions run fp32");
      continue;
    }
    const kernels::MatmulPrecisionScope scope(precision);
    // 3x3 and 1-channel 3x3 (K = 9, odd), 2 images, a 9x11 plane (99 pixels: three full panels of 32 and a partial
    // one); stride 1 (the flipped-kernel input gradient applies; the im2col matrix is read from the image, masked
    // where a tap falls outside it) and stride 2 (im2col rows in memory); 12 channels (K = 108: the weight gradient
    // in two row blocks sharing each image's packed dy); 7x7 padding 3 (the init convolution's shape: K = 49 and
    // 98); a 5x37 plane, rows wider than a panel.
    struct Case {
      Index c_in, stride, kernel, h, w;
    };
    for (const Case& c : {Case{5, 1, 3, 9, 11}, Case{1, 1, 3, 9, 11}, Case{4, 2, 3, 9, 11}, Case{12, 1, 3, 9, 11},
                          Case{1, 1, 7, 9, 11}, Case{2, 1, 7, 8, 8}, Case{3, 1, 3, 5, 37}}) {
      const Index c_in = c.c_in, stride = c.stride;
      const Conv2dGeometry g = Conv2dGeometry::make(2, c_in, c.h, c.w, 7, c.kernel, stride, c.kernel / 2, 1);
      const Index K = g.col_rows(), P = g.out_pixels(), HW = g.in_pixels();
      const std::vector<float> x = random_matrix(g.batch * c_in, HW, HW, 31);
      const std::vector<float> w = random_matrix(g.out_channels, K, K, 32);
      const std::vector<float> bias = random_matrix(1, g.out_channels, g.out_channels, 33);
      std::vector<float> y(g.batch * g.out_channels * P), expected(y.size()), col(K * P);
      kernels::conv2d_forward(g, x.data(), w.data(), bias.data(), y.data());
      for (Index n = 0; n < g.batch; ++n) {
        float* yn = expected.data() + n * g.out_channels * P;
        for (Index co = 0; co < g.out_channels; ++co) std::fill(yn + co * P, yn + (co + 1) * P, bias[co]);
        kernels::detail::im2col(g, c_in, x.data() + n * c_in * HW, col.data());
        kernels::gemm(Op::NoTrans, Op::NoTrans, g.out_channels, P, K, 1.0f, w.data(), K, col.data(), P, 1.0f, yn, P);
      }
      INFO(kernels::matmul_precision_name(precision) << ", C_in " << c_in << ", stride " << stride << ", kernel "
                                                      << c.kernel << ", " << c.h << "x" << c.w);
      CHECK(y == expected);
      // dw += sum over images, in order, of dy_n col_n^T (the weight gradient; dy packed once per image).
      const std::vector<float> dyw = random_matrix(g.batch * g.out_channels, P, P, 35);
      std::vector<float> dw(w.size(), 0.5f), dw_expected(dw);
      kernels::conv2d_backward_weight(g, x.data(), dyw.data(), dw.data());
      for (Index n = 0; n < g.batch; ++n) {
        kernels::detail::im2col(g, c_in, x.data() + n * c_in * HW, col.data());
        kernels::gemm(Op::NoTrans, Op::Trans, g.out_channels, K, P, 1.0f, dyw.data() + n * g.out_channels * P, P,
                      col.data(), P, 1.0f, dw_expected.data(), K);
      }
      CHECK(dw == dw_expected);
      if (stride != 1) continue;
      // dx += the convolution of dy with the flipped kernel, transposed (C_in, C_out, k, k), padding k - 1 - p.
      const Conv2dGeometry gt = g.transposed();
      const Index Kt = gt.col_rows(), taps = c.kernel * c.kernel;
      const std::vector<float> dy = random_matrix(g.batch * g.out_channels, P, P, 34);
      std::vector<float> wt(w.size()), dx(g.batch * c_in * HW, 0.25f), dx_expected(dx), colt(Kt * HW);
      for (Index ci = 0; ci < c_in; ++ci)
        for (Index co = 0; co < g.out_channels; ++co)
          for (Index tap = 0; tap < taps; ++tap)
            wt[(ci * g.out_channels + co) * taps + tap] = w[(co * c_in + ci) * taps + taps - 1 - tap];
      kernels::conv2d_backward_data(g, dy.data(), w.data(), dx.data());
      for (Index n = 0; n < g.batch; ++n) {
        kernels::detail::im2col(gt, g.out_channels, dy.data() + n * g.out_channels * P, colt.data());
        kernels::gemm(Op::NoTrans, Op::NoTrans, c_in, HW, Kt, 1.0f, wt.data(), Kt, colt.data(), HW, 1.0f,
                      dx_expected.data() + n * c_in * HW, HW);
      }
      CHECK(dx == dx_expected);
    }
  }
}
