#pragma once
// Errors: every precondition failure in the library throws diffusion::Error with a message that names the
// layer, argument, file or field at fault and what was expected. Nothing calls exit(); nothing returns an empty
// result to mean "failed".

#include <sstream>
#include <stdexcept>
#include <string>

namespace diffusion {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace diffusion

// DIFFUSION_CHECK(cond, message): throws diffusion::Error when cond is false. `message` is a stream expression,
// so values can be spliced in: DIFFUSION_CHECK(c % g == 0, "GroupNorm: channels " << c << " not divisible by " << g);
#define DIFFUSION_CHECK(cond, message)                 \
  do {                                                 \
    if (!(cond)) {                                     \
      std::ostringstream diffusion_check_stream_;      \
      diffusion_check_stream_ << message;              \
      throw ::diffusion::Error(diffusion_check_stream_.str()); \
    }                                                  \
  } while (false)
