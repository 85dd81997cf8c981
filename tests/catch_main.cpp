// The one translation unit that holds Catch2's main(). Every run warns about missing assertions as an error
// (-w NoAssertions: a test case or leaf section that asserts nothing fails), whatever the command line says; the
// command line adds to it (CTest passes -w NoTests: a test name that matches no test case fails). Catch2 2.x takes
// -w only once on the command line, hence this.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

int main(int argc, char* argv[]) {
  Catch::Session session;
  session.configData().warnings =
      static_cast<Catch::WarnAbout::What>(session.configData().warnings | Catch::WarnAbout::NoAssertions);
  const int status = session.applyCommandLine(argc, argv);
  if (status != 0) return status;
  return session.run();
}
