// The kernels' per-thread scratch (kernels/scratch.hpp): a slot keeps its memory between uses on a thread, and a
// second live use of a slot on the same thread (which would overwrite the first) throws instead of corrupting.
#include <catch2/catch.hpp>

#include "diffusion/kernels/scratch.hpp"

using namespace diffusion;
using kernels::Scratch;
using kernels::ScratchBuffer;

TEST_CASE("a scratch slot is reused and refuses a second live use on one thread") {
  float* first = nullptr;
  {
    const ScratchBuffer<float, Scratch::Im2col> a(1000);
    first = a.data();
    first[999] = 1.0f;
    // Another slot, or another element type, is another buffer.
    const ScratchBuffer<float, Scratch::ConvWeights> b(1000);
    const ScratchBuffer<double, Scratch::Im2col> c(1000);
    REQUIRE(b.data() != first);
    REQUIRE(static_cast<void*>(c.data()) != static_cast<void*>(first));
    // The same slot while `a` lives: the two uses would share memory.
    REQUIRE_THROWS_WITH((ScratchBuffer<float, Scratch::Im2col>(10)),
                        Catch::Contains("Im2col") && Catch::Contains("twice"));
  }
  const ScratchBuffer<float, Scratch::Im2col> again(500);  // released: free to take, same memory, no allocation
  REQUIRE(again.data() == first);
}
