#pragma once
// Which noise levels a sampler visits: S of the T training timesteps, spread over [0, T) by a spacing rule, and the
// map between a timestep t and the noise level sigma_t = sqrt((1 - abar_t) / abar_t) of Karras et al. (2022).
//
//   Linspace  round(linspace(0, T - 1, S))         (numpy's linspace, round half to even)
//   Leading   i * (T / S), i = 0 .. S-1             (integer division; the DDIM paper's uniform skip)
//   Trailing  round(arange(T, 0, -T / S)) - 1       (diffusers' "trailing"; ends at T - 1)
//   Karras    sigma_i = (smax^(1/rho) + i/(S-1) (smin^(1/rho) - smax^(1/rho)))^rho, i = 0 .. S-1 (Karras et al.
//             2022, eq. 5; k-diffusion's get_sigmas_karras) with smin = sigma_0, smax = sigma_{T-1}, each mapped to a
//             timestep by interpolating log sigma over the table (k-diffusion's DiscreteSchedule.sigma_to_t)
//
// Our models take integer timesteps, so the fractional t of a Karras sigma is rounded to the nearest timestep
// (k-diffusion's quantize=True; nearest in log sigma) and the solvers then use the sigma of that timestep, so that
// the model output and the solver's noise level always agree. Where the Karras sigmas are denser than the training
// grid (near smin at large S), two sigmas round to the same timestep; the later one then moves to the next free
// timestep below, so that every requested step is a real step (see karras_timesteps).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/process/schedule.hpp"
#include "diffusion/samplers/sampler_common.hpp"

namespace diffusion {

enum class TimestepSpacing { Linspace, Leading, Trailing, Karras };
using DdimSpacing = TimestepSpacing;  // the name of the DDIM-only days

namespace detail {
inline constexpr NameEntry<TimestepSpacing> kSpacingNames[] = {
    {TimestepSpacing::Linspace, "linspace"},
    {TimestepSpacing::Leading, "leading"},
    {TimestepSpacing::Trailing, "trailing"},
    {TimestepSpacing::Karras, "karras"},
};
}  // namespace detail

inline const char* spacing_name(TimestepSpacing s) { return detail::enum_name(detail::kSpacingNames, s); }
// "linspace" | "leading" | "trailing" | "karras".
inline TimestepSpacing parse_spacing(const std::string& name) {
  return detail::parse_enum(detail::kSpacingNames, name, "timestep spacing");
}
inline const char* ddim_spacing_name(TimestepSpacing s) { return spacing_name(s); }
inline TimestepSpacing parse_ddim_spacing(const std::string& name) { return parse_spacing(name); }

namespace detail {

// numpy.round: to the nearest integer, halves to even.
inline double round_half_even(double v) {
  const double r = std::round(v);  // halves away from zero
  if (std::fabs(v - std::trunc(v)) == 0.5) return 2.0 * std::round(v / 2.0);
  return r;
}

// Throws unless ts is ascending, distinct and within [0, T).
inline void check_timestep_sequence(const std::vector<std::int64_t>& ts, int T, const char* what) {
  DIFFUSION_CHECK(!ts.empty(), what << ": empty timestep sequence");
  for (std::size_t i = 0; i < ts.size(); ++i) {
    DIFFUSION_CHECK(ts[i] >= 0 && ts[i] < T, what << ": timestep " << ts[i] << " (entry " << i << ") outside [0, "
                                                  << T << ")");
    DIFFUSION_CHECK(i == 0 || ts[i] > ts[i - 1], what << ": timesteps must be strictly ascending, entry " << i
                                                      << " is " << ts[i] << " after " << ts[i - 1]);
  }
}

inline void check_steps(int T, int S, const char* what) {
  DIFFUSION_CHECK(T >= 1, what << ": number of timesteps T must be >= 1, got " << T);
  DIFFUSION_CHECK(S >= 1 && S <= T, what << ": number of sampling steps S must be in [1, T = " << T << "], got " << S);
}

}  // namespace detail

// The S sampling timesteps out of T for the Linspace, Leading and Trailing spacings, ascending and distinct, within
// [0, T) (sampling visits them in descending order). Matches tests/golden/reference.py's ddim_timesteps, which
// evaluates them in float64 numpy; where numpy's float arange yields one element too many for Trailing (a trailing
// -1, e.g. T = 200, S = 29) exactly S are kept. Karras spacing needs the schedule: see sampling_timesteps.
inline std::vector<std::int64_t> ddim_timesteps(int T, int S, TimestepSpacing spacing) {
  detail::check_steps(T, S, "ddim_timesteps");
  DIFFUSION_CHECK(spacing != TimestepSpacing::Karras,
                  "ddim_timesteps: the karras spacing depends on the noise schedule: call sampling_timesteps(schedule, "
                  "S, spacing)");
  std::vector<std::int64_t> ts(static_cast<std::size_t>(S));
  switch (spacing) {
    case TimestepSpacing::Linspace: {
      // numpy.linspace(0, T-1, S): i * ((T-1) / (S-1)), the last entry exactly T-1
      const double step = S > 1 ? static_cast<double>(T - 1) / (S - 1) : 0.0;
      for (int i = 0; i < S; ++i) {
        const double v = i == S - 1 && S > 1 ? static_cast<double>(T - 1) : i * step;
        ts[static_cast<std::size_t>(i)] = static_cast<std::int64_t>(detail::round_half_even(v));
      }
      break;
    }
    case TimestepSpacing::Leading:
      for (int i = 0; i < S; ++i) ts[static_cast<std::size_t>(i)] = static_cast<std::int64_t>(i) * (T / S);
      break;
    case TimestepSpacing::Trailing: {
      // numpy.arange(T, 0, -T/S) fills start + i * ((start + delta) - start)
      const double start = static_cast<double>(T);
      const double delta = (start + (-static_cast<double>(T) / S)) - start;
      for (int i = 0; i < S; ++i)  // descending; stored ascending
        ts[static_cast<std::size_t>(S - 1 - i)] =
            static_cast<std::int64_t>(detail::round_half_even(start + i * delta)) - 1;
      break;
    }
    case TimestepSpacing::Karras: break;
  }
  detail::check_timestep_sequence(ts, T, "ddim_timesteps");
  return ts;
}

// The noise levels of a discrete schedule as Karras sigmas, sigma_t = sqrt((1 - abar_t) / abar_t), ascending in t,
// and the maps between sigma and a (fractional) timestep by linear interpolation of log sigma: k-diffusion's
// DiscreteSchedule (external.py), whose sigmas are ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5.
class DiscreteSigmas {
 public:
  explicit DiscreteSigmas(const NoiseSchedule& schedule) {
    const std::size_t T = schedule.alphas_cumprod.size();
    sigmas_.resize(T);
    log_sigmas_.resize(T);
    for (std::size_t t = 0; t < T; ++t) {
      const double ab = schedule.alphas_cumprod[t];
      sigmas_[t] = std::sqrt((1.0 - ab) / ab);
      log_sigmas_[t] = std::log(sigmas_[t]);
    }
  }

  const std::vector<double>& sigmas() const { return sigmas_; }  // (T,)
  double sigma_min() const { return sigmas_.front(); }
  double sigma_max() const { return sigmas_.back(); }

  // DiscreteSchedule.sigma_to_t(quantize=False): the last timestep `low` whose log sigma is <= log(sigma) (0 if
  // none), at most T-2; w = (log_sigma[low] - log sigma) / (log_sigma[low] - log_sigma[low+1]) clamped to [0, 1];
  // t = (1 - w) low + w (low + 1). Outside [sigma_min, sigma_max] the result is clamped to [0, T-1].
  double sigma_to_t(double sigma) const {
    DIFFUSION_CHECK(sigma > 0.0 && std::isfinite(sigma), "DiscreteSigmas::sigma_to_t: sigma must be > 0, got " << sigma);
    const std::size_t T = log_sigmas_.size();
    if (T == 1) return 0.0;
    const double ls = std::log(sigma);
    std::size_t low = 0;
    for (std::size_t i = 0; i < T; ++i)
      if (log_sigmas_[i] <= ls) low = i;
    low = std::min(low, T - 2);
    const double lo = log_sigmas_[low], hi = log_sigmas_[low + 1];
    const double w = std::min(1.0, std::max(0.0, (lo - ls) / (lo - hi)));
    return (1.0 - w) * static_cast<double>(low) + w * static_cast<double>(low + 1);
  }

  // DiscreteSchedule.t_to_sigma: exp of log sigma interpolated linearly between floor(t) and ceil(t); t in [0, T-1].
  double t_to_sigma(double t) const {
    const double T1 = static_cast<double>(log_sigmas_.size() - 1);
    DIFFUSION_CHECK(t >= 0.0 && t <= T1, "DiscreteSigmas::t_to_sigma: t must be in [0, " << T1 << "], got " << t);
    const std::size_t lo = static_cast<std::size_t>(std::floor(t)), hi = static_cast<std::size_t>(std::ceil(t));
    const double w = t - std::floor(t);
    return std::exp((1.0 - w) * log_sigmas_[lo] + w * log_sigmas_[hi]);
  }

 private:
  std::vector<double> sigmas_, log_sigmas_;
};

// Karras et al. (2022), eq. 5 (k-diffusion's get_sigmas_karras without the appended 0): S sigmas descending from
// sigma_max to sigma_min, sigma_i = (smax^(1/rho) + i/(S-1) (smin^(1/rho) - smax^(1/rho)))^rho; S = 1 gives {smax}.
inline std::vector<double> karras_sigmas(int S, double sigma_min, double sigma_max, double rho = 7.0) {
  DIFFUSION_CHECK(S >= 1, "karras_sigmas: number of steps S must be >= 1, got " << S);
  DIFFUSION_CHECK(sigma_min > 0.0 && sigma_max >= sigma_min && std::isfinite(sigma_max),
                  "karras_sigmas: need 0 < sigma_min <= sigma_max, got " << sigma_min << " and " << sigma_max);
  DIFFUSION_CHECK(rho > 0.0 && std::isfinite(rho), "karras_sigmas: rho must be > 0, got " << rho);
  const double min_inv = std::pow(sigma_min, 1.0 / rho), max_inv = std::pow(sigma_max, 1.0 / rho);
  std::vector<double> sigmas(static_cast<std::size_t>(S));
  const std::vector<double> ramp = detail::torch_linspace(0.0, 1.0, S);
  for (int i = 0; i < S; ++i)
    sigmas[static_cast<std::size_t>(i)] = std::pow(max_inv + ramp[static_cast<std::size_t>(i)] * (min_inv - max_inv), rho);
  return sigmas;
}

// S timesteps of the schedule at the Karras sigmas (ascending, distinct, within [0, T)): each sigma of
// karras_sigmas(S, sigma_0, sigma_{T-1}, rho) is mapped to t by DiscreteSigmas::sigma_to_t and rounded half to
// even; collisions are resolved, in descending order of sigma, by moving a timestep to one below its predecessor
// (t_{i+1} = min(t_{i+1}, t_i - 1)), after first lifting each one above its successor from the low end
// (t_i = max(t_i, t_{i+1} + 1)); for S <= T the result always has S distinct timesteps, and where no two sigmas
// collide it is exactly the rounded sequence.
inline std::vector<std::int64_t> karras_timesteps(const NoiseSchedule& schedule, int S, double rho = 7.0) {
  const int T = schedule.num_timesteps();
  detail::check_steps(T, S, "karras_timesteps");
  const DiscreteSigmas ds(schedule);
  const std::vector<double> sigmas = karras_sigmas(S, ds.sigma_min(), ds.sigma_max(), rho);
  std::vector<std::int64_t> desc(static_cast<std::size_t>(S));  // descending
  for (std::size_t i = 0; i < desc.size(); ++i)
    desc[i] = static_cast<std::int64_t>(detail::round_half_even(ds.sigma_to_t(sigmas[i])));
  for (std::size_t i = desc.size() - 1; i-- > 0;) desc[i] = std::max(desc[i], desc[i + 1] + 1);
  desc[0] = std::min<std::int64_t>(desc[0], T - 1);
  for (std::size_t i = 1; i < desc.size(); ++i) desc[i] = std::min(desc[i], desc[i - 1] - 1);
  std::vector<std::int64_t> ts(desc.rbegin(), desc.rend());
  detail::check_timestep_sequence(ts, T, "karras_timesteps");
  return ts;
}

// The S sampling timesteps for any spacing (ascending, distinct, within [0, T)); rho is Karras' exponent.
inline std::vector<std::int64_t> sampling_timesteps(const NoiseSchedule& schedule, int S, TimestepSpacing spacing,
                                                    double rho = 7.0) {
  if (spacing == TimestepSpacing::Karras) return karras_timesteps(schedule, S, rho);
  return ddim_timesteps(schedule.num_timesteps(), S, spacing);
}

}  // namespace diffusion
