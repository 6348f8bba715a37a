#!/bin/bash
# Fuzzes every target for SECONDS each, one after the other, and prints one
# line per target with its executions and executions per second. Exits
# non-zero when a target crashed or violated a property; the input that did
# it is kept as crash-* in a temporary directory whose path is printed.
#
#   tests/fuzz/run.sh SECONDS
#
# Builds nothing: the targets come from BUILD_DIR (default build-fuzz),
# configured with -DPAYOUT_FUZZ=ON. New inputs found go to a temporary
# directory, never into the committed seed corpora.
set -u

if [[ $# -ne 1 || ! $1 =~ ^[0-9]+$ || $1 -lt 1 ]]; then
  echo "usage: $0 SECONDS" >&2
  exit 2
fi
seconds=$1
here=$(cd "$(dirname "$0")" && pwd)
build_dir=${BUILD_DIR:-build-fuzz}
targets=(payout_answer status_answer payout_request money config clients_file)

for target in "${targets[@]}"; do
  binary=$build_dir/tests/fuzz/${target}_fuzzer
  if [[ ! -x $binary ]]; then
    echo "$binary not found: build it with -DPAYOUT_FUZZ=ON first" >&2
    exit 2
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/payout-fuzz.XXXXXX")
failed=0
printf '%-16s %12s %10s  %s\n' target executions exec/s result
for target in "${targets[@]}"; do
  out=$work/$target
  mkdir -p "$out/corpus"
  options=(-max_total_time="$seconds" -print_final_stats=1 -timeout=25
           -artifact_prefix="$out/")
  if [[ $target == payout_answer || $target == status_answer ]]; then
    options+=(-dict="$here/aopay.dict")
  fi
  "$build_dir/tests/fuzz/${target}_fuzzer" "${options[@]}" \
    "$out/corpus" "$here/corpus/$target" >"$out/log" 2>&1
  status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/log" | tail -1)
  result=ok
  if [[ $status -ne 0 ]]; then
    failed=1
    artifact=$(ls "$out"/crash-* "$out"/leak-* "$out"/timeout-* \
                  "$out"/oom-* 2>/dev/null | head -1)
    result="FAILED (exit $status): ${artifact:-no input kept}, log $out/log"
  fi
  printf '%-16s %12s %10s  %s\n' "$target" "${runs:-?}" "${rate:-?}" "$result"
done
if [[ $failed -eq 0 ]]; then rm -rf "$work"; fi
exit $failed
