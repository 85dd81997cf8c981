// One training step against PyTorch (tests/golden/train_step.safetensors, made by make_train_fixtures.py): the
// reference U-Net, p_losses and torch.optim.Adam on a fixed batch with fixed timesteps and noise, for every target
// (eps, x0, v) and loss (l2, l1, huber), with gradient clipping (scaling the gradients, and on but not reached), the
// EMA on and off. Trainer::step(x0, t, noise) must give the same loss, gradient norm, every parameter gradient, the
// same Adam moments and weight update, and the same EMA. A second case pins step(x0) to step(x0, t, noise) with the
// draws of the step's stream, so that what is checked here is what training runs.
//
// Reference gradients: the three "full" cases (eps/l2, x0/l1, v/huber) store PyTorch's gradients and weight updates.
// The other six store d loss / d out (the only part that depends on the target and the loss) and the test pushes it
// through the U-Net's backward in double (checked against PyTorch by tests/model/test_unet_golden.cpp); their
// expected update is Adam's first step from zero moments, lr g / (|g| + eps) (torch.optim's, tests/train/test_optim).
//
// Bounds (measured values in brackets). double: the loss is stored in float64 (1e-12 [8e-16]); the tensors are
// float64 results rounded once to float32 (relative 6e-8), so every per-tensor relative error 1e-6 [gradients
// 7.9e-8, updates 5.5e-8]. float: loss 1e-6 [3.3e-8]; gradients, the gradient norm and Adam's moments 1e-4 [2.5e-6];
// the weight update and the EMA's 1e-3 [4.3e-5]: w1 - w0 is ~lr = 1e-3 while w1 itself is rounded to float
// (2^-24 |w|), which alone makes ~3e-5. Tensors whose reference gradient is structurally zero (a bias cancelled by
// a following GroupNorm: ~1e-17 in float64; none in this configuration, the check stays for others) are held to
// ||grad|| <= 1e-6 ||all|| and |update| <= lr instead: Adam turns any noise-level gradient into a full step, in
// PyTorch's float32 too.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/train/trainer.hpp"
#include "support/compare.hpp"

using namespace diffusion;

namespace {

const io::SafetensorsReader& fixture() {
  static const io::SafetensorsReader reader(std::string(DIFFUSION_GOLDEN_DIR) + "/train_step.safetensors");
  return reader;
}

nlohmann::json meta(const std::string& key) { return nlohmann::json::parse(fixture().metadata().at(key)); }

UnetConfig golden_config() {
  UnetConfig c;
  c.dim = 4;
  c.channels = 1;
  c.dim_mults = {1};
  c.use_convnext = false;
  c.resnet_block_groups = 2;
  c.attention_heads = 1;
  c.attention_dim_head = 2;
  return c;
}

// Where each parameter sits in the fixture's flat vectors.
struct Slot {
  std::string name;
  Index offset = 0, size = 0;
};

std::vector<Slot> layout() {
  std::vector<Slot> out;
  Index offset = 0;
  const nlohmann::json parameters = meta("parameters");
  for (const auto& p : parameters) {
    Index size = 1;
    for (const auto& d : p[1]) size *= d.get<Index>();
    out.push_back({p[0].get<std::string>(), offset, size});
    offset += size;
  }
  return out;
}

struct Case {
  std::string name;
  Prediction prediction;
  LossType loss;
  double grad_clip;
  bool ema, full;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  const nlohmann::json all = meta("cases");
  for (const auto& [name, c] : all.items())
    out.push_back({name, parse_prediction(c.at("prediction")), parse_loss_type(c.at("loss")), c.at("grad_clip"),
                   c.at("ema"), c.at("full")});
  return out;
}

double scalar(const std::string& key) { return fixture().read<double>(key)[0]; }

std::vector<std::int64_t> golden_timesteps() {
  std::vector<std::int64_t> t;
  for (double v : fixture().read<double>("t")) t.push_back(static_cast<std::int64_t>(v));
  return t;
}

// Copies the flat fixture vector into the network's parameters (by name).
template <class T>
void set_params(ParameterStore<T>& store, const std::vector<Slot>& slots, const Tensor<double>& flat) {
  for (const Slot& s : slots) {
    const auto* e = store.find(s.name);
    REQUIRE(e != nullptr);
    for (Index i = 0; i < s.size; ++i) store.values()[e->offset + static_cast<std::size_t>(i)] = static_cast<T>(flat[s.offset + i]);
  }
}

struct Bounds {
  double loss, tensor, update;
};

// Per-tensor relative norm errors of got (the store's layout) against want (the fixture's flat layout). Tensors in
// `zero` (structurally zero reference gradients) are skipped here and checked by the caller. Returns the worst.
template <class G>
double worst_tensor_error(const std::vector<Slot>& slots, const std::vector<std::size_t>& offsets, const G& got,
                          const std::vector<double>& want, const std::vector<bool>& zero, std::string& where) {
  double worst = 0.0;
  for (std::size_t k = 0; k < slots.size(); ++k) {
    if (zero[k]) continue;
    std::vector<double> g(static_cast<std::size_t>(slots[k].size));
    for (Index i = 0; i < slots[k].size; ++i) g[static_cast<std::size_t>(i)] = got(offsets[k] + static_cast<std::size_t>(i));
    const double e = testing::relative_norm_error(g.data(), want.data() + slots[k].offset, slots[k].size);
    if (!(e <= worst)) worst = e, where = slots[k].name;
  }
  return worst;
}

template <class T>
void check_case(const Case& c, const Bounds& bounds) {
  INFO("case " << c.name << (std::is_same_v<T, double> ? " (double)" : " (float)"));
  const std::vector<Slot> slots = layout();
  const Tensor<double> w0 = fixture().read<double>("weights");
  const Tensor<T> x0 = fixture().read<T>("x0"), noise = fixture().read<T>("noise");
  const std::vector<std::int64_t> t = golden_timesteps();
  const UnetConfig config = golden_config();
  REQUIRE(config.to_json() == meta("diffusion.unet"));
  REQUIRE(fixture().metadata().at("schedule") == "linear");
  const NoiseSchedule schedule(BetaSchedule::Linear, std::stoi(fixture().metadata().at("timesteps")));

  Unet<T> net(config, 0);
  REQUIRE(net.params().entries().size() == slots.size());
  set_params(net.params(), slots, w0);
  std::vector<std::size_t> offsets;
  for (const Slot& s : slots) {
    const auto* e = net.params().find(s.name);
    REQUIRE(e->shape.numel() == s.size);
    offsets.push_back(e->offset);
  }

  TrainerOptions options;
  options.prediction = c.prediction;
  options.loss = c.loss;
  options.grad_clip = c.grad_clip;
  options.use_ema = c.ema;
  const nlohmann::json adam = meta("adam");
  REQUIRE(options.adam.lr == adam.at("lr").get<double>());
  REQUIRE(options.adam.beta1 == adam.at("betas")[0].get<double>());
  REQUIRE(options.adam.beta2 == adam.at("betas")[1].get<double>());
  REQUIRE(options.adam.eps == adam.at("eps").get<double>());
  REQUIRE(options.adam.weight_decay == adam.at("weight_decay").get<double>());
  REQUIRE(options.ema.decay == std::stod(fixture().metadata().at("ema_decay")));
  REQUIRE(options.ema.warmup);  // the fixture's EMA uses the warm-up decay min(decay, 1/10) for the first update
  Trainer<T> trainer(net, schedule, options);
  const StepResult r = trainer.step(x0, t, noise);
  REQUIRE(trainer.step_count() == 1);
  REQUIRE(trainer.optimizer().step_count() == 1);  // one Adam step was taken (its moments exist)

  // Loss and gradient norm (before clipping).
  const double loss_ref = scalar(c.name + ".loss"), norm_ref = scalar(c.name + ".grad_norm");
  CAPTURE(r.loss, loss_ref, r.grad_norm, norm_ref);
  REQUIRE(std::fabs(r.loss - loss_ref) <= bounds.loss * loss_ref);
  REQUIRE(std::fabs(r.grad_norm - norm_ref) <= bounds.tensor * norm_ref);

  // The reference gradients (before clipping), in the fixture's flat layout.
  std::vector<double> grads(static_cast<std::size_t>(w0.numel()));
  if (c.full) {
    const Tensor<double> g = fixture().read<double>(c.name + ".grads");
    grads.assign(g.begin(), g.end());
  } else {
    // d loss / d out from PyTorch through the U-Net's backward in double at the same x_t.
    Unet<double> ref(config, 0);
    set_params(ref.params(), slots, w0);
    Tensor<double> x_t, out;
    q_sample(schedule, fixture().read<double>("x0"), t, fixture().read<double>("noise"), x_t);
    ref.forward(x_t, t, out);
    ref.params().zero_grad();
    ref.backward(fixture().read<double>(c.name + ".dout"));
    for (const Slot& s : slots) {
      const auto* e = ref.params().find(s.name);
      for (Index i = 0; i < s.size; ++i) grads[static_cast<std::size_t>(s.offset + i)] = ref.params().grads()[e->offset + static_cast<std::size_t>(i)];
    }
  }
  // Clipping, as torch.nn.utils.clip_grad_norm_: the trainer's gradients are the clipped ones.
  const double coef = c.grad_clip > 0.0 ? std::min(1.0, c.grad_clip / (norm_ref + 1e-6)) : 1.0;
  CAPTURE(coef);
  std::vector<double> clipped(grads.size());
  for (std::size_t i = 0; i < grads.size(); ++i) clipped[i] = grads[i] * coef;

  // Structurally zero reference gradients.
  double total = 0.0;
  for (double g : grads) total += g * g;
  total = std::sqrt(total);
  std::vector<bool> zero(slots.size(), false);
  int zeros = 0;
  for (std::size_t k = 0; k < slots.size(); ++k) {
    double n = 0.0;
    for (Index i = 0; i < slots[k].size; ++i) n += grads[static_cast<std::size_t>(slots[k].offset + i)] * grads[static_cast<std::size_t>(slots[k].offset + i)];
    zero[k] = std::sqrt(n) < 1e-9 * total;
    zeros += zero[k] ? 1 : 0;
  }
  REQUIRE(zeros < static_cast<int>(slots.size()) / 4);
  const T* got_grads = net.params().grads();
  const T* w1 = net.params().values();
  const double lr = options.adam.lr;
  for (std::size_t k = 0; k < slots.size(); ++k) {
    if (!zero[k]) continue;
    INFO("structurally zero gradient of " << slots[k].name);
    for (Index i = 0; i < slots[k].size; ++i) {
      const std::size_t at = offsets[k] + static_cast<std::size_t>(i);
      REQUIRE(std::fabs(static_cast<double>(got_grads[at])) <= 1e-6 * total);
      const double update = static_cast<double>(w1[at]) - w0[slots[k].offset + i];
      REQUIRE(std::fabs(update) <= lr * (1.0 + 1e-6));
    }
  }

  // Every other gradient.
  std::string where;
  const double grad_err = worst_tensor_error(
      slots, offsets, [&](std::size_t at) { return static_cast<double>(got_grads[at]); }, clipped, zero, where);
  INFO("worst parameter gradient: " << where << ", relative error " << grad_err << " (" << zeros
                                    << " structurally zero tensors)");
  REQUIRE(grad_err <= bounds.tensor);

  // Adam: the moments after one step, exp_avg = (1 - beta1) g and exp_avg_sq = (1 - beta2) g^2 ...
  std::vector<double> m_ref(clipped.size()), v_ref(clipped.size());
  for (std::size_t i = 0; i < clipped.size(); ++i) {
    m_ref[i] = (1.0 - options.adam.beta1) * clipped[i];
    v_ref[i] = (1.0 - options.adam.beta2) * clipped[i] * clipped[i];
  }
  const double m_err = worst_tensor_error(
      slots, offsets, [&](std::size_t at) { return static_cast<double>(trainer.optimizer().exp_avg()[at]); }, m_ref,
      zero, where);
  INFO("worst Adam exp_avg: " << where << ", relative error " << m_err);
  REQUIRE(m_err <= bounds.tensor);
  const double v_err = worst_tensor_error(
      slots, offsets, [&](std::size_t at) { return static_cast<double>(trainer.optimizer().exp_avg_sq()[at]); },
      v_ref, zero, where);
  INFO("worst Adam exp_avg_sq: " << where << ", relative error " << v_err);
  REQUIRE(v_err <= 2.0 * bounds.tensor);

  // ... and the weight update w1 - w0: PyTorch's (full cases) or lr g / (|g| + eps) from the reference gradients.
  std::vector<double> update_ref(clipped.size());
  if (c.full) {
    const Tensor<double> u = fixture().read<double>(c.name + ".update");
    update_ref.assign(u.begin(), u.end());
  } else {
    for (std::size_t i = 0; i < clipped.size(); ++i)
      update_ref[i] = -lr * clipped[i] / (std::fabs(clipped[i]) + options.adam.eps);
  }
  auto update_of = [&](std::size_t at, std::size_t k, Index i) {
    return static_cast<double>(w1[at]) - w0[slots[k].offset + i];
  };
  double update_err = 0.0;
  for (std::size_t k = 0; k < slots.size(); ++k) {
    if (zero[k]) continue;
    std::vector<double> u(static_cast<std::size_t>(slots[k].size));
    for (Index i = 0; i < slots[k].size; ++i) u[static_cast<std::size_t>(i)] = update_of(offsets[k] + static_cast<std::size_t>(i), k, i);
    const double e = testing::relative_norm_error(u.data(), update_ref.data() + slots[k].offset, slots[k].size);
    if (!(e <= update_err)) update_err = e, where = slots[k].name;
  }
  INFO("worst weight update: " << where << ", relative error " << update_err);
  REQUIRE(update_err <= bounds.update);

  // The EMA: off -> none, sampling from the raw weights; on -> d w0 + (1 - d) w1 with the warm-up decay 0.1.
  if (!c.ema) {
    REQUIRE(trainer.ema() == nullptr);
    REQUIRE(trainer.sampling_weights() == net.params().values());
  } else {
    REQUIRE(trainer.ema() != nullptr);
    REQUIRE(trainer.sampling_weights() == trainer.ema()->shadow());
    const T* shadow = trainer.ema()->shadow();
    if (fixture().contains(c.name + ".ema_update")) {
      const Tensor<double> e = fixture().read<double>(c.name + ".ema_update");
      double ema_err = 0.0;
      for (std::size_t k = 0; k < slots.size(); ++k) {
        if (zero[k]) continue;
        std::vector<double> u(static_cast<std::size_t>(slots[k].size));
        for (Index i = 0; i < slots[k].size; ++i)
          u[static_cast<std::size_t>(i)] = static_cast<double>(shadow[offsets[k] + static_cast<std::size_t>(i)]) - w0[slots[k].offset + i];
        const double err = testing::relative_norm_error(u.data(), e.data() + slots[k].offset, slots[k].size);
        if (!(err <= ema_err)) ema_err = err, where = slots[k].name;
      }
      INFO("worst EMA update: " << where << ", relative error " << ema_err);
      REQUIRE(ema_err <= bounds.update);
    }
    // Every element (structurally zero ones included): shadow = 0.1 w0 + 0.9 w1 up to the scalar type's rounding.
    for (std::size_t k = 0; k < slots.size(); ++k)
      for (Index i = 0; i < slots[k].size; ++i) {
        const std::size_t at = offsets[k] + static_cast<std::size_t>(i);
        const double want = 0.1 * w0[slots[k].offset + i] + 0.9 * static_cast<double>(w1[at]);
        INFO(slots[k].name << "[" << i << "]");
        REQUIRE(testing::element_error(static_cast<double>(shadow[at]), want) <=
                4.0 * std::numeric_limits<T>::epsilon() * (std::fabs(want) + lr));
      }
  }
  WARN(c.name << (std::is_same_v<T, double> ? " (double)" : " (float)") << ": loss " << r.loss << " (relative error "
               << std::fabs(r.loss - loss_ref) / loss_ref << "), worst gradient error " << grad_err
               << ", worst update error " << update_err << ", " << zeros << " structurally zero tensors");
}

}  // namespace

TEMPLATE_TEST_CASE("golden: one Trainer step equals the PyTorch reference for every target and loss", "", float,
                   double) {
  using T = TestType;
  const Bounds bounds = std::is_same_v<T, double> ? Bounds{1e-12, 1e-6, 1e-6} : Bounds{1e-6, 1e-4, 1e-3};
  const std::vector<Case> all = cases();
  REQUIRE(all.size() == 9);
  int full = 0, clipped = 0, ema_off = 0;
  for (const Case& c : all) {
    check_case<T>(c, bounds);
    full += c.full ? 1 : 0;
    clipped += c.grad_clip > 0.0 ? 1 : 0;
    ema_off += c.ema ? 0 : 1;
  }
  REQUIRE(full == 3);
  REQUIRE(clipped == 2);
  REQUIRE(ema_off == 1);
}

TEST_CASE("Trainer step(x0) is step(x0, t, noise) with the draws of the step stream") {
  const UnetConfig config = golden_config();
  const Tensor<float> x0 = fixture().read<float>("x0");
  const NoiseSchedule schedule(BetaSchedule::Linear, 50);
  TrainerOptions options;
  options.seed = 77;
  options.grad_clip = 1.0;
  Unet<float> a(config, 5), b(config, 5);
  Trainer<float> drawn(a, schedule, options), given(b, schedule, options);
  for (std::int64_t step = 0; step < 3; ++step) {
    Rng rng = Rng(options.seed).fork(Trainer<float>::kStepStream).fork(static_cast<std::uint64_t>(step));
    std::vector<std::int64_t> t;
    sample_timesteps(rng, schedule, x0.dim(0), t);
    Tensor<float> noise(x0.shape());
    rng.normal(noise.data(), noise.numel());
    const StepResult ra = drawn.step(x0), rb = given.step(x0, t, noise);
    REQUIRE(ra.loss == rb.loss);
    REQUIRE(ra.grad_norm == rb.grad_norm);
    REQUIRE(std::memcmp(a.params().values(), b.params().values(), a.params().size() * sizeof(float)) == 0);
    REQUIRE(std::memcmp(drawn.ema()->shadow(), given.ema()->shadow(), a.params().size() * sizeof(float)) == 0);
  }
  REQUIRE(given.step_count() == 3);

  // The caller's draws are checked like the rest of the batch, before anything changes.
  const std::vector<float> before(b.params().values(), b.params().values() + b.params().size());
  Tensor<float> noise(x0.shape());
  REQUIRE_THROWS_WITH(given.step(x0, {1, 2, 3}, noise), Catch::Contains("timesteps"));
  REQUIRE_THROWS_WITH(given.step(x0, {1, 2, 3, 50}, noise), Catch::Contains("50"));
  REQUIRE_THROWS_WITH(given.step(x0, {1, 2, 3, 4}, Tensor<float>(Shape{4, 1, 8, 7})), Catch::Contains("noise"));
  REQUIRE(given.step_count() == 3);
  REQUIRE(std::memcmp(before.data(), b.params().values(), before.size() * sizeof(float)) == 0);
}
