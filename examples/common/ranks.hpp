#pragma once
// The ranks of a training run: one process, or an MPI job started by mpirun (when the programs are built with
// DIFFUSION_MPI). Every rank trains its share of each batch (diffusion::Trainer::use_communicator); rank 0, the
// leader, alone prints progress and writes the logs, checkpoints, previews and final outputs.
//   mpirun -np 2 build/examples/fashion_mnist train ...    (OMP_NUM_THREADS=1 per rank on a 2-core machine)

#include <memory>
#include <string>

#include "diffusion/distributed/communicator.hpp"
#include "diffusion/train/trainer.hpp"

namespace examples {

class Ranks {
 public:
  // Call first thing in main. Under an MPI launcher, starts MPI (a build without MPI refuses to run as several
  // independent copies: it throws); otherwise one rank.
  static void init(int& argc, char**& argv);
  static Ranks& get();  // after init()

  int rank() const { return comm_->rank(); }
  int size() const { return comm_->size(); }
  bool leader() const { return comm_->rank() == 0; }

  // The gradient shards of a run asked for `requested` (0: one per rank, for a new run), checked against the ranks:
  // their number must divide it (the shards fix the order of the gradient sums).
  int gradient_shards(int requested) const;

  // Joins `trainer` to the other ranks: checks that every rank runs the same library build, `run` (the run's
  // settings, e.g. its options as JSON) and `data` (a key of the training data), naming what differs, then
  // use_communicator(). Nothing happens with one rank.
  void join(diffusion::Trainer<float>& trainer, const std::string& run, const std::string& data);

  // With several ranks: prints `message` as "<program>: rank r of R: message." on stderr and ends the whole job
  // (MPI_Abort: the other ranks cannot know of this rank's error and would wait for it).
  [[noreturn]] void fail(const char* program, const std::string& message, int status);

  ~Ranks();

 private:
  Ranks() = default;
  struct Mpi;
  std::unique_ptr<Mpi> mpi_;
  std::unique_ptr<diffusion::Communicator> comm_;
};

}  // namespace examples
