#!/usr/bin/env bash
# scripts/plot_training.sh: the curves of a run folder as SVG or PNG, and a clear error for every bad input.
#   plot_training_test.sh SOURCE_DIR WORK_DIR
# Without gnuplot the test prints the suite's skip marker (CTest reports it as not run); CI installs gnuplot-nox.
set -euo pipefail
source_dir=$1
work=$2
script=$source_dir/scripts/plot_training.sh
if ! command -v gnuplot >/dev/null 2>&1; then
  echo "DIFFUSION_TEST_SKIPPED: gnuplot is not installed (Debian: gnuplot-nox)"
  exit 0
fi
rm -rf "$work"
mkdir -p "$work/full" "$work/train_only" "$work/empty"
fail() { echo "FAIL: $*" >&2; exit 1; }

printf 'step,epoch,loss,images_per_s,elapsed_s\n469,1.000,0.051,100,300\n938,2.000,0.040,100,600\n1407,3.000,0.036,100,900\n' \
  > "$work/full/train_log.csv"
printf 'step,epoch,n,fid,kid_mean,kid_std,precision,recall,eval_s\n469,1.000,1000,41.5,3.1,0.2,0.61,0.22,60\n938,2.000,1000,17.25,1.2,0.1,0.70,0.41,60\n' \
  > "$work/full/eval_log.csv"
cp "$work/full/train_log.csv" "$work/train_only/"

# A run that measured itself: three panels (loss, FID, precision and recall), written as RUN_DIR/training.svg.
out=$(bash "$script" "$work/full")
[ "$out" = "$work/full/training.svg" ] || fail "printed \"$out\", expected the SVG's path"
svg=$work/full/training.svg
grep -q '<svg' "$svg" || fail "$svg is not an SVG"
for text in "training loss" "FID (lower is better)" "precision and recall" ">recall<" ">precision<" "training run: $work/full"; do
  grep -qF "$text" "$svg" || fail "$svg lacks \"$text\""
done
# The FID axis is logarithmic and spans the two values (17.25 and 41.5): gnuplot labels its decades 10 and 100.
grep -q '> 10<' "$svg" && grep -q '> 100<' "$svg" || fail "$svg: the FID axis does not show the decades 10 and 100"

# PNG on request.
bash "$script" "$work/full" "$work/full/curves.png" > /dev/null
[ "$(head -c 4 "$work/full/curves.png" | od -An -tx1 | tr -d ' ')" = "89504e47" ] || fail "curves.png is not a PNG"

# A run without --eval-every: the loss only.
bash "$script" "$work/train_only" > /dev/null
grep -qF "training loss" "$work/train_only/training.svg" || fail "train-only plot lacks the loss panel"
if grep -qF "FID" "$work/train_only/training.svg"; then fail "train-only plot has an FID panel"; fi

# Errors name the file and what was expected, and write nothing.
expect_error() {  # expect_error "message fragment" args...
  local fragment=$1 err
  shift
  if err=$(bash "$script" "$@" 2>&1 >/dev/null); then fail "plot_training.sh $* succeeded, expected an error"; fi
  case "$err" in *"$fragment"*) ;; *) fail "plot_training.sh $*: error \"$err\" lacks \"$fragment\"" ;; esac
}
expect_error "$work/empty/train_log.csv: no such file" "$work/empty"
printf 'step,epoch,loss,images_per_s,elapsed_s\n' > "$work/empty/train_log.csv"
expect_error "$work/empty/train_log.csv: no data lines" "$work/empty"
printf 'step,epoch,loss\n1,1,1\n' > "$work/empty/train_log.csv"
expect_error "line 1 is \"step,epoch,loss\", expected the header \"step,epoch,loss,images_per_s,elapsed_s\"" "$work/empty"
cp "$work/full/train_log.csv" "$work/empty/"
printf 'step,fid\n1,2\n' > "$work/empty/eval_log.csv"
expect_error "$work/empty/eval_log.csv: line 1 is \"step,fid\", expected the header" "$work/empty"
expect_error "must end in .svg or .png" "$work/full" "$work/full/curves.pdf"
[ ! -e "$work/empty/training.svg" ] || fail "a failed run wrote $work/empty/training.svg"
expect_error "usage:"
echo "plot_training: all checks passed"
