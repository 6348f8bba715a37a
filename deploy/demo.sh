#!/usr/bin/env bash
# Installs what is needed, builds, starts the gateway on the built-in sandbox
# (no real money moves), sends one sample payout with payoutctl and watches
# it settle (WatchPayouts: ACCEPTED, then SUCCEEDED once the sandbox reports
# it and the reconciler has asked). The gateway keeps running until Ctrl-C.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

bash deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target payout-server payoutctl

listen=${PAYOUT_LISTEN:-127.0.0.1:50051}
# A new ledger each run, removed at the end: the built-in sandbox starts
# empty each time, and a ledger kept from an earlier run would hold payouts
# it has never heard of (the reconciler would keep asking about them).
work=$(mktemp -d "${TMPDIR:-/tmp}/payout-demo.XXXXXX")
out=$work/server.out
build/server/payout-server --listen="$listen" \
  --ledger="sqlite:$work/payouts.db" --reconcile_interval=1s >"$out" &
server=$!
# Stops the gateway (already gone after a Ctrl-C) and removes the ledger;
# under set -e, a failed kill here would end the script before the rm.
trap 'kill $server 2>/dev/null || true; wait $server || true; rm -rf "$work"' EXIT
for _ in $(seq 1 300); do
  grep -q "^listening on" "$out" && break
  kill -0 $server 2>/dev/null || { echo "payout-server did not start"; exit 1; }
  sleep 0.1
done
address=$(sed -n 's/^listening on //p' "$out")
echo
echo "== payout-server is listening on $address (sandbox: no real money moves)"
echo "== sending a sample payout:"
echo "   build/client/payoutctl --target=$address create --account=100000011836 \\"
echo "     --ifsc=SBIN0000002 --name='Dean Jon' --email=abc@gmail.com \\"
echo "     --mobile=9959640000 --amount=12.00 --mode=IMPS"
echo
build/client/payoutctl --target="$address" create --account=100000011836 \
  --ifsc=SBIN0000002 --name="Dean Jon" --email=abc@gmail.com \
  --mobile=9959640000 --amount=12.00 --mode=IMPS
echo
echo "== watching it settle (the sandbox reports SUCCESS after 2 s):"
echo "   build/client/payoutctl --target=$address watch --state SUCCEEDED --count 1"
timeout 30 build/client/payoutctl --target="$address" watch --state SUCCEEDED \
  --count 1 || echo "(not settled within 30 s)"
echo
echo "== the gateway keeps running on $address; try:"
echo "   build/client/payoutctl --target=$address list"
echo "== Ctrl-C stops it."
wait $server
