// Layers that share one workspace (as a network's blocks and attention layers do, nn/workspace.hpp) compute exactly
// what each computes with a workspace of its own: a workspace holds only the temporaries of one call, nothing that a
// later call of another layer may overwrite. Run in the network's order (forward A, forward B, backward B,
// backward A) with layers of different shapes, so that a layer reading its workspace across calls reads B's data.
#include <catch2/catch.hpp>

#include <vector>

#include "diffusion/model/unet_stages.hpp"
#include "diffusion/nn/convnext_block.hpp"
#include "diffusion/nn/resnet_block.hpp"
#include "support/gradcheck.hpp"

using namespace diffusion;
using diffusion::testing::randomize;

namespace {

bool bits_equal(const Tensor<double>& a, const Tensor<double>& b) {
  if (a.shape() != b.shape()) return false;
  for (Index i = 0; i < a.numel(); ++i)
    if (!(a[i] == b[i])) return false;  // NaN is unequal
  return true;
}

struct Outputs {
  Tensor<double> ya, yb, dxa, dxb, dta, dtb;
  std::vector<double> grads;
};

// Two blocks made by make(store, name, dim_in) in one store, run forward a, forward b, backward b, backward a.
// With `shared` both use one workspace, otherwise each its own.
template <class Block, class Make>
Outputs run_pair(Make make, bool shared, bool with_time) {
  ParameterStore<double> store(3);
  Block a = make(store, "a", 4), b = make(store, "b", 6);
  typename Block::Workspace ws_shared, ws_a, ws_b;
  auto& wa = shared ? ws_shared : ws_a;
  auto& wb = shared ? ws_shared : ws_b;
  Tensor<double> xa(Shape{2, 4, 6, 6}), xb(Shape{3, 6, 4, 5}), ta(Shape{2, 5}), tb(Shape{3, 5});
  randomize(xa, 1), randomize(xb, 2), randomize(ta, 3), randomize(tb, 4);
  const Tensor<double>* ta_p = with_time ? &ta : nullptr;
  const Tensor<double>* tb_p = with_time ? &tb : nullptr;
  Outputs o;
  a.forward(xa, ta_p, o.ya, wa);
  b.forward(xb, tb_p, o.yb, wb);
  Tensor<double> dya(o.ya.shape()), dyb(o.yb.shape());
  randomize(dya, 5), randomize(dyb, 6);
  o.dxa = Tensor<double>(xa.shape()), o.dxb = Tensor<double>(xb.shape());
  o.dta = Tensor<double>(ta.shape()), o.dtb = Tensor<double>(tb.shape());
  store.zero_grad();
  b.backward(xb, tb_p, dyb, &o.dxb, with_time ? &o.dtb : nullptr, wb);
  a.backward(xa, ta_p, dya, &o.dxa, with_time ? &o.dta : nullptr, wa);
  o.grads.assign(store.grads(), store.grads() + store.size());
  return o;
}

template <class Block, class Make>
void check_shared_equals_own(Make make, bool with_time) {
  const Outputs own = run_pair<Block>(make, false, with_time);
  const Outputs shared = run_pair<Block>(make, true, with_time);
  REQUIRE(bits_equal(shared.ya, own.ya));
  REQUIRE(bits_equal(shared.yb, own.yb));
  REQUIRE(bits_equal(shared.dxa, own.dxa));
  REQUIRE(bits_equal(shared.dxb, own.dxb));
  REQUIRE(bits_equal(shared.dta, own.dta));
  REQUIRE(bits_equal(shared.dtb, own.dtb));
  REQUIRE(shared.grads == own.grads);
}

// Adapts an attention layer (forward(x, y, ws)) to the block interface above (no time embedding).
template <class Attn>
struct AsBlock {
  using Workspace = typename Attn::Workspace;
  Attn attn;
  void forward(const Tensor<double>& x, const Tensor<double>*, Tensor<double>& y, Workspace& ws) {
    attn.forward(x, y, ws);
  }
  void backward(const Tensor<double>& x, const Tensor<double>*, const Tensor<double>& dy, Tensor<double>* dx,
                Tensor<double>*, Workspace& ws) {
    attn.backward(x, dy, dx, ws);
  }
};

}  // namespace

TEST_CASE("blocks sharing a workspace compute what each computes alone") {
  SECTION("ResnetBlock (with res_conv)") {
    check_shared_equals_own<nn::ResnetBlock<double>>(
        [](ParameterStore<double>& s, const char* name, Index dim) {
          return nn::ResnetBlock<double>(s, name, dim, 8, 5, 4);
        },
        true);
  }
  SECTION("ConvNextBlock (with res_conv)") {
    check_shared_equals_own<nn::ConvNextBlock<double>>(
        [](ParameterStore<double>& s, const char* name, Index dim) {
          return nn::ConvNextBlock<double>(s, name, dim, 8, 5, 2);
        },
        true);
  }
}

TEST_CASE("attention layers sharing a workspace compute what each computes alone") {
  // UnetAttention: Residual(PreNorm(LinearAttention | Attention)); a network shares one workspace among all of them.
  using Attn = AsBlock<UnetAttention<double>>;
  SECTION("LinearAttention then Attention") {
    check_shared_equals_own<Attn>(
        [](ParameterStore<double>& s, const char* name, Index dim) {
          const AttentionKind kind = name[0] == 'a' ? AttentionKind::Linear : AttentionKind::Full;
          return Attn{UnetAttention<double>(s, name, kind, dim, 2, 3)};
        },
        false);
  }
  SECTION("two LinearAttention") {
    check_shared_equals_own<Attn>(
        [](ParameterStore<double>& s, const char* name, Index dim) {
          return Attn{UnetAttention<double>(s, name, AttentionKind::Linear, dim, 2, 3)};
        },
        false);
  }
  SECTION("two Attention") {
    check_shared_equals_own<Attn>(
        [](ParameterStore<double>& s, const char* name, Index dim) {
          return Attn{UnetAttention<double>(s, name, AttentionKind::Full, dim, 2, 3)};
        },
        false);
  }
}
