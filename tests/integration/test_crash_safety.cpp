// Crash safety of training checkpoints, and the divergence stop.
//  - A training process (diffusion_crash_trainer, built from crash_trainer.cpp) that checkpoints after every step is
//    killed with SIGKILL fifteen times, ten at random moments and five aimed at writes; after each kill the
//    surviving checkpoint must load into a fresh trainer with a step count >= the previous survivor's, whatever
//    temporaries the kill left behind, and every tensor and the metadata in it must equal what the trainer wrote at
//    that step (the test replays the same run, crash_setup.hpp, in-process and saves it at the survivor's step).
//    Kills must have landed mid-write (a temporary of the killed process is left over), or the test proves nothing.
//    What this shows: a process killed at any moment, mid-write included, leaves either the previous complete
//    checkpoint or the new complete one, never a torn, truncated or mixed file: the write goes to a temporary that
//    only rename(2) makes visible, atomically. What it does not show: durability across a power loss or a kernel
//    crash. After a SIGKILL the kernel still writes out the page cache, so the test stays green without the fsyncs
//    of io/atomic_file.hpp; that they are called (file before the rename, folder after) is a property of the code,
//    not something this test can observe.
//  - remove_stale_temporaries removes the temporaries of dead writers only.
//  - A learning rate of 1e8 makes training stop with TrainingDiverged naming the step, and the checkpoint saved
//    just before still loads, with that step count and the weights the failed step did not change.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "diffusion/io/atomic_file.hpp"
#include "diffusion/io/safetensors.hpp"
#include "diffusion/train/checkpoint.hpp"
#include "diffusion/train/dataset.hpp"
#include "diffusion/train/trainer.hpp"
#include "integration/crash_setup.hpp"

extern char** environ;

using namespace diffusion;
namespace fs = std::filesystem;

namespace {

std::string fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(DIFFUSION_TEST_BINARY_DIR) / "crash_safety" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// The temporaries write_file_atomically leaves beside `file` ("<name>.tmp.<pid>.<n>"), by pid.
std::vector<std::pair<long, std::string>> temporaries(const std::string& file) {
  const std::string prefix = fs::path(file).filename().string() + ".tmp.";
  std::vector<std::pair<long, std::string>> out;
  for (const auto& e : fs::directory_iterator(fs::path(file).parent_path())) {
    const std::string name = e.path().filename().string();
    if (name.compare(0, prefix.size(), prefix) == 0) out.emplace_back(std::stol(name.substr(prefix.size())), name);
  }
  return out;
}

// A child process running the crash trainer, its stdout on a pipe; SIGKILLed on destruction if still running.
class Trainee {
 public:
  explicit Trainee(const std::string& checkpoint) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    posix_spawn_file_actions_addclose(&actions, fds[1]);
    std::string program = DIFFUSION_CRASH_TRAINER;
    std::vector<char*> argv = {program.data(), const_cast<char*>(checkpoint.c_str()), nullptr};
    // One OpenMP thread: on a loaded machine spinning OpenMP threads slow each step down by an order of magnitude,
    // and this test is about the writes, not the arithmetic.
    std::vector<std::string> env_strings = {"OMP_NUM_THREADS=1", "OMP_WAIT_POLICY=passive"};
    for (char** e = environ; *e != nullptr; ++e)
      if (std::strncmp(*e, "OMP_NUM_THREADS=", 16) != 0 && std::strncmp(*e, "OMP_WAIT_POLICY=", 16) != 0)
        env_strings.emplace_back(*e);
    std::vector<char*> env;
    for (std::string& e : env_strings) env.push_back(e.data());
    env.push_back(nullptr);
    const int err = posix_spawn(&pid_, program.c_str(), &actions, nullptr, argv.data(), env.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    out_ = fds[0];
    INFO("posix_spawn " << program << ": " << std::strerror(err));
    REQUIRE(err == 0);
  }
  Trainee(const Trainee&) = delete;
  Trainee& operator=(const Trainee&) = delete;
  ~Trainee() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
  }
  pid_t pid() const { return pid_; }

  // Waits (up to timeout) for the "ready <step>" line; returns the step, or -1 on timeout or early exit.
  long long wait_ready(std::chrono::seconds timeout) {
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char c;
      if (::read(out_, &c, 1) != 1) return -1;  // the child exited
      if (c == '\n') return line.rfind("ready ", 0) == 0 ? std::stoll(line.substr(6)) : -1;
      line += c;
    }
    return -1;
  }

  // SIGKILL and reap; returns the wait status.
  int kill_now() {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
};

// The crash trainer's run replayed in-process, uninterrupted: advance(step) brings it to `step` (never backwards).
class Replay {
 public:
  Replay()
      : images_(crash_test::squares()),
        net_(crash_test::config(), crash_test::kModelSeed),
        trainer_(net_, crash_test::schedule(), crash_test::trainer_options()),
        sampler_(images_, crash_test::batch_options()) {}
  const UnetConfig& config() const { return net_.config(); }
  Trainer<float>& advance(long long step) {
    REQUIRE(trainer_.step_count() <= step);
    while (trainer_.step_count() < step) {
      sampler_.batch(trainer_.step_count(), batch_);
      trainer_.step(batch_);
    }
    return trainer_;
  }

 private:
  Tensor<float> images_, batch_;
  Unet<float> net_;
  Trainer<float> trainer_;
  BatchSampler<float> sampler_;
};

// Every tensor (names, dtypes, shapes, bytes) and every metadata entry of two safetensors files; "" when equal,
// else the first difference.
std::string first_difference(const std::string& got_path, const std::string& want_path) {
  const io::SafetensorsReader got(got_path), want(want_path);
  if (got.names() != want.names()) return "the tensor names differ";
  for (const auto& name : want.names()) {
    if (got.info(name).dtype != want.info(name).dtype) return "dtype of " + name;
    if (got.shape(name) != want.shape(name)) return "shape of " + name;
    const Tensor<double> a = got.read<double>(name), b = want.read<double>(name);
    if (std::memcmp(a.data(), b.data(), sizeof(double) * static_cast<std::size_t>(a.numel())) != 0)
      return "the values of " + name;
  }
  for (const auto& [key, value] : want.metadata())
    if (got.metadata().count(key) == 0 || got.metadata().at(key) != value) return "metadata '" + key + "'";
  if (got.metadata().size() != want.metadata().size()) return "the metadata keys differ";
  return "";
}

}  // namespace

TEST_CASE("SIGKILL at random moments and mid-write always leaves a complete checkpoint of a step not older than the last") {
  const std::string dir = fresh_dir("kill");
  const std::string checkpoint = dir + "/run.safetensors";
  Rng rng(20240611);
  // Ten kills at random delays (uniform in 20..620 ms after the trainer is ready), then five aimed at writes: the
  // test waits until the trainer's temporary file appears and kills it at once. The random kills land mid-write
  // about a third of the time (measured); the aimed ones make sure the interrupted-write case is always exercised.
  constexpr int kRandomKills = 10, kAimedKills = 5;
  int kills = 0, loaded = 0, random_mid_write = 0, aimed_mid_write = 0, compared = 0;
  long long previous_step = 0;
  std::vector<long long> survivor_steps;
  Replay replay;
  const std::string expected = dir + "/expected.safetensors";
  const UnetConfig& config = replay.config();
  for (int round = 0; round < kRandomKills + kAimedKills; ++round) {
    const bool aimed = round >= kRandomKills;
    Trainee trainee(checkpoint);
    const long long resumed = trainee.wait_ready(std::chrono::seconds(300));
    INFO("round " << round << ": the trainer resumed at step " << resumed);
    REQUIRE(resumed == previous_step);  // it resumed from the last survivor (step 0: a fresh start)
    // Earlier kills' temporaries were removed by the new process on start (their writers are dead).
    for (const auto& [pid, name] : temporaries(checkpoint)) {
      INFO("leftover " << name);
      REQUIRE(pid == trainee.pid());
    }
    if (round == 0) {  // let the first checkpoint appear, so every later round has a survivor to load
      for (int i = 0; i < 60000 && !fs::exists(checkpoint); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      REQUIRE(fs::exists(checkpoint));
    }
    if (aimed) {
      bool writing = false;
      for (int i = 0; i < 100000 && !writing; ++i) {
        for (const auto& [pid, name] : temporaries(checkpoint)) writing = writing || pid == trainee.pid();
        if (!writing) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      REQUIRE(writing);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng.uniform_int(600)));
    }
    const pid_t pid = trainee.pid();
    const int status = trainee.kill_now();
    REQUIRE(WIFSIGNALED(status));  // killed by us: it did not exit or crash on its own
    REQUIRE(WTERMSIG(status) == SIGKILL);
    ++kills;
    bool interrupted = false;
    for (const auto& [owner, name] : temporaries(checkpoint)) interrupted = interrupted || owner == pid;
    (aimed ? aimed_mid_write : random_mid_write) += interrupted ? 1 : 0;

    // The survivor loads into a fresh trainer, and is not older than the previous one.
    Unet<float> net(config, 12345);
    Trainer<float> trainer(net, crash_test::schedule(), crash_test::trainer_options());
    REQUIRE_NOTHROW(load_checkpoint(checkpoint, trainer));
    ++loaded;
    INFO("survivor step " << trainer.step_count() << ", previous " << previous_step);
    REQUIRE(trainer.step_count() >= previous_step);
    previous_step = trainer.step_count();
    survivor_steps.push_back(previous_step);
    // Its contents are exactly what the trainer wrote at that step: the uninterrupted run saved at the same step
    // (training and resuming are bit-exact) gives the same tensors and metadata, and the same bytes.
    save_checkpoint(expected, replay.advance(previous_step));
    const std::string difference = first_difference(checkpoint, expected);
    INFO("the survivor of round " << round << " differs from the checkpoint of step " << previous_step << ": "
                                  << difference);
    REQUIRE(difference.empty());
    std::ifstream a(checkpoint, std::ios::binary), b(expected, std::ios::binary);
    REQUIRE(std::string(std::istreambuf_iterator<char>(a), {}) == std::string(std::istreambuf_iterator<char>(b), {}));
    ++compared;
  }
  std::string steps;
  for (long long s : survivor_steps) steps += std::to_string(s) + " ";
  const auto size = fs::file_size(checkpoint);
  WARN("crash safety: " << kills << " SIGKILLs (" << kRandomKills << " at random delays, " << random_mid_write
                        << " of them mid-write; " << kAimedKills << " aimed at writes, " << aimed_mid_write
                        << " of them mid-write), " << loaded << " survivors loaded; survivor steps: " << steps
                        << "; checkpoint " << size << " bytes");
  REQUIRE(kills == kRandomKills + kAimedKills);
  REQUIRE(loaded == kills);
  REQUIRE(compared == kills);
  REQUIRE(previous_step > 0);
  REQUIRE(size > 4000000);  // big enough that writes take measurable time (~20 ms with fsync)
  // An aimed kill only misses when the write finishes between the test seeing its temporary and the SIGKILL.
  REQUIRE(aimed_mid_write >= 1);
}

TEST_CASE("remove_stale_temporaries removes the temporaries of dead writers only") {
  const std::string dir = fresh_dir("stale");
  const std::string file = dir + "/model.safetensors";
  // A dead pid: a child that has exited and been reaped.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  REQUIRE(dead > 0);
  ::waitpid(dead, nullptr, 0);
  const std::string self = std::to_string(::getpid());
  const std::vector<std::string> names = {
      "model.safetensors.tmp." + std::to_string(dead) + ".0",  // dead writer: removed
      "model.safetensors.tmp." + std::to_string(dead) + ".7",  // dead writer: removed
      "model.safetensors.tmp." + self + ".3",                  // this (live) process: kept
      "model.safetensors.tmp.1.0",                             // init is alive (or not ours to judge): kept
      "model.safetensors.tmp.abc.0",                           // not a temporary name: kept
      "model.safetensors.tmp." + std::to_string(dead),         // no counter: kept
      "other.safetensors.tmp." + std::to_string(dead) + ".0",  // another file's: kept
      "model.safetensors"};
  for (const auto& n : names) std::ofstream(dir + "/" + n) << "x";
  REQUIRE(io::remove_stale_temporaries(file) == 2);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  std::vector<std::string> expected(names.begin() + 2, names.end());
  std::sort(expected.begin(), expected.end());
  REQUIRE(left == expected);
  REQUIRE_THROWS_WITH(io::remove_stale_temporaries(dir + "/missing/x"), Catch::Contains(dir + "/missing"));
}

TEST_CASE("a learning rate of 1e8 stops training with TrainingDiverged naming the step and the last checkpoint loads") {
  const std::string dir = fresh_dir("diverge");
  const std::string checkpoint = dir + "/diverge.safetensors";
  UnetConfig config;
  config.dim = 8;
  config.channels = 1;
  config.dim_mults = {1, 2};
  Tensor<float> images(Shape{16, 1, 8, 8});
  Rng(5).uniform(images.data(), images.numel(), -1.0, 1.0);
  TrainerOptions options;
  options.adam.lr = 1e8;
  options.seed = 3;
  Unet<float> net(config, 3);
  Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 100), options);
  BatchOptions batches;
  batches.batch_size = 8;
  BatchSampler<float> sampler(images, batches);
  Tensor<float> batch;
  std::int64_t failed_step = -1;
  std::string message;
  for (int i = 0; i < 50 && failed_step < 0; ++i) {
    save_checkpoint(checkpoint, trainer);
    sampler.batch(trainer.step_count(), batch);
    try {
      trainer.step(batch);
    } catch (const TrainingDiverged& e) {
      failed_step = e.step();
      message = e.what();
    }
  }
  INFO("diverged at step " << failed_step << ": " << message);
  REQUIRE(failed_step >= 1);  // at least one step ran: the first (finite) update is what blows the weights up
  REQUIRE(trainer.step_count() == failed_step);
  REQUIRE_THAT(message, Catch::Contains("step " + std::to_string(failed_step)));
  REQUIRE_THAT(message, Catch::Contains("nan") || Catch::Contains("inf"));

  // The checkpoint saved before the failing step loads, with that step count and exactly the current weights (the
  // failed step changed nothing).
  Unet<float> fresh(config, 99);
  Trainer<float> resumed(fresh, NoiseSchedule(BetaSchedule::Linear, 100), options);
  REQUIRE_NOTHROW(load_checkpoint(checkpoint, resumed));
  REQUIRE(resumed.step_count() == failed_step);
  REQUIRE(std::memcmp(fresh.params().values(), net.params().values(), net.params().size() * sizeof(float)) == 0);
  REQUIRE(std::memcmp(resumed.ema()->shadow(), trainer.ema()->shadow(), net.params().size() * sizeof(float)) == 0);
  REQUIRE(resumed.optimizer().step_count() == trainer.optimizer().step_count());
  // And resuming it diverges again at the same step (the step's draws are a function of seed and step).
  sampler.batch(resumed.step_count(), batch);
  try {
    resumed.step(batch);
    FAIL("the resumed run did not diverge");
  } catch (const TrainingDiverged& e) {
    REQUIRE(e.step() == failed_step);
  }
}
