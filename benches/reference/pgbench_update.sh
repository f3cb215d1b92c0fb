#!/usr/bin/env bash
# Reference for BENCHMARKS.md: PostgreSQL doing Folio's conditional update in
# raw SQL with pgbench, on a throwaway cluster, on the same machine.
#
#   bash benches/reference/pgbench_update.sh [--folio] [CLIENTS] [SECONDS]
#
# With --folio, the same server then runs Folio's PostgreSQL engine doing the
# same read-modify-write (`cargo bench -p folio-benches -- update/postgres`),
# so both figures come from one server in one run.
#
# Loads 100,000 rows of ~300-byte JSON, then runs (per transaction) a read of
# the version and `UPDATE … WHERE id = $1 AND version = $2`, durable commits
# (synchronous_commit = on, fsync = on), CLIENTS connections, SECONDS long;
# and point SELECTs by id. Needs PostgreSQL 15 server binaries; run as root
# (the cluster runs as the `postgres` user) or as a normal user.
set -euo pipefail
folio=false
if [ "${1:-}" = "--folio" ]; then folio=true; shift; fi
clients=${1:-32}
seconds=${2:-10}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
run_as=()
if [ "$(id -u)" = 0 ]; then chown postgres "$work"; run_as=(runuser -u postgres --); fi
cleanup() { "${run_as[@]}" "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
"${run_as[@]}" "$bin/initdb" -D "$work/data" -A trust -U bench >/dev/null
"${run_as[@]}" "$bin/pg_ctl" -D "$work/data" -l "$work/log" -w \
  -o "-p $port -k $work -c listen_addresses=127.0.0.1 -c max_connections=100 -c shared_buffers=256MB" start >/dev/null
psql=(psql -h "$work" -p "$port" -U bench -d postgres -q -v ON_ERROR_STOP=1)
"${psql[@]}" <<'SQL'
CREATE TABLE docs (id text PRIMARY KEY, version bigint NOT NULL, body jsonb NOT NULL);
INSERT INTO docs
SELECT format('accounts/%s', lpad(n::text, 7, '0')), 1,
       jsonb_build_object('owner', 'Owner Number ' || n, 'email', 'owner' || n || '@example.com',
                          'address', jsonb_build_object('street', (n % 997) || ' Long Street Name', 'city', 'Oslo', 'postcode', lpad((n % 99991)::text, 5, '0')),
                          'tags', jsonb_build_array('customer', 'segment-' || (n % 17), 'active'),
                          'balance', (n * 7919) % 100000, 'visits', 0, 'note', repeat('x', 80))
FROM generate_series(0, 99999) AS n;
VACUUM ANALYZE docs;
SQL
cat > "$work/update.sql" <<'SQL'
\set n random(0, 99999)
BEGIN;
SELECT version AS v FROM docs WHERE id = 'accounts/' || lpad(:n::text, 7, '0') \gset
UPDATE docs SET body = jsonb_set(body, '{visits}', to_jsonb((body->>'visits')::bigint + 1)), version = version + 1
 WHERE id = 'accounts/' || lpad(:n::text, 7, '0') AND version = :v;
COMMIT;
SQL
cat > "$work/read.sql" <<'SQL'
\set n random(0, 99999)
SELECT body FROM docs WHERE id = 'accounts/' || lpad(:n::text, 7, '0');
SQL
echo "== pgbench conditional update, $clients clients, ${seconds}s"
pgbench -h "$work" -p "$port" -U bench -n -M prepared -c "$clients" -j 2 -T "$seconds" -f "$work/update.sql" postgres | grep -E "tps|latency"
echo "== pgbench point read, 2 clients, ${seconds}s"
pgbench -h "$work" -p "$port" -U bench -n -M prepared -c 2 -j 2 -T "$seconds" -f "$work/read.sql" postgres | grep -E "tps|latency"
if $folio; then
  echo "== folio, PostgreSQL engine, $clients sessions (criterion)"
  cd "$(dirname "$0")/../.."
  FOLIO_BENCH_POSTGRES="postgres://bench@127.0.0.1:$port/postgres" \
    cargo bench -p folio-benches -- --measurement-time "$seconds" update/postgres 2>&1 | grep -E "^update|thrpt:" | grep -v "%"
fi
