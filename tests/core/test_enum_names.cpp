// Enum names: every enum converted to or from a string has one table, and every table prints, parses and refuses in
// the same way ("unknown <what> '<name>' (valid: ...)").
#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <vector>

#include "diffusion/diffusion.hpp"
#include "diffusion/kernels/scratch.hpp"
#include "diffusion/metrics/reference_stats.hpp"

using namespace diffusion;

namespace {

// Every value of `values` has a name, the names of the table are distinct, every name parses back to its row's
// value through `parse`, and `print` gives each value's first name.
template <class E, std::size_t N, class Parse, class Print>
void check_table(const detail::NameEntry<E> (&table)[N], const std::vector<E>& values, Parse parse, Print print,
                 const std::string& what) {
  std::set<std::string> names;
  for (const auto& row : table) {
    INFO(what << " name " << row.name);
    REQUIRE(names.insert(row.name).second);
    REQUIRE(parse(row.name) == row.value);
  }
  for (E v : values) {
    const std::string name = print(v);
    INFO(what << " value printed as " << name);
    REQUIRE(name != "?");
    REQUIRE(parse(name) == v);
  }
  REQUIRE_THROWS_WITH(parse("no such name"),
                      Catch::Equals("unknown " + what + " 'no such name' (valid: " + detail::enum_names(table) + ")"));
}

}  // namespace

TEST_CASE("every enum name table prints parses and refuses in one style") {
  check_table(detail::kAttentionKindNames, {AttentionKind::None, AttentionKind::Linear, AttentionKind::Full},
              parse_attention_kind, attention_kind_name, "attention kind");
  check_table(detail::kBetaScheduleNames,
              {BetaSchedule::Linear, BetaSchedule::Cosine, BetaSchedule::Quadratic, BetaSchedule::Sigmoid},
              parse_beta_schedule, beta_schedule_name, "beta schedule");
  check_table(detail::kLossTypeNames, {LossType::L2, LossType::L1, LossType::Huber}, parse_loss_type, loss_type_name,
              "loss type");
  check_table(detail::kPredictionNames, {Prediction::Epsilon, Prediction::X0, Prediction::V}, parse_prediction,
              prediction_name, "prediction type");
  check_table(detail::kSamplerNames,
              {SamplerKind::Ddpm, SamplerKind::Ddim, SamplerKind::Euler, SamplerKind::EulerAncestral, SamplerKind::Heun,
               SamplerKind::DpmPp2M, SamplerKind::DpmPp2MSde, SamplerKind::UniPc, SamplerKind::ReverseDiffusion,
               SamplerKind::EulerMaruyama, SamplerKind::PredictorCorrector},
              parse_sampler, sampler_name, "sampler");
  check_table(detail::kSpacingNames,
              {TimestepSpacing::Linspace, TimestepSpacing::Leading, TimestepSpacing::Trailing, TimestepSpacing::Karras},
              parse_spacing, spacing_name, "timestep spacing");
  check_table(detail::kClipNames, {ClipX0::None, ClipX0::RederiveEps, ClipX0::KeepModelEps}, parse_clip_x0,
              clip_x0_name, "x0 clipping");
  check_table(detail::kDdpmVarianceNames, {DdpmVariance::Posterior, DdpmVariance::Beta}, parse_ddpm_variance,
              ddpm_variance_name, "DDPM variance");
}

TEST_CASE("aliases parse to their value and print as the first name") {
  REQUIRE(parse_prediction("epsilon") == Prediction::Epsilon);
  REQUIRE(std::string(prediction_name(Prediction::Epsilon)) == "eps");
  REQUIRE_THROWS_WITH(parse_prediction("noise"), Catch::Contains("valid: eps, x0, v, epsilon"));
}

TEST_CASE("print-only and lookup tables name every value") {
  using kernels::Scratch;
  for (Scratch s : {Scratch::Im2col, Scratch::Im2colBf16, Scratch::Im2colPacked, Scratch::Im2colMasks,
                    Scratch::ConvWeights,
                    Scratch::ConvOutput, Scratch::NormPartials, Scratch::AttentionHead, Scratch::SoftmaxWork,
                    Scratch::DepthwisePlane, Scratch::GemmPacking, Scratch::GemmPackingBf16, Scratch::GemmPackedA,
                    Scratch::GemmSharedA, Scratch::GemmPanelF32, Scratch::GemmPackedAF32, Scratch::ChunkSums,
                    Scratch::LinearPadding, Scratch::KeysSoftmax})
    REQUIRE(std::string(kernels::scratch_name(s)) != "?");
  using metrics::CacheStatus;
  REQUIRE(std::string(metrics::cache_status_name(CacheStatus::Loaded)) == "loaded");
  REQUIRE(std::string(metrics::cache_status_name(CacheStatus::Recomputed)) == "recomputed");
  using io::DType;
  for (DType d : {DType::F16, DType::BF16, DType::F32, DType::F64, DType::I8, DType::I16, DType::I32, DType::I64,
                  DType::U8, DType::BOOL}) {
    DType parsed = DType::BOOL == d ? DType::F32 : DType::BOOL;
    REQUIRE(io::parse_dtype(io::dtype_name(d), &parsed));
    REQUIRE(parsed == d);
  }
  DType untouched = DType::F32;
  REQUIRE_FALSE(io::parse_dtype("F8", &untouched));
  REQUIRE(untouched == DType::F32);
}
