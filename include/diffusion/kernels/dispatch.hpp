#pragma once
// The switch between fast kernels and their plain reference twins. Every kernel in kernels/ checks
// reference_kernels() on entry; tests flip it to compare the two paths, and users can flip it to rule out a kernel
// bug. The reference twins are straightforward loops written for obviousness, not speed.

#include <atomic>

namespace diffusion::kernels {

inline std::atomic<bool>& reference_kernels_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}
// Sends every kernel to its reference twin (true) or back to the fast path (false).
inline void use_reference_kernels(bool on) { reference_kernels_flag().store(on, std::memory_order_relaxed); }
inline bool reference_kernels() { return reference_kernels_flag().load(std::memory_order_relaxed); }

// Scoped switch for tests: ReferenceKernels on; ... restores the previous setting when it goes out of scope.
class ReferenceKernelsScope {
 public:
  explicit ReferenceKernelsScope(bool on) : previous_(reference_kernels()) { use_reference_kernels(on); }
  ~ReferenceKernelsScope() { use_reference_kernels(previous_); }
  ReferenceKernelsScope(const ReferenceKernelsScope&) = delete;
  ReferenceKernelsScope& operator=(const ReferenceKernelsScope&) = delete;

 private:
  bool previous_;
};

}  // namespace diffusion::kernels
