#pragma once
// The IDX format of (Fashion-)MNIST, plain or gzip-compressed (detected by the 1f 8b magic).
//
// Layout: magic 00 00 <type> <ndims>, then ndims big-endian int32 dimensions, then the elements row-major.
// Only unsigned bytes (type 0x08) are supported: that is what MNIST and Fashion-MNIST use.
//
// read_idx(path, max_bytes)
//   ensures: dims and exactly prod(dims) data bytes. Errors (diffusion::Error, message starting with
//            "IDX file '<path>': ") for: a missing file ("does not exist"), a bad magic or element type, a header
//            promising more than max_bytes, truncated data, data or bytes beyond what the header promises, a
//            corrupt or truncated gzip stream (including a CRC mismatch).
//   The header is never trusted for allocation: data is read in 1 MiB chunks and the buffer grows only with
//   bytes actually decoded, so a lying header costs at most what the file really holds (up to max_bytes).
// load_idx_images<T>(path)
//   requires: an image file (magic 0x00000803: dims N, H, W).
//   ensures:  (N, 1, H, W) with pixel p mapped to p / 255 * 2 - 1, computed in T as torchvision's ToTensor()
//             followed by t * 2 - 1 does, so 0 -> -1 and 255 -> 1 exactly.
// write_idx / write_idx_images: the inverse, gzip-compressed by default (deterministic: zlib writes mtime 0),
//   written atomically.

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "diffusion/core/error.hpp"
#include "diffusion/core/shape.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/io/atomic_file.hpp"

namespace diffusion::io {

struct IdxArray {
  std::vector<std::int32_t> dims;
  std::vector<std::uint8_t> data;  // row-major, prod(dims) bytes
};

inline constexpr std::uint64_t kIdxDefaultMaxBytes = std::uint64_t{1} << 30;  // 1 GiB: 20x the MNIST training set

namespace detail {

// Sequential reader over a plain or gzip file; throws Error prefixed with the file name on any problem.
class IdxSource {
 public:
  explicit IdxSource(const std::string& path) : path_(path), in_(1 << 16) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      const int err = errno;
      DIFFUSION_CHECK(err != ENOENT, prefix() << "the file does not exist");
      throw Error(prefix() + "cannot open: " + std::strerror(err));
    }
    DIFFUSION_CHECK(S_ISREG(st.st_mode), prefix() << "not a regular file");
    file_.reset(std::fopen(path.c_str(), "rb"));
    DIFFUSION_CHECK(file_ != nullptr, prefix() << "cannot open: " << std::strerror(errno));
    refill();
    gzip_ = in_len_ >= 2 && in_[0] == 0x1f && in_[1] == 0x8b;
    if (gzip_) {
      std::memset(&zs_, 0, sizeof zs_);
      DIFFUSION_CHECK(inflateInit2(&zs_, 15 + 16) == Z_OK, prefix() << "zlib inflateInit2 failed");  // gzip only
      zs_open_ = true;
      zs_.next_in = in_.data();  // the bytes already read by the magic check
      zs_.avail_in = static_cast<uInt>(in_len_);
    }
  }
  IdxSource(const IdxSource&) = delete;
  IdxSource& operator=(const IdxSource&) = delete;
  ~IdxSource() {
    if (zs_open_) inflateEnd(&zs_);
  }

  std::string prefix() const { return "IDX file '" + path_ + "': "; }
  bool gzip() const { return gzip_; }

  // Reads up to n bytes of (decompressed) content; fewer only at the end of the content.
  std::size_t read(std::uint8_t* dst, std::size_t n) { return gzip_ ? read_gzip(dst, n) : read_plain(dst, n); }

  // Throws unless the content, and for gzip the compressed file too, ends exactly here.
  void expect_end(std::uint64_t promised) {
    std::uint8_t extra[1];
    DIFFUSION_CHECK(read(extra, 1) == 0, prefix() << "more data than the " << promised
                                                  << " bytes the header promises (trailing garbage)");
    if (gzip_) {
      std::uint64_t after = zs_.avail_in;
      if (after == 0) {
        refill();
        after = in_len_;
      }
      DIFFUSION_CHECK(after == 0, prefix() << "unexpected bytes after the end of the gzip stream");
    }
  }

 private:
  void refill() {
    in_len_ = std::fread(in_.data(), 1, in_.size(), file_.get());
    in_pos_ = 0;
    DIFFUSION_CHECK(!std::ferror(file_.get()), prefix() << "read error: " << std::strerror(errno));
    if (gzip_) {
      zs_.next_in = in_.data();
      zs_.avail_in = static_cast<uInt>(in_len_);
    }
  }

  std::size_t read_plain(std::uint8_t* dst, std::size_t n) {
    std::size_t got = 0;
    while (got < n) {
      if (in_pos_ == in_len_) {
        refill();
        if (in_len_ == 0) break;
      }
      const std::size_t take = std::min(n - got, in_len_ - in_pos_);
      std::memcpy(dst + got, in_.data() + in_pos_, take);
      in_pos_ += take;
      got += take;
    }
    return got;
  }

  std::size_t read_gzip(std::uint8_t* dst, std::size_t n) {
    std::size_t got = 0;
    while (got < n && !stream_end_) {
      if (zs_.avail_in == 0) refill();
      const bool input_exhausted = zs_.avail_in == 0;
      const std::size_t want = std::min<std::size_t>(n - got, 1u << 30);
      zs_.next_out = dst + got;
      zs_.avail_out = static_cast<uInt>(want);
      const int ret = inflate(&zs_, Z_NO_FLUSH);
      const std::size_t produced = want - zs_.avail_out;
      got += produced;
      if (ret == Z_STREAM_END) {
        stream_end_ = true;
      } else if (ret == Z_BUF_ERROR || (ret == Z_OK && produced == 0 && input_exhausted)) {
        // No progress possible: only legitimate when more input can still arrive.
        DIFFUSION_CHECK(!input_exhausted, prefix() << "the gzip stream is truncated (the file ends before the "
                                                       "end of the compressed data)");
      } else if (ret != Z_OK) {
        throw Error(prefix() + "corrupt gzip stream: " + (zs_.msg ? zs_.msg : zError(ret)));
      }
    }
    return got;
  }

  std::string path_;
  struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::unique_ptr<std::FILE, FileCloser> file_;  // closed even when the constructor throws
  std::vector<std::uint8_t> in_;
  std::size_t in_len_ = 0, in_pos_ = 0;
  bool gzip_ = false;
  z_stream zs_{};
  bool zs_open_ = false;
  bool stream_end_ = false;
};

// gzip-compresses bytes in memory (level 6, mtime 0: identical input gives identical output).
inline std::vector<std::uint8_t> gzip_compress(const std::uint8_t* data, std::size_t size) {
  z_stream zs{};
  DIFFUSION_CHECK(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK,
                  "gzip_compress: zlib deflateInit2 failed");
  std::vector<std::uint8_t> out;
  std::size_t pos = 0;
  int ret = Z_OK;
  while (ret != Z_STREAM_END) {
    const std::size_t in_chunk = std::min<std::size_t>(size - pos, 1u << 30);
    zs.next_in = const_cast<Bytef*>(data + pos);  // zlib's API is not const-correct; it does not write input
    zs.avail_in = static_cast<uInt>(in_chunk);
    const bool last = pos + in_chunk == size;
    std::uint8_t buf[1 << 16];
    do {
      zs.next_out = buf;
      zs.avail_out = sizeof buf;
      ret = deflate(&zs, last ? Z_FINISH : Z_NO_FLUSH);
      if (ret == Z_STREAM_ERROR) {
        deflateEnd(&zs);
        throw Error("gzip_compress: zlib deflate failed");
      }
      out.insert(out.end(), buf, buf + (sizeof buf - zs.avail_out));
    } while (zs.avail_out == 0);
    pos += in_chunk - zs.avail_in;
  }
  deflateEnd(&zs);
  return out;
}

}  // namespace detail

inline IdxArray read_idx(const std::string& path, std::uint64_t max_bytes = kIdxDefaultMaxBytes) {
  detail::IdxSource src(path);
  const std::string prefix = src.prefix();
  std::uint8_t magic[4];
  const std::size_t got_magic = src.read(magic, 4);
  DIFFUSION_CHECK(got_magic == 4, prefix << "too short for an IDX header (" << got_magic << " bytes)");
  DIFFUSION_CHECK(magic[0] == 0 && magic[1] == 0, prefix << "not an IDX file (the magic must start with 00 00, got "
                                                         << std::hex << int(magic[0]) << ' ' << int(magic[1]) << ")");
  DIFFUSION_CHECK(magic[2] == 0x08, prefix << "element type 0x" << std::hex << int(magic[2])
                                           << " is not supported; only unsigned bytes (0x08) are");
  const int ndims = magic[3];
  DIFFUSION_CHECK(ndims >= 1 && ndims <= 8, prefix << "unsupported number of dimensions " << ndims << " (1 to 8)");

  IdxArray out;
  std::uint64_t total = 1;
  for (int i = 0; i < ndims; ++i) {
    std::uint8_t b[4];
    DIFFUSION_CHECK(src.read(b, 4) == 4, prefix << "truncated header (dimension " << i << " of " << ndims << ")");
    const std::uint32_t d = (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | b[3];
    DIFFUSION_CHECK(d <= 0x7fffffffu, prefix << "dimension " << i << " is negative (" << static_cast<std::int32_t>(d) << ")");
    out.dims.push_back(static_cast<std::int32_t>(d));
    if (__builtin_mul_overflow(total, std::uint64_t{d}, &total)) total = ~std::uint64_t{0};  // saturate
  }
  if (std::find(out.dims.begin(), out.dims.end(), 0) != out.dims.end()) total = 0;
  if (total > max_bytes) {
    std::string dims;
    for (std::int32_t d : out.dims) dims += (dims.empty() ? "" : " x ") + std::to_string(d);
    throw Error(prefix + "the header promises " + dims + " bytes of data, more than the limit of " +
                std::to_string(max_bytes) + " bytes");
  }

  // Grow with the bytes actually decoded, never to the header's promise up front.
  const std::size_t chunk = std::size_t{1} << 20;
  std::size_t have = 0;
  while (have < total) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, total - have));
    out.data.resize(have + want);
    const std::size_t got = src.read(out.data.data() + have, want);
    have += got;
    DIFFUSION_CHECK(got == want, prefix << "truncated: the header promises " << total << " data bytes but the "
                                        << (src.gzip() ? "decompressed " : "") << "file holds only " << have);
  }
  src.expect_end(total);
  return out;
}

// Images (N, 1, H, W) in [-1, 1] from an IDX image file (magic 0x00000803).
template <class T>
Tensor<T> load_idx_images(const std::string& path, std::uint64_t max_bytes = kIdxDefaultMaxBytes) {
  const IdxArray a = read_idx(path, max_bytes);
  DIFFUSION_CHECK(a.dims.size() == 3, "IDX file '" << path << "': expected images (magic 0x00000803, dimensions N, H, W) "
                                                   << "but the file has " << a.dims.size() << " dimension(s)");
  Tensor<T> images;
  images.resize(Shape{a.dims[0], 1, a.dims[1], a.dims[2]});  // (N, 1, H, W)
  T table[256];
  for (int p = 0; p < 256; ++p) table[p] = static_cast<T>(p) / static_cast<T>(255) * static_cast<T>(2) - static_cast<T>(1);
  T* out = images.data();
  for (std::size_t i = 0; i < a.data.size(); ++i) out[i] = table[a.data[i]];
  return images;
}

inline void write_idx(const std::string& path, const IdxArray& a, bool gzip = true) {
  DIFFUSION_CHECK(!a.dims.empty() && a.dims.size() <= 8,
                  "write_idx '" << path << "': " << a.dims.size() << " dimensions (1 to 8 supported)");
  std::uint64_t total = 1;
  for (std::int32_t d : a.dims) {
    DIFFUSION_CHECK(d >= 0, "write_idx '" << path << "': negative dimension " << d);
    if (__builtin_mul_overflow(total, static_cast<std::uint64_t>(d), &total)) total = ~std::uint64_t{0};
  }
  DIFFUSION_CHECK(total == a.data.size(), "write_idx '" << path << "': dimensions hold " << total << " bytes but data has "
                                                        << a.data.size());
  std::vector<std::uint8_t> raw = {0, 0, 0x08, static_cast<std::uint8_t>(a.dims.size())};
  for (std::int32_t d : a.dims) {
    const auto u = static_cast<std::uint32_t>(d);
    for (int shift : {24, 16, 8, 0}) raw.push_back(static_cast<std::uint8_t>(u >> shift));
  }
  raw.insert(raw.end(), a.data.begin(), a.data.end());
  if (gzip) raw = detail::gzip_compress(raw.data(), raw.size());
  write_file_atomically(path, raw.data(), raw.size());
}

// Writes n images of h x w unsigned bytes (row-major, (N, H, W)) as an IDX image file.
inline void write_idx_images(const std::string& path, const std::uint8_t* data, Index n, Index h, Index w,
                             bool gzip = true) {
  Index bytes = 0;
  DIFFUSION_CHECK(n >= 0 && h >= 0 && w >= 0 && n <= 0x7fffffff && h <= 0x7fffffff && w <= 0x7fffffff &&
                      !__builtin_mul_overflow(n, h, &bytes) && !__builtin_mul_overflow(bytes, w, &bytes),
                  "write_idx_images '" << path << "': bad dimensions " << n << " x " << h << " x " << w);
  IdxArray a;
  a.dims = {static_cast<std::int32_t>(n), static_cast<std::int32_t>(h), static_cast<std::int32_t>(w)};
  if (bytes > 0) a.data.assign(data, data + bytes);
  write_idx(path, a, gzip);
}

}  // namespace diffusion::io
