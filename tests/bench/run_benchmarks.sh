#!/usr/bin/env bash
# Benchmarks, measured side by side in one run on loopback (shared, noisy
# machines: compare the ratios; absolute numbers are context only).
#
#   1. Throughput and latency: N payouts at C in flight against the sandbox.
#   2. What durability costs: the same load against a gateway whose ledger
#      fsyncs every commit (synchronous=FULL) and one that never fsyncs
#      (synchronous=off), rounds interleaved; prints the ratio.
#
# Usage: tests/bench/run_benchmarks.sh [BUILD_DIR]   (default: build)
#   PAYOUTS=1000 CONCURRENCY=32 ROUNDS=3 SANDBOX_LATENCY=0s
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$repo/build}
payouts=${PAYOUTS:-1000}
concurrency=${CONCURRENCY:-32}
rounds=${ROUNDS:-3}
latency=${SANDBOX_LATENCY:-0s}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# start NAME COMMAND...: runs it, waits for "listening on", sets $address.
start() {
  local name=$1
  shift
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  for _ in $(seq 1 600); do
    address=$(sed -n 's/^listening on //p' "$work/$name.out")
    [ -n "$address" ] && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  echo "$name did not start:" >&2
  cat "$work/$name.err" >&2
  exit 1
}

bench() {  # bench TARGET REPORT
  "$build/client/payout-bench" --target="$1" --payouts="$payouts" \
    --concurrency="$concurrency" --json_out="$2" >/dev/null
}

field() {  # field REPORT KEY  (a top-level number, or latencyMs.KEY)
  /usr/bin/python3 -c 'import json,sys
r=json.load(open(sys.argv[1])); k=sys.argv[2]
print(r["latencyMs"][k] if k in r["latencyMs"] else r[k])' "$1" "$2"
}

start sandbox "$build/server/aopay-sandbox" --listen=127.0.0.1:0 \
  --latency="$latency" --threads=512
sandbox="http://$address"
common=(--listen=127.0.0.1:0 --metrics_listen= --aopay_url="$sandbox"
        --registration_id=AOP-SANDBOX)
start durable "$build/server/payout-server" "${common[@]}" \
  --ledger="sqlite:$work/durable.db"
durable=$address
start nofsync "$build/server/payout-server" "${common[@]}" \
  --ledger="sqlite:$work/nofsync.db?synchronous=off"
nofsync=$address

echo "payouts per run: $payouts, in flight: $concurrency, sandbox latency: $latency, rounds: $rounds"
echo
printf '%-7s %-22s %12s %9s %9s %9s\n' round ledger payouts/s p50_ms p99_ms errors
durable_rates=()
nofsync_rates=()
for round in $(seq 1 "$rounds"); do
  for kind in durable nofsync; do
    target=${!kind}
    report="$work/$kind-$round.json"
    bench "$target" "$report"
    rate=$(field "$report" payoutsPerSecond)
    ok=$(/usr/bin/python3 -c 'import json,sys
c=json.load(open(sys.argv[1]))["codes"]; print(sum(v for k,v in c.items() if k!="OK"))' "$report")
    label=$([ "$kind" = durable ] && echo "fsync (synchronous=FULL)" || echo "no fsync (off)")
    printf '%-7s %-22s %12.0f %9.2f %9.2f %9s\n' "$round" "$label" "$rate" \
      "$(field "$report" p50)" "$(field "$report" p99)" "$ok"
    if [ "$kind" = durable ]; then durable_rates+=("$rate"); else nofsync_rates+=("$rate"); fi
  done
done
echo
/usr/bin/python3 - "${durable_rates[*]}" "${nofsync_rates[*]}" <<'PY'
import statistics, sys
d = [float(x) for x in sys.argv[1].split()]
n = [float(x) for x in sys.argv[2].split()]
md, mn = statistics.median(d), statistics.median(n)
print(f"median payouts/s: fsync {md:.0f}, no fsync {mn:.0f}")
print(f"durability ratio (fsync / no fsync, medians of interleaved rounds): {md / mn:.2f}")
PY
