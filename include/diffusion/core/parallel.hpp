#pragma once
// Threading: one entry point, parallel_for, over OpenMP. Work is always split into items whose outputs do not
// overlap and each item is computed the same way whatever thread runs it, so results are bitwise identical for any
// thread count. Nested calls run serially inside the enclosing parallel region (one level of parallelism).

#include <algorithm>
#include <cstddef>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif

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

// Below this much work a parallel_for runs on the calling thread. Waking the thread team and its closing barrier
// cost microseconds on an idle machine and milliseconds when other processes compete for the cores (measured: the
// whole-U-Net gradient check of a tiny network, tens of thousands of small loops, ran 6x slower with two such
// processes on two cores, and 50x slower with 8 threads on 2 cores). 2^17 multiply-adds take ~10-50 us on one core.
inline constexpr double kDefaultParallelMinWork = double(1 << 17);

namespace detail {
inline double& parallel_min_work_setting() {
  static double value = kDefaultParallelMinWork;
  return value;
}
}  // namespace detail

// The threshold in use. set_parallel_min_work(0) makes every loop of two or more items parallel (tests use it to
// run the threaded paths on small shapes); results do not depend on it.
inline double parallel_min_work() { return detail::parallel_min_work_setting(); }
inline void set_parallel_min_work(double work) { detail::parallel_min_work_setting() = work; }

// Calls body(i) for every i in [begin, end), spread over the threads when the loop is worth it: `work_per_item` is
// a rough count of the multiply-adds (or element visits) one call of body does. body must not throw: check inputs
// before. Running serially computes exactly what the threads would (see the header comment).
template <class Body>
void parallel_for(Index begin, Index end, double work_per_item, Body&& body) {
#ifdef _OPENMP
  if (end - begin > 1 && double(end - begin) * work_per_item >= parallel_min_work() && !in_parallel_region() &&
      max_threads() > 1) {
#pragma omp parallel for schedule(static)
    for (Index i = begin; i < end; ++i) body(i);
    return;
  }
#else
  (void)work_per_item;
#endif
  for (Index i = begin; i < end; ++i) body(i);
}

// Sets n values to zero (all bits clear), in fixed chunks spread over the threads when the buffer is large: the
// gradient buffers zeroed before every backward are megabytes, and a serial memset there left the other thread
// idle (1.4% of a 2-thread training step's samples). Chunks are a function of n alone; the result is the same.
template <class T>
void parallel_zero(T* data, std::size_t n) {
  constexpr std::size_t kChunk = std::size_t(1) << 16;  // values per item
  const Index chunks = static_cast<Index>((n + kChunk - 1) / kChunk);
  parallel_for(0, chunks, double(kChunk) / 4, [&](Index c) {  // a memset is ~4x cheaper per value than a multiply-add
    const std::size_t begin = static_cast<std::size_t>(c) * kChunk;
    std::memset(static_cast<void*>(data + begin), 0, sizeof(T) * std::min(kChunk, n - begin));
  });
}

}  // namespace diffusion
