#include "common/ranks.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>  // program_invocation_short_name (glibc)
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "diffusion/core/error.hpp"
#include "diffusion/distributed/build_id.hpp"
#ifdef DIFFUSION_WITH_MPI
#include "diffusion/distributed/mpi_communicator.hpp"
#endif

namespace examples {

namespace {
std::unique_ptr<Ranks>& instance() {
  static std::unique_ptr<Ranks> ranks;
  return ranks;
}

#ifdef DIFFUSION_WITH_MPI
// When one rank dies, mpirun stops the others with SIGTERM: each says so before it goes (a preformatted line, written
// with write(2), which a signal handler may call), so that the survivors' output explains their end.
char g_stopped_message[256] = "";

extern "C" void on_sigterm(int signal_number) {
  const ssize_t written = ::write(2, g_stopped_message, std::strlen(g_stopped_message));
  (void)written;
  ::signal(signal_number, SIG_DFL);
  ::raise(signal_number);
}

void say_why_when_stopped(int rank, int size) {
  std::snprintf(g_stopped_message, sizeof g_stopped_message,
                "%s: rank %d of %d: stopped by the MPI launcher (SIGTERM), which ends every rank when one fails or is "
                "killed; the checkpoint rank 0 wrote last is whole (written atomically)\n",
                program_invocation_short_name, rank, size);
  ::signal(SIGTERM, on_sigterm);
}
#endif

}  // namespace

#ifdef DIFFUSION_WITH_MPI
struct Ranks::Mpi {
  Mpi(int& argc, char**& argv) : session(argc, argv) {}
  diffusion::MpiSession session;
};
#else
struct Ranks::Mpi {};
#endif

Ranks::~Ranks() {
  comm_.reset();  // before MPI_Finalize
  mpi_.reset();
}

void Ranks::init(int& argc, char**& argv) {
  std::unique_ptr<Ranks> ranks(new Ranks());
  const int launched = diffusion::mpi_launcher_size();
#ifdef DIFFUSION_WITH_MPI
  if (launched > 0) {
    ranks->mpi_ = std::make_unique<Mpi>(argc, argv);
    // A rank that died is usually reported by mpirun, which ends the job; a rank that hangs is found by this timeout
    // (it must be longer than the leader's work between two steps: previews, measurements, checkpoints).
    const char* given = std::getenv("DIFFUSION_RANK_TIMEOUT");
    const double timeout = given != nullptr && std::atof(given) > 0.0 ? std::atof(given) : 1800.0;
    ranks->comm_ = std::make_unique<diffusion::MpiCommunicator>(MPI_COMM_WORLD, timeout);
    if (ranks->comm_->size() > 1) say_why_when_stopped(ranks->comm_->rank(), ranks->comm_->size());
  }
#else
  (void)argc;
  (void)argv;
  DIFFUSION_CHECK(launched <= 1, "started by an MPI launcher as one of " << launched << " processes, but this program "
                                 << "was built without MPI, so each would train alone: rebuild with -DDIFFUSION_MPI=ON "
                                 << "(Debian: apt-get install libopenmpi-dev openmpi-bin) or run one process");
#endif
  if (!ranks->comm_) ranks->comm_ = std::make_unique<diffusion::SingleProcess>();
  instance() = std::move(ranks);
}

Ranks& Ranks::get() {
  if (!instance()) {  // a program that never called init(): one rank
    int argc = 0;
    char** argv = nullptr;
    init(argc, argv);
  }
  return *instance();
}

int Ranks::gradient_shards(int requested) const {
  if (requested == 0) return size();
  DIFFUSION_CHECK(requested % size() == 0,
                  "the run has --gradient-shards " << requested << " but was started on " << size()
                      << " ranks, which do not divide it: start it on a number of ranks that does (the shards fix the "
                      << "order of the gradient sums, so the weights stay the same for any such number)");
  return requested;
}

void Ranks::join(diffusion::Trainer<float>& trainer, const std::string& run, const std::string& data) {
  if (size() == 1) return;
  diffusion::check_same_on_all_ranks(*comm_, "the library build", diffusion::build_id());
  diffusion::check_same_on_all_ranks(*comm_, "the run's settings", run);
  diffusion::check_same_on_all_ranks(*comm_, "the training data", data);
  trainer.use_communicator(*comm_);
}

void Ranks::fail(const char* program, const std::string& message, int status) {
  std::fflush(stdout);
  // The library's MPI errors name the rank already.
  const std::string who = "rank " + std::to_string(rank()) + " of " + std::to_string(size()) + ": ";
  std::fprintf(stderr, "%s: %s%s.\n", program, message.rfind(who, 0) == 0 ? "" : who.c_str(), message.c_str());
  std::fflush(stderr);
#ifdef DIFFUSION_WITH_MPI
  if (size() > 1) diffusion::MpiSession::abort(status);
#endif
  std::exit(status);
}

}  // namespace examples
