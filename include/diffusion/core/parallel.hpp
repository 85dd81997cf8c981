#pragma once
// Threading: one entry point, parallel_for, over OpenMP. Work is always split into items whose outputs do not
// overlap and each item is computed the same way whatever thread runs it, so results are bitwise identical for any
// thread count. Nested calls run serially inside the enclosing parallel region (one level of parallelism).

#include <cstddef>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "diffusion/core/aligned_buffer.hpp"
#include "diffusion/core/shape.hpp"

namespace diffusion {

// Threads a parallel_for may use (OpenMP's current setting, 1 without OpenMP).
inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Sets the number of threads later parallel_for calls use (n >= 1).
inline void set_num_threads(int n) {
#ifdef _OPENMP
  if (n >= 1) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

inline bool in_parallel_region() {
#ifdef _OPENMP
  return omp_in_parallel() != 0;
#else
  return false;
#endif
}

// Calls body(i) for every i in [begin, end), spread over the threads. body must not throw: check inputs before.
template <class Body>
void parallel_for(Index begin, Index end, Body&& body) {
#ifdef _OPENMP
  if (end - begin > 1 && !in_parallel_region() && max_threads() > 1) {
#pragma omp parallel for schedule(static)
    for (Index i = begin; i < end; ++i) body(i);
    return;
  }
#endif
  for (Index i = begin; i < end; ++i) body(i);
}

// Per-thread scratch memory that persists across calls: after the first step, no allocation. `Slot` separates
// buffers that are live at the same time. The returned pointer stays valid until the next call with the same Slot
// on the same thread.
template <class T, int Slot = 0>
T* thread_scratch(std::size_t n) {
  thread_local AlignedBuffer<T> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

}  // namespace diffusion
