#pragma once
// Internal: the stb_image_write (PNG writer), stb_image (reader) and stb_image_resize (v0.97, "v1") implementations
// from Debian's libstb-dev, compiled into every translation unit that includes this header, with static linkage
// (STB_*_STATIC), so the header-only library needs no separate .c file and any number of translation units can
// include it.
//
// Contract for users: do not also define STB_IMAGE_WRITE_IMPLEMENTATION / STB_IMAGE_IMPLEMENTATION /
// STB_IMAGE_RESIZE_IMPLEMENTATION, or include the stb headers with other settings, in a translation unit that
// includes this one (stb's implementation sections have no include guards). Decoders compiled: PNG, JPEG, BMP, TGA
// and GIF (io/image_decode.hpp), from memory only (STBI_NO_STDIO), with stb's longer failure messages
// (STBI_FAILURE_USERMSG); stb_image keeps its failure reason per thread (thread_local), so decoding in parallel is
// safe. Warnings from stb itself are silenced: this file is marked as a system header.

#if defined(__GNUC__)
#pragma GCC system_header
#endif

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#include <stb/stb_image_write.h>

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_TGA
#define STBI_ONLY_GIF
#define STBI_NO_STDIO
#define STBI_FAILURE_USERMSG
#include <stb/stb_image.h>

#define STB_IMAGE_RESIZE_STATIC
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb/stb_image_resize.h>
