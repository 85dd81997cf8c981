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
jobs=$(nproc)
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "${args[@]}"
cmake --build "$build_dir" -j "$jobs"
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs"
