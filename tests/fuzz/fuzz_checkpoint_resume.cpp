// libFuzzer target: `fashion_mnist train --resume` on a checkpoint with damaged metadata. The input is the metadata
// values of a checkpoint, separated by NUL bytes, in this order (a missing or empty section leaves its key out):
//   "fashion_mnist.options" \0 "fashion_mnist.run" \0 "diffusion.train" \0 "diffusion.unet" \0 "diffusion.unet.extensions"
// The target pairs them with the tensors of a real small checkpoint (checkpoint_resume_seed.hpp: the example's own
// code trained one step of a dim-4 ConvNeXt U-Net) and runs the example's resume path on it, the code of
// examples/fashion_mnist/{options,resume}.cpp and examples/common/progress.cpp compiled in:
//   1. prepare_resume with three command lines: `--resume` alone; with optimiser and run flags (--lr, --steps,
//      --threads, --out, --data); with configuration flags that may differ from the stored ones (--dim, --schedule);
//   2. when `--resume` alone is accepted: check_resume_images, the network and trainer run_train builds from the
//      merged options, load_checkpoint, the run's length and the progress display (as run_train).
// Properties: every failure is a diffusion::Error whose message names the checkpoint (anything else: another
// exception type, a crash, a sanitizer report, a hang, an allocation above -malloc_limit_mb, is a bug); and the
// merge is right: a resumed run's options are values the command line accepts (the example's own CLI11 flags parse
// them back unchanged), flags given on the command line win over the stored options (--lr, --steps, --threads,
// --out, --data), a configuration flag equal to the stored value is accepted and one that differs is refused, and
// the outputs go next to the checkpoint unless --out is given.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "checkpoint_resume_seed.hpp"
#include "diffusion/io/safetensors.hpp"
#include "diffusion/train/checkpoint.hpp"
#include "diffusion/train/dataset.hpp"
#include "examples/fashion_mnist/progress.hpp"
#include "fuzz_common.hpp"

namespace {

using namespace diffusion;
namespace fm = fashion_mnist;

constexpr const char* kPath = "runs/fuzz/checkpoint.safetensors";  // what error messages must name

// The seed checkpoint's tensors, kept in a writer to which each input's metadata is added.
const io::SafetensorsWriter& tensors() {
  static const io::SafetensorsWriter w = [] {
    const io::SafetensorsReader seed = fuzz::resume_seed_checkpoint();
    io::SafetensorsWriter out;
    for (const std::string& name : seed.names()) {
      if (seed.info(name).dtype == io::DType::F64) out.add(name, seed.read<double>(name));
      else out.add(name, seed.read<float>(name));
    }
    return out;
  }();
  return w;
}

[[noreturn]] void bad_message(const char* what, const std::string& message) {
  std::fprintf(stderr, "fuzz property violated: %s: %s\n", what, message.c_str());
  std::abort();
}

// Runs `f`; returns true if it completed. A diffusion::Error must name the checkpoint; any other exception aborts.
template <class F>
bool refused_properly(F&& f) {
  try {
    f();
    return true;
  } catch (const Error& e) {
    if (std::strstr(e.what(), kPath) == nullptr) bad_message("an error that does not name the checkpoint", e.what());
    return false;
  } catch (const std::exception& e) {
    bad_message("an exception other than diffusion::Error", e.what());
  }
}

// run_train from the merged options to the first step, on 64 images of 28x28 (the data is not the subject here).
void train_from(const io::SafetensorsReader& reader, const fm::ResumedRun& run) {
  const fm::TrainOptions& o = run.options;
  constexpr Index kImages = 64, kSize = 28;
  if (!refused_properly([&] { fm::check_resume_images(run, kImages, o.data); })) return;
  FUZZ_REQUIRE(run.plan.parameter_count <= 100000);  // the tensors matched the plan: the network is that small
  const Tensor<float> images(Shape{kImages, 1, kSize, kSize}, 0.5f);
  BatchOptions bo;
  bo.batch_size = o.batch;
  bo.seed = o.seed;
  BatchSampler<float> sampler(images, bo);
  const std::int64_t per_epoch = sampler.batches_per_epoch();
  FUZZ_REQUIRE(per_epoch >= 1);
  const std::int64_t total = o.steps > 0 ? o.steps : static_cast<std::int64_t>(o.epochs) * per_epoch;
  // A stored learning-rate decay with no steps after its warm-up is refused with the flags named (each is in range).
  TrainerOptions trainer_options;
  try {
    trainer_options = fm::trainer_options(o, total);
  } catch (const Error& e) {
    if (std::strstr(e.what(), "--lr-decay") == nullptr) bad_message("a schedule error that names no flag", e.what());
    return;
  }
  Unet<float> net(run.config, o.seed);
  Trainer<float> trainer(net, fm::noise_schedule(o), trainer_options);
  if (!refused_properly([&] { load_checkpoint(reader, trainer); })) {
    FUZZ_REQUIRE(trainer.step_count() == 0);  // a refused checkpoint changes nothing
    return;
  }
  const std::int64_t first = trainer.step_count();
  static std::FILE* devnull = std::fopen("/dev/null", "w");
  fm::ProgressDisplay progress(first, total, per_epoch, run.info.elapsed, devnull);
  if (first < total) {
    Tensor<float> batch;
    sampler.batch(first, batch);
    FUZZ_REQUIRE(batch.dim(0) >= 1 && batch.dim(0) <= o.batch);
    progress.update(first + 1, 0.25, batch.dim(0), 0.01);
  }
  progress.finish();
  (void)fm::format_duration(progress.elapsed());
}

// Every option of a resumed run must be a value the command line accepts: the example's own flags (add_train_flags,
// with their CLI11 validators) parse `o`'s values back unchanged. The line is rendered from the option table that
// also writes the stored JSON, so every stored option is in it; independent of train_options_from_json's checks.
void require_flags_accept(const fm::TrainOptions& o) {
  // Not rendered: the paths (free text, set below) and steps 0, stored only ("the length is --epochs").
  const std::string line = examples::command_line(o, fm::train_option_rows(), [&o](const std::string& flag) {
    return flag != "data" && flag != "out" && flag != "resume" && (flag != "steps" || o.steps != 0);
  });
  CLI::App app;
  fm::TrainOptions parsed;
  fm::add_train_flags(app, parsed);
  try {
    app.parse(line, false);
  } catch (const CLI::ParseError& e) {
    bad_message("a resumed run's option that the command line refuses", line + ": " + e.what());
  }
  parsed.steps = o.steps;
  parsed.data = o.data;
  parsed.out = o.out;
  if (fm::to_json(parsed) != fm::to_json(o))
    bad_message("the command line reads a resumed run's options back differently",
                fm::to_json(parsed).dump() + " != " + fm::to_json(o).dump());
}

// The configuration of two merged runs of the same checkpoint must be the same.
bool same_configuration(const fm::TrainOptions& a, const fm::TrainOptions& b) {
  return a.schedule == b.schedule && a.timesteps == b.timesteps && a.loss == b.loss && a.prediction == b.prediction &&
         a.block == b.block && a.dim == b.dim && a.dim_mults == b.dim_mults && a.batch == b.batch && a.seed == b.seed &&
         a.ema_decay == b.ema_decay && a.conditional == b.conditional && a.cond_drop_prob == b.cond_drop_prob &&
         a.gradient_shards == b.gradient_shards;
}

}  // namespace

// The seed checkpoint (one Unet, one training step) is built once here, before libFuzzer's -timeout applies to inputs:
// built by the first input instead, it took more than the 10 s timeout on a loaded machine under ASan.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)tensors();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  io::SafetensorsWriter writer = tensors();
  std::size_t at = 0;
  for (const std::string& key : fuzz::resume_sections()) {
    if (at > input.size()) break;
    const std::size_t nul = std::min(input.find('\0', at), input.size());
    if (nul > at) writer.add_metadata(key, input.substr(at, nul - at));
    at = nul + 1;
  }
  std::vector<std::uint8_t> bytes;
  try {
    bytes = writer.serialize();
  } catch (const Error&) {
    return 0;  // a section is not valid UTF-8: safetensors metadata cannot hold it
  }
  const io::SafetensorsReader reader = io::SafetensorsReader::from_bytes(std::move(bytes), kPath);

  // 1. `train --resume FILE`: the stored options, outputs next to the checkpoint.
  fm::TrainOptions flags;  // the command line's defaults, as main() binds them
  flags.resume = kPath;
  std::optional<fm::ResumedRun> alone;
  if (refused_properly([&] { alone = fm::prepare_resume(reader, flags, {"resume"}); })) {
    FUZZ_REQUIRE(alone->options.resume == kPath && alone->options.out == "runs/fuzz");
    require_flags_accept(alone->options);
    train_from(reader, *alone);
  }

  // 2. Optimiser and run flags win over the stored values.
  fm::TrainOptions run_flags = flags;
  run_flags.lr = 5e-4;
  run_flags.steps = 3;
  run_flags.threads = 1;
  run_flags.out = "elsewhere";
  run_flags.data = "/no/such/folder";
  std::optional<fm::ResumedRun> with_run_flags;
  if (refused_properly([&] {
        with_run_flags = fm::prepare_resume(reader, run_flags, {"resume", "lr", "steps", "threads", "out", "data"});
      })) {
    const fm::TrainOptions& o = with_run_flags->options;
    FUZZ_REQUIRE(o.lr == 5e-4 && o.steps == 3 && o.threads == 1 && o.out == "elsewhere" && o.data == "/no/such/folder");
    require_flags_accept(o);
    if (alone) FUZZ_REQUIRE(same_configuration(o, alone->options));
  }

  // 3. Configuration flags: accepted when equal to the stored ones, refused when they differ.
  fm::TrainOptions config_flags = flags;
  config_flags.dim = 4;
  config_flags.schedule = "cosine";
  std::optional<fm::ResumedRun> with_config_flags;
  if (refused_properly(
          [&] { with_config_flags = fm::prepare_resume(reader, config_flags, {"resume", "dim", "schedule"}); })) {
    const fm::TrainOptions& o = with_config_flags->options;
    FUZZ_REQUIRE(o.dim == 4 && o.schedule == "cosine");
    if (alone) FUZZ_REQUIRE(same_configuration(o, alone->options));
  }
  if (alone && alone->options.dim == 4 && alone->options.schedule == "cosine") FUZZ_REQUIRE(with_config_flags);
  return 0;
}
