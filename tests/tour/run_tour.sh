#!/usr/bin/env bash
# Runs the README's first tour (examples/tour/tour.cpp) at tiny sizes: 16 synthetic 28x28 images in the IDX format of
# Fashion-MNIST, 2 training steps, 2 sampled images. Passes when the program exits 0, prints the sample grid's path,
# and the grid and the checkpoint exist.
# usage: run_tour.sh TOUR_EXE WORK_DIR
set -euo pipefail
exe=$1 dir=$2
rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
{
  printf '\000\000\010\003\000\000\000\020\000\000\000\034\000\000\000\034'  # magic 0x00000803, N 16, H 28, W 28
  head -c 6272 /dev/zero                                                    # 8 black images
  head -c 6272 /dev/zero | tr '\000' '\377'                                 # 8 white images
} | gzip -n > images.idx.gz
"$exe" images.idx.gz 2 2 | tee tour.log
grep -q '^samples: tour_samples.png$' tour.log || { echo "run_tour.sh: the tour did not print the grid's path" >&2; exit 1; }
for f in tour_samples.png tour.safetensors; do
  [ -s "$f" ] || { echo "run_tour.sh: the tour did not write $f" >&2; exit 1; }
done
echo "ok: $(pwd)/tour_samples.png"
