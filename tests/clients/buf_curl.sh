#!/usr/bin/env bash
# buf_curl_reflection_test: a generic gRPC tool drives the gateway through
# server reflection alone, with no proto files: `buf curl --protocol grpc
# --http2-prior-knowledge` lists the services and methods, reads a
# message's descriptor with its comments, creates and reads a payout,
# decodes a refused request's details, and checks health.
#
# Starts PAYOUT_SERVER_BIN on 127.0.0.1:0 with the built-in sandbox and a
# fresh ledger in a temporary directory. Exit 77 (skipped) without buf.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)

server=${PAYOUT_SERVER_BIN:?PAYOUT_SERVER_BIN must name payout-server (ctest sets it)}
buf=${BUF:-$repo/.tools/node_modules/.bin/buf}
[[ -x $buf ]] || buf=$(command -v buf || true)
if [[ -z $buf ]]; then
  echo "buf_curl: buf not found (deploy/install-deps.sh installs it): skipped"
  exit 77
fi

tmp=$(mktemp -d)
gateway=
cleanup() {
  if [[ -n $gateway ]]; then
    kill "$gateway" 2>/dev/null || true
    wait "$gateway" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "buf_curl: FAILED: $*" >&2
  echo "--- gateway stderr (tail):" >&2
  tail -n 20 "$tmp/gateway.stderr" >&2 || true
  exit 1
}

# The gateway reads PAYOUT_<FLAG> variables: none may leak in.
while read -r name; do unset "$name"; done < <(compgen -e | grep '^PAYOUT_' || true)

"$server" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
  --aopay_url=sandbox --ledger="sqlite:$tmp/ledger.db" \
  >"$tmp/gateway.stdout" 2>"$tmp/gateway.stderr" &
gateway=$!

# Ready when it prints "listening on HOST:PORT" (polled, with a deadline).
address=
deadline=$((SECONDS + 30))
while [[ -z $address ]]; do
  address=$(sed -n 's/^listening on //p' "$tmp/gateway.stdout")
  if [[ -z $address ]]; then
    kill -0 "$gateway" 2>/dev/null || fail "payout-server exited before listening"
    ((SECONDS < deadline)) || fail "no 'listening on' line within 30 s"
    sleep 0.05
  fi
done
url="http://$address"
echo "buf_curl: gateway at $address"

curl_grpc() {
  "$buf" curl --protocol grpc --http2-prior-knowledge --connect-timeout 10 "$@"
}

expect() {  # expect FILE TEXT: FILE contains TEXT
  grep -qF -- "$2" "$1" || fail "expected '$2' in:"$'\n'"$(cat "$1")"
}

# 1. Services and methods, from reflection.
curl_grpc --list-services "$url" >"$tmp/services" || fail "--list-services"
for service in aopay.payout.v1.PayoutService aopay.payout.v1.PayoutAdminService \
               grpc.health.v1.Health grpc.reflection.v1.ServerReflection; do
  expect "$tmp/services" "$service"
done
curl_grpc --list-methods "$url" >"$tmp/methods" || fail "--list-methods"
for method in CreatePayout GetPayout ListPayouts RefreshPayout BatchCreatePayouts; do
  expect "$tmp/methods" "aopay.payout.v1.PayoutService/$method"
done
expect "$tmp/methods" "aopay.payout.v1.PayoutAdminService/ResolvePayout"

# 2. Describe: the file defining Beneficiary, with its comments (the
#    gateway serves descriptors with source info).
curl_grpc -d '{"fileContainingSymbol": "aopay.payout.v1.Beneficiary"}' \
  "$url/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" \
  >"$tmp/describe" || fail "ServerReflectionInfo"
expect "$tmp/describe" '"fileDescriptorResponse"'
grep -o '"[A-Za-z0-9+/]\{100,\}=*"' "$tmp/describe" | tr -d '"' | head -n 1 |
  base64 -d >"$tmp/payout.desc" 2>/dev/null || true
for text in aopay/payout/v1/payout.proto account_number \
            "Bank account number, 9 to 18 digits."; do
  grep -aqF -- "$text" "$tmp/payout.desc" ||
    fail "the descriptor of payout.proto lacks '$text'"
done

# 3. CreatePayout, then GetPayout by its request id.
request_id="buf-curl-$$-$RANDOM"
payout='"beneficiary": {"account_number": "100000011836", "ifsc": "sbin0000002",
  "name": "Dean Jon", "email": "abc@gmail.com", "mobile": "9959640000"},
  "amount_paise": 1234, "mode": "TRANSFER_MODE_IMPS"'
curl_grpc -d "{\"request_id\": \"$request_id\", $payout}" \
  "$url/aopay.payout.v1.PayoutService/CreatePayout" >"$tmp/create" ||
  fail "CreatePayout"
expect "$tmp/create" '"state": "PAYOUT_STATE_ACCEPTED"'
expect "$tmp/create" "\"requestId\": \"$request_id\""
expect "$tmp/create" '"ifsc": "SBIN0000002"'
expect "$tmp/create" '"amountPaise": "1234"'
payout_id=$(sed -n 's/^ *"payoutId": "\(po_[0-9A-Z]*\)".*/\1/p' "$tmp/create")
[[ -n $payout_id ]] || fail "no payoutId in the CreatePayout answer"

curl_grpc -d "{\"request_id\": \"$request_id\"}" \
  "$url/aopay.payout.v1.PayoutService/GetPayout" >"$tmp/get" || fail "GetPayout"
expect "$tmp/get" "\"payoutId\": \"$payout_id\""
expect "$tmp/get" '"transactionId": "TERF'

# 4. A refused request: INVALID_ARGUMENT (buf curl exits with the code
#    shifted left by 3) with its ErrorInfo and BadRequest.
set +e
curl_grpc -d "{\"request_id\": \"$request_id-bad\", ${payout/1234/0}}" \
  "$url/aopay.payout.v1.PayoutService/CreatePayout" >"$tmp/bad" 2>&1
code=$?
set -e
((code == 3 << 3)) || fail "CreatePayout of a bad request exited $code, not 24"
expect "$tmp/bad" '"code": "invalid_argument"'
expect "$tmp/bad" '"type": "google.rpc.ErrorInfo"'
expect "$tmp/bad" '"type": "google.rpc.BadRequest"'
# The details' values: ErrorInfo's reason and the field that broke a rule.
grep -o '"value": "[A-Za-z0-9+/]*' "$tmp/bad" | sed 's/.*"//' |
  while read -r value; do
    padding=$(((4 - ${#value} % 4) % 4))
    printf '%s%s' "$value" "$(printf '=%.0s' $(seq 1 $padding))" | base64 -d
  done >"$tmp/bad.details" 2>/dev/null || true
grep -aqF INVALID_REQUEST "$tmp/bad.details" || fail "no INVALID_REQUEST in the details"
grep -aqF amount_paise "$tmp/bad.details" || fail "no amount_paise violation in the details"

# 5. Health, overall and per service.
for service in "" aopay.payout.v1.PayoutService; do
  curl_grpc -d "{\"service\": \"$service\"}" "$url/grpc.health.v1.Health/Check" \
    >"$tmp/health" || fail "Health/Check '$service'"
  expect "$tmp/health" '"status": "SERVING"'
done

echo "buf_curl: reflection, CreatePayout, GetPayout, errors and health all answered"
