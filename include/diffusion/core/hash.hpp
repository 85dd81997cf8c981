#pragma once
// Content hashing for cache keys: 64-bit FNV-1a (Fowler, Noll, Vo) over bytes. Stable across runs, platforms and
// compilers (a pure function of the bytes), so a key written to a file today matches the same content tomorrow.
// Not cryptographic: it detects changed content (a stale cache), not deliberate collisions.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace diffusion {

inline constexpr std::uint64_t kFnv1a64Offset = 1469598103934665603ull;

// FNV-1a over `size` bytes, continuing from state h (start with kFnv1a64Offset).
inline std::uint64_t fnv1a64(const void* data, std::size_t size, std::uint64_t h = kFnv1a64Offset) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// "fnv1a64:<16 lowercase hex digits>".
inline std::string hash_key(std::uint64_t h) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "fnv1a64:%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace diffusion
