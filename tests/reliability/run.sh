#!/usr/bin/env bash
# The reliability suite, in one of two modes:
#
#   tests/reliability/run.sh ci     # about 5 minutes: every CI run
#   tests/reliability/run.sh long   # about 40 minutes: before a release
#
# BUILD_DIR (default build) is the CMake build tree, configured here when it
# does not exist yet; JOBS (default 2) bounds the build's parallelism. Each
# step prints its own report and its wall time; the script ends with one
# line per step and exits non-zero when any step failed. See README.md here.
set -uo pipefail

mode=${1:-}
if [[ "$mode" != ci && "$mode" != long ]]; then
  echo "usage: $0 ci|long" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}
jobs=${JOBS:-2}
export RELIABILITY_MODE=$mode

declare -a summary=()
failed=0

# step NAME COMMAND...: runs COMMAND, records whether it passed and how long
# it took.
step() {
  local name=$1
  shift
  echo
  echo "=== $name: $*"
  local start=$SECONDS
  "$@"
  local status=$?
  local took=$((SECONDS - start))
  if [[ $status -eq 0 ]]; then
    summary+=("PASS  $name (${took} s)")
  else
    summary+=("FAIL  $name (${took} s, exit $status)")
    failed=1
  fi
  echo "=== $name: exit $status after ${took} s"
}

skip() {
  echo
  echo "=== $1: skipped ($2)"
  summary+=("SKIP  $1 ($2)")
}

# --- build -----------------------------------------------------------------
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo || exit 1
fi
cmake --build "$build" -j"$jobs" --target payout-server aopay-sandbox \
  reliability_kill_test reliability_soak_test reliability_overload_test \
  hostile_aopay_test ledger_fault_test ||
  exit 1
load=$build/tests/reliability/load

# --- load: kill, overload, soak (tests/reliability/load) ---------------------
# The kill test is also the ctest reliability_kill_ci; it runs here directly
# so that its reconciliation report is printed.
step "kill test" "$load/reliability_kill_test"
step "overload" "$load/reliability_overload_test"
step "soak" "$load/reliability_soak_test"

# --- other reliability tests registered with ctest -L reliability ------------
# Every ctest labelled reliability except the kill test, which ran above.
if ctest --test-dir "$build" -N -L reliability -E '^reliability_kill_ci$' |
  grep -q 'Total Tests: [1-9]'; then
  step "ctest -L reliability" ctest --test-dir "$build" -L reliability \
    -E '^reliability_kill_ci$' --output-on-failure
else
  skip "ctest -L reliability" "no other test carries the label yet"
fi

# --- fuzzing (tests/fuzz/run.sh SECONDS, in its own clang build) --------------
fuzz_seconds=${FUZZ_SECONDS:-60}
[[ $mode == long ]] && fuzz_seconds=${FUZZ_SECONDS:-600}
# The fuzzers need their own clang build (-DPAYOUT_FUZZ=ON, target fuzzers;
# see tests/fuzz/README.md), in FUZZ_BUILD_DIR (default build-fuzz).
fuzz_build=${FUZZ_BUILD_DIR:-build-fuzz}
if [[ -x "$fuzz_build/tests/fuzz/payout_answer_fuzzer" ]]; then
  step "fuzz (${fuzz_seconds} s each)" \
    env BUILD_DIR="$fuzz_build" tests/fuzz/run.sh "$fuzz_seconds"
else
  skip "fuzz" "no fuzz build in $fuzz_build (cmake -DPAYOUT_FUZZ=ON with clang)"
fi

echo
echo "=== reliability suite ($mode): ${SECONDS} s"
printf '%s\n' "${summary[@]}"
exit $failed
