# The packages every user of diffusion::diffusion needs (all from Debian: libeigen3-dev, libxsimd-dev,
# nlohmann-json3-dev, zlib1g-dev, and the compiler's OpenMP). Used by the build tree and by the installed
# diffusionConfig.cmake alike.
include(CMakeFindDependencyMacro)
find_dependency(Eigen3 3.3 NO_MODULE)
find_dependency(OpenMP COMPONENTS CXX)
find_dependency(nlohmann_json 3)
find_dependency(ZLIB)

# xsimd is used as plain headers: Debian's xsimdConfig.cmake links an 'xtl' library that xsimd's SIMD core does
# not need and that is often not installed, so the target is built here from the header's location.
if(NOT TARGET diffusion::xsimd)
  find_path(DIFFUSION_XSIMD_INCLUDE_DIR xsimd/xsimd.hpp)
  if(NOT DIFFUSION_XSIMD_INCLUDE_DIR)
    message(FATAL_ERROR "diffusion: xsimd headers not found (Debian: apt-get install libxsimd-dev)")
  endif()
  add_library(diffusion::xsimd INTERFACE IMPORTED)
  set_target_properties(diffusion::xsimd PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${DIFFUSION_XSIMD_INCLUDE_DIR}")
endif()
