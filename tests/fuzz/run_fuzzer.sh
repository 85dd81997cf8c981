#!/usr/bin/env bash
# Runs one libFuzzer target and turns every finding into a failure that shows the input.
#   run_fuzzer.sh ARTIFACT_PREFIX FUZZER [libFuzzer flags and corpus folders...]
# ARTIFACT_PREFIX is where libFuzzer saves a failing input (-artifact_prefix, e.g. build-fuzz/tests/fuzz/artifacts/idx-):
# a crash, leak, timeout (-timeout) or out-of-memory (-rss_limit_mb / -malloc_limit_mb) writes
# <ARTIFACT_PREFIX><kind>-<sha1>. Exit status: the fuzzer's when it failed; 1 when it exited 0 but left a new crash,
# leak, timeout or oom file anyway; 0 otherwise. Each new file is printed with its kind, path, size, the command
# that replays it and its bytes in base64 (a CI log then holds the input even when the machine is gone).
# Used by the fuzz.<name> CTests (tests/fuzz/CMakeLists.txt) and by scripts/fuzz.sh.
set -uo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 ARTIFACT_PREFIX FUZZER [libFuzzer arguments...]" >&2
  exit 2
fi
prefix=$1
fuzzer=$2
shift 2
prefix_dir=$(dirname -- "${prefix}x")
prefix_base=$(basename -- "${prefix}x")
prefix_base=${prefix_base%x}
mkdir -p -- "$prefix_dir"

# What is there before the run: a finding is a file that is new, or rewritten by this run (same input found again).
marker=$(mktemp "${TMPDIR:-/tmp}/run_fuzzer.XXXXXX")
trap 'rm -f -- "$marker"' EXIT
sleep 0.01  # a file written in the same clock tick as the marker still counts as newer

"$fuzzer" "-artifact_prefix=$prefix" "$@"
status=$?

findings=()
while IFS= read -r -d '' f; do
  findings+=("$f")
done < <(find "$prefix_dir" -maxdepth 1 -type f -name "${prefix_base}*" -newer "$marker" -print0 | sort -z)

failing=0
for f in "${findings[@]}"; do
  name=$(basename -- "$f")
  kind=${name#"$prefix_base"}
  kind=${kind%-*}  # crash, leak, timeout, oom, slow-unit, ...
  case "$kind" in
    slow-unit) ;;  # below -timeout: reported by libFuzzer, not a failure
    *) failing=$((failing + 1)) ;;
  esac
  size=$(stat -c %s -- "$f")
  echo "=== fuzz finding: $kind: $f ($size bytes)"
  echo "=== replay: $fuzzer $f"
  echo "=== add it as a regression input once fixed: cp $f tests/fuzz/regressions/<target>/<what-it-is>"
  echo "=== the input, base64 (decode: base64 -d > input.bin):"
  base64 -w 100 -- "$f"
  echo "=== end of $name"
done

if [ "$status" -ne 0 ]; then
  echo "=== $(basename -- "$fuzzer") failed (exit status $status; ${#findings[@]} new input(s) under ${prefix}*)" >&2
  exit "$status"
fi
if [ "$failing" -gt 0 ]; then
  echo "=== $(basename -- "$fuzzer") exited 0 but saved $failing failing input(s) under ${prefix}*" >&2
  exit 1
fi
exit 0
