#!/bin/sh
# The demonstration secrets of deploy/docker-compose.yml, made once into the
# directory given as $1 (default /pki, the compose project's `pki` volume):
#
#   ca.pem                      the private CA every service trusts
#   gateway/tls.crt, tls.key    the gateways' certificate (gateway,
#                               gateway-pg-1, gateway-pg-2, localhost,
#                               127.0.0.1) and key
#   gateway/clients             the clients file: one client, `demo`
#   gateway/registration-id     AOP-SANDBOX
#   gateway/database-password   PostgreSQL's password for the gateways
#   sandbox/tls.crt, tls.key    the sandbox's certificate (aopay-sandbox)
#   postgres/tls.crt, tls.key   PostgreSQL's certificate (postgres)
#   postgres/password           the same password, for PostgreSQL
#   client/demo.token           the bearer token of `demo`
#
# gateway/, sandbox/ and client/ belong to uid 10001 (the image's user),
# postgres/ to uid 999 (the postgres image's user); every key and secret is
# readable by its owner only. The CA's key is not kept: to start over, remove
# the volume (docker compose down -v). Not for production.
set -eu
umask 077
dir=${1:-/pki}
gateway_uid=10001
postgres_uid=999

if [ -s "$dir/ca.pem" ]; then
  echo "demo-pki: $dir already holds the demonstration secrets"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$work/ca.key" -out "$work/ca.pem" -days 825 \
  -subj "/CN=payout gateway demo CA" 2>/dev/null

# issue NAME SUBJECT_ALT_NAMES: NAME/tls.crt and NAME/tls.key in $work.
issue() {
  mkdir -p "$work/$1"
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$2" \
    >"$work/$1.ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/$1/tls.key" -out "$work/$1.csr" -subj "/CN=$1" 2>/dev/null
  openssl x509 -req -in "$work/$1.csr" -CA "$work/ca.pem" \
    -CAkey "$work/ca.key" -CAcreateserial -days 825 \
    -extfile "$work/$1.ext" -out "$work/$1/tls.crt" 2>/dev/null
}
issue gateway \
  "DNS:gateway,DNS:gateway-pg-1,DNS:gateway-pg-2,DNS:localhost,IP:127.0.0.1"
issue sandbox "DNS:aopay-sandbox"
issue postgres "DNS:postgres"

# A bearer token as `payoutctl token` makes one (32 random bytes, base64url
# without padding); the clients file keeps only its SHA-256.
mkdir -p "$work/client"
openssl rand 32 | basenc --base64url | tr -d '=\n' >"$work/client/demo.token"
digest=$(sha256sum <"$work/client/demo.token" | cut -d' ' -f1)
printf '# the demonstration client (deploy/compose/demo-pki.sh)\n' \
  >"$work/gateway/clients"
printf 'demo %s payouts:write,payouts:read,admin\n' "$digest" \
  >>"$work/gateway/clients"
printf 'AOP-SANDBOX\n' >"$work/gateway/registration-id"
openssl rand -hex 24 >"$work/postgres/password"
cp "$work/postgres/password" "$work/gateway/database-password"

mkdir -p "$dir"
for sub in gateway sandbox client postgres; do
  rm -rf "${dir:?}/$sub"
  cp -R "$work/$sub" "$dir/$sub"
  chmod 0500 "$dir/$sub"
  chmod 0400 "$dir/$sub"/*
done
chown -R "$gateway_uid:$gateway_uid" "$dir/gateway" "$dir/sandbox" "$dir/client"
chown -R "$postgres_uid:$postgres_uid" "$dir/postgres"
# PostgreSQL wants its key readable and writable by its owner only.
chmod 0600 "$dir/postgres/tls.key"
chmod 0700 "$dir/postgres"
cp "$work/ca.pem" "$dir/ca.pem.new"
chmod 0444 "$dir/ca.pem.new"
chmod 0755 "$dir"
mv "$dir/ca.pem.new" "$dir/ca.pem" # last: its presence means "all made"
echo "demo-pki: made the demonstration CA, certificates and secrets in $dir"
