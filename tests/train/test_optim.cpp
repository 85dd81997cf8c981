// Adam / AdamW against torch.optim (adam.safetensors), gradient clipping against clip_grad_norm_, the EMA warm-up
// formula, checkpoint round trips and thread-count independence.
#include <catch2/catch.hpp>

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "diffusion/core/parallel.hpp"
#include "diffusion/core/parameters.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/train/adam.hpp"
#include "diffusion/train/ema.hpp"
#include "diffusion/train/grad_clip.hpp"
#include "process/process_test_util.hpp"
#include "support/threads.hpp"

using namespace diffusion;
using process_test::compare;

namespace {

template <class T>
std::vector<T> to_vec(const Tensor<double>& t, Index offset = 0, Index n = -1) {
  if (n < 0) n = t.numel() - offset;
  std::vector<T> out(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = static_cast<T>(t[offset + i]);
  return out;
}

}  // namespace

TEMPLATE_TEST_CASE("Adam and AdamW match torch.optim over 5 steps", "", float, double) {
  using T = TestType;
  const bool is_double = std::is_same_v<T, double>;
  const std::string dname = is_double ? "f64" : "f32";
  io::SafetensorsReader fx(process_test::golden("adam.safetensors"));
  const Tensor<double> params0 = fx.read<double>("adam.params0");
  const Tensor<double> grads = fx.read<double>("adam.grads");  // (5, 48)
  const Index n = params0.numel();
  REQUIRE(grads.dim(0) == 5);
  REQUIRE(grads.dim(1) == n);
  // Norm-wise relative errors. float: the brief's 1e-5; both sides round every operation to float (~6e-8), and the
  // sqrt/divide chain over 5 steps stays within a few ulps. double: the same operations in double, 1e-12.
  const double tol = is_double ? 1e-12 : 1e-5;
  for (const char* variant : {"adam", "adam_wd", "adam_custom", "adamw"}) {
    INFO("variant " << variant << " (" << dname << ")");
    const Tensor<double> h = fx.read<double>(std::string("adam.") + variant + ".hparams");
    AdamOptions o;
    o.lr = h[0];
    o.beta1 = h[1];
    o.beta2 = h[2];
    o.eps = h[3];
    o.weight_decay = h[4];
    o.decoupled_weight_decay = h[5] != 0.0;
    Adam<T> adam(o);
    const std::string base = std::string("adam.") + variant + "." + dname;
    const Tensor<double> want = fx.read<double>(base + ".params");  // (5, 48)
    std::vector<T> p = to_vec<T>(params0);
    const std::vector<T> p0 = p;
    double worst = 0.0, worst_update = 0.0;
    for (int k = 0; k < 5; ++k) {
      const std::vector<T> g = to_vec<T>(grads, k * n, n);
      adam.step(p.data(), g.data(), static_cast<std::size_t>(n));
      const auto m = compare(p.data(), want.data() + k * n, static_cast<std::size_t>(n));
      INFO("after step " << k + 1 << ": " << m.str());
      REQUIRE(m.rel() <= tol);
      // the updates themselves (p_k - p_0, ~lr per step), not only the parameters, to the same relative bound
      std::vector<double> dg(static_cast<std::size_t>(n)), dw(static_cast<std::size_t>(n));
      for (Index i = 0; i < n; ++i) {
        dg[static_cast<std::size_t>(i)] = static_cast<double>(p[static_cast<std::size_t>(i)]) - static_cast<double>(p0[static_cast<std::size_t>(i)]);
        dw[static_cast<std::size_t>(i)] = want[k * n + i] - static_cast<double>(p0[static_cast<std::size_t>(i)]);
      }
      const auto md = compare(dg.data(), dw.data(), dg.size());
      INFO("update after step " << k + 1 << ": " << md.str());
      REQUIRE(md.rel() <= tol);
      worst = std::max(worst, m.rel());
      worst_update = std::max(worst_update, md.rel());
    }
    REQUIRE(adam.step_count() == 5);
    const auto m1 = compare(adam.exp_avg(), fx.read<double>(base + ".exp_avg").data(), static_cast<std::size_t>(n));
    const auto m2 = compare(adam.exp_avg_sq(), fx.read<double>(base + ".exp_avg_sq").data(), static_cast<std::size_t>(n));
    INFO("exp_avg: " << m1.str() << "; exp_avg_sq: " << m2.str());
    REQUIRE(m1.rel() <= tol);
    REQUIRE(m2.rel() <= tol);
    WARN(variant << " (" << dname << "): worst relative error of the parameters " << worst << ", of the updates "
                 << worst_update << ", exp_avg " << m1.rel() << ", exp_avg_sq " << m2.rel());
  }
}

TEST_CASE("AdamW defaults and decoupled decay differ from Adam's L2 penalty") {
  AdamW<double> w;
  REQUIRE(w.options().decoupled_weight_decay);
  REQUIRE(w.options().weight_decay == 0.01);
  AdamOptions o;
  o.weight_decay = 0.1;
  AdamW<double> w2(o);
  REQUIRE(w2.options().decoupled_weight_decay);
  // zero gradient: AdamW still shrinks p by (1 - lr wd); Adam's L2 gradient wd p gives a full-size Adam step
  std::vector<double> pa = {2.0}, pw = {2.0};
  const std::vector<double> g = {0.0};
  Adam<double> adam(o);
  adam.step(pa.data(), g.data(), 1);
  w2.step(pw.data(), g.data(), 1);
  REQUIRE(pw[0] == 2.0 * (1.0 - 1e-3 * 0.1));
  REQUIRE(pa[0] == Approx(2.0 - 1e-3).epsilon(1e-9));  // first step moves by lr * m/sqrt(v) = lr * sign(g)
}

TEST_CASE("Adam state round-trips through a checkpoint, and a ParameterStore's padding stays zero") {
  ParameterStore<float> store(7);
  const auto a = store.add("a.weight", Shape{3, 5}, Init::uniform(0.5));
  store.add("b.bias", Shape{7}, Init::uniform(0.5));
  REQUIRE(store.size() > store.count());  // there is padding between the tensors
  Rng rng(12);
  AdamOptions o;
  o.lr = 0.01;
  o.weight_decay = 0.05;
  Adam<float> full(o);
  std::vector<std::vector<float>> gs(6, std::vector<float>(store.size(), 0.0f));
  for (auto& g : gs)
    for (const auto& e : store.entries()) rng.normal(g.data() + e.offset, e.shape.numel());

  // reference: 6 uninterrupted steps on a copy of the values
  std::vector<float> ref(store.values(), store.values() + store.size());
  for (const auto& g : gs) full.step(ref.data(), g.data(), ref.size());

  Adam<float> first(o);
  for (int k = 0; k < 3; ++k) {
    std::copy(gs[static_cast<std::size_t>(k)].begin(), gs[static_cast<std::size_t>(k)].end(), store.grads());
    first.step(store);
  }
  // "checkpoint": copy the state out, restore it into a fresh optimizer
  const std::vector<float> m(first.exp_avg(), first.exp_avg() + first.size());
  const std::vector<float> v(first.exp_avg_sq(), first.exp_avg_sq() + first.size());
  Adam<float> resumed(o);
  resumed.load_state(first.step_count(), m.data(), v.data(), m.size());
  for (int k = 3; k < 6; ++k) {
    std::copy(gs[static_cast<std::size_t>(k)].begin(), gs[static_cast<std::size_t>(k)].end(), store.grads());
    resumed.step(store);
  }
  REQUIRE(resumed.step_count() == 6);
  for (std::size_t i = 0; i < store.size(); ++i) REQUIRE(store.values()[i] == ref[i]);  // bitwise
  // padding (between the end of a.weight and the start of b.bias) is still zero
  const std::size_t a_end = store.entry(a).offset + 15, b_begin = store.find("b.bias")->offset;
  REQUIRE(b_begin > a_end);
  for (std::size_t i = a_end; i < b_begin; ++i) REQUIRE(store.values()[i] == 0.0f);

  std::vector<float> p(5, 1.0f), g(5, 1.0f);
  REQUIRE_THROWS_WITH(resumed.step(p.data(), g.data(), 5), Catch::Contains("5 parameters") && Catch::Contains("holds"));
  AdamOptions bad;
  bad.lr = -1;
  REQUIRE_THROWS_WITH(Adam<float>(bad), Catch::Contains("learning rate lr"));
  bad.lr = 1e-3;
  bad.beta2 = 1.0;
  REQUIRE_THROWS_WITH(Adam<float>(bad), Catch::Contains("beta2"));
}

TEST_CASE("Adam and EMA and clipping give the same bits for 1 2 3 and 7 threads") {
  const std::size_t n = 100003;  // several chunks, not a multiple of the chunk size
  std::vector<float> p0(n), g(n);
  Rng rng(99);
  rng.normal(p0.data(), static_cast<Index>(n));
  rng.normal(g.data(), static_cast<Index>(n));
  auto run = [&](int threads) {
    testing::ScopedThreads scoped(threads);
    std::vector<float> p = p0, gg = g;
    Adam<float> adam;
    Ema<float> ema(p.data(), n, EmaOptions{0.9, true});
    for (int k = 0; k < 3; ++k) {
      gg = g;
      const double norm = clip_grad_norm(gg.data(), n, 10.0);
      REQUIRE(norm > 10.0);
      adam.step(p.data(), gg.data(), n);
      ema.update(p.data(), n);
    }
    std::vector<float> out(n);
    ema.copy_to(out.data());
    out.insert(out.end(), p.begin(), p.end());
    out.insert(out.end(), gg.begin(), gg.end());
    return out;
  };
  const std::vector<float> one = run(1);
  for (int threads : {2, 3, 7}) {
    INFO(threads << " threads against 1");
    const std::vector<float> other = run(threads);
    REQUIRE(one.size() == other.size());
    REQUIRE(std::memcmp(one.data(), other.data(), one.size() * sizeof(float)) == 0);
  }
}

TEMPLATE_TEST_CASE("clip_grad_norm matches torch.nn.utils.clip_grad_norm_", "", float, double) {
  using T = TestType;
  const bool is_double = std::is_same_v<T, double>;
  io::SafetensorsReader fx(process_test::golden("adam.safetensors"));
  const Tensor<double> grads = fx.read<double>("clip.grads");
  for (const char* c : {"clipped", "unclipped"}) {
    INFO(c);
    const std::string base = std::string("clip.") + c + "." + (is_double ? "f64" : "f32");
    const double max_norm = fx.read<double>(std::string("clip.") + c + ".max_norm")[0];
    std::vector<T> g = to_vec<T>(grads);
    const double total = clip_grad_norm(g.data(), g.size(), max_norm);
    const double want_total = fx.read<double>(base + ".total_norm")[0];
    CAPTURE(total, want_total);
    // PyTorch's float norm is accumulated in float (per tensor, then the norm of norms): ~1e-7 relative; ours in
    // double. double: both ~1e-16.
    REQUIRE(std::fabs(total - want_total) <= (is_double ? 1e-14 : 1e-6) * want_total);
    const auto m = compare(g.data(), fx.read<double>(base + ".grads_out").data(), g.size());
    INFO(m.str());
    // the scale factor inherits the norm's relative error, then one rounding of the product
    REQUIRE(m.rel() <= (is_double ? 1e-14 : 1e-6));
    if (std::string(c) == "clipped") {
      // the clipped norm is max_norm * total / (total + 1e-6), like PyTorch's
      const double clipped = max_norm * total / (total + 1e-6);
      REQUIRE(grad_norm(g.data(), g.size()) == Approx(clipped).epsilon(is_double ? 1e-14 : 1e-6));
    } else {
      const std::vector<T> orig = to_vec<T>(grads);
      REQUIRE(g == orig);  // below the threshold nothing changes, bitwise
    }
  }
  std::vector<T> g(3, T(1));
  REQUIRE_THROWS_WITH(clip_grad_norm(g.data(), g.size(), 0.0), Catch::Contains("max_norm must be > 0"));
  g[1] = std::numeric_limits<T>::infinity();
  const std::vector<T> before = g;
  REQUIRE(std::isinf(clip_grad_norm(g.data(), g.size(), 1.0)));
  REQUIRE(g == before);  // a non-finite norm leaves the gradients alone
}

TEST_CASE("EMA follows the decay and the warm-up formula exactly") {
  // Constant target values v: after k updates shadow - v = prod_{j<k} d_j (shadow_0 - v). Without warm-up
  // d_j = decay; with warm-up d_j = min(decay, (1+j)/(10+j)), and (1+j)/(10+j) < 0.995 for j < 1790, so for
  // k <= 1790 the product is prod_{j<k} (1+j)/(10+j) = 9! k! / (k+9)!.
  const std::size_t n = 4;
  const std::vector<double> s0 = {1.0, -2.0, 0.5, 3.0}, v = {0.0, 1.0, 0.5, -1.0};
  auto closed_form_warmup = [](std::int64_t k) {
    const double kk = static_cast<double>(k);
    if (k <= 1790) return std::exp(std::lgamma(10.0) + std::lgamma(kk + 1.0) - std::lgamma(kk + 10.0));
    return std::exp(std::lgamma(10.0) + std::lgamma(1791.0) - std::lgamma(1800.0)) * std::pow(0.995, kk - 1790.0);
  };
  for (bool warmup : {false, true}) {
    INFO("warmup " << warmup);
    Ema<double> ema(s0.data(), n, EmaOptions{0.995, warmup});
    REQUIRE(ema.decay_at(0) == (warmup ? 0.1 : 0.995));
    REQUIRE(ema.decay_at(5) == (warmup ? 6.0 / 15.0 : 0.995));
    REQUIRE(ema.decay_at(5000) == 0.995);
    std::int64_t k = 0;
    for (std::int64_t target : {1, 2, 10, 100, 1790, 1791, 2500}) {
      while (k < target) {
        ema.update(v.data(), n);
        ++k;
      }
      const double factor = warmup ? closed_form_warmup(k) : std::pow(0.995, static_cast<double>(k));
      std::vector<double> got(n);
      ema.copy_to(got.data());
      for (std::size_t i = 0; i < n; ++i) {
        const double want = v[i] + factor * (s0[i] - v[i]);
        CAPTURE(k, i, got[i], want, factor);
        // k roundings of ~1e-16 each on values of size ~3: <= 1e-12 after 2500 updates
        REQUIRE(std::fabs(got[i] - want) <= 1e-12);
      }
    }
    REQUIRE(ema.step_count() == 2500);
  }
  // default decay is the primer's 0.995; checkpoint round trip continues identically
  Ema<float> a(EmaOptions{});
  REQUIRE(a.options().decay == 0.995);
  std::vector<float> x = {1, 2, 3}, y = {0, 0, 0};
  a.reset(x.data(), 3);
  a.update(y.data(), 3);
  Ema<float> b;
  b.load_state(a.step_count(), a.shadow(), a.size());
  a.update(x.data(), 3);
  b.update(x.data(), 3);
  for (std::size_t i = 0; i < 3; ++i) REQUIRE(a.shadow()[i] == b.shadow()[i]);
  Ema<float> fresh;
  REQUIRE_THROWS_WITH(fresh.update(x.data(), 3), Catch::Contains("never initialised"));
  REQUIRE_THROWS_WITH(a.update(x.data(), 2), Catch::Contains("2 values"));
  REQUIRE_THROWS_WITH(Ema<float>(EmaOptions{1.5, false}), Catch::Contains("decay must be in [0, 1]"));
}
