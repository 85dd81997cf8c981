#pragma once
// Communicator: the ranks of a data-parallel run and the two exchanges the library needs of them. Abstract, so that
// the training code knows nothing of MPI: mpi_communicator.hpp implements it over MPI (an optional part that needs
// <mpi.h>), SingleProcess is the one-rank case. Both exchanges move bytes only; every sum the library makes of what
// they bring is done by the library itself, in an order it fixes (gradient_sum.hpp), so that results do not depend
// on the number of ranks or on the MPI implementation's reduction order.
//   all_to_all:  rank r's block q of `send` arrives as block r of rank q's `recv` (MPI_Alltoall)
//   all_gather:  rank r's `send` arrives as block r of every rank's `recv` (MPI_Allgather)
// Every rank must call the same exchanges in the same order with the same block size (a collective). A failed or
// timed-out exchange throws Error on the ranks that see it.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "diffusion/core/error.hpp"

namespace diffusion {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;  // this process, in [0, size())
  virtual int size() const = 0;  // the number of ranks
  // send: size() blocks of block_bytes, recv: size() blocks of block_bytes; send block q goes to rank q.
  virtual void all_to_all(const void* send, void* recv, std::size_t block_bytes) = 0;
  // send: one block of block_bytes, recv: size() blocks; recv block r is rank r's send.
  virtual void all_gather(const void* send, void* recv, std::size_t block_bytes) = 0;

  // Every rank's string, in rank order (sizes may differ): for fingerprints and messages, not for bulk data.
  std::vector<std::string> all_gather_strings(const std::string& mine) {
    const auto n = static_cast<std::size_t>(size());
    const std::uint64_t my_size = mine.size();
    std::vector<std::uint64_t> sizes(n);
    all_gather(&my_size, sizes.data(), sizeof(std::uint64_t));
    std::uint64_t longest = 0;
    for (std::uint64_t s : sizes) longest = s > longest ? s : longest;
    std::vector<char> send(longest, '\0'), recv(longest * n, '\0');
    std::memcpy(send.data(), mine.data(), mine.size());
    if (longest > 0) all_gather(send.data(), recv.data(), longest);
    std::vector<std::string> out(n);
    for (std::size_t r = 0; r < n; ++r) out[r].assign(recv.data() + r * longest, sizes[r]);
    return out;
  }
};

// One rank: the exchanges are copies.
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_to_all(const void* send, void* recv, std::size_t block_bytes) override {
    if (block_bytes > 0) std::memmove(recv, send, block_bytes);
  }
  void all_gather(const void* send, void* recv, std::size_t block_bytes) override {
    if (block_bytes > 0) std::memmove(recv, send, block_bytes);
  }
};

// The number of processes an MPI launcher (mpirun, mpiexec, srun) started this one among, read from the environment
// it sets (Open MPI, MPICH, Intel MPI, MVAPICH); 0 when no launcher started it. Lets a program built without MPI
// refuse to run as N independent copies that would each train alone.
inline int mpi_launcher_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') return std::atoi(value);
  }
  return 0;
}

// Throws unless every rank holds the same `value` of `what` (e.g. "the training configuration"): the message names
// the ranks that differ from rank 0 and shows both values, cut at `shown` characters around the first difference.
// Every rank throws the same message, so that they all stop.
inline void check_same_on_all_ranks(Communicator& comm, const std::string& what, const std::string& value,
                                    std::size_t shown = 160) {
  const std::vector<std::string> all = comm.all_gather_strings(value);
  std::string differs;
  for (std::size_t r = 1; r < all.size(); ++r) {
    if (all[r] == all[0]) continue;
    std::size_t i = 0;
    while (i < all[0].size() && i < all[r].size() && all[0][i] == all[r][i]) ++i;
    const std::size_t from = i > shown / 2 ? i - shown / 2 : 0;
    differs += (differs.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + " has '" +
               all[r].substr(from, shown) + "' where rank 0 has '" + all[0].substr(from, shown) + "'" +
               (from > 0 ? " (from character " + std::to_string(from) + ")" : "");
  }
  DIFFUSION_CHECK(differs.empty(), "the ranks of this run disagree on " << what << ": " << differs
                                       << ". Start every rank with the same inputs");
}

}  // namespace diffusion
