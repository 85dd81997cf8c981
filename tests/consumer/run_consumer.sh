#!/usr/bin/env bash
# Builds and runs tests/consumer against the library, by find_package (after cmake --install) or add_subdirectory.
# usage: run_consumer.sh find_package|add_subdirectory SOURCE_DIR BUILD_DIR WORK_DIR
set -euo pipefail
mode=$1 src=$2 build=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
if [ "$mode" = find_package ]; then
  cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
  cmake -S "$src/tests/consumer" -B "$work/b" -DDIFFUSION_MODE=find_package -DCMAKE_PREFIX_PATH="$work/prefix" \
    -DCMAKE_BUILD_TYPE=Release > "$work/configure.log"
else
  cmake -S "$src/tests/consumer" -B "$work/b" -DDIFFUSION_MODE=add_subdirectory -DDIFFUSION_SOURCE_DIR="$src" \
    -DCMAKE_BUILD_TYPE=Release > "$work/configure.log"
fi
cmake --build "$work/b" > "$work/build.log"
# The program must exit 0 (set -e) and say ok.
out=$("$work/b/consumer")
echo "$out"
if ! grep -q '^consumer: .*: ok$' <<< "$out"; then
  echo "run_consumer.sh: the consumer did not report ok" >&2
  exit 1
fi
