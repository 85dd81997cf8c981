# Warnings and sanitizers for the project's own executables (tests, examples, benchmarks); consumers of the
# INTERFACE target are not affected.
add_library(diffusion_project_options INTERFACE)
target_compile_options(diffusion_project_options INTERFACE
  $<$<CXX_COMPILER_ID:GNU,Clang>:-Wall -Wextra -Wpedantic -Wshadow -Wno-psabi>)
if(DIFFUSION_SANITIZE)
  target_compile_options(diffusion_project_options INTERFACE
    -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g)
  target_link_options(diffusion_project_options INTERFACE -fsanitize=address,undefined)
endif()
