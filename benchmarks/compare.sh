#!/usr/bin/env bash
# Builds the Release benchmark targets and runs the PyTorch comparison (benchmarks/compare.py).
#
#   benchmarks/compare.sh [--build-dir DIR] [--onednn] [compare.py options, e.g. --rounds 5 --json results.json]
#
# --onednn builds with -DDIFFUSION_ONEDNN=ON (float GEMMs through oneDNN, needs libdnnl-dev) in build-bench-onednn
# unless --build-dir is given.
# DIR defaults to build-bench in the repository root ($BUILD_DIR also works). The build is configured as Release with
# the benchmarks on; a fresh build folder also gets tests and examples off (they are not needed here).
# Run it on a quiet machine: see benchmarks/README.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build-bench}"
onednn=OFF
while [[ "${1:-}" == "--build-dir" || "${1:-}" == "--onednn" ]]; do
  if [[ "$1" == "--onednn" ]]; then
    onednn=ON
    [[ -z "${BUILD_DIR:-}" && "$build" == "$root/build-bench" ]] && build="$root/build-bench-onednn"
    shift
  else
    build="$2"
    shift 2
  fi
done
extra=(-DDIFFUSION_ONEDNN=$onednn)
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  extra+=(-DDIFFUSION_BUILD_TESTS=OFF -DDIFFUSION_BUILD_EXAMPLES=OFF)
fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDIFFUSION_BUILD_BENCHMARKS=ON "${extra[@]}" >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target bench_unet fma_peak
exec /usr/bin/python3 "$root/benchmarks/compare.py" "$build/benchmarks/bench_unet" \
  --fma-peak "$build/benchmarks/fma_peak" "$@"
