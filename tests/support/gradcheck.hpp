#pragma once
// Finite-difference gradient check in double precision, after dlib's: f = dot(output, g) for a random g, central
// differences on every element of every input and parameter, one fixed step size (never retried). The difference
// is the fourth-order five-point stencil (8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h: its truncation error
// is O(h^4), so a step of 1e-3 keeps both truncation (~1e-12) and rounding (~1e-16 |f| / h) far below 1e-6. Gradient buffers
// (inputs and parameters) are pre-filled with random non-zero values before backward, and the analytic gradient is
// taken as (after - before): a layer that assigns where it should accumulate (or the reverse) fails the check.

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "diffusion/core/parameters.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/core/tensor.hpp"
#include "support/build_kind.hpp"

namespace diffusion::testing {

struct GradCheckResult {
  double max_error = 0.0;  // max over elements of |analytic - numeric| / max(|analytic|, |numeric|, floor)
  std::string worst;       // where the worst error is, with both values
  std::size_t checked = 0;
};

// Relative error with a floor on the denominator: gradients much smaller than the floor are compared absolutely.
// A non-finite analytic or numeric gradient is an infinite error (never a NaN, which comparisons would drop).
inline double gradient_error(double analytic, double numeric, double floor) {
  if (!std::isfinite(analytic) || !std::isfinite(numeric)) return std::numeric_limits<double>::infinity();
  return std::abs(analytic - numeric) / std::max({std::abs(analytic), std::abs(numeric), floor});
}

// forward(y): computes the output from the current inputs and parameters.
// backward(dy, dinputs): accumulates into dinputs[i] (same order as inputs; an entry may be null) and param grads.
struct GradCheck {
  ParameterStore<double>* params = nullptr;
  std::vector<Tensor<double>*> inputs;
  std::function<void(Tensor<double>&)> forward;
  std::function<void(const Tensor<double>&, std::vector<Tensor<double>*>&)> backward;
  double step = 1e-3;
  double floor = 1e-6;
  std::uint64_t seed = 1234;
  // 0: every element. Otherwise at most this many elements of each input and each parameter tensor, evenly spaced
  // with the first and the last included, so that every tensor is still checked. For sanitizer builds only, where
  // the whole-network checks of every element took 15 minutes (tests/model/test_unet_gradients.cpp).
  Index max_per_tensor = 0;

  // The element indices of an n-element tensor that the check visits.
  std::vector<Index> visited(Index n) const {
    std::vector<Index> at;
    if (max_per_tensor <= 0 || n <= max_per_tensor) {
      for (Index k = 0; k < n; ++k) at.push_back(k);
    } else if (max_per_tensor == 1) {
      at.push_back(0);
    } else {
      for (Index j = 0; j < max_per_tensor; ++j) at.push_back(j * (n - 1) / (max_per_tensor - 1));
    }
    return at;
  }

  GradCheckResult run() {
    Rng rng(seed);
    Tensor<double> y;
    forward(y);
    Tensor<double> g(y.shape());
    rng.normal(g.data(), g.numel());

    // Pre-filled gradient buffers.
    std::vector<Tensor<double>> dinputs(inputs.size()), before_inputs(inputs.size());
    std::vector<Tensor<double>*> dptrs(inputs.size());
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      dinputs[i].resize(inputs[i]->shape());
      rng.normal(dinputs[i].data(), dinputs[i].numel());
      before_inputs[i].copy_from(dinputs[i]);
      dptrs[i] = &dinputs[i];
    }
    std::vector<double> before_params;
    if (params) {
      rng.normal(params->grads(), static_cast<Index>(params->size()));
      before_params.assign(params->grads(), params->grads() + params->size());
    }
    backward(g, dptrs);

    auto objective = [&]() {
      Tensor<double> out;
      forward(out);
      double f = 0.0;
      for (Index i = 0; i < out.numel(); ++i) f += out[i] * g[i];
      return f;
    };
    auto numeric = [&](double& value) {
      const double saved = value;
      auto at = [&](double offset) {
        value = saved + offset;
        return objective();
      };
      const double d1 = at(step) - at(-step);
      const double d2 = at(2 * step) - at(-2 * step);
      value = saved;
      return (8.0 * d1 - d2) / (12.0 * step);
    };

    GradCheckResult result;
    auto consider = [&](double analytic, double num, const std::string& where) {
      const double e = gradient_error(analytic, num, floor);
      ++result.checked;
      if (result.worst.empty() || e > result.max_error) {
        result.max_error = e;
        std::ostringstream s;
        s << where << ": analytic " << analytic << ", numeric " << num;
        result.worst = s.str();
      }
    };
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      for (Index k : visited(inputs[i]->numel())) {
        const double analytic = dinputs[i][k] - before_inputs[i][k];
        consider(analytic, numeric((*inputs[i])[k]), "input " + std::to_string(i) + "[" + std::to_string(k) + "]");
      }
    }
    if (params) {
      for (const auto& e : params->entries()) {
        for (Index k : visited(e.shape.numel())) {
          const std::size_t at = e.offset + static_cast<std::size_t>(k);
          const double analytic = params->grads()[at] - before_params[at];
          consider(analytic, numeric(params->values()[at]), e.name + "[" + std::to_string(k) + "]");
        }
      }
      // Padding between parameters must be untouched by backward.
      for (std::size_t at = 0; at < params->size(); ++at) {
        bool inside = false;
        for (const auto& e : params->entries())
          if (at >= e.offset && at < e.offset + static_cast<std::size_t>(e.shape.numel())) inside = true;
        if (!inside && params->grads()[at] != before_params[at]) {
          result.max_error = 1e300;
          result.worst = "padding element " + std::to_string(at) + " of the gradient buffer was written";
        }
      }
    }
    if (result.checked == 0) {  // a check of nothing proves nothing
      result.max_error = std::numeric_limits<double>::infinity();
      result.worst = "no element was checked";
    }
    return result;
  }
};

// Fills t with standard normal draws scaled by `scale`.
inline void randomize(Tensor<double>& t, std::uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  rng.normal(t.data(), t.numel());
  for (double& v : t) v *= scale;
}

}  // namespace diffusion::testing
