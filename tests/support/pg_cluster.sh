#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the tests, in a directory of its own:
#   pg_cluster.sh start DIR [PORT]   creates and starts it; prints the URI
#                                    prefix "postgresql://postgres@/?host=DIR"
#   pg_cluster.sh stop DIR           stops it and removes DIR
# With PG_SSL_CERT and PG_SSL_KEY set (PEM files), it also serves TLS.
# It listens on a unix socket in DIR only (no TCP port unless PORT is given:
# then also on 127.0.0.1:PORT), trusts local connections, and runs as the
# "postgres" user when started by root (PostgreSQL refuses to run as root).
# Exit 77 when PostgreSQL's programs are not installed.
set -euo pipefail

bindir=$(pg_config --bindir 2>/dev/null || true)
if [[ ! -x "$bindir/initdb" ]]; then
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
if [[ ! -x "$bindir/initdb" || ! -x "$bindir/pg_ctl" ]]; then
  echo "pg_cluster.sh: PostgreSQL's initdb/pg_ctl not found" >&2
  exit 77
fi

as_owner=()
if [[ $(id -u) -eq 0 ]]; then
  owner=postgres
  id "$owner" >/dev/null 2>&1 || owner=nobody
  as_owner=(runuser -u "$owner" --)
fi

command=${1:?start or stop}
dir=${2:?directory}
case "$command" in
  start)
    port=${3:-}
    mkdir -p "$dir"
    if [[ ${#as_owner[@]} -gt 0 ]]; then
      chown "$owner" "$dir"
      # The server user must be able to reach DIR (a mkdtemp parent is 0700).
      chmod o+x "$(dirname "$dir")"
      if ! "${as_owner[@]}" test -x "$dir"; then
        echo "pg_cluster.sh: user $owner cannot reach $dir (check the" \
          "permissions of its parents)" >&2
        exit 1
      fi
    fi
    "${as_owner[@]}" "$bindir/initdb" -D "$dir/data" -U postgres -A trust \
      --no-sync -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; exit 1; }
    listen="''"
    if [[ -n "$port" ]]; then listen=127.0.0.1; fi
    ssl=()
    if [[ -n "${PG_SSL_CERT:-}" && -n "${PG_SSL_KEY:-}" ]]; then
      # The key must belong to the server's user and be private to it.
      install -m 600 "$PG_SSL_CERT" "$dir/server.crt"
      install -m 600 "$PG_SSL_KEY" "$dir/server.key"
      if [[ ${#as_owner[@]} -gt 0 ]]; then
        chown "$owner" "$dir/server.crt" "$dir/server.key"
      fi
      ssl=(-c ssl=on -c "ssl_cert_file=$dir/server.crt"
           -c "ssl_key_file=$dir/server.key")
    fi
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-k $dir -c listen_addresses=$listen -p ${port:-5432} \
          -c max_connections=300 -c shared_buffers=32MB ${ssl[*]}" start \
      >/dev/null ||
      { cat "$dir/server.log" >&2; exit 1; }
    echo "postgresql://postgres@/?host=$dir&port=${port:-5432}"
    ;;
  stop)
    if [[ -f "$dir/data/postmaster.pid" ]]; then
      "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop \
        >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: pg_cluster.sh start|stop DIR [PORT]" >&2
    exit 2
    ;;
esac
