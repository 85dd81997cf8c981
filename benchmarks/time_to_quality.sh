#!/usr/bin/env bash
# Time to quality of a Fashion-MNIST training recipe: trains `fashion_mnist train` with the given flags, then measures
# the EMA model with the built-in evaluation (DDIM 50 by default, 1,000 samples against the test set) and prints one
# line: the training wall time, the images/s, FID, KID, precision and recall. A recipe is judged by this line against
# the default run's and the primer's recipe's (README, "Time to garments"), never by eye.
#
#   benchmarks/time_to_quality.sh OUT_DIR [train flags...]
#   benchmarks/time_to_quality.sh results/ttq/default            # the default recipe (2 epochs, batch 64, bf16)
#   benchmarks/time_to_quality.sh results/ttq/primer --batch 128 --lr 1e-3 --lr-warmup 0 --lr-decay none \
#       --precision fp32 --epochs 5                                 # the primer's recipe, the default before
#   benchmarks/time_to_quality.sh results/ttq/minsnr --min-snr-gamma 5
#
# Environment: BUILD_DIR (a build with the examples, default build-fashion-mnist; built if the program is missing),
# EVAL_N (1000), EVAL_SAMPLER (ddim), EVAL_STEPS (50), THREADS (unset: all cores; for train and eval alike).
# The final grid of `train` is one DDIM image (the measurement is the point, not the picture), so the wall time is the
# training's. Run it on a quiet machine: another OpenMP program on the same cores halves both (benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
  sed -n '2,11p' "$0" >&2
  exit 2
fi
out="$1"
shift
build_dir="${BUILD_DIR:-build-fashion-mnist}"
exe="$build_dir/examples/fashion_mnist"
if [ ! -x "$exe" ]; then
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DDIFFUSION_BUILD_EXAMPLES=ON -DDIFFUSION_BUILD_TESTS=OFF \
    -DDIFFUSION_BUILD_BENCHMARKS=OFF >/dev/null
  cmake --build "$build_dir" -j "$(nproc)" --target fashion_mnist
fi
mkdir -p "$out"
threads=()
if [ -n "${THREADS:-}" ]; then threads=(--threads "$THREADS"); fi

start=$(date +%s.%N)
"$exe" train --out "$out" "${threads[@]}" --final-samples 1 --final-sampler ddim "$@" >"$out/train.out" 2>"$out/train.log"
end=$(date +%s.%N)
"$exe" eval --checkpoint "$out/model.safetensors" --sampler "${EVAL_SAMPLER:-ddim}" --steps "${EVAL_STEPS:-50}" \
  --n "${EVAL_N:-1000}" "${threads[@]}" --json "$out/eval.json" >"$out/eval.log" 2>&1

/usr/bin/env python3 - "$out" "$start" "$end" "$*" <<'EOF'
import json, re, sys
out, start, end, flags = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
e = json.load(open(out + "/eval.json"))
# the last progress line of the training log holds the images/s of the training steps
speed = [m.group(1) for m in re.finditer(r"\| ([0-9.]+) img/s \|", open(out + "/train.log").read())]
get = lambda *keys: next((e[k] for k in keys if k in e), float("nan"))
print(f"{flags or '(defaults)'} | train {end - start:.0f} s | {speed[-1] if speed else '?'} img/s | "
      f"FID {get('fid'):.1f} | KID {get('kid_mean'):.1f} | precision {get('precision'):.2f} | "
      f"recall {get('recall'):.2f} | {out}")
EOF
