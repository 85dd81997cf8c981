#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <string>
#include <vector>

#include "diffusion/io/atomic_file.hpp"
#include "io/io_test_util.hpp"

using diffusion::Error;
using diffusion::io::read_file;
using diffusion::io::write_file_atomically;

namespace {

std::vector<std::uint8_t> bytes_of(const std::string& s) { return std::vector<std::uint8_t>(s.begin(), s.end()); }

void write_string(const std::string& path, const std::string& s) { write_file_atomically(path, s.data(), s.size()); }

}  // namespace

TEST_CASE("write_file_atomically writes, replaces, and leaves no temporary behind") {
  const std::string dir = io_test::scratch_dir("atomic_basic");
  const std::string path = dir + "/out.bin";
  write_string(path, "first version");
  REQUIRE(io_test::slurp(path) == bytes_of("first version"));

  // A stream fill larger than the 64 KiB buffer, with both small writes and one large block.
  std::vector<char> big(300000);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 2654435761u) >> 13);
  write_file_atomically(path, [&](std::ostream& out) {
    out << "head:";
    out.write(big.data(), 1000);
    out.write(big.data() + 1000, static_cast<std::streamsize>(big.size() - 1000));
    out.put('!');
  });
  const auto got = io_test::slurp(path);
  REQUIRE(got.size() == 5 + big.size() + 1);
  REQUIRE(std::equal(big.begin(), big.end(), got.begin() + 5,
                     [](char a, std::uint8_t b) { return static_cast<std::uint8_t>(a) == b; }));
  REQUIRE(got.back() == '!');

  REQUIRE(read_file(path) == got);
  REQUIRE(io_test::folder_entries(dir) == std::vector<std::string>{"out.bin"});

  // Empty contents are a valid file.
  write_string(path, "");
  REQUIRE(std::filesystem::file_size(path) == 0);
  REQUIRE(read_file(path).empty());
}

TEST_CASE("write_file_atomically keeps the old file and removes the temporary when fill throws") {
  const std::string dir = io_test::scratch_dir("atomic_throw");
  const std::string path = dir + "/model.safetensors";
  write_string(path, "old contents");
  REQUIRE_THROWS_WITH(write_file_atomically(path,
                                            [](std::ostream& out) {
                                              out << std::string(100000, 'x');  // partly written already
                                              throw std::runtime_error("serialiser exploded");
                                            }),
                      Catch::Contains(path) && Catch::Contains("serialiser exploded"));
  REQUIRE(io_test::slurp(path) == bytes_of("old contents"));
  REQUIRE(io_test::folder_entries(dir) == std::vector<std::string>{"model.safetensors"});
}

TEST_CASE("write_file_atomically names the path and the reason when the folder is missing or unwritable") {
  const std::string dir = io_test::scratch_dir("atomic_folder");
  const std::string missing = dir + "/no/such/folder/out.bin";
  REQUIRE_THROWS_AS(write_string(missing, "x"), Error);
  REQUIRE_THROWS_WITH(write_string(missing, "x"),
                      Catch::Contains(missing) && Catch::Contains("No such file or directory"));

  // The target is a folder: the rename fails, the temporary is removed.
  const std::string folder_target = dir + "/a_folder";
  std::filesystem::create_directory(folder_target);
  REQUIRE_THROWS_WITH(write_string(folder_target, "x"),
                      Catch::Contains(folder_target) && Catch::Contains("rename") &&
                          Catch::Contains(std::strerror(EISDIR)));
  REQUIRE(io_test::folder_entries(dir) == std::vector<std::string>{"a_folder"});

  const std::string locked = dir + "/locked";
  std::filesystem::create_directory(locked);
  ::chmod(locked.c_str(), 0555);
  if (::geteuid() != 0) {  // root writes through permission bits
    REQUIRE_THROWS_WITH(write_string(locked + "/out.bin", "x"),
                        Catch::Contains(locked + "/out.bin") && Catch::Contains("Permission denied"));
  }
  ::chmod(locked.c_str(), 0755);
  // A folder that refuses the temporary to everyone, root included (CI runs as root): /proc.
  REQUIRE_THROWS_WITH(write_string("/proc/diffusion_atomic_test.bin", "x"),
                      Catch::Contains("/proc/diffusion_atomic_test.bin"));
  REQUIRE_FALSE(std::filesystem::exists("/proc/diffusion_atomic_test.bin"));
}

TEST_CASE("a crash in the middle of write_file_atomically leaves the previous file intact") {
  const std::string dir = io_test::scratch_dir("atomic_crash");
  const std::string path = dir + "/checkpoint.bin";
  write_string(path, "previous checkpoint");

  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    try {
      write_file_atomically(path, [](std::ostream& out) {
        out << std::string(200000, 'n');  // more than the buffer: part of it is already on disk
        ::_exit(0);  // the process dies without cleanup, as in a crash or kill -9
      });
    } catch (...) {
    }
    ::_exit(1);  // never continue the parent's test run in the child
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(io_test::slurp(path) == bytes_of("previous checkpoint"));

  // The crashed writer's partial temporary is the only other entry, and it is not the target.
  const auto entries = io_test::folder_entries(dir);
  REQUIRE(entries.size() == 2);
  for (const auto& e : entries) {
    if (e == "checkpoint.bin") continue;
    CAPTURE(e);
    REQUIRE(e.rfind("checkpoint.bin.tmp." + std::to_string(child) + ".", 0) == 0);
    REQUIRE(std::filesystem::file_size(dir + "/" + e) >= 65536u);
  }
}

TEST_CASE("a failing write (file size limit) is reported with strerror and rolls back") {
  const std::string dir = io_test::scratch_dir("atomic_efbig");
  const std::string path = dir + "/big.bin";
  write_string(path, "small old file");

  // In a child, limit file size to 4 KiB so write(2) fails with EFBIG; the child reports by exit code.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit limit {4096, 4096};
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(10);
    try {
      write_file_atomically(path, [](std::ostream& out) { out << std::string(1 << 20, 'z'); });
      ::_exit(11);  // should have thrown
    } catch (const std::exception& e) {
      const std::string msg = e.what();
      if (msg.find(path) == std::string::npos) ::_exit(12);
      if (msg.find(std::strerror(EFBIG)) == std::string::npos) ::_exit(13);
    }
    try {
      if (io_test::slurp(path) != bytes_of("small old file")) ::_exit(14);
      if (io_test::folder_entries(dir).size() != 1) ::_exit(15);
    } catch (...) {
      ::_exit(16);
    }
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  INFO("child exit code 10: setrlimit failed, 11: no error, 12: path missing from the message, 13: strerror "
       "missing, 14: old file changed, 15: temporary left behind");
  REQUIRE(WEXITSTATUS(status) == 0);
}

TEST_CASE("read_file names the path and says what is wrong") {
  const std::string dir = io_test::scratch_dir("read_file");
  const std::string missing = dir + "/absent.bin";
  REQUIRE_THROWS_WITH(read_file(missing), Catch::Contains(missing) && Catch::Contains("does not exist"));
  REQUIRE_THROWS_WITH(read_file(dir), Catch::Contains(dir) && Catch::Contains("not a regular file"));
  const std::string path = dir + "/ten.bin";
  write_string(path, "0123456789");
  REQUIRE(read_file(path, 10) == bytes_of("0123456789"));
  REQUIRE_THROWS_WITH(read_file(path, 9), Catch::Contains(path) && Catch::Contains("limit of 9"));
}
