#!/usr/bin/env bash
# The main job: train the primer's DDPM on Fashion-MNIST on this machine's CPU cores.
# From a clean clone on Debian 12: installs what is missing (scripts/install-deps.sh; needs root or sudo),
# builds only the example (Release, -march=native) in build-fashion-mnist/, runs `fashion_mnist train` with the
# defaults and prints where the results are. Extra arguments go to `train`, e.g.
#   scripts/fashion_mnist.sh --epochs 5 --out results/five_epochs
#   scripts/fashion_mnist.sh --resume results/fashion_mnist/checkpoint.safetensors
# Environment: BUILD_DIR (default build-fashion-mnist), SKIP_DEPS=1 to skip the package check, ONEDNN=1 to build
# with the optional oneDNN GEMM backend (-DDIFFUSION_ONEDNN=ON: 20% faster than Eigen, within the noise of the
# built-in AVX-512 kernel that is the default now; README, Performance).
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${BUILD_DIR:-build-fashion-mnist}"
if [ "${SKIP_DEPS:-0}" != "1" ]; then
  bash scripts/install-deps.sh
fi
onednn=OFF
if [ "${ONEDNN:-0}" = "1" ]; then onednn=ON; fi
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DDIFFUSION_ONEDNN="$onednn" \
  -DDIFFUSION_BUILD_EXAMPLES=ON -DDIFFUSION_BUILD_TESTS=OFF -DDIFFUSION_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target fashion_mnist

# Where the outputs go: --out if given, else the resumed checkpoint's folder, else the program's default.
out="results/fashion_mnist"
resume=""
prev=""
for arg in "$@"; do
  case "$prev" in
    --out) out="$arg" ;;
    --resume) resume="$arg" ;;
  esac
  case "$arg" in
    --out=*) out="${arg#--out=}" ;;
    --resume=*) resume="${arg#--resume=}" ;;
  esac
  prev="$arg"
done
out_given=0
for arg in "$@"; do case "$arg" in --out|--out=*) out_given=1 ;; esac; done
if [ -n "$resume" ] && [ "$out_given" = "0" ]; then out="$(dirname "$resume")"; fi

"$build_dir/examples/fashion_mnist" train "$@"

echo
echo "Results in $out/:"
echo "  samples:    $out/samples.png      (grid of samples, EMA weights)"
echo "  denoising:  $out/denoising.gif    (8 samples from noise to image)"
echo "  checkpoint: $out/checkpoint.safetensors  (continue with: $0 --resume $out/checkpoint.safetensors --epochs N)"
echo "  weights:    $out/model.safetensors       (EMA weights, PyTorch state_dict names)"
echo "  log:        $out/train_log.csv"
if command -v gnuplot >/dev/null 2>&1 && bash scripts/plot_training.sh "$out" >/dev/null; then
  echo "  curves:     $out/training.svg      (loss, and FID / precision / recall with --eval-every)"
fi
echo "More samples: $build_dir/examples/fashion_mnist sample --checkpoint $out/checkpoint.safetensors --n 64 --out more.png"
