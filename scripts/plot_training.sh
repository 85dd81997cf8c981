#!/usr/bin/env bash
# Draws a training run's curves with gnuplot (Debian: gnuplot-nox): the loss of each train_log.csv line and, where
# the run measured itself (fashion_mnist train --eval-every N), FID and precision / recall from eval_log.csv.
#   scripts/plot_training.sh RUN_DIR [OUTPUT]      OUTPUT: .svg (default RUN_DIR/training.svg) or .png
# RUN_DIR is a training program's --out folder. The x axis is the epoch (fractional for --eval-every points), so the
# two files line up; a resumed run appends to both files and is drawn as one run.
set -euo pipefail

usage="usage: $0 RUN_DIR [OUTPUT.svg|OUTPUT.png]"
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "$usage" >&2
  exit 2
fi
run_dir=$1
output=${2:-$run_dir/training.svg}
train_log=$run_dir/train_log.csv
eval_log=$run_dir/eval_log.csv
train_header="step,epoch,loss,images_per_s,elapsed_s"
eval_header="step,epoch,n,fid,kid_mean,kid_std,precision,recall,eval_s"

if ! command -v gnuplot >/dev/null 2>&1; then
  echo "$0: gnuplot is not installed (Debian: apt-get install gnuplot-nox)" >&2
  exit 3
fi

# A log must start with the header the programs write and hold at least one data line; anything else is named.
check_log() {
  local file=$1 expected=$2 header
  if [ ! -f "$file" ]; then
    echo "$0: $file: no such file (expected a training program's log with header \"$expected\")" >&2
    exit 1
  fi
  header=$(head -n 1 "$file" | tr -d '\r')
  if [ "$header" != "$expected" ]; then
    echo "$0: $file: line 1 is \"$header\", expected the header \"$expected\"" >&2
    exit 1
  fi
  if [ "$(wc -l < "$file")" -lt 2 ]; then
    echo "$0: $file: no data lines after the header (the run has not finished an epoch or an evaluation yet)" >&2
    exit 1
  fi
}
check_log "$train_log" "$train_header"
with_eval=0
if [ -f "$eval_log" ]; then
  check_log "$eval_log" "$eval_header"
  with_eval=1
fi

case "$output" in
  *.svg) terminal="svg size 1200,400 dynamic background rgb 'white'" ;;
  *.png) terminal="pngcairo size 1200,400" ;;
  *) echo "$0: $output: the output must end in .svg or .png" >&2; exit 2 ;;
esac

# The paths reach gnuplot as arguments of `gnuplot -c` (ARG1..ARG6), never as gnuplot syntax, so any file name works.
panels=1
if [ "$with_eval" = "1" ]; then panels=3; fi
program=$(mktemp)
trap 'rm -f "$program"' EXIT
cat > "$program" <<'GNUPLOT'
train_log = ARG1; eval_log = ARG2; output = ARG3; panels = int(ARG4); terminal = ARG5; run_dir = ARG6
set terminal @terminal
set termoption noenhanced
set output output
set datafile separator ','
set key top right
set grid
set xlabel 'epoch'
set xrange [0:*]
set multiplot layout 1, panels title 'training run: ' . run_dir
set title 'training loss (mean over each train_log.csv line)'
set ylabel 'loss'
plot train_log using 'epoch':'loss' with linespoints pointtype 7 title 'loss'
if (panels > 1) {
  set title 'FID (lower is better)'
  set ylabel 'FID'
  set logscale y
  plot eval_log using 'epoch':'fid' with linespoints pointtype 7 title 'FID'
  unset logscale y
  set title 'precision and recall (higher is better)'
  set ylabel ''
  set yrange [0:1]
  plot eval_log using 'epoch':'precision' with linespoints pointtype 7 title 'precision', \
       eval_log using 'epoch':'recall' with linespoints pointtype 5 title 'recall'
}
unset multiplot
GNUPLOT
gnuplot -c "$program" "$train_log" "$eval_log" "$output" "$panels" "$terminal" "$run_dir"
echo "$output"
