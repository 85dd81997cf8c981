#pragma once
// The Communicator over MPI, for data-parallel training under mpirun: the optional part of the library that needs
// <mpi.h> (CMake: -DDIFFUSION_MPI=ON and link diffusion::mpi, or MPI::MPI_CXX yourself). Everything else of the
// library builds and runs without it.
//   diffusion::MpiSession mpi(argc, argv);          // MPI_Init ... MPI_Finalize
//   diffusion::MpiCommunicator comm;                 // MPI_COMM_WORLD
//   trainer.use_communicator(comm);                  // then train as usual; rank 0 writes the checkpoints
// The exchanges are MPI_Ialltoall / MPI_Iallgather of bytes, waited for with a deadline: when a rank dies or hangs,
// the others do not wait forever but throw an Error saying which exchange timed out (Open MPI's mpirun usually ends
// the job first when a rank is killed, and says which rank died and how). MPI errors are returned, not fatal, and
// become Errors carrying MPI's message.

// The C API only: Open MPI's and MPICH's deprecated C++ bindings would come along otherwise (and warn).
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdlib>
#include <string>
#include <thread>

#include "diffusion/core/error.hpp"
#include "diffusion/distributed/communicator.hpp"

namespace diffusion {

// MPI_Init_thread (funneled: only the main thread calls MPI; OpenMP threads compute) on construction unless MPI is
// already initialised, MPI_Finalize on destruction. One per program, in main.
class MpiSession {
 public:
  MpiSession(int& argc, char**& argv) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) return;
    int provided = 0;
    DIFFUSION_CHECK(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) == MPI_SUCCESS,
                    "MPI_Init_thread failed");
    owner_ = true;
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  ~MpiSession() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owner_ && !finalized) MPI_Finalize();
  }
  // Ends every rank of the job (MPI_Abort): for an error on one rank that the others cannot know of.
  [[noreturn]] static void abort(int status) {
    MPI_Abort(MPI_COMM_WORLD, status);
    std::abort();
  }

 private:
  bool owner_ = false;
};

class MpiCommunicator final : public Communicator {
 public:
  // `comm` (MPI_COMM_WORLD by default) after MPI_Init. An exchange that has not completed within timeout_seconds
  // throws an Error: some rank died or stopped calling the exchanges.
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD, double timeout_seconds = 600.0)
      : comm_(comm), timeout_seconds_(timeout_seconds) {
    DIFFUSION_CHECK(timeout_seconds > 0.0, "MpiCommunicator: the timeout must be positive, got " << timeout_seconds);
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  double timeout_seconds() const { return timeout_seconds_; }

  void all_to_all(const void* send, void* recv, std::size_t block_bytes) override {
    MPI_Request request;
    check(MPI_Ialltoall(send, count(block_bytes), MPI_BYTE, recv, count(block_bytes), MPI_BYTE, comm_, &request),
          "MPI_Ialltoall");
    wait(request, "all-to-all");
  }

  void all_gather(const void* send, void* recv, std::size_t block_bytes) override {
    MPI_Request request;
    check(MPI_Iallgather(send, count(block_bytes), MPI_BYTE, recv, count(block_bytes), MPI_BYTE, comm_, &request),
          "MPI_Iallgather");
    wait(request, "all-gather");
  }

 private:
  static int count(std::size_t bytes) {
    DIFFUSION_CHECK(bytes <= static_cast<std::size_t>(INT_MAX),
                    "MpiCommunicator: a block of " << bytes << " bytes is more than one MPI message can count");
    return static_cast<int>(bytes);
  }

  void check(int code, const char* call) const {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    throw Error("rank " + std::to_string(rank_) + ": " + call + " failed: " + std::string(text, length));
  }

  // Polls until the exchange completes (MPI_Test drives its progress), sleeping briefly between polls once it has
  // taken more than a millisecond so that a waiting rank leaves the core to the ranks still computing.
  void wait(MPI_Request& request, const char* what) {
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      int done = 0;
      check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
      if (done) return;
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > timeout_seconds_)
        throw Error("rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ": the " + what +
                    " exchange did not complete within " + std::to_string(static_cast<long>(timeout_seconds_)) +
                    " s: another rank has died or stopped answering");
      if (waited > 1e-3) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  MPI_Comm comm_;
  double timeout_seconds_;
  int rank_ = 0, size_ = 1;
};

}  // namespace diffusion
