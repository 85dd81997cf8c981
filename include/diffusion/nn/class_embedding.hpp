#pragma once
// ClassEmbedding: the class input of a conditional network (denoising-diffusion-pytorch's classifier_free_guidance.py):
// an nn.Embedding(num_classes, dim) and a learned "no class" vector, chosen per image:
//   y[n] = weight[ids[n]]          for ids[n] in [0, num_classes)
//   y[n] = null_vector             for ids[n] == kNullClass (-1): classifier-free guidance's unconditional input,
//                                  which that file selects with torch.where(keep_mask, classes_emb, null_classes_emb)
// Parameters: `<name>.weight` (num_classes, dim) and `<null_name>` (dim), both N(0, 1) as nn.Embedding and
// torch.randn. forward(ids, y) assigns y (N, dim); backward(ids, dy) accumulates the rows of dy into the gradient of
// the row each image read, in image order (one thread: the sums do not depend on the thread count). Ids have no
// gradient.

#include <cstdint>
#include <string>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parameters.hpp"
#include "diffusion/core/tensor.hpp"

namespace diffusion {

// The class id that selects the learned null embedding (a conditional U-Net's `null_classes_emb`): the "no class"
// input of classifier-free guidance's unconditional pass and of training's condition dropout.
inline constexpr std::int64_t kNullClass = -1;

}  // namespace diffusion

namespace diffusion::nn {

template <class T>
class ClassEmbedding {
 public:
  ClassEmbedding(ParameterStore<T>& params, const std::string& name, const std::string& null_name, Index num_classes,
                 Index dim)
      : params_(params), num_classes_(num_classes), dim_(dim) {
    DIFFUSION_CHECK(num_classes > 0 && dim > 0,
                    "ClassEmbedding '" << name << "': invalid sizes " << num_classes << " classes x " << dim);
    weight_ = params.add(join_name(name, "weight"), Shape{num_classes, dim}, Init::normal(1.0));
    null_ = params.add(null_name, Shape{dim}, Init::normal(1.0));
  }

  // Throws an Error naming the first id outside [0, num_classes) that is not kNullClass.
  void check_ids(const std::vector<std::int64_t>& ids, const char* what) const {
    for (std::size_t n = 0; n < ids.size(); ++n)
      DIFFUSION_CHECK(ids[n] == kNullClass || (ids[n] >= 0 && ids[n] < num_classes_),
                      what << ": class id " << ids[n] << " of image " << n << " is outside [0, " << num_classes_
                           << ") and is not kNullClass (" << kNullClass << ", the null embedding)");
  }

  // y (N, dim) = the embedding of each image's id.
  void forward(const std::vector<std::int64_t>& ids, Tensor<T>& y) const {
    check_ids(ids, "ClassEmbedding");
    const Index N = static_cast<Index>(ids.size());
    y.resize(Shape{N, dim_});
    for (Index n = 0; n < N; ++n) {
      const T* row = row_of(params_.value(weight_), params_.value(null_), ids[static_cast<std::size_t>(n)]);
      for (Index j = 0; j < dim_; ++j) y[n * dim_ + j] = row[j];
    }
  }

  // d(weight)[ids[n]] (or d(null)) += dy[n], n = 0..N-1 in order.
  void backward(const std::vector<std::int64_t>& ids, const Tensor<T>& dy) {
    const Index N = static_cast<Index>(ids.size());
    check_shape(dy, Shape{N, dim_}, "ClassEmbedding", "classes_emb", "backward: dy");
    for (Index n = 0; n < N; ++n) {
      T* row = row_of(params_.grad(weight_), params_.grad(null_), ids[static_cast<std::size_t>(n)]);
      for (Index j = 0; j < dim_; ++j) row[j] += dy[n * dim_ + j];
    }
  }

  Index num_classes() const { return num_classes_; }
  Index dim() const { return dim_; }

 private:
  template <class P>
  P* row_of(P* weight, P* null, std::int64_t id) const {
    return id == kNullClass ? null : weight + static_cast<Index>(id) * dim_;
  }

  ParameterStore<T>& params_;
  Index num_classes_, dim_;
  typename ParameterStore<T>::Ref weight_, null_;
};

}  // namespace diffusion::nn
