#pragma once
// Helpers shared by the libFuzzer targets: an in-memory file with a path (for readers that take a path), and a
// check that aborts (so libFuzzer records the input) when a property of the library does not hold.

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace fuzz {

// A memfd reachable as "/proc/self/fd/<fd>": path-based readers (read_idx, load_unet) see a regular file, without
// a disk write per input. Rewritten in place for every input.
class MemFile {
 public:
  explicit MemFile(const char* name) : fd_(::memfd_create(name, MFD_CLOEXEC)) {
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  ~MemFile() { ::close(fd_); }

  // Replaces the contents with data[0..size) and returns the path.
  const std::string& write(const void* data, std::size_t size) {
    if (::ftruncate(fd_, 0) != 0) std::abort();
    const char* p = static_cast<const char*>(data);
    std::size_t done = 0;
    while (done < size) {
      const ssize_t w = ::pwrite(fd_, p + done, size - done, static_cast<off_t>(done));
      if (w <= 0) std::abort();
      done += static_cast<std::size_t>(w);
    }
    return path_;
  }
  const std::string& path() const { return path_; }

 private:
  int fd_;
  std::string path_;
};

// A violated property: print it and abort, so that libFuzzer saves the input as a crash.
[[noreturn]] inline void property_failed(const char* what, const char* file, int line) {
  std::fprintf(stderr, "fuzz property violated at %s:%d: %s\n", file, line, what);
  std::abort();
}

}  // namespace fuzz

#define FUZZ_REQUIRE(cond)                                          \
  do {                                                              \
    if (!(cond)) ::fuzz::property_failed(#cond, __FILE__, __LINE__); \
  } while (false)
