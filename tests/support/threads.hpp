#pragma once
// Thread settings for the tests that compare results across thread counts: ScopedThreads(n) runs with n threads and
// with every loop of two or more items parallel (parallel_min_work 0), so that small test shapes take the threaded
// paths too; the previous settings come back at the end of the scope.
#include "diffusion/core/parallel.hpp"

namespace diffusion::testing {

class ScopedThreads {
 public:
  explicit ScopedThreads(int threads) : saved_threads_(max_threads()), saved_min_work_(parallel_min_work()) {
    set_num_threads(threads);
    set_parallel_min_work(0.0);
  }
  ~ScopedThreads() {
    set_num_threads(saved_threads_);
    set_parallel_min_work(saved_min_work_);
  }
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int saved_threads_;
  double saved_min_work_;
};

}  // namespace diffusion::testing
