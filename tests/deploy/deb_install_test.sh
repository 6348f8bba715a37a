#!/usr/bin/env bash
# The Debian package, end to end: builds it from BUILD_DIR (cpack -G DEB),
# installs it with apt (root), and checks what a new user would: the
# programs' --version, the systemd unit and docs in place, and one payout
# through the installed gateway on its built-in sandbox. Removes the package
# at the end. CI runs it after the test suite.
#
# Usage: tests/deploy/deb_install_test.sh [BUILD_DIR]   (default: build)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$repo/build}" && pwd)
[ "$(id -u)" = 0 ] || { echo "deb_install_test: needs root (apt)" >&2; exit 2; }

rm -f "$build"/payout-gateway_*.deb
(cd "$build" && cpack -G DEB >/dev/null)
deb=$(ls "$build"/payout-gateway_*.deb)
echo "package: $(basename "$deb") ($(du -h "$deb" | cut -f1))"
work=$(mktemp -d)
gateway=
cleanup() {
  [ -n "$gateway" ] && kill "$gateway" 2>/dev/null && wait "$gateway" || true
  apt-get remove -y -qq payout-gateway >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
apt-get install -y -qq "$deb" >/dev/null

fail() { echo "deb_install_test: $*" >&2; exit 1; }
version=$(/usr/bin/payout-server --version)
[[ $version =~ ^payout-server\ [0-9]+\.[0-9]+\.[0-9]+\ \(commit ]] ||
  fail "payout-server --version said: $version"
[[ $(/usr/bin/payoutctl --version) == "payoutctl ${version#payout-server }" ]] ||
  fail "payoutctl --version differs"
/usr/bin/aopay-sandbox --help >/dev/null 2>&1 || true
for f in /usr/lib/systemd/system/payout-gateway.service \
         /usr/share/doc/payout-gateway/README.md \
         /usr/share/doc/payout-gateway/docs/deployment.md \
         /usr/share/doc/payout-gateway/examples/clients.example; do
  [ -f "$f" ] || fail "missing $f"
done
grep -q '^ExecStart=/usr/bin/payout-server' \
  /usr/lib/systemd/system/payout-gateway.service ||
  fail "the unit does not start the installed gateway"

# The installed gateway on its built-in sandbox, port 0, as a new user
# would start it.
/usr/bin/payout-server --listen=127.0.0.1:0 --metrics_listen= \
  --ledger="sqlite:$work/payouts.db" >"$work/out" 2>"$work/err" &
gateway=$!
address=
for _ in $(seq 1 200); do
  address=$(sed -n 's/^listening on //p' "$work/out")
  [ -n "$address" ] && break
  kill -0 "$gateway" 2>/dev/null || break
  sleep 0.05
done
[ -n "$address" ] || { cat "$work/err" >&2; fail "the gateway did not start"; }
payout=$(/usr/bin/payoutctl --target="$address" --json create \
  --request_id=deb-install-1 --account=123456781836 --ifsc=SBIN0000002 \
  --name="Asha Verma" --email=asha@example.com --mobile=9876543210 \
  --amount=12.34 --mode=IMPS)
grep -q '"state": *"PAYOUT_STATE_ACCEPTED"' <<<"$payout" ||
  fail "the payout was not ACCEPTED: $payout"
echo "installed: $version; a sandbox payout was ACCEPTED"
