// Data-parallel training under mpirun (examples/train_images built with DIFFUSION_MPI): 2 ranks give the checkpoint
// of one process bit for bit (weights, Adam moments, EMA); a 2-rank checkpoint resumes on 1 rank and still matches;
// ranks started with different settings or data refuse, naming what differs; a rank killed with SIGKILL ends the job
// (no hang) and the last checkpoint stays intact. Registered by examples/CMakeLists.txt when MPI is found.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "../program_runner.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/io/image.hpp"
#include "diffusion/io/safetensors.hpp"
#include "diffusion/train/checkpoint.hpp"

namespace fs = std::filesystem;
using diffusion::testing::ProgramResult;
using diffusion::testing::shell_quote;
using diffusion::testing::slurp;

namespace {

std::string scratch(const std::string& name) { return diffusion::testing::fresh_folder(MPI_TEST_DIR, name); }

// 24 gray 8x8 PNGs: a bright bar at a random height.
std::string make_data(const std::string& name, std::uint64_t seed) {
  const std::string dir = scratch(name);
  diffusion::Rng rng(seed);
  for (int i = 0; i < 24; ++i) {
    diffusion::io::Image8 im;
    im.width = 8;
    im.height = 8;
    im.channels = 1;
    im.pixels.assign(64, 30);
    const int top = static_cast<int>(rng.uniform_int(6));
    for (int y = top; y < top + 2; ++y)
      for (int x = 1; x < 7; ++x) im.at(y, x, 0) = 220;
    diffusion::io::write_png(dir + "/im" + std::to_string(i) + ".png", im);
  }
  return dir;
}

std::vector<std::string> tiny(const std::string& data, const std::string& out, const std::string& steps) {
  return {"train", "--data", data, "--out", out, "--channels", "1", "--size", "8", "--dim", "8", "--dim-mults", "1,2",
          "--batch", "8", "--timesteps", "20", "--steps", steps, "--checkpoint-every", "1", "--sampling-steps", "2",
          "--final-samples", "4", "--threads", "1"};
}

std::string quoted(const std::vector<std::string>& args) {
  std::string s;
  for (const auto& a : args) s += " " + shell_quote(a);
  return s;
}

// `mpirun -np ranks program args` (or an MPMD line when `second` is given: rank 0 with args, rank 1 with second),
// each rank on one thread, killed after `limit` seconds; output captured in dir.
ProgramResult mpirun(const std::string& dir, int ranks, const std::vector<std::string>& args,
                     const std::vector<std::string>& second = {}, int limit = 300, const std::string& env = "") {
  std::string cmd = (env.empty() ? "" : env + " ") + "timeout -s KILL " + std::to_string(limit) + " " +
                    shell_quote(MPIEXEC_EXE) + " --oversubscribe -x OMP_NUM_THREADS=1";
  if (!env.empty()) cmd += " -x " + env.substr(0, env.find('='));
  if (geteuid() == 0) cmd += " --allow-run-as-root";
  if (second.empty()) {
    cmd += " -np " + std::to_string(ranks) + " " + shell_quote(TRAIN_IMAGES_EXE) + quoted(args);
  } else {
    cmd += " -np 1 " + shell_quote(TRAIN_IMAGES_EXE) + quoted(args) + " : -np 1 " + shell_quote(TRAIN_IMAGES_EXE) +
           quoted(second);
  }
  cmd += " > " + shell_quote(dir + "/stdout") + " 2> " + shell_quote(dir + "/stderr");
  const int w = std::system(cmd.c_str());
  return {WIFEXITED(w) ? WEXITSTATUS(w) : -1, slurp(dir + "/stdout"), slurp(dir + "/stderr")};
}

ProgramResult single(const std::string& dir, const std::vector<std::string>& args) {
  return diffusion::testing::run_program(TRAIN_IMAGES_EXE, dir, args);
}

// Every tensor of two checkpoints, byte for byte (the metadata hold times and paths).
void require_same_tensors(const std::string& a, const std::string& b) {
  const diffusion::io::SafetensorsReader ra(a), rb(b);
  REQUIRE(ra.names() == rb.names());
  REQUIRE(ra.names().size() > 10);
  for (const auto& name : ra.names()) {
    INFO(name);
    const auto x = ra.read<double>(name), y = rb.read<double>(name);
    REQUIRE(x.numel() == y.numel());
    for (double v : x) REQUIRE(std::isfinite(v));  // equal NaNs would compare equal byte for byte
    REQUIRE(std::memcmp(x.data(), y.data(), static_cast<std::size_t>(x.numel()) * sizeof(double)) == 0);
  }
}

}  // namespace

TEST_CASE("2 ranks train the checkpoint of one process bit for bit, and it resumes on 1 rank", "[mpi]") {
  const std::string data = make_data("data", 1);
  const std::string two = scratch("two"), one = scratch("one"), half = scratch("half");
  const ProgramResult r2 = mpirun(two, 2, tiny(data, two, "4"));
  INFO(r2.err);
  REQUIRE(r2.status == 0);
  CHECK(r2.err.find("2 ranks, 2 gradient shards") != std::string::npos);
  auto one_args = tiny(data, one, "4");
  one_args.insert(one_args.end(), {"--gradient-shards", "2"});
  const ProgramResult r1 = single(one, one_args);
  INFO(r1.err);
  REQUIRE(r1.status == 0);
  require_same_tensors(two + "/checkpoint.safetensors", one + "/checkpoint.safetensors");
  require_same_tensors(two + "/model.safetensors", one + "/model.safetensors");
  // One train_log.csv, written by rank 0 alone: a header and one line per epoch (24 images / 8 = 3 steps) and the end.
  const std::string log = slurp(two + "/train_log.csv");
  CHECK(std::count(log.begin(), log.end(), '\n') == 3);

  // Half the run on 2 ranks, the rest on 1 (the checkpoint says 2 shards): the same checkpoint again.
  REQUIRE(mpirun(half, 2, tiny(data, half, "2")).status == 0);
  const ProgramResult resumed = single(half, {"train", "--data", data, "--resume", half + "/checkpoint.safetensors",
                                              "--steps", "4", "--out", half, "--threads", "1", "--sampling-steps", "2",
                                              "--final-samples", "4"});
  INFO(resumed.err);
  REQUIRE(resumed.status == 0);
  require_same_tensors(half + "/checkpoint.safetensors", one + "/checkpoint.safetensors");
  // A run of 2 shards cannot go on 3 ranks: they would not divide its batches the same way.
  const std::string three = scratch("three");
  const ProgramResult r3 = mpirun(three, 3, {"train", "--data", data, "--resume", half + "/checkpoint.safetensors",
                                             "--steps", "6", "--out", three});
  CHECK(r3.status != 0);
  CHECK(r3.err.find("--gradient-shards 2 but was started on 3 ranks") != std::string::npos);
}

TEST_CASE("ranks started with different settings or data refuse to train, naming what differs", "[mpi]") {
  const std::string data = make_data("data_a", 1), other = make_data("data_b", 2);
  const std::string dir = scratch("differ");
  auto lr = tiny(data, dir, "2");
  lr.insert(lr.end(), {"--lr", "0.002"});
  const ProgramResult settings = mpirun(dir, 2, tiny(data, dir, "2"), lr);
  CHECK(settings.status != 0);
  CHECK(settings.err.find("disagree on the run's settings: rank 1 has") != std::string::npos);
  CHECK(settings.err.find("\"lr\":0.002") != std::string::npos);
  CHECK(!fs::exists(dir + "/checkpoint.safetensors"));
  const ProgramResult images = mpirun(dir, 2, tiny(data, dir, "2"), tiny(other, dir, "2"));
  CHECK(images.status != 0);
  CHECK(images.err.find("disagree on the training data") != std::string::npos);
}

// The process of rank 1 of the run writing into `dir` (the environment mpirun gives it names its rank), once the
// run has written a checkpoint; 0 if none within 120 s.
pid_t rank_one_once_checkpointed(const std::string& dir) {
  pid_t victim = 0;
  for (int tries = 0; tries < 1200 && victim == 0; ++tries) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!fs::exists(dir + "/checkpoint.safetensors")) continue;
    for (const auto& entry : fs::directory_iterator("/proc")) {
      const std::string pid = entry.path().filename().string();
      if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
      const std::string cmdline = slurp("/proc/" + pid + "/cmdline");
      const std::string env = slurp("/proc/" + pid + "/environ");
      if (cmdline.find(TRAIN_IMAGES_EXE) != std::string::npos && cmdline.find(dir) != std::string::npos &&
          env.find(std::string("OMPI_COMM_WORLD_RANK=1") + '\0') != std::string::npos) {
        victim = static_cast<pid_t>(std::stol(pid));
        break;
      }
    }
  }
  return victim;
}

TEST_CASE("a rank killed with SIGKILL ends the job and leaves the last checkpoint intact", "[mpi]") {
  const std::string data = make_data("data_kill", 3);
  const std::string dir = scratch("kill");
  auto args = tiny(data, dir, "100000");  // far more steps than the test waits for
  const auto start = std::chrono::steady_clock::now();
  ProgramResult result;
  std::thread job([&] { result = mpirun(dir, 2, args, {}, 240); });
  const pid_t victim = rank_one_once_checkpointed(dir);
  REQUIRE(victim != 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // mid-run, maybe mid-checkpoint on rank 0
  REQUIRE(kill(victim, SIGKILL) == 0);
  job.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  INFO(result.err);
  CHECK(result.status != 0);
  CHECK(seconds < 200);  // ended by the kill, not by the test's 240 s limit
  CHECK(result.err.find("signal 9") != std::string::npos);  // mpirun names the rank that died and how
  // and the survivor says why it ends (stopped by mpirun, or a failed exchange)
  CHECK(result.err.find("train_images: rank 0 of 2: ") != std::string::npos);
  // The checkpoint rank 0 wrote last is whole: it loads and holds a step.
  const diffusion::io::SafetensorsReader reader(dir + "/checkpoint.safetensors");
  const auto state = diffusion::read_train_state(reader);
  CHECK(state.at("step").get<std::int64_t>() >= 1);
  CHECK(state.at("gradient_shards").get<std::int64_t>() == 2);
}

TEST_CASE("a rank that stops answering makes the others stop after DIFFUSION_RANK_TIMEOUT, saying why", "[mpi]") {
  const std::string data = make_data("data_stop", 4);
  const std::string dir = scratch("stop");
  const auto start = std::chrono::steady_clock::now();
  ProgramResult result;
  std::thread job([&] { result = mpirun(dir, 2, tiny(data, dir, "100000"), {}, 240, "DIFFUSION_RANK_TIMEOUT=10"); });
  const pid_t victim = rank_one_once_checkpointed(dir);
  REQUIRE(victim != 0);
  REQUIRE(kill(victim, SIGSTOP) == 0);  // alive, but silent: mpirun sees nothing wrong
  job.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  INFO(result.err);
  CHECK(result.status != 0);
  CHECK(seconds < 200);
  CHECK(result.err.find("train_images: rank 0 of 2: the all-") != std::string::npos);
  CHECK(result.err.find("exchange did not complete within 10 s: another rank has died or stopped answering") !=
        std::string::npos);
  const diffusion::io::SafetensorsReader reader(dir + "/checkpoint.safetensors");
  CHECK(diffusion::read_train_state(reader).at("step").get<std::int64_t>() >= 1);
}
