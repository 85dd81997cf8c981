// The suite's own inventory check (CTest test "suite.inventory"): every Catch2 test case defined in a test
// executable runs as exactly one CTest test, and every CTest test of a Catch2 executable names exactly one test case.
//   check_inventory CTEST BUILD_DIR SUMMARY_FILE
// It reads the registered tests from `CTEST -N --show-only=json-v1` (run in BUILD_DIR), takes those labelled
// "catch2" (diffusion_catch_discover_tests), groups them by executable, and compares each group with the
// executable's own `--list-test-names-only`. What it catches: a test name that CTest splits (Catch2 2.x's
// catch_discover_tests cuts names at ';', leaving two CTest tests that match nothing), a test case that was not
// discovered, a CTest test left over from a removed case, two tests for one case, a registration without
// "-w NoTests" (without it a CTest test that matches no case passes), and names that cause these: a ';' or an
// unbalanced '[' (CMake does not split a list at a ';' inside brackets, so one "[0, T)" in a name merges every
// later test case of that executable into a single CTest test). On success it prints one line and writes it
// to SUMMARY_FILE (scripts/test.sh prints it after the run).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// stdout of a shell command; the exit status in `status` (-1 when it could not run).
std::string capture(const std::string& command, int& status) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) {
    status = -1;
    return out;
  }
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, p)) > 0;) out.append(buffer, n);
  status = ::pclose(p);
  return out;
}

// catch_discover_tests escapes ',', '[' and ']' in the test spec with a backslash; undo it.
std::string unescape_spec(const std::string& spec) {
  std::string out;
  for (std::size_t i = 0; i < spec.size(); ++i) {
    if (spec[i] == '\\' && i + 1 < spec.size() && (spec[i + 1] == ',' || spec[i + 1] == '[' || spec[i + 1] == ']'))
      ++i;
    out += spec[i];
  }
  return out;
}

bool has_label(const nlohmann::json& test, const std::string& label) {
  if (!test.contains("properties")) return false;
  for (const auto& p : test["properties"]) {
    if (p.value("name", "") != "LABELS") continue;
    for (const auto& v : p["value"])
      if (v.get<std::string>() == label) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: check_inventory CTEST BUILD_DIR SUMMARY_FILE\n";
    return 2;
  }
  const std::string ctest = argv[1], build = argv[2], summary_file = argv[3];
  int status = 0;
  const std::string json_text =
      capture("cd " + quote(build) + " && " + quote(ctest) + " -N --show-only=json-v1", status);
  if (status != 0) {
    std::cerr << "inventory: '" << ctest << " -N --show-only=json-v1' in " << build << " failed (status " << status
              << ")\n";
    return 1;
  }
  const nlohmann::json info = nlohmann::json::parse(json_text);
  std::vector<std::string> problems;
  std::map<std::string, std::vector<std::string>> specs;  // executable -> the test case names its CTest tests run
  std::size_t total = 0, other = 0;
  for (const auto& test : info.at("tests")) {
    ++total;
    const std::string name = test.at("name");
    if (!has_label(test, "catch2")) {
      ++other;
      continue;
    }
    const auto& command = test.at("command");
    if (command.size() < 2) {
      problems.push_back("CTest test '" + name + "' has no test case argument");
      continue;
    }
    bool no_tests_flag = false;
    for (std::size_t i = 2; i + 1 < command.size(); ++i)
      no_tests_flag = no_tests_flag || (command[i] == "-w" && command[i + 1] == "NoTests");
    if (!no_tests_flag)
      problems.push_back("CTest test '" + name + "' runs without '-w NoTests': a name that matches nothing would pass");
    specs[command[0].get<std::string>()].push_back(unescape_spec(command[1].get<std::string>()));
  }
  std::size_t cases = 0;
  for (const auto& [exe, registered] : specs) {
    const std::string listing = capture(quote(exe) + " --list-test-names-only", status);
    std::set<std::string> defined;
    std::istringstream lines(listing);
    for (std::string line; std::getline(lines, line);)
      if (!line.empty()) defined.insert(line);
    cases += defined.size();
    for (const std::string& d : defined) {
      // What catch_discover_tests cannot register: a ';' splits the name, and an unbalanced '[' makes CMake's list
      // splitting swallow every later test case of the executable into one CTest test that matches nothing.
      int depth = 0;
      bool unbalanced = false;
      for (char ch : d) {
        depth += ch == '[' ? 1 : ch == ']' ? -1 : 0;
        unbalanced = unbalanced || depth < 0;
      }
      if (d.find(';') != std::string::npos || unbalanced || depth != 0)
        problems.push_back(exe + ": test case '" + d + "' has a ';' or an unbalanced '[' / ']' in its name");
    }
    std::map<std::string, int> seen;
    for (const std::string& s : registered) ++seen[s];
    for (const auto& [spec, count] : seen) {
      if (defined.count(spec) == 0)
        problems.push_back(exe + ": CTest runs '" + spec + "', which names no test case (a name CTest split at ';'?)");
      else if (count > 1)
        problems.push_back(exe + ": test case '" + spec + "' is registered " + std::to_string(count) + " times");
    }
    for (const std::string& d : defined)
      if (seen.count(d) == 0) problems.push_back(exe + ": test case '" + d + "' is not registered with CTest");
    if (registered.size() != defined.size())
      problems.push_back(exe + ": " + std::to_string(defined.size()) + " test cases defined, " +
                         std::to_string(registered.size()) + " CTest tests");
  }
  if (specs.empty()) problems.push_back("no CTest test is labelled catch2");
  if (!problems.empty()) {
    for (const auto& p : problems) std::cerr << "inventory: " << p << "\n";
    std::cerr << "inventory: FAILED with " << problems.size() << " problem(s)\n";
    return 1;
  }
  std::ostringstream line;
  line << cases << " Catch2 test cases defined in " << specs.size() << " executables, each run as one CTest test; "
       << other << " other CTest tests; " << total << " CTest tests in all";
  std::cout << "inventory: " << line.str() << "\n";
  std::ofstream(summary_file) << line.str() << "\n";
  return 0;
}
