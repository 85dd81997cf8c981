#!/usr/bin/env bash
# The test command: configure, build and run the whole suite (Release, all cores). Extra arguments go to cmake's
# configure step, e.g. scripts/test.sh -DDIFFUSION_SANITIZE=ON -B build-asan
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=build
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -B) build_dir="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
# The tests' OpenMP threads sleep instead of spinning while they wait: CMakeLists.txt sets OMP_WAIT_POLICY=passive
# on every test (DIFFUSION_TEST_ENVIRONMENT), so that it holds however ctest is started.
# Sanitizer builds: -O1 (half the compile time of -O3 with the instrumentation, and measured no slower to run) and
# every report fatal (halt, non-zero exit, stack trace). Settings given on the command line or in the environment win.
sanitize_args=()
for arg in "${args[@]}"; do
  if [[ "$arg" =~ ^-DDIFFUSION_SANITIZE(:BOOL)?=(ON|on|1|TRUE|true|YES|yes)$ ]]; then
    sanitize_args=("-DCMAKE_CXX_FLAGS_RELEASE=-O1 -DNDEBUG")
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
  fi
done
# Cores this process may really use: nproc, or fewer where a cgroup CPU quota (containers, CI machines) says so.
jobs=$(nproc)
if [ -r /sys/fs/cgroup/cpu.max ]; then
  read -r quota period < /sys/fs/cgroup/cpu.max || true
  if [ "${quota:-max}" != max ] && [ "${period:-0}" -gt 0 ]; then
    quota_cores=$(( (quota + period - 1) / period ))
    if [ "$quota_cores" -lt "$jobs" ]; then
      jobs=$quota_cores
      export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$jobs}"  # OpenMP would start one thread per visible CPU
    fi
  fi
fi
echo "test.sh: nproc $(nproc), cgroup cpu.max $(cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo none), using $jobs jobs," \
  "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "${sanitize_args[@]}" "${args[@]}"
cmake --build "$build_dir" -j "$jobs"
# The count of tests run, next to the count defined (suite.inventory checks that every Catch2 test case defined is
# one CTest test; it writes its summary to test_inventory.txt).
log="$build_dir/ctest.log"
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -j "$jobs" 2>&1 | tee "$log"
ran=$(sed -n 's/.*tests passed, [0-9]* tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -n 1)
skipped=$(grep -c '(Skipped)' "$log" || true)
echo "test.sh: CTest ran ${ran:-?} tests (${skipped} skipped); inventory: $(cat "$build_dir/test_inventory.txt" 2>/dev/null || echo 'not written')"
