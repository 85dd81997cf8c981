#pragma once
// Internal: the stb_image_write (PNG writer) and stb_image (PNG reader) implementations from Debian's libstb-dev,
// compiled into every translation unit that includes this header, with static linkage (STB_*_STATIC), so the
// header-only library needs no separate .c file and any number of translation units can include it.
//
// Contract for users: do not also define STB_IMAGE_WRITE_IMPLEMENTATION / STB_IMAGE_IMPLEMENTATION, or include the
// stb headers with other settings, in a translation unit that includes this one (stb's implementation sections
// have no include guards). Only PNG decoding is compiled (STBI_ONLY_PNG), from memory only (STBI_NO_STDIO).
// Warnings from stb itself are silenced: this file is marked as a system header.

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
#define STBI_NO_STDIO
#include <stb/stb_image.h>
