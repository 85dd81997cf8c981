#!/usr/bin/env bash
# Long fuzzing: builds the libFuzzer targets (clang, ASan + UBSan; the configure line of .ci/run's fuzz step) and runs
# every target of tests/fuzz/CMakeLists.txt for N minutes each, with a corpus kept between runs.
#
#   scripts/fuzz.sh [--minutes N] [--parallel K] [--corpus DIR] [--findings DIR] [--build DIR] [--no-build]
#                   [--list] [TARGET...] [-- LIBFUZZER_FLAGS...]
#
#   TARGET...        only these targets (names as in `--list`, e.g. idx unet_config); default: all of them
#   --minutes N      minutes per target (default 10; decimals allowed, e.g. 0.5)
#   --parallel K     run K targets at a time (default 1; each fuzzer is one process on one core)
#   --corpus DIR     the persistent corpus, one folder per target (default fuzz-corpus/): new inputs that reach new
#                    code are added there and read again by the next run
#   --findings DIR   failing inputs, one folder per target (default fuzz-findings/<target>/crash-<sha1>, timeout-,
#                    oom-, leak-), and each run's log (fuzz-findings/logs/<target>.log)
#   --build DIR      build folder (default build-fuzz, shared with .ci/run); --no-build uses it as it is
#   -- FLAGS         extra libFuzzer flags for every target (e.g. -- -jobs=2, -- -fork=2 -ignore_timeouts=0)
#
# Each target also reads its seeds (written by fuzz_make_seeds) and the committed inputs of past findings
# (tests/fuzz/regressions/<target>/), with its dictionary, under the same limits as the CTests (-timeout, -rss_limit_mb,
# -malloc_limit_mb, -max_len: tests/fuzz/CMakeLists.txt). Fuzzers run under `nice -n 19` (FUZZ_NICE=N to change).
# Prints per target the wall time, executions, executions per second, corpus size and findings; exits 1 when any
# target found something (a crash, leak, sanitizer report, timeout or out-of-memory), naming each saved input, whose
# bytes are also printed in base64 (tests/fuzz/run_fuzzer.sh). tests/fuzz/README.md says how to replay a finding and
# turn it into a regression input.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

minutes=10
parallel=1
corpus=fuzz-corpus
findings=fuzz-findings
build=build-fuzz
do_build=1
list_only=0
targets=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=$2; shift 2 ;;
    --minutes=*) minutes=${1#*=}; shift ;;
    --parallel) parallel=$2; shift 2 ;;
    --parallel=*) parallel=${1#*=}; shift ;;
    --corpus) corpus=$2; shift 2 ;;
    --corpus=*) corpus=${1#*=}; shift ;;
    --findings) findings=$2; shift 2 ;;
    --findings=*) findings=${1#*=}; shift ;;
    --build) build=$2; shift 2 ;;
    --build=*) build=${1#*=}; shift ;;
    --no-build) do_build=0; shift ;;
    --list) list_only=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
seconds=$(awk -v m="$minutes" 'BEGIN { s = int(m * 60 + 0.5); if (m !~ /^[0-9]*\.?[0-9]+$/ || s < 1) exit 1; print s }') ||
  { echo "fuzz.sh: --minutes expects a positive number, got '$minutes'" >&2; exit 2; }
[[ "$parallel" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --parallel expects a positive integer, got '$parallel'" >&2; exit 2; }
case "$corpus" in /*) ;; *) corpus="$root/$corpus" ;; esac
case "$findings" in /*) ;; *) findings="$root/$findings" ;; esac

if [ "$do_build" = 1 ]; then
  # The configure line of .ci/run's fuzz step (DIFFUSION_FUZZ_SECONDS, the CTests' length, is left as configured).
  CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDIFFUSION_FUZZ=ON \
    -DDIFFUSION_BUILD_EXAMPLES=OFF -DDIFFUSION_BUILD_BENCHMARKS=OFF >/dev/null
  nice -n "${FUZZ_NICE:-19}" cmake --build "$build" -j "$(nproc)" --target fuzzers
fi
manifest="$build/tests/fuzz/fuzz_targets.tsv"
[ -f "$manifest" ] || { echo "fuzz.sh: $manifest not found: build the fuzzers first (drop --no-build)" >&2; exit 2; }

# The manifest (tests/fuzz/CMakeLists.txt): the fuzzers' environment, common flags, then one line per target.
fuzz_env=()
common_flags=()
declare -A fuzzer dict seeds regressions flags
all=()
while IFS=$'\t' read -r kind a b c d e f; do
  case "$kind" in
    env) read -r -a fuzz_env <<<"$a" ;;
    flags) read -r -a common_flags <<<"$a" ;;
    target) all+=("$a"); fuzzer[$a]=$b; dict[$a]=$c; seeds[$a]=$d; regressions[$a]=$e; flags[$a]=${f:-} ;;
  esac
done <"$manifest"
if [ "$list_only" = 1 ]; then
  printf '%s\n' "${all[@]}"
  exit 0
fi
if [ ${#targets[@]} -eq 0 ]; then targets=("${all[@]}"); fi
for t in "${targets[@]}"; do
  [ -n "${fuzzer[$t]:-}" ] || { echo "fuzz.sh: no target '$t' (the targets: ${all[*]})" >&2; exit 2; }
  [ -x "${fuzzer[$t]}" ] || { echo "fuzz.sh: ${fuzzer[$t]} is not built (drop --no-build)" >&2; exit 2; }
done

# The seeds (the fixture test fuzz.seeds runs fuzz_make_seeds).
ctest --test-dir "$build" -R '^fuzz\.seeds$' >/dev/null ||
  { echo "fuzz.sh: fuzz_make_seeds failed: ctest --test-dir $build -R '^fuzz\\.seeds\$' --output-on-failure" >&2; exit 1; }
mkdir -p "$findings/logs"

count_files() { find "$1" -maxdepth 1 -type f | wc -l; }

# Runs one target; writes its summary line to $findings/logs/<target>.summary.
run_target() {
  local t=$1
  local dir="$corpus/$t" out="$findings/$t" log="$findings/logs/$t.log"
  mkdir -p "$dir" "$out"
  local before
  before=$(count_files "$dir")
  local -a inputs=("$dir" "${seeds[$t]}")
  [ -d "${regressions[$t]}" ] && inputs+=("${regressions[$t]}")
  local -a target_flags=()
  read -r -a target_flags <<<"${flags[$t]}"
  local start=$SECONDS status=0
  echo "fuzz.sh: $t: fuzzing for $seconds s (log: $log)"
  env "${fuzz_env[@]}" nice -n "${FUZZ_NICE:-19}" bash tests/fuzz/run_fuzzer.sh "$out/" "${fuzzer[$t]}" \
    -max_total_time="$seconds" "${common_flags[@]}" "${target_flags[@]}" -dict="${dict[$t]}" "${extra[@]}" \
    "${inputs[@]}" >"$log" 2>&1 || status=$?
  local wall=$((SECONDS - start))
  local after
  after=$(count_files "$dir")
  local execs rate peak
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  local cov
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 | awk '{print $2 "/" $4}' || true)
  # slow-unit files (an input slower than -report_slow_units, below -timeout) are reported, not counted as findings.
  local -a new_findings=() slow_units=()
  while IFS= read -r line; do
    case "$line" in
      slow-unit\ *) slow_units+=("$line") ;;
      *) new_findings+=("$line") ;;
    esac
  done < <(sed -n 's/^=== fuzz finding: \([^:]*\): \(.*\) ([0-9]* bytes)$/\1 \2/p' "$log")
  local found=${#new_findings[@]}
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$wall" "${execs:-?}" "${rate:-?}" "$after" \
    "$((after - before))" "${cov:-?}" "${peak:-?}" "$found" "$status" >"$findings/logs/$t.summary"
  for f in "${new_findings[@]}"; do echo "fuzz.sh: $t: FINDING $f"; done
  for f in "${slow_units[@]}"; do echo "fuzz.sh: $t: note (not a failure): $f"; done
  if [ "$status" -ne 0 ]; then
    echo "fuzz.sh: $t: the fuzzer stopped with status $status after $wall s; see $log"
    grep -E '^(==[0-9]+==ERROR|SUMMARY|fuzz property violated|terminate called)' "$log" | head -5 | sed "s/^/fuzz.sh: $t:   /" || true
  else
    echo "fuzz.sh: $t: done in $wall s, no findings"
  fi
}

echo "fuzz.sh: ${#targets[@]} target(s) x $seconds s, $parallel at a time; corpus in $corpus, findings in $findings;" \
  "load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
running=0
for t in "${targets[@]}"; do
  rm -f "$findings/logs/$t.summary"
  run_target "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$parallel" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

echo
printf '%-20s %8s %13s %8s %14s %10s %9s %9s\n' target time executions exec/s "corpus (new)" cov/ft "peak MB" findings
failed=0
for t in "${targets[@]}"; do
  if [ ! -f "$findings/logs/$t.summary" ]; then
    printf '%-20s did not report (see %s)\n' "$t" "$findings/logs/$t.log"
    failed=1
    continue
  fi
  IFS=$'\t' read -r name wall execs rate size added cov peak found status <"$findings/logs/$t.summary"
  printf '%-20s %5d:%02d %13s %8s %14s %10s %9s %9s\n' "$name" $((wall / 60)) $((wall % 60)) "$execs" "$rate" \
    "$size (+$added)" "$cov" "$peak" "$found"
  if [ "$status" -ne 0 ] || [ "$found" -ne 0 ]; then failed=1; fi
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
if [ "$failed" -ne 0 ]; then
  echo "fuzz.sh: FAILED: the inputs above are saved under $findings/<target>/ (logs in $findings/logs/);" \
    "replay one with: $build/tests/fuzz/fuzz_<target> FILE" >&2
  exit 1
fi
echo "fuzz.sh: no findings"
