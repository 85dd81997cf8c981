#pragma once
// The kernels' per-thread scratch memory: packing buffers, im2col matrices, partial sums. This is the only
// per-thread memory of the library (layers and networks own theirs and pass it down explicitly: nn/workspace.hpp),
// and the list below is all of it. A buffer persists across calls on its thread and only grows, so after the first
// training step nothing is allocated.
//
// Each slot is one buffer per thread and element type. A kernel holds a slot for as long as a ScratchBuffer object
// lives; taking a slot that the same thread already holds (a kernel calling another that uses the same slot) throws
// instead of letting the two uses overwrite each other. Kernels take scratch only inside their own bodies and never
// hand it out.

#include <cstddef>

#include "diffusion/core/aligned_buffer.hpp"
#include "diffusion/core/enum_names.hpp"
#include "diffusion/core/error.hpp"

namespace diffusion::kernels {

enum class Scratch : int {
  Im2col,          // conv2d: im2col / col2im matrix of one image (bf16: two of its rows), per worker thread
  Im2colBf16,      // conv2d in bf16: one image's im2col matrix (or one panel of it) in bf16 panels, per worker thread
  Im2colPacked,    // conv2d with gemm_f32: one image's im2col matrix (or one panel of it) in fp32 panels, per worker
  Im2colMasks,     // conv2d: which lanes of each im2col row lie inside the image (calling thread)
  ConvWeights,     // conv2d: the flipped kernel of backward_data (calling thread)
  ConvOutput,      // conv2d_forward_add: one image's convolution before it is added
  NormPartials,    // group_norm_backward: per-(n, c) sums (calling thread)
  AttentionHead,   // attention backward: one head's (P, P) or (d, d) + 2 (d, P) gradients, per worker thread
  SoftmaxWork,     // softmax_cols: per-column double accumulators, per worker thread
  DepthwisePlane,  // depthwise conv: one zero-padded plane, per worker thread
  GemmPacking,     // gemm: Eigen's packed panels of A and B
  GemmPackingBf16, // gemm_bf16: one panel of B, rounded to bf16 in pairs, per worker thread
  GemmPackedA,     // gemm_bf16: A's tiles rounded to bf16 in pairs, per worker thread
  GemmSharedA,     // SharedA (gemm.hpp): one A packed for many GEMMs, the calling thread's, read by its workers
  GemmPanelF32,    // gemm_f32: one panel of B, per worker thread
  GemmPackedAF32,  // gemm_f32: A's tiles, per worker thread
  ChunkSums,       // sum_squares: one partial sum per chunk (calling thread)
  LinearPadding,   // linear: a zero-padded copy of the last, partial block of images, per worker thread
  KeysSoftmax,     // linear attention forward that keeps nothing: one head's softmaxed keys (d, P), per worker thread
};

namespace detail {
inline constexpr diffusion::detail::NameEntry<Scratch> kScratchNames[] = {
    {Scratch::Im2col, "Im2col"},           {Scratch::Im2colBf16, "Im2colBf16"},
    {Scratch::Im2colPacked, "Im2colPacked"}, {Scratch::Im2colMasks, "Im2colMasks"},
    {Scratch::ConvWeights, "ConvWeights"},
    {Scratch::ConvOutput, "ConvOutput"},   {Scratch::NormPartials, "NormPartials"},
    {Scratch::AttentionHead, "AttentionHead"}, {Scratch::SoftmaxWork, "SoftmaxWork"},
    {Scratch::DepthwisePlane, "DepthwisePlane"}, {Scratch::GemmPacking, "GemmPacking"},
    {Scratch::GemmPackingBf16, "GemmPackingBf16"}, {Scratch::GemmPackedA, "GemmPackedA"},
    {Scratch::GemmSharedA, "GemmSharedA"}, {Scratch::GemmPanelF32, "GemmPanelF32"},
    {Scratch::GemmPackedAF32, "GemmPackedAF32"},
    {Scratch::ChunkSums, "ChunkSums"},     {Scratch::LinearPadding, "LinearPadding"},
    {Scratch::KeysSoftmax, "KeysSoftmax"}};
}  // namespace detail

inline const char* scratch_name(Scratch s) { return diffusion::detail::enum_name(detail::kScratchNames, s); }

// At least n elements of T from this thread's `Slot` buffer, held until destruction. Contents are unspecified.
template <class T, Scratch Slot>
class ScratchBuffer {
 public:
  explicit ScratchBuffer(std::size_t n) : state_(state()) {
    DIFFUSION_CHECK(!state_.held, "kernels: scratch slot " << scratch_name(Slot)
                                                           << " taken twice on one thread (two uses would overlap)");
    if (state_.buffer.size() < n) state_.buffer.resize(n);
    state_.held = true;
  }
  ~ScratchBuffer() { state_.held = false; }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  T* data() const { return state_.buffer.data(); }

 private:
  struct State {
    AlignedBuffer<T> buffer;
    bool held = false;
  };
  static State& state() {
    thread_local State s;
    return s;
  }
  State& state_;
};

}  // namespace diffusion::kernels
