#!/usr/bin/env bash
# Installs what is needed, builds once, and runs the whole test suite.
# Usage: deploy/test.sh            (build in build/)
#        BUILD_DIR=build-asan PAYOUT_SANITIZE=ON deploy/test.sh
#        (also BUILD_TYPE, JOBS, BUILD_TARGETS, CTEST_ARGS)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

bash deploy/install-deps.sh
build=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" \
  -DPAYOUT_SANITIZE="${PAYOUT_SANITIZE:-OFF}"
# BUILD_TARGETS (optional) builds only those targets, for a mode that runs
# a subset of the tests (CTEST_ARGS selects them).
cmake --build "$build" -j "$jobs" ${BUILD_TARGETS:+--target $BUILD_TARGETS}
ctest --test-dir "$build" --output-on-failure -j "$jobs" ${CTEST_ARGS:-}
