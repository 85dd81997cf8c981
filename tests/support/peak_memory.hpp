#pragma once
// PeakMemory: how much this process's peak resident memory grew while something ran (Linux).
//
//   testing::PeakMemory peak;      // resets the high-water mark to the current resident size
//   do_something();
//   peak.growth_bytes()           // VmHWM now - resident size at the reset
//
// The reset writes "5" to /proc/self/clear_refs (Linux >= 4.0), so an earlier test's peak in the same process does
// not hide this one's. Where that is not allowed, the growth is measured from the high-water mark at construction
// (a lower bound when an earlier peak was higher: exact under CTest, which runs each test case in its own process);
// reset_worked() says which. Pages must be touched to count: a buffer that is allocated and zero-filled (as the
// parameter store does) counts in full.

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace diffusion::testing {

class PeakMemory {
 public:
  PeakMemory() {
    reset_worked_ = reset_high_water_mark();
    baseline_kb_ = reset_worked_ ? status_kb("VmRSS:") : status_kb("VmHWM:");
  }

  bool reset_worked() const { return reset_worked_; }
  // -1 when /proc/self/status cannot be read.
  long long baseline_bytes() const { return baseline_kb_ < 0 ? -1 : baseline_kb_ * 1024; }
  long long growth_bytes() const {
    const long long hwm = status_kb("VmHWM:");
    if (hwm < 0 || baseline_kb_ < 0) return -1;
    return (hwm > baseline_kb_ ? hwm - baseline_kb_ : 0) * 1024;
  }

  // A field of /proc/self/status in kB ("VmHWM:", "VmRSS:"), or -1.
  static long long status_kb(const char* field) {
    std::ifstream in("/proc/self/status");
    std::string line;
    const std::size_t n = std::strlen(field);
    while (std::getline(in, line))
      if (line.compare(0, n, field) == 0) return std::atoll(line.c_str() + n);
    return -1;
  }

 private:
  static bool reset_high_water_mark() {
    std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
    if (f == nullptr) return false;
    const bool wrote = std::fputs("5", f) >= 0;
    return std::fclose(f) == 0 && wrote;
  }

  bool reset_worked_ = false;
  long long baseline_kb_ = -1;
};

}  // namespace diffusion::testing
