// "No allocation in hot loops": after the first step has sized every buffer, a training step, a forward pass and
// a DDIM sampling run allocate nothing. This executable replaces malloc and friends with counting wrappers around
// glibc's (symbol interposition), so it is built without sanitizers, which intercept malloc themselves.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstddef>

#include "diffusion/diffusion.hpp"
#include "support/skip.hpp"

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__) && defined(__GLIBC__)
#define DIFFUSION_COUNT_ALLOCATIONS 1
static std::atomic<long> g_allocations{0};
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void* malloc(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t m) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_calloc(n, m);
}
void* realloc(void* p, std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_realloc(p, n);
}
void* aligned_alloc(std::size_t a, std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_memalign(a, n);
}
int posix_memalign(void** out, std::size_t a, std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  *out = __libc_memalign(a, n);
  return *out ? 0 : 12;  // ENOMEM
}
}
#endif

using namespace diffusion;

namespace {

long allocations() {
#ifdef DIFFUSION_COUNT_ALLOCATIONS
  return g_allocations.load();
#else
  return 0;
#endif
}

UnetConfig small() {
  UnetConfig c;
  c.dim = 16;
  c.channels = 1;
  c.dim_mults = {1, 2, 4};
  return c;
}

}  // namespace

TEST_CASE("a training step allocates nothing once buffers are sized") {
#ifndef DIFFUSION_COUNT_ALLOCATIONS
  testing::skip("allocation counting is unavailable in this build (sanitizers or not glibc)");
  return;
#endif
  const long probe = allocations();
  void* p = std::malloc(16);
  std::free(p);
  REQUIRE(allocations() == probe + 1);  // the counter works

  Unet<float> net(small(), 1);
  Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 50), TrainerOptions{});
  Tensor<float> x(Shape{8, 1, 16, 16});
  Rng(2).normal(x.data(), x.numel());
  trainer.step(x);  // sizes everything
  trainer.step(x);
  const long before = allocations();
  for (int i = 0; i < 3; ++i) trainer.step(x);
  const long delta = allocations() - before;  // read before Catch's own messages allocate
  INFO("allocations during 3 steady-state training steps: " << delta);
  REQUIRE(delta == 0);
}

TEST_CASE("forward passes and DDIM sampling allocate nothing once buffers are sized") {
#ifndef DIFFUSION_COUNT_ALLOCATIONS
  testing::skip("allocation counting is unavailable in this build (sanitizers or not glibc)");
  return;
#endif
  Unet<float> net(small(), 1);
  const NoiseSchedule schedule(BetaSchedule::Linear, 50);
  auto model = [&](const Tensor<float>& x, const std::vector<std::int64_t>& t, Tensor<float>& out) {
    net.predict(x, t, out);  // what the samplers call (Unet::operator())
  };
  Tensor<float> x(Shape{4, 1, 16, 16});
  Rng rng(3);
  rng.normal(x.data(), x.numel());
  DdimOptions o;
  o.steps = 5;
  ddim_sample(model, schedule, x, rng, o);  // sizes the inference buffers
  rng.normal(x.data(), x.numel());
  Tensor<float> y;
  y.resize(x.shape());
  const std::vector<std::int64_t> t = {1, 2, 3, 4};
  net.forward(x, t, y);  // sizes the activations a training forward keeps
  const long before_forward = allocations();
  net.forward(x, t, y);
  const long forward_delta = allocations() - before_forward;
  const long before_predict = allocations();
  net.predict(x, t, y);
  const long predict_delta = allocations() - before_predict;
  INFO("allocations during a forward pass: " << forward_delta << ", during predict: " << predict_delta);
  REQUIRE(forward_delta == 0);
  REQUIRE(predict_delta == 0);
  // A sampling run allocates its per-run buffers (timestep list, output, noise) once, not per step.
  const long before_run = allocations();
  ddim_sample(model, schedule, x, rng, o);
  const long per_run = allocations() - before_run;
  o.steps = 25;
  const long before_long = allocations();
  ddim_sample(model, schedule, x, rng, o);
  const long long_run = allocations() - before_long;
  INFO("allocations in a 5-step run: " << per_run << ", in a 25-step run: " << long_run);
  REQUIRE(long_run <= per_run + 2);
}

TEST_CASE("a guided conditional U-Net call allocates nothing once buffers are sized") {
#ifndef DIFFUSION_COUNT_ALLOCATIONS
  testing::skip("allocation counting is unavailable in this build (sanitizers or not glibc)");
  return;
#endif
  UnetConfig c = small();
  c.num_classes = 10;
  Unet<float> net(c, 1);
  ClassifierFreeGuidance guided(net, {3, 7, 0, 9}, GuidanceOptions{3.0, 0.7});
  Tensor<float> x(Shape{4, 1, 16, 16}), out;
  Rng(5).normal(x.data(), x.numel());
  const std::vector<std::int64_t> t = {1, 20, 30, 49};
  guided(x, t, out);  // sizes the doubled batch, the network's activations and out
  const long before = allocations();
  guided(x, t, out);
  guided(x, t, out);
  const long delta = allocations() - before;
  INFO("allocations during 2 guided calls (each one forward of 8 images): " << delta);
  REQUIRE(delta == 0);
}

TEST_CASE("every sampler run allocates a fixed number of times whatever its step count") {
#ifndef DIFFUSION_COUNT_ALLOCATIONS
  testing::skip("allocation counting is unavailable in this build (sanitizers or not glibc)");
  return;
#endif
  const NoiseSchedule schedule(BetaSchedule::Linear, 200);
  auto model = [](const Tensor<float>& x, const std::vector<std::int64_t>&, Tensor<float>& out) {
    out.ensure_shape(x.shape());
    for (Index i = 0; i < x.numel(); ++i) out[i] = 0.1f * x[i];
  };
  Tensor<float> x(Shape{2, 1, 8, 8}), image(Shape{2, 1, 8, 8}, 0.5f), keep(Shape{1, 1, 8, 8}, 1.0f);
  for (const char* name : {"ddim", "euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "uni_pc",
                           "reverse_diffusion", "euler_maruyama", "pc"}) {
    SamplerOptions o;
    o.sampler = parse_sampler(name);
    long counts[2];
    for (int k = 0; k < 2; ++k) {
      o.steps = k == 0 ? 5 : 40;
      Rng rng(1);
      rng.normal(x.data(), x.numel());
      const long before = allocations();
      sample(model, schedule, x, rng, o);
      inpaint(model, schedule, image, keep, x, rng, o);
      counts[k] = allocations() - before;
    }
    INFO(name << ": allocations in a 5-step run " << counts[0] << ", in a 40-step run " << counts[1]);
    REQUIRE(counts[1] == counts[0]);
  }
}
