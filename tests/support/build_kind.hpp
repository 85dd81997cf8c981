#pragma once
// What kind of build the tests run in.

namespace diffusion::testing {

// True in a build instrumented with AddressSanitizer (GCC defines __SANITIZE_ADDRESS__; clang has __has_feature),
// where arithmetic runs several times slower: the few tests that repeat the same arithmetic thousands of times
// check a sample of it there (the Release suite checks all of it).
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitizedBuild = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kSanitizedBuild = true;
#else
inline constexpr bool kSanitizedBuild = false;
#endif
#else
inline constexpr bool kSanitizedBuild = false;
#endif

}  // namespace diffusion::testing
