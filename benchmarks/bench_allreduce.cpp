// bench_allreduce: the time of the data-parallel gradient exchange, run under mpirun (built with DIFFUSION_MPI).
//   mpirun -np 2 build/benchmarks/bench_allreduce [--elements 2996315] [--iters 20] [--shards R]
// Times ShardedGradientSum (the library's exchange: all-to-all of slices, adds in shard order, all-gather) on a
// gradient of --elements floats (default: the Fashion-MNIST U-Net's 2,996,315 parameters), and MPI_Allreduce of
// the same buffer for comparison (MPI's own order: not bit-reproducible across rank counts). Prints one JSON line
// on rank 0: the medians in milliseconds and the bytes each rank sent.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "diffusion/distributed/gradient_sum.hpp"
#include "diffusion/distributed/mpi_communicator.hpp"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  diffusion::MpiSession session(argc, argv);
  diffusion::MpiCommunicator comm;
  std::size_t elements = 2996315;
  int iters = 20, shards = comm.size();
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--elements") elements = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--iters") iters = std::atoi(argv[i + 1]);
    else if (flag == "--shards") shards = std::atoi(argv[i + 1]);
    else {
      if (comm.rank() == 0) std::fprintf(stderr, "bench_allreduce: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  const diffusion::ShardRange mine = diffusion::local_shards(shards, comm.rank(), comm.size());
  std::vector<float> g(elements, 1.0f + static_cast<float>(comm.rank())), out(elements);
  diffusion::ShardedGradientSum<float> sum;
  std::vector<double> ours, mpi;
  for (int it = 0; it < iters + 2; ++it) {  // the first two warm up
    MPI_Barrier(MPI_COMM_WORLD);
    auto t0 = std::chrono::steady_clock::now();
    sum.reset(comm, shards, elements);
    for (diffusion::Index i = 0; i < mine.count; ++i) sum.add(static_cast<std::size_t>(i), g.data());
    sum.finish(out.data());
    const double a = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = std::chrono::steady_clock::now();
    MPI_Allreduce(g.data(), out.data(), static_cast<int>(elements), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    const double b = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (it >= 2) {
      ours.push_back(a);
      mpi.push_back(b);
    }
  }
  if (comm.rank() == 0) {
    const double R = comm.size(), slice = std::ceil(static_cast<double>(elements) / R) * sizeof(float);
    const double sent = (R - 1) * slice * static_cast<double>(mine.count) + (R - 1) * slice;
    std::printf("{\"ranks\": %d, \"shards\": %d, \"elements\": %zu, \"sharded_sum_ms\": %.3f, \"mpi_allreduce_ms\": %.3f, "
                "\"bytes_sent_per_rank\": %.0f}\n",
                comm.size(), shards, elements, median(ours), median(mpi), sent);
  }
  return 0;
}
