#!/usr/bin/env bash
# The gateway's benchmarks, measured side by side in one run on loopback, and
# printed as ONE table (markdown). Shared, noisy machines: compare the ratios;
# absolute numbers are context only.
#
#   a. CPU per call: the gateway (durable ledger, sandbox answering at once)
#      and the bare gRPC echo server (tests/bench/echo-server) at the same
#      offered rate (open loop), A_ROUNDS rounds interleaved; CPU from the
#      server process's utime+stime (/proc/PID/stat) over the run; the ratio
#      is the median of each round's gateway / echo, the two measured back
#      to back (first one, then the other, alternately). For
#      context, the gateway on a no-fsync ledger (what durability costs at
#      this rate), the echo answered from two threads (the gateway's shape)
#      and on the async API, alone and beside a callback-API service.
#   b. The sandbox alone over HTTP: its ceiling (sandbox-load, closed loop).
#   c. Slow AOPay: sandbox --latency=1s, SLOW_INFLIGHT payouts in flight
#      (gateway --max_inflight the same): payouts/s sustained (payout-bench's
#      steady window: while all SLOW_INFLIGHT are in flight) and over the
#      whole run, errors, the gateway's peak threads and RSS, the sandbox's.
#      SLOW_PAYOUTS is some forty cycles of 1 s: the first SLOW_INFLIGHT
#      calls leave at once and come back at once, and the few cycles after
#      that burst run slower while it spreads out; a run of a few cycles
#      measures that settling more than the rate sustained. Context: the
#      same shape without the gateway (sandbox-load, SLOW_INFLIGHT
#      connections, SLOW_PAYOUTS requests) and the ratio of the whole-run
#      rates.
#   d. What durability costs: fsync (synchronous=FULL) vs no-fsync
#      (synchronous=off) ledgers at 32 in flight, D_ROUNDS rounds interleaved;
#      the ratio is the median of each round's pair, as in (a). Context: what
#      the default commit delay costs 4 callers
#      that each wait for their answer, against the same durable gateway
#      with --ledger_commit_delay=0s, rounds interleaved; and 32 such callers
#      against a sandbox answering after 50-150 ms (--latency_jitter).
#   e. One BatchCreatePayouts stream of BATCH payouts: payouts/s.
#   f. What security costs: the gateway over TLS with a bearer token (clients
#      file) vs the plaintext gateway of (a), same offered rate, rounds
#      interleaved; CPU per payout and the ratio.
#   g. SQLite vs PostgreSQL, one replica vs two: a throw-away PostgreSQL
#      (tests/support/pg_cluster.sh, fsync on), LEDGER_INFLIGHT payouts in
#      flight per gateway (closed loop): payouts/s and CPU per payout of the
#      gateways and of PostgreSQL, rounds interleaved; from PostgreSQL's CPU
#      per payout, how many payouts/s one database core serves; and what
#      watch positions cost (docs/scale-out.md): a replica on a database of
#      its own whose events are never queued (the trigger dropped) vs one
#      replica of the shared database, throughput and PostgreSQL's CPU.
#   h. What webhooks cost: the gateway with --webhook_url (the sandbox's
#      /webhooks answers 204) vs the plaintext gateway of (a), same offered
#      rate, rounds interleaved; CPU per payout (the webhook POSTs included)
#      and the ratio.
#   i. WatchPayouts: one watcher replaying WATCH_EVENTS events from the
#      ledger (events/s); the gateway's RSS with WATCHERS idle watchers open;
#      CPU per payout and CreatePayout p99 at WATCH_RATE/s with no watcher,
#      with WATCHERS watchers waiting for a state that never comes, and with
#      FOLLOWERS watchers getting every event.
#   j. What a daily limit costs as the day fills: one client sends
#      LIMIT_ROUNDS rounds of LEDGER_PAYOUTS payouts at 32 in flight into one
#      day, through a gateway whose clients file gives it a daily_paise (too
#      large to refuse anything) and one whose file gives it none, rounds
#      interleaved; payouts/s, and the ratio in the last round, when the
#      day holds the most payouts.
#
# Usage: tests/bench/run_benchmarks.sh [BUILD_DIR]   (default: build)
# Knobs (environment): RATE=2000 RATE_SECONDS=10 ROUNDS=2 A_ROUNDS=3
#   D_ROUNDS=9
#   SLOW_INFLIGHT=5000 SLOW_PAYOUTS=200000 LEDGER_PAYOUTS=5000 BATCH=10000
#   LEDGER_INFLIGHT=64
#   SANDBOX_CONNECTIONS=16 SANDBOX_REQUESTS=40000
#   WATCH_EVENTS=100000 WATCHERS=1000 FOLLOWERS=100 WATCH_RATE=200
#   LIMIT_ROUNDS=4
# Every load is bounded in count and in time; the whole run takes 7-9 min.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$repo/build}
rate=${RATE:-2000}
rate_seconds=${RATE_SECONDS:-10}
rounds=${ROUNDS:-2}
# Rows a and d compare two figures a few tenths apart on a machine whose
# speed moves by 15-40 % from one round to the next: more rounds, each pair
# measured back to back.
a_rounds=${A_ROUNDS:-3}
d_rounds=${D_ROUNDS:-9}
slow_inflight=${SLOW_INFLIGHT:-5000}
slow_payouts=${SLOW_PAYOUTS:-200000}
ledger_payouts=${LEDGER_PAYOUTS:-5000}
ledger_inflight=${LEDGER_INFLIGHT:-64}
batch=${BATCH:-10000}
sandbox_connections=${SANDBOX_CONNECTIONS:-16}
sandbox_requests=${SANDBOX_REQUESTS:-40000}
watch_events=${WATCH_EVENTS:-100000}
watchers=${WATCHERS:-1000}
followers=${FOLLOWERS:-100}
watch_rate=${WATCH_RATE:-200}
limit_rounds=${LIMIT_ROUNDS:-4}

for program in server/payout-server server/aopay-sandbox client/payout-bench \
               tests/bench/echo-server tests/bench/sandbox-load \
               tests/bench/watch-load; do
  [ -x "$build/$program" ] || {
    echo "missing $build/$program: build it first" >&2
    exit 2
  }
done
# 5,000 calls in flight need 5,000 sockets in the gateway and the sandbox.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt $((slow_inflight * 2 + 1000)) ]; then
  echo "open-file limit $(ulimit -n) is too low for $slow_inflight in flight" >&2
  exit 2
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
clk_tck=$(getconf CLK_TCK)
bench=$build/client/payout-bench
started=$(date +%s)

# start NAME COMMAND...: runs it, waits for "listening on", sets $address
# and $pid.
start() {
  local name=$1
  shift
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 600); do
    # The child may not have made its output file yet.
    address=$(sed -n 's/^listening on //p' "$work/$name.out" 2>/dev/null || true)
    [ -n "$address" ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "$name did not start:" >&2
  cat "$work/$name.err" >&2
  exit 1
}

stop() {  # stop PID: SIGTERM and wait for it
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

cpu_ticks() {  # utime+stime of PID, in clock ticks
  # The command name (field 2) may hold spaces: count from after its ')'.
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

status_kib() {  # status_kib PID FIELD: a "kB" line of /proc/PID/status
  awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"
}

json() {  # json REPORT EXPRESSION (python, the report is r)
  /usr/bin/python3 -c 'import json,sys
r=json.load(open(sys.argv[1]))
errors=sum(v for k,v in r["codes"].items() if k!="OK")
print(eval(sys.argv[2]))' "$1" "$2"
}

# rate_run REPORT PID ARGS...: payout-bench with ARGS at $rate/s for $calls
# calls (open loop), its report in REPORT; prints PID's CPU µs per call.
rate_run() {
  local report=$1 server_pid=$2
  shift 2
  local before after
  before=$(cpu_ticks "$server_pid")
  "$bench" "$@" --rate="$rate" --payouts="$calls" --timeout=30s \
    --progress=false --json_out="$report" >/dev/null
  after=$(cpu_ticks "$server_pid")
  echo $(((after - before) * 1000000 / clk_tck / calls))
}

rows=()
row() { rows+=("$(printf '| %s | %s | %s | %s |' "$@")"); }
progress() { echo "[$(($(date +%s) - started))s] $*" >&2; }

# --- a. CPU per call: gateway vs echo at the same offered rate --------------
start sandbox "$build/server/aopay-sandbox" --listen=127.0.0.1:0
sandbox_url="http://$address"
sandbox_pid=$pid
common=(--listen=127.0.0.1:0 --metrics_listen= --aopay_url="$sandbox_url"
        --registration_id=AOP-SANDBOX)
start durable "$build/server/payout-server" "${common[@]}" \
  --ledger="sqlite:$work/durable.db"
durable=$address
durable_pid=$pid
# Row d's gateway without fsync; in row a, context: what durability costs
# at row a's rate.
start nofsync "$build/server/payout-server" "${common[@]}" \
  --ledger="sqlite:$work/nofsync.db?synchronous=off"
nofsync=$address
nofsync_pid=$pid
# Row d's context: the durable gateway committing at once.
start nodelay "$build/server/payout-server" "${common[@]}" \
  --ledger="sqlite:$work/nodelay.db" --ledger_commit_delay=0s
nodelay=$address
nodelay_pid=$pid
# The echo server (row a), and for context the same echo in the gateway's
# shape (answered from two threads, as the gateway answers from its
# callbacks threads) and on gRPC's async API (one completion-queue thread),
# alone and beside a callback-API service (docs/benchmarks.md).
declare -A echo_address echo_pid
echo_kinds="echo echo_pool echo_async_pool echo_async_pool_health"
declare -A echo_flags=(
  [echo]=""
  [echo_pool]="--answer_threads=2"
  [echo_async_pool]="--api=async --answer_threads=2"
  [echo_async_pool_health]="--api=async --answer_threads=2 --health")
for kind in $echo_kinds; do
  # shellcheck disable=SC2086 # the flags are words
  start "$kind" "$build/tests/bench/echo-server" --listen=127.0.0.1:0 \
    ${echo_flags[$kind]}
  echo_address[$kind]=$address
  echo_pid[$kind]=$pid
done

calls=$((rate * rate_seconds))
declare -A cpu_us rate_got p99 errs
for round in $(seq 1 "$a_rounds"); do
  # The gateway and the echo back to back, which first alternating.
  pair="gateway echo"
  [ $((round % 2)) -eq 0 ] && pair="echo gateway"
  for kind in $pair gateway_nofsync ${echo_kinds#echo }; do
    if [ "$kind" = gateway ]; then
      target=$durable server_pid=$durable_pid extra=()
    elif [ "$kind" = gateway_nofsync ]; then
      target=$nofsync server_pid=$nofsync_pid extra=()
    else
      target=${echo_address[$kind]} server_pid=${echo_pid[$kind]}
      extra=(--echo)
    fi
    progress "a. round $round: $kind, $calls calls at $rate/s"
    report=$work/a-$kind-$round.json
    sandbox_before=$(cpu_ticks "$sandbox_pid")
    cpu_us[$kind]+=" $(rate_run "$report" "$server_pid" --target="$target" "${extra[@]}")"
    sandbox_after=$(cpu_ticks "$sandbox_pid")
    rate_got[$kind]+=" $(json "$report" 'round(r["payoutsPerSecond"])')"
    p99[$kind]+=" $(json "$report" 'round(r["latencyMs"]["p99"], 2)')"
    errs[$kind]+=" $(json "$report" errors)"
    if [ "$kind" = gateway ]; then
      cpu_us[sandbox]+=" $(((sandbox_after - sandbox_before) * 1000000 / clk_tck / calls))"
    fi
  done
done
ratio() {  # ratio A B: A / B to two decimals
  awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'
}
# pair_ratios A B: for lists A and B of one figure a round, each round's
# A / B to two decimals (n/a where B is 0), space-separated.
pair_ratios() {
  paste -d ' ' <(tr ' ' '\n' <<<"$1" | sed '/^$/d') \
    <(tr ' ' '\n' <<<"$2" | sed '/^$/d') |
    awk '{printf " %s", ($2 > 0 ? sprintf("%.2f", $1 / $2) : "n/a")}'
}
# paired_median RATIOS [SUFFIX]: the median of pair_ratios' RATIOS and
# SUFFIX, or n/a when no round could be paired.
paired_median() {
  local ratios=${1//n\/a/}
  if [ -n "${ratios// /}" ]; then echo "$(median "$ratios")${2:-}"; else echo n/a; fi
}
median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -n |
  awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
sum() { tr ' ' '\n' <<<"$1" | awk '{s+=$1} END {print s+0}'; }

# Two gateways at the same offered rate, rounds interleaved (rows f, h).
declare -A ab_cpu ab_errs
ab_runs=0
# ab_round ROW KIND TARGET PID [BENCH_ARGS...]: one round of KIND.
ab_round() {
  local row_name=$1 kind=$2 target=$3 server_pid=$4
  shift 4
  ab_runs=$((ab_runs + 1))
  progress "$row_name. run $ab_runs: $kind, $calls calls at $rate/s"
  local report=$work/ab-$ab_runs.json
  ab_cpu[$row_name-$kind]+=" $(rate_run "$report" "$server_pid" --target="$target" "$@")"
  ab_errs[$row_name-$kind]+=" $(json "$report" errors)"
}
# ab_rows ROW KIND_A LABEL_A KIND_B LABEL_B RATIO_LABEL: the medians and
# B / A.
ab_rows() {
  local row_name=$1 a=$2 b=$4 ma mb
  ma=$(median "${ab_cpu[$row_name-$a]}")
  mb=$(median "${ab_cpu[$row_name-$b]}")
  row "$row_name" "$3" \
    "$ma µs (rounds:${ab_cpu[$row_name-$a]}; errors $(sum "${ab_errs[$row_name-$a]}"))" ""
  row "$row_name" "$5" \
    "$mb µs (rounds:${ab_cpu[$row_name-$b]}; errors $(sum "${ab_errs[$row_name-$b]}"))" ""
  row "$row_name" "**$6**" \
    "**$(awk -v b="$mb" -v a="$ma" 'BEGIN {printf (a > 0 ? "%.2f×" : "n/a"), b / a}')**" ""
}
g=$(median "${cpu_us[gateway]}")
e=$(median "${cpu_us[echo]}")
row a "gateway CPU per payout, $rate/s offered (durable ledger, sandbox at once)" \
  "$g µs (rounds:${cpu_us[gateway]}; achieved${rate_got[gateway]}/s; p99${p99[gateway]} ms; errors $(sum "${errs[gateway]}"))" ""
row a "echo server CPU per call, $rate/s offered" \
  "$e µs (rounds:${cpu_us[echo]}; achieved${rate_got[echo]}/s; p99${p99[echo]} ms; errors $(sum "${errs[echo]}"))" ""
a_ratios=$(pair_ratios "${cpu_us[gateway]}" "${cpu_us[echo]}")
row a "**gateway / echo CPU per call** (median of the rounds:$a_ratios)" \
  "**$(paired_median "$a_ratios" ×)**" "≤ 2.0×"
row a "sandbox CPU per payout during those runs (not the gateway's)" \
  "$(median "${cpu_us[sandbox]}") µs" ""
gn=$(median "${cpu_us[gateway_nofsync]}")
row a "the same gateway on a no-fsync ledger (context: what durability costs at this rate)" \
  "$gn µs, $(awk -v g="$gn" -v e="$e" 'BEGIN {printf (e > 0 ? "%.1f×" : "n/a"), g / e}') the echo (rounds:${cpu_us[gateway_nofsync]}; errors $(sum "${errs[gateway_nofsync]}"))" ""
declare -A echo_label=(
  [echo_pool]="echo answered from 2 threads, as the gateway answers (context)"
  [echo_async_pool]="echo on the async API, one queue thread, answered from 2 threads (context)"
  [echo_async_pool_health]="the same beside a callback-API service, as the gateway serves health (context)")
for kind in echo_pool echo_async_pool echo_async_pool_health; do
  row a "${echo_label[$kind]}" \
    "$(median "${cpu_us[$kind]}") µs (rounds:${cpu_us[$kind]}; errors $(sum "${errs[$kind]}"))" ""
done
for kind in $echo_kinds; do stop "${echo_pid[$kind]}"; done

# --- b. the sandbox alone ----------------------------------------------------
progress "b. sandbox alone: $sandbox_requests requests, $sandbox_connections connections"
sandbox_line=$("$build/tests/bench/sandbox-load" --url="$sandbox_url" \
  --connections="$sandbox_connections" --requests="$sandbox_requests" \
  --max_time=30s || true)
row b "sandbox alone over HTTP/1.1 keep-alive, $sandbox_connections connections (client on the same 2 cores)" \
  "$(sed -E 's/.* ([0-9]+)\/s$/\1 calls\/s/' <<<"$sandbox_line") (${sandbox_line#sandbox-load: })" ""

# --- d. durable vs no fsync at 32 in flight ----------------------------------
# closed_rounds COUNT CONCURRENCY PAYOUTS RESULTS KIND...: COUNT rounds of
# PAYOUTS payouts at CONCURRENCY in flight against each KIND's gateway,
# interleaved, the KINDs in reverse order every other round; appends each
# round's payouts/s to RESULTS[KIND].
closed_rounds() {
  local count=$1 concurrency=$2 payouts=$3 round kind report order
  local -n results=$4
  shift 4
  for round in $(seq 1 "$count"); do
    order=("$@")
    if [ $((round % 2)) -eq 0 ]; then
      order=()
      for kind in "$@"; do order=("$kind" "${order[@]}"); done
    fi
    for kind in "${order[@]}"; do
      progress "d. round $round: $kind, $payouts payouts at $concurrency in flight"
      report=$work/d$concurrency-$kind-$round.json
      "$bench" --target="${!kind}" --payouts="$payouts" \
        --concurrency="$concurrency" --timeout=30s --progress=false \
        --json_out="$report" >/dev/null
      # shellcheck disable=SC2004 # an associative array, by name
      results[$kind]+=" $(json "$report" 'round(r["payoutsPerSecond"])')"
    done
  done
}
declare -A many_rates few_rates
closed_rounds "$d_rounds" 32 "$ledger_payouts" many_rates durable nofsync
md=$(median "${many_rates[durable]}")
mn=$(median "${many_rates[nofsync]}")
row d "fsync ledger, 32 in flight (payouts/s, rounds:${many_rates[durable]})" "$md" ""
row d "no-fsync ledger, 32 in flight (payouts/s, rounds:${many_rates[nofsync]})" "$mn" ""
d_ratios=$(pair_ratios "${many_rates[durable]}" "${many_rates[nofsync]}")
row d "**fsync / no-fsync throughput** (median of the rounds:$d_ratios)" \
  "**$(paired_median "$d_ratios")**" "≥ 0.8"
stop "$nofsync_pid"
closed_rounds $((rounds + 1)) 4 "$ledger_payouts" few_rates durable nodelay
fd=$(median "${few_rates[durable]}")
fz=$(median "${few_rates[nodelay]}")
row d "4 callers each waiting for its answer, default commit delay (payouts/s, rounds:${few_rates[durable]})" "$fd" ""
row d "the same, --ledger_commit_delay=0s (payouts/s, rounds:${few_rates[nodelay]})" "$fz" ""
row d "default delay / 0s throughput, 4 callers (context)" \
  "$(ratio "$fd" "$fz")" ""
stop "$nodelay_pid"
# The same against an AOPay of varying speed, whose callers fall out of step.
start jitter_sandbox "$build/server/aopay-sandbox" --listen=127.0.0.1:0 \
  --latency=50ms --latency_jitter=100ms
jitter_sandbox_pid=$pid
jitter_common=(--listen=127.0.0.1:0 --metrics_listen= --aopay_url="http://$address"
               --registration_id=AOP-SANDBOX)
start jittered "$build/server/payout-server" "${jitter_common[@]}" \
  --ledger="sqlite:$work/jittered.db"
jittered=$address
jittered_pid=$pid
start jittered_nodelay "$build/server/payout-server" "${jitter_common[@]}" \
  --ledger="sqlite:$work/jittered_nodelay.db" --ledger_commit_delay=0s
jittered_nodelay=$address
jittered_nodelay_pid=$pid
declare -A jitter_rates
closed_rounds $((rounds + 1)) 32 2000 jitter_rates jittered jittered_nodelay
jd=$(median "${jitter_rates[jittered]}")
jz=$(median "${jitter_rates[jittered_nodelay]}")
row d "32 callers each waiting for its answer, AOPay answering after 50-150 ms, default commit delay (payouts/s, rounds:${jitter_rates[jittered]})" "$jd" ""
row d "the same, --ledger_commit_delay=0s (payouts/s, rounds:${jitter_rates[jittered_nodelay]})" "$jz" ""
row d "default delay / 0s throughput, AOPay 50-150 ms (context)" \
  "$(ratio "$jd" "$jz")" ""
stop "$jittered_pid"
stop "$jittered_nodelay_pid"
stop "$jitter_sandbox_pid"

# --- e. one batch stream ------------------------------------------------------
progress "e. one BatchCreatePayouts stream of $batch payouts"
report=$work/e.json
"$bench" --target="$durable" --mode=batch --payouts="$batch" --timeout=120s \
  --progress=false --json_out="$report" >/dev/null
row e "one BatchCreatePayouts stream of $batch payouts (durable ledger)" \
  "$(json "$report" '"%.0f payouts/s (p50 %.1f ms, p99 %.1f ms per answer, errors %d)" % (r["payoutsPerSecond"], r["latencyMs"]["p50"], r["latencyMs"]["p99"], errors)')" ""

# --- f. TLS + token vs plaintext ---------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$work/ca.key" -out "$work/ca.pem" -days 1 -subj /CN=bench-ca \
  2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$work/server.key" -out "$work/server.csr" -subj /CN=localhost \
  2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$work/server.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" \
  -CAkey "$work/ca.key" -CAcreateserial -out "$work/server.pem" -days 1 \
  -extfile "$work/server.ext" 2>/dev/null
"$build/client/payoutctl" --json token bench payouts:write,payouts:read \
  >"$work/token.json"
/usr/bin/python3 -c 'import json,sys
r=json.load(open(sys.argv[1]))
open(sys.argv[2], "w").write(r["line"] + "\n")
open(sys.argv[3], "w").write(r["token"] + "\n")' \
  "$work/token.json" "$work/clients" "$work/token"
start secure "$build/server/payout-server" "${common[@]}" \
  --ledger="sqlite:$work/secure.db" --clients="$work/clients" \
  --tls_cert="$work/server.pem" --tls_key="$work/server.key"
secure=$address
secure_pid=$pid
for round in $(seq 1 "$rounds"); do
  ab_round f plaintext "$durable" "$durable_pid"
  ab_round f secure "$secure" "$secure_pid" --tls_ca="$work/ca.pem" \
    --token_file="$work/token"
done
ab_rows f plaintext "plaintext gateway CPU per payout, $rate/s offered" \
  secure "TLS + bearer token gateway CPU per payout, $rate/s offered" \
  "TLS + token / plaintext CPU per payout"
stop "$secure_pid"

# --- j. a daily limit vs none, as the day fills --------------------------------
# The clients file of (f), its one line with and without a daily_paise.
sed 's/$/ daily_paise=100000000000000/' "$work/clients" >"$work/limited.clients"
for kind in limited unlimited; do
  clients=$work/clients
  [ "$kind" = limited ] && clients=$work/limited.clients
  start "$kind" "$build/server/payout-server" "${common[@]}" \
    --allow_insecure_tokens --ledger="sqlite:$work/$kind.db" \
    --clients="$clients"
  printf -v "$kind" '%s' "$address"
  printf -v "${kind}_pid" '%s' "$pid"
done
l_rates=() u_rates=()
for round in $(seq 1 "$limit_rounds"); do
  for kind in limited unlimited; do
    progress "j. round $round: $kind, $ledger_payouts payouts at 32 in flight"
    report=$work/j-$kind-$round.json
    "$bench" --target="${!kind}" --payouts="$ledger_payouts" --concurrency=32 \
      --token_file="$work/token" --timeout=30s --progress=false \
      --json_out="$report" >/dev/null
    r=$(json "$report" 'round(r["payoutsPerSecond"]) if errors == 0 else "errors"')
    if [ "$kind" = limited ]; then l_rates+=("$r"); else u_rates+=("$r"); fi
  done
done
row j "one client with a daily limit, 32 in flight, $limit_rounds rounds of $ledger_payouts payouts into one day (payouts/s: ${l_rates[*]})" \
  "$(median "${l_rates[*]}")" ""
row j "the same client without a limit (payouts/s: ${u_rates[*]})" \
  "$(median "${u_rates[*]}")" ""
row j "**limit / no limit throughput, last round**" \
  "**$(ratio "${l_rates[-1]}" "${u_rates[-1]}")**" ""
stop "$limited_pid"
stop "$unlimited_pid"

# --- h. webhooks on vs off ---------------------------------------------------
printf 'a-benchmark-webhook-secret\n' >"$work/webhook.secret"
start hooked "$build/server/payout-server" "${common[@]}" \
  --ledger="sqlite:$work/hooked.db" --webhook_url="$sandbox_url/webhooks" \
  --webhook_secret="@$work/webhook.secret"
hooked=$address
hooked_pid=$pid
for round in $(seq 1 "$rounds"); do
  ab_round h off "$durable" "$durable_pid"
  ab_round h on "$hooked" "$hooked_pid"
done
ab_rows h off "gateway CPU per payout without webhooks, $rate/s offered" \
  on "gateway CPU per payout with webhooks (2 events a payout, outbox + POSTs)" \
  "webhooks on / off CPU per payout"
stop "$hooked_pid"

# --- i. WatchPayouts ----------------------------------------------------------
watch_load=$build/tests/bench/watch-load
progress "i. one watcher replaying $watch_events events"
replay=$("$watch_load" --target="$durable" --mode=replay \
  --events="$watch_events")
row i "one watcher replaying $watch_events events from the ledger (events/s)" \
  "$(sed -n 's/.* \([0-9]*\) events\/s$/\1/p' <<<"$replay")" ""
# The same gateway at a low rate: no watcher; WATCHERS watchers of a state
# no payout reaches here (REVERSED: open, following, never woken); and
# FOLLOWERS watchers that get every event (each payout's two events go to
# every one of them).
saved_rate=$rate saved_calls=$calls
rate=$watch_rate calls=$((watch_rate * rate_seconds))
# watchers_open NAME ARGS...: starts watch-load --mode=idle with ARGS in the
# background ($watchers_pid) and waits until its watches are open.
watchers_open() {
  local name=$1
  shift
  "$watch_load" --target="$durable" --mode=idle \
    --hold=$((rate_seconds * 3 + 30))s "$@" >"$work/$name.out" 2>&1 &
  watchers_pid=$!
  pids+=("$watchers_pid")
  for _ in $(seq 1 1200); do
    grep -q 'watchers open' "$work/$name.out" && return 0
    kill -0 "$watchers_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "watch-load did not open its watches:" >&2
  cat "$work/$name.out" >&2
  exit 1
}
ab_round i none "$durable" "$durable_pid"
none_p99=$(json "$work/ab-$ab_runs.json" 'round(r["latencyMs"]["p99"], 1)')
rss_none=$(status_kib "$durable_pid" VmRSS)
progress "i. $watchers idle watchers"
watchers_open idle --watchers="$watchers" --states=REVERSED
rss_open=$(status_kib "$durable_pid" VmRSS)
row i "gateway RSS: no watcher / $watchers idle watchers open" \
  "$((rss_none / 1024)) MiB / $((rss_open / 1024)) MiB ($(((rss_open - rss_none) / watchers)) KiB a watcher)" ""
ab_round i idle "$durable" "$durable_pid"
idle_p99=$(json "$work/ab-$ab_runs.json" 'round(r["latencyMs"]["p99"], 1)')
stop "$watchers_pid"
progress "i. $followers watchers following every event"
watchers_open following --watchers="$followers"
ab_round i following "$durable" "$durable_pid"
following_p99=$(json "$work/ab-$ab_runs.json" 'round(r["latencyMs"]["p99"], 1)')
stop "$watchers_pid"
ab_rows i none "gateway CPU per payout, no watcher, $rate/s offered" \
  idle "gateway CPU per payout, $watchers watchers waiting (their state never comes)" \
  "$watchers waiting watchers / none CPU per payout"
row i "gateway CPU per payout, $followers watchers following every event ($((2 * followers)) deliveries a payout)" \
  "$(median "${ab_cpu[i-following]}") µs (errors $(sum "${ab_errs[i-following]}"))" ""
row i "CreatePayout p99: no watcher / $watchers waiting / $followers following" \
  "$none_p99 ms / $idle_p99 ms / $following_p99 ms" ""
rate=$saved_rate calls=$saved_calls

# --- g. SQLite vs PostgreSQL, one replica vs two -------------------------------
pg_dir=$work/pg/cluster
chmod 755 "$work"  # PostgreSQL runs as its own user when we are root
pg_uri=$("$repo/tests/support/pg_cluster.sh" start "$pg_dir")
pg_stop() { "$repo/tests/support/pg_cluster.sh" stop "$pg_dir"; }
trap 'pg_stop; cleanup' EXIT
pg_uri=${pg_uri/@\//@\/postgres}  # the "postgres" database
postmaster=$(head -n 1 "$pg_dir/data/postmaster.pid")
pg_ticks() {  # the server and every backend (they live as long as the
              # gateways' connections do)
  local total=0 child
  for child in $postmaster $(pgrep -P "$postmaster"); do
    total=$((total + $(cpu_ticks "$child" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
start pg1 "$build/server/payout-server" "${common[@]}" --ledger="$pg_uri"
pg1=$address pg1_pid=$pid
start pg2 "$build/server/payout-server" "${common[@]}" --ledger="$pg_uri"
pg2=$address pg2_pid=$pid
# The cost of watch positions (docs/scale-out.md#watchpayouts): a replica on
# a database of its own whose events are never queued for positions (the
# trigger dropped once the replica has migrated it).
unqueued_uri=${pg_uri/@\/postgres/@\/unqueued}
psql -q -d "$pg_uri" -c "CREATE DATABASE unqueued" >/dev/null
start pgu "$build/server/payout-server" "${common[@]}" --ledger="$unqueued_uri"
pgu=$address pgu_pid=$pid
psql -q -d "$unqueued_uri" \
  -c "DROP TRIGGER payout_events_queue ON payout_events" >/dev/null
# g_run NAME PIDS TARGETS: LEDGER_PAYOUTS payouts per target at once; sets
# g_rate (payouts/s in all), g_cpu (the gateways' µs per payout), g_db
# (PostgreSQL's µs per payout) and g_err.
g_run() {
  local name=$1 pids=$2 targets=$3 before=0 after=0 db_before db_after
  local p t i=0 began ended
  for p in $pids; do before=$((before + $(cpu_ticks "$p"))); done
  db_before=$(pg_ticks)
  began=$(date +%s%N)
  local bench_pids=()
  for t in $targets; do
    i=$((i + 1))
    "$bench" --target="$t" --payouts="$ledger_payouts" \
      --concurrency="$ledger_inflight" --timeout=60s --progress=false \
      --json_out="$work/g-$name-$i.json" >/dev/null &
    bench_pids+=($!)
  done
  for p in "${bench_pids[@]}"; do wait "$p"; done
  ended=$(date +%s%N)
  for p in $pids; do after=$((after + $(cpu_ticks "$p"))); done
  db_after=$(pg_ticks)
  local payouts=$((ledger_payouts * i))
  g_rate=$((payouts * 1000000000 / (ended - began)))
  g_cpu=$(((after - before) * 1000000 / clk_tck / payouts))
  g_db=$(((db_after - db_before) * 1000000 / clk_tck / payouts))
  g_err=0
  for t in $(seq 1 "$i"); do
    g_err=$((g_err + $(json "$work/g-$name-$t.json" errors)))
  done
}
declare -A g_rates g_cpus g_dbs g_errs
for round in $(seq 1 "$rounds"); do
  for kind in sqlite pg_one pg_two pg_unqueued; do
    progress "g. round $round: $kind, $ledger_inflight in flight per gateway"
    case $kind in
      sqlite) g_run "$kind-$round" "$durable_pid" "$durable" ;;
      pg_one) g_run "$kind-$round" "$pg1_pid" "$pg1" ;;
      pg_two) g_run "$kind-$round" "$pg1_pid $pg2_pid" "$pg1 $pg2" ;;
      pg_unqueued) g_run "$kind-$round" "$pgu_pid" "$pgu" ;;
    esac
    g_rates[$kind]+=" $g_rate"
    g_cpus[$kind]+=" $g_cpu"
    g_dbs[$kind]+=" $g_db"
    g_errs[$kind]+=" $g_err"
  done
done
for kind in sqlite pg_one pg_two pg_unqueued; do
  case $kind in
    sqlite) label="SQLite ledger, one gateway" ;;
    pg_one) label="PostgreSQL ledger, one replica" ;;
    pg_two) label="PostgreSQL ledger, two replicas (one load each, together)" ;;
    pg_unqueued) label="PostgreSQL ledger, one replica, events not queued for watch positions" ;;
  esac
  db=""
  [ "$kind" != sqlite ] && db=", PostgreSQL $(median "${g_dbs[$kind]}") µs"
  row g "$label, $ledger_inflight in flight per gateway (payouts/s, rounds:${g_rates[$kind]})" \
    "$(median "${g_rates[$kind]}") payouts/s; CPU per payout: gateways $(median "${g_cpus[$kind]}") µs$db (errors $(sum "${g_errs[$kind]}"))" ""
done
g_sqlite=$(median "${g_rates[sqlite]}")
g_one=$(median "${g_rates[pg_one]}")
g_two=$(median "${g_rates[pg_two]}")
g_db_one=$(median "${g_dbs[pg_one]}")
row g "**PostgreSQL / SQLite throughput, one gateway**" \
  "**$(ratio "$g_one" "$g_sqlite")**" ""
row g "**two replicas / one replica throughput** (same 2 cores as PostgreSQL)" \
  "**$(ratio "$g_two" "$g_one")**" ""
row g "payouts/s one PostgreSQL core serves (10⁶ / its µs per payout)" \
  "$(awk -v d="$g_db_one" 'BEGIN {printf (d > 0 ? "%.0f" : "n/a"), 1000000 / d}')" ""
g_unqueued=$(median "${g_rates[pg_unqueued]}")
g_db_unqueued=$(median "${g_dbs[pg_unqueued]}")
row g "**watch positions on / off: throughput, PostgreSQL CPU per payout** (one replica)" \
  "**$(ratio "$g_one" "$g_unqueued") / $(awk -v o="$g_db_one" -v u="$g_db_unqueued" 'BEGIN {printf (u > 0 ? "%.2f" : "n/a"), o / u}')**" ""
stop "$pg1_pid"
stop "$pg2_pid"
stop "$pgu_pid"
pg_stop
trap cleanup EXIT
stop "$durable_pid"
stop "$sandbox_pid"

# --- c. slow AOPay, many in flight --------------------------------------------
start slow_sandbox "$build/server/aopay-sandbox" --listen=127.0.0.1:0 \
  --latency=1s
slow_sandbox_pid=$pid
start slow "$build/server/payout-server" --listen=127.0.0.1:0 \
  --metrics_listen= --aopay_url="http://$address" \
  --registration_id=AOP-SANDBOX --ledger="sqlite:$work/slow.db" \
  --max_inflight="$slow_inflight" --max_queue="$slow_inflight"
slow=$address
slow_pid=$pid
progress "c. $slow_payouts payouts at $slow_inflight in flight, AOPay 1 s"
report=$work/c.json
"$bench" --target="$slow" --payouts="$slow_payouts" \
  --concurrency="$slow_inflight" --timeout=60s --progress=false \
  --json_out="$report" >/dev/null &
bench_pid=$!
max_threads=0
# Sampled while the run lasts (at most 120 s).
for _ in $(seq 1 1200); do
  kill -0 "$bench_pid" 2>/dev/null || break
  t=$(status_kib "$slow_pid" Threads || echo 0)
  [ "${t:-0}" -gt "$max_threads" ] && max_threads=$t
  sleep 0.1
done
wait "$bench_pid"
rss=$(status_kib "$slow_pid" VmHWM)
sandbox_rss=$(status_kib "$slow_sandbox_pid" VmHWM)
sandbox_threads=$(status_kib "$slow_sandbox_pid" Threads)
# (No steady window when SLOW_PAYOUTS is at most twice SLOW_INFLIGHT.)
row c "payouts/s sustained: $slow_inflight in flight, AOPay answering after 1 s (payout-bench's steady window, $(json "$report" 'r.get("steadyPayouts", 0)') answers)" \
  "**$(json "$report" '"%.0f" % r["steadyPayoutsPerSecond"] if "steadyPayoutsPerSecond" in r else "n/a"')**" "≥ 4,500"
row c "payouts/s over the whole run ($slow_payouts payouts, with the ramp-up and the drain)" \
  "$(json "$report" '"%.0f (p50 %.0f ms, p99 %.0f ms)" % (r["payoutsPerSecond"], r["latencyMs"]["p50"], r["latencyMs"]["p99"])')" ""
row c "errors (codes: $(json "$report" '" ".join(f"{k} {v}" for k,v in r["codes"].items())'))" \
  "$(json "$report" errors)" "0"
row c "gateway peak RSS / peak threads" \
  "$((rss / 1024)) MiB / $max_threads threads" "RSS < 512 MiB"
row c "sandbox peak RSS / threads (one event loop for every connection)" \
  "$((sandbox_rss / 1024)) MiB / $sandbox_threads threads" ""
stop "$slow_pid"
stop "$slow_sandbox_pid"
progress "c. the same shape without the gateway: sandbox-load, $slow_payouts requests"
# A sandbox of its own, as fresh as the gateway's was.
start shape_sandbox "$build/server/aopay-sandbox" --listen=127.0.0.1:0 \
  --latency=1s
shape_sandbox_pid=$pid
shape_line=$("$build/tests/bench/sandbox-load" --url="http://$address" \
  --connections="$slow_inflight" --requests="$slow_payouts" --max_time=120s || true)
shape_rate=$(sed -nE 's/.* ([0-9]+)\/s$/\1/p' <<<"$shape_line")
row c "the same shape without the gateway: sandbox-load, $slow_inflight connections, AOPay 1 s, whole run" \
  "${shape_rate:-n/a} answers/s (${shape_line#sandbox-load: })" ""
shape_ratio=n/a
[ -n "$shape_rate" ] &&
  shape_ratio=$(ratio "$(json "$report" 'r["payoutsPerSecond"]')" "$shape_rate")
row c "gateway / no gateway, whole-run rates" "$shape_ratio" ""
stop "$shape_sandbox_pid"

echo
echo "$(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ), $(($(date +%s) - started)) s"
echo
echo "| | measurement | result | target |"
echo "|---|---|---|---|"
for r in "${rows[@]}"; do
  case "$r" in
    "| a"*) echo "$r" ;;
  esac
done
for section in b c d e f g h i j; do
  for r in "${rows[@]}"; do
    case "$r" in "| $section "*) echo "$r" ;; esac
  done
done
