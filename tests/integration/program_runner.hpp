#pragma once
// What the example programs' integration tests share: a fresh scratch folder, reading a file whole, and running a
// program with its stdout and stderr captured (through the shell, every argument quoted).
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace diffusion::testing {

// root/name, emptied and created.
inline std::string fresh_folder(const std::string& root, const std::string& name) {
  const std::filesystem::path dir = std::filesystem::path(root) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// s in single quotes for the shell.
inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct ProgramResult {
  int status = -1;  // exit status, -1 when the program did not exit normally
  std::string out, err;
};

// Runs `exe args...` with stdout and stderr captured in dir/stdout and dir/stderr.
inline ProgramResult run_program(const std::string& exe, const std::string& dir, const std::vector<std::string>& args) {
  std::string cmd = shell_quote(exe);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " > " + shell_quote(dir + "/stdout") + " 2> " + shell_quote(dir + "/stderr");
  const int w = std::system(cmd.c_str());
  return {WIFEXITED(w) ? WEXITSTATUS(w) : -1, slurp(dir + "/stdout"), slurp(dir + "/stderr")};
}

}  // namespace diffusion::testing
