// libFuzzer harness for the readers of untrusted files (not part of the test suite; built by hand):
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude tests/io/fuzz_io.cpp -lz -o fuzz_io
//   ./fuzz_io -max_total_time=60 CORPUS_DIR
// The first input byte picks the reader (even: safetensors, odd: IDX); the rest is the file. Any exception other
// than diffusion::Error, any crash or sanitizer report is a bug.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "diffusion/io/idx.hpp"
#include "diffusion/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  static const std::string path = "/tmp/diffusion_fuzz_io." + std::to_string(::getpid());
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  if (size > 1) std::fwrite(data + 1, 1, size - 1, f);
  std::fclose(f);
  try {
    if (data[0] % 2 == 0) {
      diffusion::io::SafetensorsReader reader(path);
      for (const auto& name : reader.names())
        if (reader.info(name).shape.size() <= 4) (void)reader.read<double>(name);
    } else {
      (void)diffusion::io::read_idx(path, 1 << 24);
    }
  } catch (const diffusion::Error&) {
  }
  return 0;
}
