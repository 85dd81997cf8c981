// libFuzzer target: SafetensorsReader on arbitrary bytes (from_bytes, no file; or a JSON header alone, see
// file_from_input), then everything a loader does with a parsed file: every tensor read as double, float and
// (integer data) int32; the U-Net configuration, the training state and the noise schedule read from the metadata;
// load_checkpoint into a trainer built from the file's own configuration. A file that parses must survive a round
// trip through SafetensorsWriter with the same names, shapes, values and metadata.
// Any exception other than diffusion::Error, any crash, leak, hang or sanitizer report is a bug.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/model/unet_plan.hpp"
#include "diffusion/model/unet_weights.hpp"
#include "diffusion/train/checkpoint.hpp"
#include "fuzz_common.hpp"

namespace {

using diffusion::Error;
using diffusion::Tensor;
namespace io = diffusion::io;

bool is_integer(io::DType d) { return d != io::DType::F16 && d != io::DType::BF16 && d != io::DType::F32 && d != io::DType::F64; }

// The metadata consumers, and load_checkpoint into a trainer built from the file's own configuration and schedule
// (when they are valid and the network is small), through an in-memory file.
void exercise_metadata(const io::SafetensorsReader& reader, const std::vector<std::uint8_t>& bytes) {
  try {
    (void)diffusion::read_train_state(reader);
  } catch (const Error&) {
  }
  std::unique_ptr<diffusion::NoiseSchedule> schedule;
  try {
    schedule = std::make_unique<diffusion::NoiseSchedule>(diffusion::read_checkpoint_schedule(reader));
    FUZZ_REQUIRE(schedule->num_timesteps() >= 1);
    for (double a : schedule->alphas_cumprod) FUZZ_REQUIRE(a > 0.0 && a < 1.0);
  } catch (const Error&) {
  }
  diffusion::UnetConfig config;
  try {
    config = diffusion::unet_config_from_metadata(reader.metadata(), reader.path());
    (void)diffusion::plan_unet(config, 100000);  // small networks only: keeps each run fast
  } catch (const Error&) {
    return;
  }
  if (!schedule || config.resolved_out_dim() != config.channels) return;
  static fuzz::MemFile file("fuzz_checkpoint");
  diffusion::Unet<float> net(config, 1);
  diffusion::Trainer<float> trainer(net, *schedule, diffusion::TrainerOptions{});
  try {
    diffusion::load_checkpoint(file.write(bytes.data(), bytes.size()), trainer);
  } catch (const Error&) {
    FUZZ_REQUIRE(trainer.step_count() == 0);  // a refused checkpoint changes nothing
    return;
  }
  FUZZ_REQUIRE(trainer.step_count() >= 0 && trainer.optimizer().step_count() >= 0);
}

// Two input forms: a whole file, or (first byte '{') only the JSON header, to which the target adds the 8-byte
// length and a 128 KiB data section of a fixed byte pattern, so that mutations work on the JSON directly.
std::vector<std::uint8_t> file_from_input(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || data[0] != '{') return std::vector<std::uint8_t>(data, data + size);
  constexpr std::size_t kDataSection = 128 * 1024;
  std::vector<std::uint8_t> bytes(8 + size + kDataSection);
  const std::uint64_t n = size;
  std::memcpy(bytes.data(), &n, 8);
  std::memcpy(bytes.data() + 8, data, size);
  for (std::size_t i = 0; i < kDataSection; ++i) bytes[8 + size + i] = static_cast<std::uint8_t>(i * 37 + 11);
  return bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::uint8_t> bytes = file_from_input(data, size);
  const std::size_t file_size = bytes.size();
  try {
    const auto reader = io::SafetensorsReader::from_bytes(bytes, "fuzz-input");
    exercise_metadata(reader, bytes);
    io::SafetensorsWriter writer;
    bool all_readable = true;
    std::vector<Tensor<double>> values;
    for (const std::string& name : reader.names()) {
      const io::TensorInfo& info = reader.info(name);
      FUZZ_REQUIRE(info.begin <= info.end && info.end <= file_size);
      if (info.shape.size() > static_cast<std::size_t>(diffusion::Shape::kMaxRank)) {
        bool threw = false;
        try {
          (void)reader.shape(name);
        } catch (const Error&) {
          threw = true;
        }
        FUZZ_REQUIRE(threw);
        all_readable = false;
        continue;
      }
      const Tensor<double> d = reader.read<double>(name);
      FUZZ_REQUIRE(static_cast<std::size_t>(d.numel()) * io::dtype_size(info.dtype) == info.end - info.begin);
      const Tensor<float> f = reader.read<float>(name);
      FUZZ_REQUIRE(f.numel() == d.numel());
      if (is_integer(info.dtype)) {
        try {
          const Tensor<std::int32_t> i = reader.read<std::int32_t>(name);
          for (diffusion::Index k = 0; k < i.numel(); ++k) FUZZ_REQUIRE(static_cast<double>(i[k]) == d[k]);
        } catch (const Error&) {  // a value outside int32
        }
      }
      writer.add(name, d);
      values.push_back(d);
    }
    if (!all_readable) return 0;
    for (const auto& kv : reader.metadata()) writer.add_metadata(kv.first, kv.second);
    // Round trip: what was read must come back bit for bit (F64 holds every stored value exactly).
    const auto again = io::SafetensorsReader::from_bytes(writer.serialize(), "fuzz-roundtrip");
    FUZZ_REQUIRE(again.names() == reader.names());
    FUZZ_REQUIRE(again.metadata() == reader.metadata());
    std::size_t k = 0;
    for (const std::string& name : reader.names()) {
      const Tensor<double> d = again.read<double>(name);
      const Tensor<double>& before = values[k++];
      FUZZ_REQUIRE(d.shape() == before.shape());
      FUZZ_REQUIRE(d.numel() == 0 ||
                   std::memcmp(d.data(), before.data(), sizeof(double) * static_cast<std::size_t>(d.numel())) == 0);
    }
  } catch (const Error&) {
  }
  return 0;
}
