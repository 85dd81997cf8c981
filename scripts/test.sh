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
# Sanitizer builds: -O1 (half the compile time of -O3 with the instrumentation, and measured no slower to run),
# every report fatal (halt, non-zero exit, stack trace), and OpenMP threads that sleep instead of spinning while
# they wait (spinning threads of two test processes on two cores slow the instrumented suite down many times over).
# Settings given on the command line or already in the environment win.
sanitize_args=()
for arg in "${args[@]}"; do
  if [[ "$arg" =~ ^-DDIFFUSION_SANITIZE(:BOOL)?=(ON|on|1|TRUE|true|YES|yes)$ ]]; then
    sanitize_args=("-DCMAKE_CXX_FLAGS_RELEASE=-O1 -DNDEBUG")
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
    export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
  fi
done
jobs=$(nproc)
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "${sanitize_args[@]}" "${args[@]}"
cmake --build "$build_dir" -j "$jobs"
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs"
