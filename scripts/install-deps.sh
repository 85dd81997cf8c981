#!/usr/bin/env bash
# Installs, from Debian 12's archive, everything the library, its tests, the example and the benchmarks use.
# Safe to run again: apt-get skips what is already there. Needs root (or sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
packages=(
  build-essential cmake pkg-config
  libeigen3-dev libxsimd-dev catch2 libstb-dev zlib1g-dev nlohmann-json3-dev libcli11-dev libgif-dev
  libbenchmark-dev dataset-fashion-mnist
  gnuplot-nox fonts-liberation         # scripts/plot_training.sh (the loss and FID curves of a run)
  clang libclang-rt-14-dev libomp-dev  # libFuzzer targets (tests/fuzz/): clang, its runtimes, OpenMP
  libdnnl-dev ocl-icd-opencl-dev       # the optional oneDNN GEMM backend (DIFFUSION_ONEDNN), tested by .ci/run
  libopenmpi-dev openmpi-bin           # the optional data-parallel training over MPI (DIFFUSION_MPI), tested by .ci/run
)
# PyTorch for the suite's check that an exported U-Net loads into the reference (tests/golden/verify_export.py):
# without it that test is skipped and says so; CI (.ci/run) sets DIFFUSION_WITH_TORCH=1 and requires it.
if [ "${DIFFUSION_WITH_TORCH:-0}" = "1" ]; then packages+=(python3-torch python3-numpy); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
