#pragma once
// 2-D convolution kernels (cross-correlation, as PyTorch's Conv2d), NCHW, any kernel size, stride, padding and
// groups. Four entry points cover Conv2d and ConvTranspose2d (whose forward is this backward_data):
//   conv2d_forward         y  = conv(x, w) + bias             (y ASSIGNED)
//   conv2d_forward_add     y += conv(x, w)                    (ACCUMULATED; ConvTranspose2d's input gradient)
//   conv2d_backward_data   dx += conv^T(dy, w)                (ACCUMULATED)
//   conv2d_backward_weight dw += corr(x, dy)                  (ACCUMULATED)
//   channel_sum            db += sum over N, H, W of dy       (ACCUMULATED; the bias gradient)
// Weights are (C_out, C_in / groups, KH, KW). General convolutions go through im2col + GEMM per image and group;
// 1x1 stride-1 convolutions skip im2col; the input gradient of other stride-1 convolutions is computed as a
// convolution of dy with the flipped kernel (im2col of dy + one deep GEMM; col2im is left to strided ones);
// stride-1 depthwise convolutions (one input and one output channel per group, e.g. the ConvNeXt 7x7) use SIMD
// planes, other depthwise ones the reference loops. Each direction is a table of implementations (see Dispatch).
// Where the GEMM packs its own operands (gemm_f32 on AVX-512 CPUs, gemm_bf16 with bf16 matmuls: kernels/precision.hpp)
// the weights are packed into tiles once per call (SharedA), and the im2col rows go straight into packed panels: no
// im2col matrix (the numbers kernels::gemm gives on it). For "same" stride-1 convolutions (3x3 padding 1, 7x7 padding
// 3, and their flipped-kernel input gradients) the panels are read from the image itself, 16 pixels per masked load
// (Im2colMasks), one panel of 32 pixels at a time, and multiplied while in cache; in the weight gradient too. In fp32
// the forward and the input gradient skip the panel: the micro-kernel does the masked loads (implicit GEMM).
// Work is split over images (forward, backward_data), over fixed blocks of the weight gradient (backward_weight) or
// over channels: never by thread count.
// Parameter gradients (backward_weight, channel_sum) are folds over the batch in image order: g += g_0, then g_1, ...,
// each image's contribution computed from that image alone, the same way whatever the batch size. So the gradient of
// a batch equals the gradient accumulated over consecutive sub-batches of it, bit for bit: gradient accumulation
// (train/trainer.hpp) is exact.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>

#include "diffusion/core/parallel.hpp"
#include "diffusion/kernels/depthwise_conv2d.hpp"
#include "diffusion/kernels/dispatch.hpp"
#include "diffusion/kernels/gemm.hpp"
#include "diffusion/kernels/scratch.hpp"
#include "diffusion/kernels/simd.hpp"

namespace diffusion::kernels {

struct Conv2dGeometry {
  Index batch = 0, in_channels = 0, in_height = 0, in_width = 0;
  Index out_channels = 0, out_height = 0, out_width = 0;
  Index kernel_h = 1, kernel_w = 1, stride = 1, padding = 0, groups = 1;

  // Output size of a convolution: floor((in + 2 pad - k) / stride) + 1.
  static Index output_size(Index in, Index kernel, Index stride, Index padding) {
    return (in + 2 * padding - kernel) / stride + 1;
  }
  static Conv2dGeometry make(Index n, Index c_in, Index h, Index w, Index c_out, Index kernel, Index stride,
                             Index padding, Index groups) {
    Conv2dGeometry g;
    g.batch = n, g.in_channels = c_in, g.in_height = h, g.in_width = w;
    g.out_channels = c_out, g.kernel_h = kernel, g.kernel_w = kernel;
    g.stride = stride, g.padding = padding, g.groups = groups;
    g.out_height = output_size(h, kernel, stride, padding);
    g.out_width = output_size(w, kernel, stride, padding);
    return g;
  }

  Index in_per_group() const { return in_channels / groups; }
  Index out_per_group() const { return out_channels / groups; }
  Index in_pixels() const { return in_height * in_width; }
  Index out_pixels() const { return out_height * out_width; }
  Index col_rows() const { return in_per_group() * kernel_h * kernel_w; }  // rows of the im2col matrix
  Index weight_size() const { return out_channels * col_rows(); }
  bool is_pointwise() const { return kernel_h == 1 && kernel_w == 1 && stride == 1 && padding == 0; }
  bool is_depthwise() const { return in_per_group() == 1 && out_per_group() == 1; }
  // Depthwise with stride 1 and padding below the kernel size: the SIMD plane kernels of depthwise_conv2d.hpp.
  bool is_simd_depthwise() const {
    return is_depthwise() && stride == 1 && padding < kernel_h && kernel_h == kernel_w && kernel_h * kernel_w <= 64;
  }
  // Stride 1, square kernel, padding below the kernel size: the input gradient is itself a stride-1 convolution
  // (of dy with the flipped kernel, padding k - 1 - p), the geometry transposed() describes.
  bool is_stride1_transposable() const { return stride == 1 && kernel_h == kernel_w && padding < kernel_h; }
  Conv2dGeometry transposed() const {
    Conv2dGeometry t = *this;
    t.in_channels = out_channels, t.in_height = out_height, t.in_width = out_width;
    t.out_channels = in_channels, t.out_height = in_height, t.out_width = in_width;
    t.padding = kernel_h - 1 - padding;
    return t;
  }
  DepthwisePlane plane() const {
    return {in_height, in_width, out_height, out_width, kernel_h, kernel_w, padding};
  }
  // The plane geometry of the input gradient: dy (out) correlated with the flipped kernel, padding k - 1 - p.
  DepthwisePlane transposed_plane() const {
    return {out_height, out_width, in_height, in_width, kernel_h, kernel_w, kernel_h - 1 - padding};
  }
};

// The blocks of the weight gradient (C_out / groups, K = col_rows()) of one group that conv2d_backward_weight computes
// in parallel: row_blocks ranges of `rows` columns of dw (rows of the im2col matrix; the last range may be shorter)
// times co_blocks ranges of `channels` output channels. A function of the shape alone (results depend on it, so
// never on the thread count): ranges of about 64 im2col rows, in an even number (balanced on 2 threads), rounded
// to 8; output channels split by 64 when there is no im2col to repeat (1x1) and by 32 when K is too short to split.
struct WeightBlocks {
  Index row_blocks = 1, rows = 1, co_blocks = 1, channels = 1;
};
inline WeightBlocks weight_blocks(const Conv2dGeometry& g) {
  const Index K = g.col_rows(), cog = g.out_per_group();
  WeightBlocks b;
  b.row_blocks = K >= 96 ? 2 * std::max<Index>(1, (K + 64) / 128) : 1;
  b.rows = ((K + b.row_blocks - 1) / b.row_blocks + 7) / 8 * 8;
  b.row_blocks = (K + b.rows - 1) / b.rows;
  b.channels = g.is_pointwise() ? std::min<Index>(cog, 64) : b.row_blocks == 1 ? std::min<Index>(cog, 32) : cog;
  b.co_blocks = (cog + b.channels - 1) / b.channels;
  return b;
}

namespace detail {

// Valid output range [lo, hi) of an output coordinate o for kernel tap k: 0 <= o * stride - pad + k < in.
inline void valid_range(Index out, Index in, Index k, Index stride, Index pad, Index& lo, Index& hi) {
  // o >= ceil((pad - k) / stride) and o <= floor((in - 1 + pad - k) / stride)
  const Index a = pad - k;
  lo = a <= 0 ? 0 : (a + stride - 1) / stride;
  const Index b = in - 1 + pad - k;
  hi = b < 0 ? 0 : std::min(out, b / stride + 1);
  if (lo > hi) lo = hi;
}

// One row of the im2col matrix: row (OH * OW) = the input plane (H, W) shifted for kernel tap (i, j), zeros where
// the tap falls outside the image.
template <class T>
void im2col_row(const Conv2dGeometry& g, const T* plane, Index i, Index j, T* row) {
  const Index OH = g.out_height, OW = g.out_width, H = g.in_height, W = g.in_width, s = g.stride, p = g.padding;
  Index oh_lo, oh_hi, ow_lo, ow_hi;
  valid_range(OH, H, i, s, p, oh_lo, oh_hi);
  valid_range(OW, W, j, s, p, ow_lo, ow_hi);
  std::fill(row, row + oh_lo * OW, T(0));
  std::fill(row + oh_hi * OW, row + OH * OW, T(0));
  if (s == 1 && OW == W) {
    // Same-size rows: rows oh_lo..oh_hi of the output are one contiguous shifted block of the input;
    // copy it at once, then zero the columns that fell outside the image.
    const Index shift = j - p;  // input column = output column + shift
    const Index begin = oh_lo * OW, end = oh_hi * OW;
    const Index src = (oh_lo - p + i) * W + shift;
    const Index lo = std::max<Index>(begin, -src + begin), hi = std::min<Index>(end, H * W - src + begin);
    if (hi > lo) std::memcpy(row + lo, plane + src + (lo - begin), sizeof(T) * static_cast<std::size_t>(hi - lo));
    std::fill(row + begin, row + std::max(begin, lo), T(0));
    std::fill(row + std::min(end, std::max(hi, begin)), row + end, T(0));
    for (Index oh = oh_lo; oh < oh_hi; ++oh) {
      T* out = row + oh * OW;
      for (Index ow = 0; ow < ow_lo; ++ow) out[ow] = T(0);
      for (Index ow = ow_hi; ow < OW; ++ow) out[ow] = T(0);
    }
    return;
  }
  for (Index oh = oh_lo; oh < oh_hi; ++oh) {
    T* out = row + oh * OW;
    const T* in = plane + (oh * s - p + i) * W;
    std::fill(out, out + ow_lo, T(0));
    if (s == 1) {
      std::memcpy(out + ow_lo, in + ow_lo - p + j, sizeof(T) * static_cast<std::size_t>(ow_hi - ow_lo));
    } else {
      for (Index ow = ow_lo; ow < ow_hi; ++ow) out[ow] = in[ow * s - p + j];
    }
    std::fill(out + ow_hi, out + OW, T(0));
  }
}

// Row k of the im2col matrix (C * KH * KW, OH * OW) of one image's channels x (C, H, W): channel k / (KH * KW),
// kernel tap (k % (KH * KW)) / KW, k % KW.
template <class T>
void im2col_row_k(const Conv2dGeometry& g, const T* x, Index k, T* row) {
  const Index taps = g.kernel_h * g.kernel_w, tap = k % taps;
  im2col_row(g, x + (k / taps) * g.in_pixels(), tap / g.kernel_w, tap % g.kernel_w, row);
}

// Rows [k0, k1) of the im2col matrix of one image's channels x (C, H, W), into col ((k1 - k0), OH * OW).
template <class T>
void im2col_rows(const Conv2dGeometry& g, const T* x, Index k0, Index k1, T* col) {
  for (Index k = k0; k < k1; ++k) im2col_row_k(g, x, k, col + (k - k0) * g.out_pixels());
}

// col (C * KH * KW, OH * OW) from one image's channels x (C, H, W).
template <class T>
void im2col(const Conv2dGeometry& g, Index channels, const T* x, T* col) {
  im2col_rows(g, x, 0, channels * g.kernel_h * g.kernel_w, col);
}

// dx (C, H, W) += col2im(dcol (C * KH * KW, OH * OW)).
template <class T>
void col2im_add(const Conv2dGeometry& g, Index channels, const T* dcol, T* dx) {
  const Index OH = g.out_height, OW = g.out_width, H = g.in_height, W = g.in_width, s = g.stride, p = g.padding;
  for (Index c = 0; c < channels; ++c) {
    T* plane = dx + c * H * W;
    for (Index i = 0; i < g.kernel_h; ++i) {
      Index oh_lo, oh_hi;
      valid_range(OH, H, i, s, p, oh_lo, oh_hi);
      for (Index j = 0; j < g.kernel_w; ++j) {
        Index ow_lo, ow_hi;
        valid_range(OW, W, j, s, p, ow_lo, ow_hi);
        const T* row = dcol + ((c * g.kernel_h + i) * g.kernel_w + j) * OH * OW;
        for (Index oh = oh_lo; oh < oh_hi; ++oh) {
          T* out = plane + (oh * s - p + i) * W;
          const T* in = row + oh * OW;
          for (Index ow = ow_lo; ow < ow_hi; ++ow) out[ow * s - p + j] += in[ow];
        }
      }
    }
  }
}

}  // namespace detail

namespace reference {

// Direct seven-loop convolution; the definition the fast kernels are tested against.
template <class T>
void conv2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  const Index cig = g.in_per_group(), cog = g.out_per_group();
  for (Index n = 0; n < g.batch; ++n)
    for (Index co = 0; co < g.out_channels; ++co) {
      const Index grp = co / cog;
      for (Index oh = 0; oh < g.out_height; ++oh)
        for (Index ow = 0; ow < g.out_width; ++ow) {
          double sum = bias ? static_cast<double>(bias[co]) : 0.0;
          for (Index ci = 0; ci < cig; ++ci)
            for (Index i = 0; i < g.kernel_h; ++i)
              for (Index j = 0; j < g.kernel_w; ++j) {
                const Index ih = oh * g.stride - g.padding + i, iw = ow * g.stride - g.padding + j;
                if (ih < 0 || ih >= g.in_height || iw < 0 || iw >= g.in_width) continue;
                const T xv = x[((n * g.in_channels + grp * cig + ci) * g.in_height + ih) * g.in_width + iw];
                const T wv = w[((co * cig + ci) * g.kernel_h + i) * g.kernel_w + j];
                sum += static_cast<double>(xv) * static_cast<double>(wv);
              }
          y[((n * g.out_channels + co) * g.out_height + oh) * g.out_width + ow] = static_cast<T>(sum);
        }
    }
}

template <class T>
void conv2d_backward_data(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  const Index cig = g.in_per_group(), cog = g.out_per_group();
  for (Index n = 0; n < g.batch; ++n)
    for (Index co = 0; co < g.out_channels; ++co) {
      const Index grp = co / cog;
      for (Index oh = 0; oh < g.out_height; ++oh)
        for (Index ow = 0; ow < g.out_width; ++ow) {
          const T d = dy[((n * g.out_channels + co) * g.out_height + oh) * g.out_width + ow];
          for (Index ci = 0; ci < cig; ++ci)
            for (Index i = 0; i < g.kernel_h; ++i)
              for (Index j = 0; j < g.kernel_w; ++j) {
                const Index ih = oh * g.stride - g.padding + i, iw = ow * g.stride - g.padding + j;
                if (ih < 0 || ih >= g.in_height || iw < 0 || iw >= g.in_width) continue;
                dx[((n * g.in_channels + grp * cig + ci) * g.in_height + ih) * g.in_width + iw] +=
                    d * w[((co * cig + ci) * g.kernel_h + i) * g.kernel_w + j];
              }
        }
    }
}

template <class T>
void conv2d_backward_weight(const Conv2dGeometry& g, const T* x, const T* dy, T* dw) {
  const Index cig = g.in_per_group(), cog = g.out_per_group();
  for (Index co = 0; co < g.out_channels; ++co) {
    const Index grp = co / cog;
    for (Index ci = 0; ci < cig; ++ci)
      for (Index i = 0; i < g.kernel_h; ++i)
        for (Index j = 0; j < g.kernel_w; ++j) {
          for (Index n = 0; n < g.batch; ++n) {  // a fold over the batch, image by image, as the fast kernels
            double sum = 0.0;
            for (Index oh = 0; oh < g.out_height; ++oh)
              for (Index ow = 0; ow < g.out_width; ++ow) {
                const Index ih = oh * g.stride - g.padding + i, iw = ow * g.stride - g.padding + j;
                if (ih < 0 || ih >= g.in_height || iw < 0 || iw >= g.in_width) continue;
                sum += static_cast<double>(dy[((n * g.out_channels + co) * g.out_height + oh) * g.out_width + ow]) *
                       static_cast<double>(x[((n * g.in_channels + grp * cig + ci) * g.in_height + ih) * g.in_width + iw]);
              }
            dw[((co * cig + ci) * g.kernel_h + i) * g.kernel_w + j] += static_cast<T>(sum);
          }
        }
  }
}

template <class T>
void channel_sum(Index batch, Index channels, Index pixels, const T* dy, T* db) {
  for (Index c = 0; c < channels; ++c) {
    double sum = 0.0;
    for (Index n = 0; n < batch; ++n)
      for (Index p = 0; p < pixels; ++p) sum += static_cast<double>(dy[(n * channels + c) * pixels + p]);
    db[c] += static_cast<T>(sum);
  }
}

}  // namespace reference

// ---- The fast implementations, one function per method and direction ----
namespace detail {

// Depthwise, stride 1 (is_simd_depthwise): the SIMD plane kernels of depthwise_conv2d.hpp, one plane per task.
template <class T>
void forward_depthwise_simd(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  const Index P = g.out_pixels(), K = g.col_rows();
  parallel_for(0, g.batch * g.out_channels, double(K * P), [&](Index nc) {
    const Index c = nc % g.out_channels;
    depthwise_plane_forward(g.plane(), x + nc * g.in_pixels(), w + c * K, bias ? bias[c] : T(0), y + nc * P, false);
  });
}

#ifdef DIFFUSION_HAVE_AVX512
// Whether the im2col matrix can be read straight from the image, 16 output pixels at a time: stride 1 and output
// rows as wide as the input's (a "same" convolution: 3x3 padding 1, 7x7 padding 3, and the input gradient of either),
// so that for kernel tap (i, j) output pixel q reads input pixel q + (i - p) W + (j - p), wherever the tap falls
// inside the image.
inline bool im2col_reads_image(const Conv2dGeometry& g) {
  return g.stride == 1 && g.out_width == g.in_width && g.kernel_h <= 16 && g.kernel_w <= 16;
}

// For such a convolution, which lanes of each 16-pixel vector each kernel tap reads from inside the image (zero
// elsewhere, and past the last pixel), and where in the input plane: made once per convolution call by the calling
// thread (its own scratch), read by the workers, so that every row of the im2col matrix is one masked load per 16
// pixels. Masked-off lanes are never read (AVX-512 suppresses their faults), so a load's address may lie outside the
// plane.
class Im2colMasks {
 public:
  explicit Im2colMasks(const Conv2dGeometry& g)
      : taps_(g.kernel_h * g.kernel_w), plane_size_(g.in_pixels()), vectors_((g.out_pixels() + 15) / 16),
        masks_(static_cast<std::size_t>(vectors_ * taps_)) {
    const Index W = g.in_width, H = g.in_height, p = g.padding, P = g.out_pixels();
    for (Index tap = 0; tap < taps_; ++tap) offset_[tap] = (tap / g.kernel_w - p) * W + (tap % g.kernel_w - p);
    alignas(64) std::int32_t oh[16], ow[16];
    for (Index v = 0; v < vectors_; ++v) {
      Index r = (16 * v) / W, c = (16 * v) % W;
      for (int lane = 0; lane < 16; ++lane) {
        oh[lane] = static_cast<std::int32_t>(r), ow[lane] = static_cast<std::int32_t>(c);
        if (++c == W) c = 0, ++r;
      }
      const __m512i rows = _mm512_load_si512(oh), cols = _mm512_load_si512(ow);
      const __mmask16 pixels = first_lanes(P - 16 * v);
      __mmask16* m = masks_.data() + v * taps_;
      for (Index i = 0, tap = 0; i < g.kernel_h; ++i) {
        // 0 <= oh + i - p < H
        const __mmask16 row_inside = static_cast<__mmask16>(
            pixels & _mm512_cmpge_epi32_mask(rows, _mm512_set1_epi32(static_cast<int>(p - i))) &
            _mm512_cmplt_epi32_mask(rows, _mm512_set1_epi32(static_cast<int>(H + p - i))));
        for (Index j = 0; j < g.kernel_w; ++j, ++tap)
          m[tap] = static_cast<__mmask16>(
              row_inside & _mm512_cmpge_epi32_mask(cols, _mm512_set1_epi32(static_cast<int>(p - j))) &
              _mm512_cmplt_epi32_mask(cols, _mm512_set1_epi32(static_cast<int>(W + p - j))));
      }
    }
  }

  Index taps() const { return taps_; }
  Index plane_size() const { return plane_size_; }  // H * W of the input
  // The masks of every vector and tap: mask_table()[v * taps() + tap].
  const __mmask16* mask_table() const { return masks_.data(); }
  // Where tap `tap` reads in the input plane, relative to the output pixel: offsets()[tap] (taps() of them).
  const Index* offsets() const { return offset_; }
  // The masks of the 16-pixel vector v for every tap (taps() of them); all lanes off for v past the last vector.
  const __mmask16* vector_masks(Index v) const { return v < vectors_ ? masks_.data() + v * taps_ : kNoLanes; }

  // Calls row(k, low, high) for every row k = (channel, tap) of the im2col matrix of x (channels, H, W), in order,
  // with its values at output pixels col0 .. col0 + 31 (col0 a multiple of 32; zeros past the last pixel).
  // The sizes and table pointers are copied into locals first: the caller's stores (the panel, through may-alias
  // vector types) would otherwise make GCC reload them from this object, and redo the index arithmetic, per row.
  template <class Row>
  void for_each_row(Index channels, const float* x, Index col0, Row&& row) const {
    const Index v = col0 / 16, taps = taps_, plane_size = plane_size_;
    const __mmask16* low_masks = vector_masks(v);
    const __mmask16* high_masks = vector_masks(v + 1);  // no lanes past the last vector: zeros
    const Index* offset = offset_;
    const float* column = x + 16 * v;
    for (Index c = 0, k = 0; c < channels; ++c, column += plane_size) {
      for (Index tap = 0; tap < taps; ++tap, ++k) {
        const float* at = column + offset[tap];
        row(k, _mm512_maskz_loadu_ps(low_masks[tap], at), _mm512_maskz_loadu_ps(high_masks[tap], at + 16));
      }
    }
  }

 private:
  inline static const __mmask16 kNoLanes[256] = {};
  Index taps_, plane_size_, vectors_;
  ScratchBuffer<__mmask16, Scratch::Im2colMasks> masks_;  // [vector][tap]
  Index offset_[256];
};

// _mm512_maskz_loadu_ps(mask, p) for f32_image_micro_kernel, as an asm that GCC 12's optimiser does not see as a
// memory access. With the intrinsic (or an asm naming the memory it reads) GCC stored every accumulator to the stack
// before each load, 28 stores per step, in case the load read them: the loop ran 2.3x slower than the packed one.
// Sound here because the kernel is never inlined and nothing it stores (C, after the loop) is what it loads (the
// image). Clang takes the intrinsic.
inline __m512 masked_load16(__mmask16 mask, const float* p) {
#if defined(__GNUC__) && !defined(__clang__)
  __m512 r;
  asm("vmovups (%1), %0%{%2%}%{z%}" : "=v"(r) : "r"(p), "Yk"(mask));
  return r;
#else
  return _mm512_maskz_loadu_ps(mask, p);
#endif
}

// Implicit GEMM, fp32: C tile (rows x cols) = alpha * a_tile . im2col(x)[:, col0 .. col0 + cols) + beta * C for a
// convolution whose im2col rows can be read from the image (Im2colMasks), x (channels, H, W), a_tile packed as
// f32_micro_kernel's (K = channels * taps). The micro-kernel loads each im2col row's 32 pixels from the image with
// two masked loads where the packed kernel loads them from a panel: no panel is written (building it cost as much as
// a sixth of a 3x3 convolution), and the multiply-adds and their order are f32_micro_kernel's: the same bits.
// Never inlined, for the reason bf16_micro_kernel is not.
template <int Rows, int Vectors>
__attribute__((noinline)) void f32_image_micro_kernel(const Im2colMasks& masks, Index channels, const float* x,
                                                      Index col0, const float* a, float* C, Index ldc, int rows,
                                                      int cols, float alpha, float beta) {
  constexpr int mr = kF32Mr;
  const Index taps = masks.taps(), plane_size = masks.plane_size();
  const Index* offset = masks.offsets();
  const __mmask16* low = masks.vector_masks(col0 / 16);
  const __mmask16* high = masks.vector_masks(col0 / 16 + 1);
  __m512 acc[Rows][Vectors];
  for (int i = 0; i < Rows; ++i)
    for (int v = 0; v < Vectors; ++v) acc[i][v] = _mm512_setzero_ps();
  // k = (channel, tap) in one loop, the plane advancing after the last tap.
  const float* plane = x + col0;
  const Index K = channels * taps;
  for (Index k = 0, tap = 0; k < K; ++k, a += mr) {
    __m512 bv[Vectors];
    bv[0] = masked_load16(low[tap], plane + offset[tap]);
    if constexpr (Vectors == 2) bv[1] = masked_load16(high[tap], plane + offset[tap] + 16);
    for (int i = 0; i < Rows; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      for (int v = 0; v < Vectors; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
    if (++tap == taps) tap = 0, plane += plane_size;
  }
  for (int i = 0; i < Rows; ++i)  // rows <= Rows
    if (i < rows)
      for (int v = 0; v < Vectors; ++v)
        store_tile_vector(acc[i][v], C + i * ldc + 16 * v, first_lanes(cols - 16 * v), alpha, beta);
}

// y's columns [col0, col0 + cols) (cols <= 32) = W . im2col(x)[:, col0 .. col0 + cols) + beta y, every tile of the
// packed W (M rows): f32_multiply_panel with the panel read from the image, the same tile sizes.
inline void f32_multiply_image_panel(Index M, const Im2colMasks& masks, Index channels, const float* x,
                                     const float* a_packed, float beta, float* y, Index ldy, Index col0, int cols) {
  const Index K = channels * masks.taps(), m_tiles = (M + kF32Mr - 1) / kF32Mr;
  for (Index t = 0; t < m_tiles; ++t) {
    const int rows = static_cast<int>(std::min<Index>(kF32Mr, M - t * kF32Mr));
    float* c = y + t * kF32Mr * ldy + col0;
    const float* a = a_packed + t * kF32Mr * K;
    f32_tile_shape(rows, cols, [&](auto rows_c, auto vectors_c) {
      f32_image_micro_kernel<decltype(rows_c)::value, decltype(vectors_c)::value>(masks, channels, x, col0, a, c,
                                                                                 ldy, rows, cols, 1.0f, beta);
    });
  }
}

// The weight gradient's B = im2col(x)^T of such a convolution, one GEMM panel of 32 columns (im2col rows k_begin ..
// k_begin + cols - 1 of x's; zeros for j >= cols) and one row per step along the pixels: dst[s * 32 + j] = word s of
// im2col row k_begin + j. load(at, masks, b) gives the 8 words b * 8 .. b * 8 + 7 of one im2col row (fp32: 8 pixels;
// bf16: 8 pairs of pixels), `at` being where the row's output pixel 0 reads in the image and masks[v * taps] the mask
// of its 16-pixel vector v; 8 rows at a time are loaded and transposed (the packing's transposed case without the
// im2col matrix). dst holds blocks * 8 rows of 32 words. The rows' addresses and mask columns are worked out once
// per panel, into locals: through the Im2colMasks object GCC reloaded them after every store.
template <class Word, class Load8Words>
inline void pack_im2col_transposed(const Im2colMasks& masks, const float* x, Index k_begin, int cols, Index blocks,
                                   Load8Words load, Word* dst) {
  constexpr int nr = kF32Nr;
  static_assert(sizeof(Word) == 4, "a word is one float or one bf16 pair");
  const Index taps = masks.taps();
  const float* at_of[nr];
  const __mmask16* masks_of[nr];
  for (int j = 0; j < cols; ++j) {
    const Index tap = (k_begin + j) % taps;
    at_of[j] = x + (k_begin + j) / taps * masks.plane_size() + masks.offsets()[tap];
    masks_of[j] = masks.mask_table() + tap;
  }
  for (Index b = 0; b < blocks; ++b) {
    for (int j0 = 0; j0 < nr; j0 += 8) {
      __m256i r[8];
      for (int q = 0; q < 8; ++q)
        r[q] = j0 + q < cols ? load(at_of[j0 + q], masks_of[j0 + q], b) : _mm256_setzero_si256();
      transpose8x8(r);
      for (int s = 0; s < 8; ++s) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (8 * b + s) * nr + j0), r[s]);
    }
  }
}
#endif

#ifndef DIFFUSION_HAVE_AVX512
struct Im2colMasks {};  // without AVX-512 the im2col rows are built in memory
#endif

// Makes `masks` for g where its im2col matrix (not 1x1) can be read from the image (im2col_reads_image) and goes
// into panels that our GEMMs pack themselves: where `packed` (the GEMMs' A operand) is packed (gemm_f32, or gemm_bf16
// in a bf16 scope; never for the reference kernels, Eigen or oneDNN). Leaves it empty otherwise.
template <class T>
void make_im2col_masks(const Conv2dGeometry& g, const SharedA<T>& packed, std::optional<Im2colMasks>& masks) {
#ifdef DIFFUSION_HAVE_AVX512
  if (!g.is_pointwise() && im2col_reads_image(g) && (packed.bf16_tiles(0) || packed.f32_tiles(0))) masks.emplace(g);
#else
  (void)g, (void)packed, (void)masks;
#endif
}

// dw_block (cog x (k1 - k0), leading dimension ldw) += dy_n . im2col(x_n)^T restricted to im2col rows [k0, k1), with
// dy_n packed in `dy_shared` (matrix `matrix`) and the panels of im2col(x_n)^T packed straight from the image
// (`masks`: see make_im2col_masks, made only where dy is packed). Returns false where that does not apply (no masks):
// the caller then builds the im2col rows and calls kernels::gemm. The same numbers, bit for bit.
template <class T>
bool weight_gradient_from_image(const Conv2dGeometry& g, const Im2colMasks* masks, const T* x,
                                const SharedA<T>& dy_shared, Index matrix, Index k0, Index k1, T* dw_block, Index ldw) {
  if constexpr (std::is_same_v<T, float>) {
    if (!masks) return false;
#ifdef DIFFUSION_HAVE_AVX512
    const Index P = g.out_pixels(), cog = dy_shared.rows();
#endif
#ifdef DIFFUSION_HAVE_AVX512_BF16
    if (const std::uint32_t* a_tiles = dy_shared.bf16_tiles(matrix)) {
      const ScratchBuffer<std::uint32_t, Scratch::Im2colBf16> panel(
          static_cast<std::size_t>((P + 15) / 16 * 8 * kBf16Nr));
      const Index taps = masks->taps();
      for (Index col0 = 0; col0 < k1 - k0; col0 += kBf16Nr) {
        const int cols = static_cast<int>(std::min<Index>(kBf16Nr, k1 - k0 - col0));
        pack_im2col_transposed(*masks, x, k0 + col0, cols, (P + 15) / 16, [taps](const float* at, const __mmask16* m,
                                                                                Index b) {
          return bf16_pairs_along(_mm512_maskz_loadu_ps(m[b * taps], at + 16 * b));  // 16 pixels: 8 pairs
        }, panel.data());
        multiply_panel(cog, (P + 1) / 2, 1.0f, a_tiles, panel.data(), 1.0f, dw_block, ldw, col0, cols);
      }
      return true;
    }
#endif
#ifdef DIFFUSION_HAVE_AVX512
    if (const float* a_tiles = dy_shared.f32_tiles(matrix)) {
      const ScratchBuffer<float, Scratch::Im2colPacked> panel(static_cast<std::size_t>((P + 7) / 8 * 8 * kF32Nr));
      const Index taps = masks->taps();
      for (Index col0 = 0; col0 < k1 - k0; col0 += kF32Nr) {
        const int cols = static_cast<int>(std::min<Index>(kF32Nr, k1 - k0 - col0));
        pack_im2col_transposed(*masks, x, k0 + col0, cols, (P + 7) / 8, [taps](const float* at, const __mmask16* m,
                                                                              Index h) {
          const auto half = static_cast<__mmask8>(m[(h / 2) * taps] >> (8 * (h % 2)));  // pixels 8 h .. 8 h + 7
          return _mm256_castps_si256(_mm256_maskz_loadu_ps(half, at + 8 * h));
        }, panel.data());
        f32_multiply_panel(cog, P, 1.0f, a_tiles, panel.data(), 1.0f, dw_block, ldw, col0, cols);
      }
      return true;
    }
#endif
  }
  (void)g, (void)masks, (void)x, (void)dy_shared, (void)matrix, (void)k0, (void)k1, (void)dw_block, (void)ldw;
  return false;
}

// y = W_grp . im2col(x) + beta y for one image and group: x (channels, H, W), y (C_out / groups, OH * OW). With
// W packed in bf16 (a SharedA in a bf16 scope) or for gemm_f32, the im2col matrix goes straight into packed panels:
// with `masks` (make_im2col_masks) one panel of 32 pixels at a time, read from the image and multiplied while it is
// in cache; otherwise row by row through a buffer of one row (two in bf16) into panels of the whole matrix. The same
// numbers, bit for bit, as kernels::gemm on the im2col matrix, which is what Eigen and oneDNN get.
template <class T>
void im2col_gemm(const Conv2dGeometry& g, const Im2colMasks* masks, Index channels, const T* x,
                 const SharedA<T>& weights, Index grp, T beta, T* y) {
  const Index P = g.out_pixels(), K = channels * g.kernel_h * g.kernel_w;
#ifdef DIFFUSION_HAVE_AVX512_BF16
  if constexpr (std::is_same_v<T, float>) {
    if (const std::uint32_t* a_tiles = weights.bf16_tiles(grp)) {
      if (masks) {  // one panel at a time, straight from the image into bf16 pairs
        const Index pairs = (K + 1) / 2;
        const ScratchBuffer<std::uint32_t, Scratch::Im2colBf16> panel(static_cast<std::size_t>(pairs * kBf16Nr));
        for (Index col0 = 0; col0 < P; col0 += kBf16Nr) {
          std::uint32_t* d = panel.data();
          __m512 even_low = _mm512_setzero_ps(), even_high = _mm512_setzero_ps();
          masks->for_each_row(channels, x, col0, [&](Index k, __m512 low, __m512 high) {
            if (k % 2 == 0) {
              even_low = low, even_high = high;
              return;
            }
            _mm512_storeu_si512(d + (k / 2) * kBf16Nr, bf16_pairs_across(even_low, low));
            _mm512_storeu_si512(d + (k / 2) * kBf16Nr + 16, bf16_pairs_across(even_high, high));
          });
          if (K % 2 == 1) {  // the last pair's odd row is past the end: zeros, as pack_bf16_b_rows writes it
            _mm512_storeu_si512(d + (K / 2) * kBf16Nr, bf16_pairs_across(even_low, _mm512_setzero_ps()));
            _mm512_storeu_si512(d + (K / 2) * kBf16Nr + 16, bf16_pairs_across(even_high, _mm512_setzero_ps()));
          }
          multiply_panel(weights.rows(), pairs, 1.0f, a_tiles, d, beta, y, P, col0,
                         static_cast<int>(std::min<Index>(kBf16Nr, P - col0)));
        }
        return;
      }
      const ScratchBuffer<std::uint32_t, Scratch::Im2colBf16> packed(
          static_cast<std::size_t>(bf16_packed_b_words(P, K)));
      const ScratchBuffer<float, Scratch::Im2col> rows(static_cast<std::size_t>(2 * P));
      for (Index k = 0; k < K; k += 2) {
        float* even = rows.data();
        float* odd = k + 1 < K ? rows.data() + P : nullptr;
        im2col_row_k(g, x, k, even);
        if (odd) im2col_row_k(g, x, k + 1, odd);
        pack_bf16_b_rows(P, K, k / 2, even, odd, packed.data());
      }
      gemm_bf16_packed(weights.rows(), P, K, 1.0f, a_tiles, packed.data(), beta, y, P);
      return;
    }
  }
#endif
#ifdef DIFFUSION_HAVE_AVX512
  if constexpr (std::is_same_v<T, float>) {
    if (const float* a_tiles = weights.f32_tiles(grp)) {
      if (masks) {  // implicit GEMM: the micro-kernel reads the im2col rows from the image
        for (Index col0 = 0; col0 < P; col0 += kF32Nr)
          f32_multiply_image_panel(weights.rows(), *masks, channels, x, a_tiles, beta, y, P, col0,
                                   static_cast<int>(std::min<Index>(kF32Nr, P - col0)));
        return;
      }
      const ScratchBuffer<float, Scratch::Im2colPacked> packed(static_cast<std::size_t>(f32_packed_b_floats(P, K)));
      const ScratchBuffer<float, Scratch::Im2col> row(static_cast<std::size_t>(P));
      for (Index k = 0; k < K; ++k) {
        im2col_row_k(g, x, k, row.data());
        pack_f32_b_row(P, K, k, row.data(), packed.data());
      }
      gemm_f32_packed(weights.rows(), P, K, 1.0f, a_tiles, packed.data(), beta, y, P);
      return;
    }
  }
#endif
  (void)masks;
  const ScratchBuffer<T, Scratch::Im2col> col(static_cast<std::size_t>(K * P));
  im2col(g, channels, x, col.data());
  gemm(weights, grp, Op::NoTrans, P, T(1), col.data(), P, beta, y, P);
}

// Any convolution: im2col (skipped for 1x1) and one GEMM per image and group.
template <class T>
void forward_im2col_gemm(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  const Index cig = g.in_per_group(), cog = g.out_per_group(), P = g.out_pixels(), K = g.col_rows();
  const SharedA<T> weights(Op::NoTrans, cog, K, w, K, g.groups, cog * K);  // packed once for every image
  std::optional<Im2colMasks> masks;
  make_im2col_masks(g, weights, masks);
  parallel_for(0, g.batch, double(g.out_channels * K * P), [&](Index n) {
    for (Index grp = 0; grp < g.groups; ++grp) {
      const T* xg = x + (n * g.in_channels + grp * cig) * g.in_pixels();
      T* yg = y + (n * g.out_channels + grp * cog) * P;
      T beta = T(0);
      if (bias) {
        for (Index co = 0; co < cog; ++co) std::fill(yg + co * P, yg + (co + 1) * P, bias[grp * cog + co]);
        beta = T(1);
      }
      if (g.is_pointwise())
        gemm(weights, grp, Op::NoTrans, P, T(1), xg, P, beta, yg, P);
      else
        im2col_gemm(g, masks ? &*masks : nullptr, cig, xg, weights, grp, beta, yg);
    }
  });
}

// Depthwise, stride 1: dx is dy correlated with the kernel rotated by 180 degrees, through the same SIMD planes.
template <class T>
void backward_data_depthwise_simd(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  const Index P = g.out_pixels(), K = g.col_rows();
  parallel_for(0, g.batch * g.in_channels, double(K * P), [&](Index nc) {
    const Index c = nc % g.in_channels;
    T flipped[64];  // K <= 64 (is_simd_depthwise)
    for (Index k = 0; k < K; ++k) flipped[k] = w[c * K + K - 1 - k];
    depthwise_plane_forward(g.transposed_plane(), dy + nc * P, flipped, T(0), dx + nc * g.in_pixels(), true);
  });
}

// Stride 1 (is_stride1_transposable), not 1x1: dx is the convolution of dy with the flipped, transposed kernel
// (padding k - 1 - p). One im2col of dy and one GEMM of depth C_out/groups * KH * KW accumulating straight into dx,
// instead of a GEMM of depth C_out/groups into a (C_in/groups * KH * KW, P) buffer plus a scatter-add (col2im).
template <class T>
void backward_data_flipped_gemm(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  const Index cig = g.in_per_group(), cog = g.out_per_group(), P = g.out_pixels();
  const Conv2dGeometry gt = g.transposed();
  const Index Kt = gt.col_rows(), HW = g.in_pixels(), taps = g.kernel_h * g.kernel_w;
  const ScratchBuffer<T, Scratch::ConvWeights> wt_buffer(static_cast<std::size_t>(g.weight_size()));
  T* wt = wt_buffer.data();
  // wt (groups, C_in/groups, C_out/groups, KH, KW): wt[grp][ci][co][tap] = w[grp * cog + co][ci][taps - 1 - tap].
  for (Index grp = 0; grp < g.groups; ++grp)
    for (Index ci = 0; ci < cig; ++ci)
      for (Index co = 0; co < cog; ++co)
        for (Index tap = 0; tap < taps; ++tap)
          wt[((grp * cig + ci) * cog + co) * taps + tap] = w[((grp * cog + co) * cig + ci) * taps + taps - 1 - tap];
  const SharedA<T> weights(Op::NoTrans, cig, Kt, wt, Kt, g.groups, cig * Kt);
  std::optional<Im2colMasks> masks;
  make_im2col_masks(gt, weights, masks);
  parallel_for(0, g.batch, double(g.in_channels * Kt * HW), [&](Index n) {
    for (Index grp = 0; grp < g.groups; ++grp) {
      const T* dyg = dy + (n * g.out_channels + grp * cog) * P;
      T* dxg = dx + (n * g.in_channels + grp * cig) * HW;
      im2col_gemm(gt, masks ? &*masks : nullptr, cog, dyg, weights, grp, T(1), dxg);
    }
  });
}

// Any convolution: one GEMM per image and group into an im2col-shaped buffer, scattered back (col2im); 1x1 stride-1
// convolutions accumulate straight into dx.
template <class T>
void backward_data_gemm_col2im(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  const Index cig = g.in_per_group(), cog = g.out_per_group(), P = g.out_pixels(), K = g.col_rows();
  const SharedA<T> weights_t(Op::Trans, K, cog, w, K, g.groups, cog * K);  // w^T per group, packed once
  parallel_for(0, g.batch, double(g.out_channels * K * P), [&](Index n) {
    const ScratchBuffer<T, Scratch::Im2col> col_buffer(g.is_pointwise() ? 0 : static_cast<std::size_t>(K * P));
    T* dcol = g.is_pointwise() ? nullptr : col_buffer.data();
    for (Index grp = 0; grp < g.groups; ++grp) {
      const T* dyg = dy + (n * g.out_channels + grp * cog) * P;
      T* dxg = dx + (n * g.in_channels + grp * cig) * g.in_pixels();
      if (!dcol) {
        gemm(weights_t, grp, Op::NoTrans, P, T(1), dyg, P, T(1), dxg, P);
      } else {
        gemm(weights_t, grp, Op::NoTrans, P, T(1), dyg, P, T(0), dcol, P);
        detail::col2im_add(g, cig, dcol, dxg);
      }
    }
  });
}

// Depthwise, stride 1: per channel and image, one SIMD accumulator per tap over the plane, summed across its lanes
// (xsimd::hadd) and added to dw image by image. (xsimd 8.1's haddp, which would reduce L accumulators at once,
// returns the sums in the wrong lanes on AVX-512 floats: lanes 2-5 and 10-13 permuted.)
template <class T>
void backward_weight_depthwise_simd(const Conv2dGeometry& g, const T* x, const T* dy, T* dw) {
  const Index P = g.out_pixels(), K = g.col_rows();
  parallel_for(0, g.out_channels, double(g.batch * K * P), [&](Index c) {
    Batch<T> acc[64];  // K <= 64 (is_simd_depthwise)
    T* dwc = dw + c * K;
    for (Index n = 0; n < g.batch; ++n) {
      for (Index k = 0; k < K; ++k) acc[k] = Batch<T>(T(0));
      depthwise_plane_backward_weight(g.plane(), x + (n * g.in_channels + c) * g.in_pixels(),
                                      dy + (n * g.out_channels + c) * P, acc);
      for (Index k = 0; k < K; ++k) dwc[k] += xsimd::hadd(acc[k]);
    }
  });
}

// Any convolution: parallel over fixed blocks of dw (weight_blocks: a function of the shape alone): per group, a
// range of dw's columns (rows of the im2col matrix, which each block builds for its own rows only) times a range of
// output channels. Each block walks through the images in order, accumulating one GEMM per image straight into its
// part of dw (C = C + dy_n col_n^T).
template <class T>
void backward_weight_gemm_blocks(const Conv2dGeometry& g, const T* x, const T* dy, T* dw) {
  const Index cig = g.in_per_group(), cog = g.out_per_group(), P = g.out_pixels(), K = g.col_rows();
  const WeightBlocks wb = weight_blocks(g);
  const Index items = g.groups * wb.row_blocks * wb.co_blocks;
  // Where every block takes all of a group's output channels (co_blocks == 1), each image's dy is the same A for all
  // row blocks: in bf16 packed once here (image n, group grp: matrix n * groups + grp) instead of once per block.
  const SharedA<T> dy_shared(Op::NoTrans, cog, P, dy, P, wb.co_blocks == 1 ? g.batch * g.groups : 0, cog * P);
  std::optional<Im2colMasks> masks;  // where dy is packed (co_blocks == 1) and im2col(x) can be read from the image
  make_im2col_masks(g, dy_shared, masks);
  parallel_for(0, items, double(g.batch * wb.rows * wb.channels * P), [&](Index item) {
    const Index grp = item / (wb.row_blocks * wb.co_blocks), rb = (item / wb.co_blocks) % wb.row_blocks;
    const Index cb = item % wb.co_blocks;
    const Index k0 = rb * wb.rows, k1 = std::min(K, k0 + wb.rows);
    const Index co_block = wb.channels;
    const Index c0 = cb * co_block, c1 = std::min(cog, c0 + co_block);
    const ScratchBuffer<T, Scratch::Im2col> col_buffer(g.is_pointwise() ? 0 : static_cast<std::size_t>((k1 - k0) * P));
    T* col = g.is_pointwise() ? nullptr : col_buffer.data();
    T* dwb = dw + (grp * cog + c0) * K + k0;  // (c1 - c0) x (k1 - k0) block of the (cog, K) matrix of the group
    for (Index n = 0; n < g.batch; ++n) {
      const T* xg = x + (n * g.in_channels + grp * cig) * g.in_pixels();
      if (weight_gradient_from_image(g, masks ? &*masks : nullptr, xg, dy_shared, n * g.groups + grp, k0, k1, dwb, K))
        continue;
      const T* b = xg + k0 * P;  // 1x1: the input rows are the im2col rows
      if (col) {
        detail::im2col_rows(g, xg, k0, k1, col);
        b = col;
      }
      if (wb.co_blocks == 1)
        gemm(dy_shared, n * g.groups + grp, Op::Trans, k1 - k0, T(1), b, P, T(1), dwb, K);
      else
        gemm(Op::NoTrans, Op::Trans, c1 - c0, k1 - k0, P, T(1), dy + (n * g.out_channels + grp * cog + c0) * P, P, b,
             P, T(1), dwb, K);
    }
  });
}

// When each implementation applies. The GEMM methods leave depthwise convolutions to the SIMD planes or, where
// those cannot take them (strided, non-square, over 64 taps: none in the U-Net), to the reference loops: a GEMM
// per channel would be (1 x K) times (K x P).
inline bool not_depthwise(const Conv2dGeometry& g) { return !g.is_depthwise(); }
inline bool simd_depthwise(const Conv2dGeometry& g) { return g.is_simd_depthwise(); }
inline bool flipped_kernel_applies(const Conv2dGeometry& g) {
  return !g.is_depthwise() && g.is_stride1_transposable() && !g.is_pointwise();
}
inline bool always(const Conv2dGeometry&) { return true; }

}  // namespace detail

// ---- Dispatch (oneDNN's implementation lists): one table per direction, tried in order ----
// Each entry names a method and says when it applies; the first that applies runs. The reference twin is last and
// applies to every geometry; reference_kernels() sends every call to it.
template <class Fn>
struct ConvImplementation {
  const char* name;
  bool (*applies)(const Conv2dGeometry&);
  Fn run;
};
template <class T>
using ConvForwardFn = void (*)(const Conv2dGeometry&, const T* x, const T* w, const T* bias, T* y);
template <class T>
using ConvBackwardDataFn = void (*)(const Conv2dGeometry&, const T* dy, const T* w, T* dx);
template <class T>
using ConvBackwardWeightFn = void (*)(const Conv2dGeometry&, const T* x, const T* dy, T* dw);

template <class T>
inline constexpr ConvImplementation<ConvForwardFn<T>> conv2d_forward_implementations[] = {
    {"depthwise_simd", detail::simd_depthwise, detail::forward_depthwise_simd<T>},
    {"im2col_gemm", detail::not_depthwise, detail::forward_im2col_gemm<T>},
    {"reference", detail::always, reference::conv2d_forward<T>},
};
template <class T>
inline constexpr ConvImplementation<ConvBackwardDataFn<T>> conv2d_backward_data_implementations[] = {
    {"depthwise_simd", detail::simd_depthwise, detail::backward_data_depthwise_simd<T>},
    {"flipped_kernel_gemm", detail::flipped_kernel_applies, detail::backward_data_flipped_gemm<T>},
    {"gemm_col2im", detail::not_depthwise, detail::backward_data_gemm_col2im<T>},
    {"reference", detail::always, reference::conv2d_backward_data<T>},
};
template <class T>
inline constexpr ConvImplementation<ConvBackwardWeightFn<T>> conv2d_backward_weight_implementations[] = {
    {"depthwise_simd", detail::simd_depthwise, detail::backward_weight_depthwise_simd<T>},
    {"gemm_weight_blocks", detail::not_depthwise, detail::backward_weight_gemm_blocks<T>},
    {"reference", detail::always, reference::conv2d_backward_weight<T>},
};

// The entry of `table` that runs for g: the first that applies, or the reference (last) under reference_kernels().
template <class Fn, std::size_t N>
const ConvImplementation<Fn>& select_implementation(const ConvImplementation<Fn> (&table)[N], const Conv2dGeometry& g) {
  static_assert(N > 0, "an implementation table ends with its reference");
  if (reference_kernels()) return table[N - 1];
  for (const auto& implementation : table)
    if (implementation.applies(g)) return implementation;
  return table[N - 1];
}

// y (N, C_out, OH, OW) = conv(x (N, C_in, H, W), w) + bias (bias may be null). y is assigned.
template <class T>
void conv2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  select_implementation(conv2d_forward_implementations<T>, g).run(g, x, w, bias, y);
}

// y (N, C_out, OH, OW) += conv(x (N, C_in, H, W), w), without bias (ACCUMULATED): the input gradient of
// ConvTranspose2d. Each image's convolution is computed exactly as conv2d_forward computes it, into this thread's
// ConvOutput scratch (one image), then added.
template <class T>
void conv2d_forward_add(const Conv2dGeometry& g, const T* x, const T* w, T* y) {
  Conv2dGeometry image = g;
  image.batch = 1;
  const Index in = g.in_channels * g.in_pixels(), out = g.out_channels * g.out_pixels();
  parallel_for(0, g.batch, double(g.out_channels * g.col_rows() * g.out_pixels()), [&](Index n) {
    const ScratchBuffer<T, Scratch::ConvOutput> conv(static_cast<std::size_t>(out));
    conv2d_forward(image, x + n * in, w, static_cast<const T*>(nullptr), conv.data());
    T* yn = y + n * out;
    const T* c = conv.data();
    for (Index i = 0; i < out; ++i) yn[i] += c[i];
  });
}

// dx (N, C_in, H, W) += conv^T(dy (N, C_out, OH, OW), w).
template <class T>
void conv2d_backward_data(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  select_implementation(conv2d_backward_data_implementations<T>, g).run(g, dy, w, dx);
}

// dw (C_out, C_in / groups, KH, KW) += corr(x (N, C_in, H, W), dy (N, C_out, OH, OW)), folded image by image:
// dw = (((dw + g_0) + g_1) + ... + g_{N-1}) in T, g_n computed from image n alone, the same way for any N (see the
// header: a batch's gradient equals the one accumulated over consecutive sub-batches, bit for bit).
template <class T>
void conv2d_backward_weight(const Conv2dGeometry& g, const T* x, const T* dy, T* dw) {
  select_implementation(conv2d_backward_weight_implementations<T>, g).run(g, x, dy, dw);
}

// db (C) += sum over n and pixels of dy (N, C, pixels): each image's sum in double, rounded to T and added in image
// order (a fold over the batch, like conv2d_backward_weight).
template <class T>
void channel_sum(Index batch, Index channels, Index pixels, const T* dy, T* db) {
  if (reference_kernels()) return reference::channel_sum(batch, channels, pixels, dy, db);
  parallel_for(0, channels, double(batch * pixels), [&](Index c) {
    for (Index n = 0; n < batch; ++n) db[c] += static_cast<T>(simd_sum(pixels, dy + (n * channels + c) * pixels));
  });
}

}  // namespace diffusion::kernels
