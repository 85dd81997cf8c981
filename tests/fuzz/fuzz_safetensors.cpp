// libFuzzer target: SafetensorsReader on arbitrary bytes (from_bytes, no file), then everything a loader does with
// a parsed file: every tensor read as double, float and (integer data) int32; the U-Net configuration and the
// training state read from the metadata; the noise schedule of a checkpoint. A file that parses must survive a
// round trip through SafetensorsWriter with the same names, shapes, values and metadata.
// Any exception other than diffusion::Error, any crash, leak, hang or sanitizer report is a bug.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "diffusion/io/safetensors.hpp"
#include "diffusion/model/unet_weights.hpp"
#include "diffusion/train/checkpoint.hpp"
#include "fuzz_common.hpp"

namespace {

using diffusion::Error;
using diffusion::Tensor;
namespace io = diffusion::io;

bool is_integer(io::DType d) { return d != io::DType::F16 && d != io::DType::BF16 && d != io::DType::F32 && d != io::DType::F64; }

void exercise_metadata(const io::SafetensorsReader& reader) {
  try {
    (void)diffusion::unet_config_from_metadata(reader.metadata(), reader.path());
  } catch (const Error&) {
  }
  try {
    (void)diffusion::read_train_state(reader);
  } catch (const Error&) {
  }
  try {
    const diffusion::NoiseSchedule s = diffusion::read_checkpoint_schedule(reader);
    FUZZ_REQUIRE(s.num_timesteps() >= 1);
    for (double a : s.alphas_cumprod) FUZZ_REQUIRE(a > 0.0 && a < 1.0);
  } catch (const Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::uint8_t> bytes(data, data + size);
  try {
    const auto reader = io::SafetensorsReader::from_bytes(std::move(bytes), "fuzz-input");
    exercise_metadata(reader);
    io::SafetensorsWriter writer;
    bool all_readable = true;
    std::vector<Tensor<double>> values;
    for (const std::string& name : reader.names()) {
      const io::TensorInfo& info = reader.info(name);
      FUZZ_REQUIRE(info.begin <= info.end && info.end <= size);
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
