#pragma once
// Where the layers' memory lives (STYLE.md "Memory and ownership"; llm.c's activations and their gradient mirror):
//
//  - What forward saves for backward is owned by the layer that saves it (members, allocated on the first batch,
//    reused after: tensors only grow).
//  - Temporaries of one call (backward's gradient buffers, forward values that backward does not read) are the
//    layer's `Workspace`, a struct that the caller owns and passes in explicitly. One workspace serves every layer
//    of its kind in a network, because layers run one after the other: gradient memory is one block's worth, not
//    the network's. Workspaces nest as the layers do (PreNormResidual's holds its inner layer's), so two buffers
//    live at the same time are always two different members: a clash cannot be written without naming the same
//    member twice, which review sees. Network code owns its workspaces (model/unet.hpp).
//  - A block's gradients of its saved activations mirror them: the same struct (`Activations`) serves for both,
//    its members listed once more in `tensors()`, and zero_grads sizes and zeroes the whole mirror in one pass at
//    the start of backward. A member missing from tensors() fails to compile (zero_grads checks the count).
//  - Per-thread scratch belongs to the kernels alone (kernels/scratch.hpp).
//  - An inference forward (ForwardMode::Inference: sampling, evaluation) keeps nothing for backward: what training
//    would save goes to workspace buffers of the same shapes instead (a block's gradient mirror, which is free until
//    a backward), so that one block's worth serves every layer and the layers' own members stay empty.
//
// A layer used on its own (tests, benchmarks) can be a Standalone<Layer>: the layer with a workspace of its own, and
// forward/backward without the workspace argument.

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

#include "diffusion/core/tensor.hpp"

namespace diffusion::nn {

// What a forward pass keeps. Training: what backward reads, in the layer's members. Inference: nothing; backward
// may not follow (the network refuses it).
enum class ForwardMode { Training, Inference };

// Resizes g to x's shape and zeroes it: the start of every gradient buffer's life in a backward pass.
template <class T>
void zero_like(Tensor<T>& g, const TensorView<T>& x) {
  g.resize(x.shape());
  g.zero();
}

namespace detail {
template <class Grads, class Acts, std::size_t... I>
void zero_each(Grads& grads, const Acts& acts, std::index_sequence<I...>) {
  (zero_like(std::get<I>(grads), std::get<I>(acts)), ...);
}
}  // namespace detail

// Every tensor of `grads` sized as the same member of `acts` and zeroed. `Mirror` is a struct of tensors with a
// `template <class Self> static auto tensors(Self& s)` returning std::tie of all its members.
template <class Mirror>
void zero_grads(Mirror& grads, const Mirror& acts) {
  auto g = Mirror::tensors(grads);
  const auto a = Mirror::tensors(acts);
  constexpr std::size_t n = std::tuple_size<decltype(g)>::value;
  using Element = std::decay_t<std::tuple_element_t<0, decltype(g)>>;
  static_assert(sizeof(Mirror) == n * sizeof(Element), "Mirror::tensors() must list every member of the struct");
  detail::zero_each(g, a, std::make_index_sequence<n>{});
}

// The workspace of a residual block (ResnetBlock, ConvNextBlock): the gradient mirror of its saved activations and
// the residual conv's output.
template <class T, class Activations>
struct BlockWorkspace {
  Activations grads;  // backward: d(loss)/d(each saved activation)
  Tensor<T> res;      // forward: res_conv(x) (N, dim_out, H, W), not saved
};

// Layer (constructed with Layer's arguments) plus its own workspace, passed as the last argument of every forward
// and backward call.
template <class Layer>
class Standalone : public Layer {
 public:
  using Layer::Layer;
  template <class... Args>
  void forward(Args&&... args) {
    Layer::forward(std::forward<Args>(args)..., workspace_);
  }
  template <class... Args>
  void backward(Args&&... args) {
    Layer::backward(std::forward<Args>(args)..., workspace_);
  }

 private:
  typename Layer::Workspace workspace_;
};

}  // namespace diffusion::nn
