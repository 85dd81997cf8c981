#!/usr/bin/env bash
# Data-parallel training speed on this machine: the Fashion-MNIST U-Net (the default fashion_mnist run, batch 128),
# one process with T threads against R ranks of T / R threads each under mpirun, plus the exchange alone
# (bench_allreduce). Prints one line per configuration: images/s of training (from the run's train_log.csv) and the
# ratio to the first line. Needs a build with the MPI part (DIFFUSION_MPI) and Debian's dataset-fashion-mnist.
#   benchmarks/data_parallel.sh [--build-dir build] [--steps 30] [--cores 2]
# Measure on a quiet machine (see benchmarks/README.md): ranks spin in MPI_Test only briefly, but any other busy
# process slows every rank.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
steps=30
cores=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --cores) cores="$2"; shift 2 ;;
    *) echo "data_parallel.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
exe="$build/examples/fashion_mnist"
[ -x "$exe" ] || { echo "data_parallel.sh: $exe not built" >&2; exit 1; }
mpi=(mpirun --oversubscribe --bind-to none)
if [ "$(id -u)" -eq 0 ]; then mpi+=(--allow-run-as-root); fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# images/s of a run: the last line of train_log.csv (step,epoch,loss,images_per_s,elapsed_s).
rate() { tail -1 "$1/train_log.csv" | cut -d, -f4; }
run() {  # name ranks threads [--gradient-shards S]
  local name=$1 ranks=$2 threads=$3
  shift 3
  local dir="$out/$name"
  local args=(train --steps "$steps" --checkpoint-every 0 --final-samples 1 --final-sampler ddim --out "$dir" "$@")
  if [ "$ranks" -eq 1 ]; then
    OMP_NUM_THREADS=$threads "$exe" "${args[@]}" --threads "$threads" > "$dir.log" 2>&1
  else
    "${mpi[@]}" -np "$ranks" -x OMP_NUM_THREADS="$threads" "$exe" "${args[@]}" --threads "$threads" > "$dir.log" 2>&1
  fi
  rate "$dir"
}
echo "data_parallel.sh: $steps steps of batch 128, $cores cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
base=$(run one_${cores}threads 1 "$cores")
printf "%-34s %8s images/s  %5s\n" "1 process x $cores threads" "$base" "1.00x"
if [ "$cores" -gt 1 ]; then
  one=$(run one_1thread 1 1)
  printf "%-34s %8s images/s  %5s\n" "1 process x 1 thread" "$one" "$(echo "$one / $base" | bc -l | xargs printf '%.2fx')"
fi
for ranks in 2 4 8 16; do
  [ "$ranks" -le "$cores" ] || break
  threads=$((cores / ranks))
  r=$(run ranks$ranks "$ranks" "$threads")
  printf "%-34s %8s images/s  %5s\n" "$ranks ranks x $threads thread(s)" "$r" "$(echo "$r / $base" | bc -l | xargs printf '%.2fx')"
done
if [ -x "$build/benchmarks/bench_allreduce" ]; then
  for ranks in 2 4 8 16; do
    [ "$ranks" -le "$cores" ] || break
    echo "exchange of the 2,996,315 gradients, $ranks ranks: $("${mpi[@]}" -np "$ranks" "$build/benchmarks/bench_allreduce")"
  done
fi
