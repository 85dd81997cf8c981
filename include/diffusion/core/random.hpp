#pragma once
// Rng: a counter-based random number generator (Philox4x32-10, Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC 2011). A draw is a pure function of (seed, stream, position), so
//  - a seed fixes every draw, whatever the number of threads that consume them;
//  - the whole state is three integers, saved in checkpoints to resume a run exactly;
//  - fork(id) gives an independent child stream (one per purpose, per step, ...) without touching the parent.

#include <array>
#include <cmath>
#include <cstdint>

#include "diffusion/core/error.hpp"
#include "diffusion/core/shape.hpp"

namespace diffusion {

struct RngState {
  std::uint64_t seed = 0;
  std::uint64_t stream = 0;
  std::uint64_t position = 0;  // index of the next 128-bit block
};

class Rng {
 public:
  using Block = std::array<std::uint32_t, 4>;

  explicit Rng(std::uint64_t seed = 0, std::uint64_t stream = 0) : state_{seed, stream, 0} {}
  explicit Rng(const RngState& state) : state_(state) {}

  const RngState& state() const { return state_; }

  // An independent generator for sub-stream `id` of this one (same seed, fresh position).
  Rng fork(std::uint64_t id) const { return Rng(state_.seed, mix(state_.stream ^ mix(id + 0x632BE59BD9B4E019ull))); }

  // The Philox4x32-10 block at `position` of this stream. Pure: does not advance the generator.
  Block block(std::uint64_t position) const {
    Block ctr = {static_cast<std::uint32_t>(position), static_cast<std::uint32_t>(position >> 32),
                 static_cast<std::uint32_t>(state_.stream), static_cast<std::uint32_t>(state_.stream >> 32)};
    std::uint32_t k0 = static_cast<std::uint32_t>(state_.seed);
    std::uint32_t k1 = static_cast<std::uint32_t>(state_.seed >> 32);
    for (int round = 0; round < 10; ++round) {
      const std::uint64_t p0 = static_cast<std::uint64_t>(0xD2511F53u) * ctr[0];
      const std::uint64_t p1 = static_cast<std::uint64_t>(0xCD9E8D57u) * ctr[2];
      ctr = {static_cast<std::uint32_t>(p1 >> 32) ^ ctr[1] ^ k0, static_cast<std::uint32_t>(p1),
             static_cast<std::uint32_t>(p0 >> 32) ^ ctr[3] ^ k1, static_cast<std::uint32_t>(p0)};
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    return ctr;
  }

  // Next 32 random bits.
  std::uint32_t next_u32() { return block(state_.position++)[0]; }

  // Uniform double in (0, 1): never exactly 0 or 1, safe for log().
  double uniform() {
    const Block b = block(state_.position++);
    return to_open_unit(b[0], b[1]);
  }

  // Uniform integer in [0, n), n < 2^32: Lemire's multiply-shift on 32 random bits (bias below n / 2^32).
  std::int64_t uniform_int(std::int64_t n) {
    DIFFUSION_CHECK(n > 0 && n <= 0xFFFFFFFFll, "Rng::uniform_int: n must be in [1, 2^32), got " << n);
    const std::uint64_t r = next_u32();
    return static_cast<std::int64_t>((r * static_cast<std::uint64_t>(n)) >> 32);
  }

  // Fills out[0..n) with standard normal draws (Box-Muller in double, 2 draws per block). Element i depends only on
  // the state and i, never on how the work is split.
  template <class T>
  void normal(T* out, Index n) {
    const std::uint64_t start = state_.position;
    for (Index i = 0; i < n; i += 2) {
      const Block b = block(start + static_cast<std::uint64_t>(i / 2));
      const double radius = std::sqrt(-2.0 * std::log(to_open_unit(b[0], b[1])));
      const double angle = kTwoPi * to_open_unit(b[2], b[3]);
      out[i] = static_cast<T>(radius * std::cos(angle));
      if (i + 1 < n) out[i + 1] = static_cast<T>(radius * std::sin(angle));
    }
    state_.position = start + static_cast<std::uint64_t>((n + 1) / 2);
  }

  // Fills out[0..n) with uniform draws in [lo, hi).
  template <class T>
  void uniform(T* out, Index n, double lo, double hi) {
    for (Index i = 0; i < n; ++i) out[i] = static_cast<T>(lo + (hi - lo) * uniform());
  }

 private:
  static constexpr double kTwoPi = 6.283185307179586476925286766559;

  // Maps 64 random bits to a double in (0, 1): the top 53 bits, centred in their interval.
  static double to_open_unit(std::uint32_t hi, std::uint32_t lo) {
    const std::uint64_t bits = ((static_cast<std::uint64_t>(hi) << 32) | lo) >> 11;
    return (static_cast<double>(bits) + 0.5) * (1.0 / 9007199254740992.0);  // 2^-53
  }
  // splitmix64 finaliser: turns structured ids into well-spread stream numbers.
  static std::uint64_t mix(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  RngState state_;
};

}  // namespace diffusion
