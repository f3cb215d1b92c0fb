#!/usr/bin/env bash
# The long torture run of RELIABILITY.md: three `folio serve --postgres`
# processes on one throwaway PostgreSQL, and `folio torture` dealing its
# clients over the three (each server is one target; all name one database).
#
#   bash scripts/torture-postgres.sh [CLIENTS] [SECONDS] [folio torture options…]
#
# e.g. `bash scripts/torture-postgres.sh 32 60 --json`. Builds the release
# binary unless FOLIO_BIN names one. Needs PostgreSQL's server binaries
# (initdb, pg_ctl: on PATH or in /usr/lib/postgresql/*/bin); as root the
# cluster runs as the `postgres` user, as in folio_postgres::testing. Exits
# with folio torture's status: 0 clean, 1 on any invariant violation.
set -euo pipefail
clients=${1:-32}
seconds=${2:-60}
shift $(($# < 2 ? $# : 2))
cd "$(dirname "$0")/.."

folio=${FOLIO_BIN:-}
if [ -z "$folio" ]; then
  cargo build --release --locked -p folio-cli >&2
  folio="${CARGO_TARGET_DIR:-target}/release/folio"
fi

if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
  bin=$(dirname "$(command -v initdb)")
else
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
fi
[ -n "$bin" ] && [ -x "$bin/initdb" ] || {
  echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2
  exit 2
}

# A loopback port nobody listens on (good enough for a script).
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}

wait_for_port() {
  local tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -gt 600 ]; then
      echo "nothing listens on 127.0.0.1:$1 after a minute" >&2
      exit 2
    fi
    sleep 0.1
  done
}

work=$(mktemp -d)
run_as=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$work"
  run_as=(runuser -u postgres --)
fi
servers=()
cleanup() {
  for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${servers[@]}"; do wait "$pid" 2>/dev/null || true; done
  (cd "$work" && "${run_as[@]}" "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1) || true
  rm -rf "$work"
}
trap cleanup EXIT

pg_port=$(free_port)
(cd "$work" && "${run_as[@]}" "$bin/initdb" -D "$work/data" -A trust -U folio >/dev/null)
(cd "$work" && "${run_as[@]}" "$bin/pg_ctl" -D "$work/data" -l "$work/log" -w \
  -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null)
postgres="postgres://folio@127.0.0.1:$pg_port/postgres"

targets=()
for _ in 1 2 3; do
  port=$(free_port)
  FOLIO_LOG=warn "$folio" serve --postgres "$postgres" --listen "127.0.0.1:$port" &
  servers+=($!)
  wait_for_port "$port"
  targets+=(--target "http://127.0.0.1:$port/db/torture")
done

echo "== folio torture: $clients clients, ${seconds}s, three servers on one PostgreSQL" >&2
status=0
"$folio" torture "${targets[@]}" --clients "$clients" --duration "$seconds" "$@" || status=$?
exit "$status"
