#!/usr/bin/env bash
# Runs the README's first command, deploy/demo.sh, as a user would: waits
# until it has sent its payout and watched it settle, presses Ctrl-C (SIGINT
# to the script's process group, as a terminal does), and checks that the
# payout went ACCEPTED then SUCCEEDED, that the script ends, that its gateway
# is gone and that its temporary ledger was removed.
#
#   tests/deploy/demo_test.sh
#
# The gateway listens on a free port (PAYOUT_LISTEN=127.0.0.1:0). The demo
# builds what it needs, so a built tree makes this take seconds.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

out=$(mktemp)
scratch=$(mktemp -d)
pid=
cleanup() {
  if [[ -n $pid ]]; then kill -KILL -- -"$pid" 2>/dev/null || true; fi
  rm -rf "$out" "$scratch"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*"
  echo "--- what the demo printed:"
  cat "$out"
  exit 1
}

# The demo's own temporary directory goes under $scratch, where it can be
# looked for afterwards. setsid: the demo leads its own process group, which
# is what a terminal's Ctrl-C signals.
TMPDIR=$scratch PAYOUT_LISTEN=127.0.0.1:0 setsid bash deploy/demo.sh \
  >"$out" 2>&1 &
pid=$!

ready=
for _ in $(seq 1 6000); do # up to 10 minutes: the demo may build first
  if grep -q '^== Ctrl-C stops it' "$out"; then
    ready=1
    break
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
[[ -n $ready ]] || fail "the demo did not reach its last step"

grep -q '^payout po_[0-9A-Z]* ACCEPTED' "$out" ||
  fail "the sample payout was not printed ACCEPTED"
grep -q 'ACCEPTED -> payout po_[0-9A-Z]* SUCCEEDED' "$out" ||
  fail "the watch did not see the payout SUCCEEDED"
server=$(pgrep -g "$pid" -f 'payout-server' || true)
[[ -n $server ]] || fail "no gateway runs while the demo waits"
demo_dirs=("$scratch"/payout-demo.*)
[[ -e ${demo_dirs[0]} ]] || fail "the demo's ledger is not in TMPDIR"

kill -INT -- -"$pid"
ended=
for _ in $(seq 1 600); do
  if ! kill -0 "$pid" 2>/dev/null; then
    ended=1
    break
  fi
  sleep 0.1
done
[[ -n $ended ]] || fail "the demo still runs a minute after Ctrl-C"
kill -0 "$server" 2>/dev/null && fail "the gateway still runs after Ctrl-C"
pid=
leftover=$(find "$scratch" -mindepth 1 -maxdepth 1)
[[ -z $leftover ]] || fail "left behind after Ctrl-C: $leftover"
echo "PASS: the demo sent a payout, saw it SUCCEEDED, and cleaned up on Ctrl-C"
