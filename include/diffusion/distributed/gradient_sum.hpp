#pragma once
// ShardedGradientSum<T>: the sum of S gradient shards held by R ranks, added in shard order, g_0 + g_1 + ... +
// g_{S-1} (((g_0 + g_1) + g_2) + ...), the same bits on every rank and for every R that divides S. This is how a
// data-parallel run equals one process bit for bit: floating-point addition is not associative, so the order of the
// additions is fixed by the shard numbers, never by the ranks or by MPI's reduction tree.
//   Rank r holds shards [r S / R, (r + 1) S / R) ("local" shards, S / R of them).
//   The P gradient elements are cut into R slices of ceil(P / R); rank q owns slice q.
//   1. all_to_all: every rank sends slice q of each of its local shards to rank q. Rank q then holds slice q of all
//      S shards, in rank order and within a rank in shard order: shard order.
//   2. Rank q adds its S slices in shard order.
//   3. all_gather: every rank receives every summed slice.
// With one shard per rank this moves 2 (R - 1) / R x P elements per rank, as a ring allreduce does.
// One rank (R = 1) adds its shards in place as they come, in the same order: the same bits without the exchange.

#include <algorithm>
#include <cstddef>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/shape.hpp"
#include "diffusion/distributed/communicator.hpp"

namespace diffusion {

// The shards [first, first + count) that `rank` of `ranks` holds when there are `shards` in all.
struct ShardRange {
  Index first = 0, count = 1;
};
inline ShardRange local_shards(Index shards, int rank, int ranks) {
  DIFFUSION_CHECK(ranks >= 1 && shards >= 1 && shards % ranks == 0,
                  "gradient_shards = " << shards << " cannot be spread over " << ranks << " ranks: the number of ranks "
                                       << "must divide the number of shards (it fixes the order of the sums, so it "
                                       << "stays the same when the number of ranks changes)");
  const Index per = shards / ranks;
  return {rank * per, per};
}

// The sum of the per-shard values (e.g. the loss sums, one per shard), added in shard order on every rank:
// 0 + v_0 + v_1 + ... + v_{S-1}. `local` holds this rank's shards' values; `all` is scratch (reused: no allocation
// once sized).
inline double sum_in_shard_order(Communicator& comm, const std::vector<double>& local, std::vector<double>& all) {
  const std::size_t n = local.size(), ranks = static_cast<std::size_t>(comm.size());
  all.resize(n * ranks);
  comm.all_gather(local.data(), all.data(), n * sizeof(double));
  double sum = 0.0;
  for (double v : all) sum += v;
  return sum;
}

template <class T>
class ShardedGradientSum {
 public:
  // Prepares for `shards` shards of `size` elements on comm's ranks (allocates only when the sizes change).
  void reset(Communicator& comm, Index shards, std::size_t size) {
    comm_ = &comm;
    size_ = size;
    ranks_ = static_cast<std::size_t>(comm.size());
    local_ = static_cast<std::size_t>(local_shards(shards, comm.rank(), comm.size()).count);
    slice_ = (size + ranks_ - 1) / ranks_;
    added_ = 0;
    if (ranks_ == 1) {
      sum_.resize(size);
    } else {
      send_.resize(ranks_ * local_ * slice_);  // [destination rank][local shard][slice element]
      recv_.resize(ranks_ * local_ * slice_);  // [source rank][its local shard][element of this rank's slice]
      gathered_.resize(ranks_ * slice_);       // [owner rank][slice element]
      // The padding past `size` (the end of the last slices, never written by add) is sent as zeros, dropped at the end.
      for (std::size_t q = 0; q < ranks_; ++q)
        for (std::size_t i = 0; i < local_; ++i) {
          T* block = send_.data() + (q * local_ + i) * slice_;
          std::fill(block + slice_elements(q), block + slice_, T(0));
        }
    }
  }

  // The gradient of local shard `i` (the i-th, in order: i = 0, 1, ...), `size` elements; copied, g may be reused.
  void add(std::size_t i, const T* g) {
    DIFFUSION_CHECK(comm_ != nullptr && i == added_ && i < local_,
                    "ShardedGradientSum::add: local shard " << i << " given; expected shard " << added_ << " of "
                                                            << local_ << " after reset()");
    ++added_;
    if (ranks_ == 1) {
      if (i == 0) std::copy(g, g + size_, sum_.data());
      else add_into(sum_.data(), g, size_);
      return;
    }
    for (std::size_t q = 0; q < ranks_; ++q) {
      const std::size_t begin = std::min(q * slice_, size_);
      std::copy(g + begin, g + begin + slice_elements(q), send_.data() + (q * local_ + i) * slice_);
    }
  }

  // out (size elements) = the sum of all shards in shard order, on every rank. Every local shard must have been
  // added; a collective (every rank calls it).
  void finish(T* out) {
    DIFFUSION_CHECK(comm_ != nullptr && added_ == local_,
                    "ShardedGradientSum::finish: " << added_ << " of " << local_ << " local shards added");
    if (ranks_ == 1) {
      std::copy(sum_.data(), sum_.data() + size_, out);
      return;
    }
    comm_->all_to_all(send_.data(), recv_.data(), local_ * slice_ * sizeof(T));
    T* acc = recv_.data();  // shard 0's slice, then every later shard added onto it in shard order
    for (std::size_t s = 1; s < ranks_ * local_; ++s) add_into(acc, recv_.data() + s * slice_, slice_);
    comm_->all_gather(acc, gathered_.data(), slice_ * sizeof(T));
    std::copy(gathered_.data(), gathered_.data() + size_, out);
  }

 private:
  // How many of the `size` elements fall in rank q's slice [q slice, (q + 1) slice).
  std::size_t slice_elements(std::size_t q) const {
    const std::size_t begin = std::min(q * slice_, size_);
    return std::min(begin + slice_, size_) - begin;
  }

  static void add_into(T* acc, const T* g, std::size_t n) {
    for (std::size_t j = 0; j < n; ++j) acc[j] += g[j];
  }

  Communicator* comm_ = nullptr;
  std::size_t size_ = 0, ranks_ = 1, local_ = 1, slice_ = 0, added_ = 0;
  std::vector<T> sum_, send_, recv_, gathered_;
};

}  // namespace diffusion
