#pragma once
// R ranks as R threads of one process: a Communicator for testing the data-parallel code without MPI (and under the
// sanitizers). run(f) calls f(rank, communicator) on R threads and rethrows the first exception any of them threw.
// A rank that stops calling the exchanges while others wait makes them throw after 60 s instead of hanging.
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "diffusion/core/parallel.hpp"
#include "diffusion/distributed/communicator.hpp"

namespace diffusion::testing {

class ThreadRanks {
 public:
  explicit ThreadRanks(int size) : size_(size), posted_(static_cast<std::size_t>(size), nullptr) {
    for (int r = 0; r < size; ++r) ranks_.emplace_back(*this, r);
  }

  template <class F>
  void run(F f) {
    std::vector<std::thread> threads;
    std::vector<std::exception_ptr> errors(static_cast<std::size_t>(size_));
    for (int r = 0; r < size_; ++r)
      threads.emplace_back([&, r] {
        set_num_threads(1);  // each rank computes on one thread, as one MPI rank per core would
        try {
          f(r, ranks_[static_cast<std::size_t>(r)]);
        } catch (...) {
          errors[static_cast<std::size_t>(r)] = std::current_exception();
        }
      });
    for (auto& t : threads) t.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }

 private:
  class Rank final : public Communicator {
   public:
    Rank(ThreadRanks& all, int rank) : all_(&all), rank_(rank) {}
    int rank() const override { return rank_; }
    int size() const override { return all_->size_; }
    void all_to_all(const void* send, void* recv, std::size_t block) override {
      all_->exchange(rank_, send, [&](int q, const char* theirs) {
        std::memcpy(static_cast<char*>(recv) + static_cast<std::size_t>(q) * block,
                    theirs + static_cast<std::size_t>(rank_) * block, block);
      });
    }
    void all_gather(const void* send, void* recv, std::size_t block) override {
      all_->exchange(rank_, send, [&](int q, const char* theirs) {
        std::memcpy(static_cast<char*>(recv) + static_cast<std::size_t>(q) * block, theirs, block);
      });
    }

   private:
    ThreadRanks* all_;
    int rank_;
  };

  // Every rank posts its send buffer; once all have, each copies what it needs from the others'; once all have
  // copied, the buffers may change again.
  template <class Copy>
  void exchange(int rank, const void* send, Copy copy) {
    posted_[static_cast<std::size_t>(rank)] = static_cast<const char*>(send);
    barrier();
    for (int q = 0; q < size_; ++q) copy(q, posted_[static_cast<std::size_t>(q)]);
    barrier();
  }

  void barrier() {
    std::unique_lock<std::mutex> lock(mutex_);
    const long generation = generation_;
    if (++arrived_ == size_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return generation_ != generation; }))
      throw std::runtime_error("ThreadRanks: a rank did not reach the exchange within 60 s");
  }

  int size_;
  std::vector<const char*> posted_;
  std::vector<Rank> ranks_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int arrived_ = 0;
  long generation_ = 0;
};

}  // namespace diffusion::testing
