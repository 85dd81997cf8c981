#pragma once
// Whole-file I/O: write a file atomically, read a file whole. POSIX only.
//
// write_file_atomically(path, fill)
//   requires: the folder of `path` exists and is writable.
//   ensures:  on return, `path` holds exactly the bytes `fill` streamed, durably (file and folder fsynced).
//             On any failure (fill throws, a write fails, the disk is full, rename fails) the temporary file is
//             removed, `path` keeps its previous contents, and diffusion::Error names `path` and the reason.
//             A crash mid-write leaves the previous `path` intact (the new file only appears through rename(2),
//             which is atomic); at worst a stale "<path>.tmp.<pid>.<n>" is left beside it.
//   The temporary file is created with O_EXCL in the same folder (rename cannot cross file systems), so two
//   writers never share a temporary; the last rename wins.
//
// remove_stale_temporaries(path)
//   ensures: the temporaries of `path` left by writers that died mid-write (and no longer run) are removed.
//
// read_file(path, max_bytes)
//   ensures: the whole contents of the regular file `path`; Error naming the path when it does not exist, is not
//            a regular file, is larger than max_bytes, or cannot be read.

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <ostream>
#include <streambuf>
#include <string>
#include <vector>

#include "diffusion/core/error.hpp"

namespace diffusion::io {

namespace detail {

inline std::string errno_text(int err) { return std::strerror(err); }

// The folder part of a path, for fsync after rename: "a/b/c" -> "a/b", "c" -> ".", "/c" -> "/".
inline std::string parent_folder(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Writes all n bytes to fd, retrying on short writes and EINTR; returns 0 or the errno of the failure.
inline int write_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;
    data += w;
    n -= static_cast<std::size_t>(w);
  }
  return 0;
}

// An output streambuf over a file descriptor with a 64 KiB buffer. A failed write is remembered (first errno)
// and makes the stream go bad, so fill() sees the failure and write_file_atomically reports strerror.
class FdStreambuf : public std::streambuf {
 public:
  explicit FdStreambuf(int fd) : fd_(fd), buffer_(1 << 16) { setp(buffer_.data(), buffer_.data() + buffer_.size()); }
  int error() const { return error_; }

 protected:
  int_type overflow(int_type ch) override {
    if (flush_buffer() != 0) return traits_type::eof();
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(ch);
      pbump(1);
    }
    return traits_type::not_eof(ch);
  }
  int sync() override { return flush_buffer() == 0 ? 0 : -1; }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    // Large blocks (tensor data) go straight to the file instead of through the buffer.
    if (n >= static_cast<std::streamsize>(buffer_.size())) {
      if (flush_buffer() != 0) return 0;
      if (const int err = write_all(fd_, s, static_cast<std::size_t>(n)); err != 0) {
        if (error_ == 0) error_ = err;
        return 0;
      }
      return n;
    }
    return std::streambuf::xsputn(s, n);
  }

 private:
  int flush_buffer() {
    if (error_ != 0) return error_;
    const std::size_t n = static_cast<std::size_t>(pptr() - pbase());
    if (n > 0) error_ = write_all(fd_, pbase(), n);
    setp(buffer_.data(), buffer_.data() + buffer_.size());
    return error_;
  }

  int fd_;
  std::vector<char> buffer_;
  int error_ = 0;
};

// Closes a descriptor and unlinks the temporary unless released: the cleanup on every failure path.
class TempFileGuard {
 public:
  TempFileGuard(int fd, std::string tmp) : fd_(fd), tmp_(std::move(tmp)) {}
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  ~TempFileGuard() {
    if (fd_ >= 0) ::close(fd_);
    if (!tmp_.empty()) ::unlink(tmp_.c_str());
  }
  // Closes the descriptor now; returns 0 or errno (close can report delayed write errors, e.g. on NFS).
  int close_fd() {
    const int fd = fd_;
    fd_ = -1;
    return ::close(fd) == 0 ? 0 : errno;
  }
  void keep() { tmp_.clear(); }  // after a successful rename there is nothing to remove

 private:
  int fd_;
  std::string tmp_;
};

inline std::string temporary_name(const std::string& path) {
  static std::atomic<unsigned long> counter{0};
  return path + ".tmp." + std::to_string(static_cast<long>(::getpid())) + "." + std::to_string(counter++);
}

}  // namespace detail

// Streams the new contents of `path` through `fill` into a temporary file beside it, then renames it into place.
inline void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& fill) {
  DIFFUSION_CHECK(!path.empty(), "write_file_atomically: empty path");
  const std::string tmp = detail::temporary_name(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  DIFFUSION_CHECK(fd >= 0, "cannot write '" << path << "': cannot create temporary file '" << tmp
                                            << "': " << detail::errno_text(errno));
  detail::TempFileGuard guard(fd, tmp);

  detail::FdStreambuf buffer(fd);
  {
    std::ostream out(&buffer);
    try {
      fill(out);
    } catch (const std::exception& e) {
      throw Error("cannot write '" + path + "': " + e.what());
    }
    out.flush();
    DIFFUSION_CHECK(buffer.error() == 0, "cannot write '" << path << "': writing '" << tmp
                                                          << "' failed: " << detail::errno_text(buffer.error()));
    DIFFUSION_CHECK(out.good(), "cannot write '" << path << "': the output stream failed while filling it");
  }
  DIFFUSION_CHECK(::fsync(fd) == 0,
                  "cannot write '" << path << "': fsync of '" << tmp << "' failed: " << detail::errno_text(errno));
  const int close_err = guard.close_fd();
  DIFFUSION_CHECK(close_err == 0,
                  "cannot write '" << path << "': close of '" << tmp << "' failed: " << detail::errno_text(close_err));
  DIFFUSION_CHECK(::rename(tmp.c_str(), path.c_str()) == 0,
                  "cannot write '" << path << "': rename from '" << tmp << "' failed: " << detail::errno_text(errno));
  guard.keep();

  // Make the rename itself durable. Some file systems cannot fsync a folder (EINVAL); the file is in place then.
  const std::string folder = detail::parent_folder(path);
  const int dir_fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIFFUSION_CHECK(dir_fd >= 0, "wrote '" << path << "' but cannot open its folder '" << folder
                                         << "' to fsync it: " << detail::errno_text(errno));
  const int sync_err = ::fsync(dir_fd) == 0 ? 0 : errno;
  ::close(dir_fd);
  DIFFUSION_CHECK(sync_err == 0 || sync_err == EINVAL,
                  "wrote '" << path << "' but fsync of its folder '" << folder
                            << "' failed: " << detail::errno_text(sync_err));
}

// Removes the temporaries "<path>.tmp.<pid>.<n>" that write_file_atomically left beside `path` when a writer died
// mid-write (SIGKILL, OOM killer, power loss), provided process <pid> no longer exists. Temporaries of running
// processes (a concurrent writer, this process) are kept. Best effort: files that vanish or cannot be removed are
// skipped. Returns the number removed. Process ids are this machine's (and PID namespace's): do not call it on a
// folder that writers on other machines share.
inline int remove_stale_temporaries(const std::string& path) {
  const std::string folder = detail::parent_folder(path);
  const std::size_t slash = path.find_last_of('/');
  const std::string prefix = (slash == std::string::npos ? path : path.substr(slash + 1)) + ".tmp.";
  DIR* dir = ::opendir(folder.c_str());
  DIFFUSION_CHECK(dir != nullptr, "remove_stale_temporaries '" << path << "': cannot open the folder '" << folder
                                                               << "': " << detail::errno_text(errno));
  std::vector<std::string> stale;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    // "<pid>.<counter>", both decimal
    const std::size_t dot = name.find('.', prefix.size());
    const std::string pid_text = name.substr(prefix.size(), dot == std::string::npos ? 0 : dot - prefix.size());
    const std::string counter = dot == std::string::npos ? "" : name.substr(dot + 1);
    const auto decimal = [](const std::string& t) {
      return !t.empty() && t.size() <= 9 && t.find_first_not_of("0123456789") == std::string::npos;
    };
    if (!decimal(pid_text) || !decimal(counter)) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive, or not ours to judge (EPERM): keep it
    stale.push_back(folder + "/" + name);
  }
  ::closedir(dir);
  int removed = 0;
  for (const std::string& file : stale) removed += ::unlink(file.c_str()) == 0 ? 1 : 0;
  return removed;
}

// Convenience: the new contents given as bytes.
inline void write_file_atomically(const std::string& path, const void* data, std::size_t size) {
  write_file_atomically(path, [&](std::ostream& out) {
    if (size > 0) out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  });
}

// Reads the whole regular file `path`. Files larger than max_bytes are refused before anything is allocated.
inline std::vector<std::uint8_t> read_file(const std::string& path,
                                           std::uint64_t max_bytes = std::numeric_limits<std::uint64_t>::max()) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    DIFFUSION_CHECK(err != ENOENT, "cannot read '" << path << "': the file does not exist");
    throw Error("cannot read '" + path + "': " + detail::errno_text(err));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  DIFFUSION_CHECK(::fstat(fd, &st) == 0, "cannot read '" << path << "': fstat failed: " << detail::errno_text(errno));
  DIFFUSION_CHECK(S_ISREG(st.st_mode), "cannot read '" << path << "': not a regular file");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  DIFFUSION_CHECK(size <= max_bytes,
                  "cannot read '" << path << "': the file is " << size << " bytes, more than the limit of " << max_bytes);
  DIFFUSION_CHECK(size <= static_cast<std::uint64_t>(std::numeric_limits<std::ptrdiff_t>::max()),
                  "cannot read '" << path << "': the file is too large (" << size << " bytes)");
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  std::size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t r = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw Error("cannot read '" + path + "': " + detail::errno_text(errno));
    }
    // The file shrank while being read: report it rather than return a silently short buffer.
    DIFFUSION_CHECK(r > 0, "cannot read '" << path << "': the file shrank from " << size << " to " << got
                                           << " bytes while being read");
    got += static_cast<std::size_t>(r);
  }
  return bytes;
}

}  // namespace diffusion::io
