#!/usr/bin/env bash
# Folio beside PostgreSQL on this machine, in one command:
#
#   bash bench/compare.sh [--clients N] [--duration SECS] [--docs N] [--import-docs N]
#
# (or CLIENTS=32 DURATION=10 DOCS=100000 IMPORT_DOCS=1000000 bash bench/compare.sh).
#
# 1. Builds the release `folio` binary.
# 2. Starts a throwaway PostgreSQL (initdb + pg_ctl in a temporary
#    directory, on a free loopback port, durable commits: fsync = on,
#    synchronous_commit = on; as the `postgres` user when run as root) and
#    loads DOCS documents of DOC_SIZE bytes into a plain table
#    `docs (id, version, body jsonb)`: the same documents `folio bench`
#    loads, byte for byte.
# 3. For each workload, runs pgbench with the equivalent raw SQL, then
#    `folio bench` on the embedded engine, on the PostgreSQL engine (same
#    server) and through `folio serve` (embedded, on a free loopback port),
#    same clients and duration:
#      read        point SELECT of the body by id        | load by id
#      update      SELECT version, body; then UPDATE … WHERE id = $1 AND
#                  version = $2 (each autocommit)        | load, change, save_changes
#      update-hot  the same, always on one row           | the same on one document
#      batch10     one SELECT of ten rows, then ten conditional UPDATEs in
#                  one transaction, pipelined            | ten in one save_changes
#      mixed       90 % read, 10 % update
#    `read` runs twice: with READ_CLIENTS (2) and with CLIENTS.
# 4. Prints one markdown table (Folio, pgbench, the ratio per row; p99
#    latency of both), then the footprint: `folio serve` RSS idle and under
#    the update load, and `folio import` of IMPORT_DOCS documents into the
#    embedded engine (0 skips it).
#
# With --cluster, the PostgreSQL is a Patroni cluster instead
# (scripts/ha-cluster: two nodes, strict synchronous replication), pgbench
# runs on its leader, and Folio runs read and update through the
# multi-host URL (reads from both nodes), through the leader's URL alone
# (reads from the primary only), and through two `folio serve --postgres`
# on the cluster, each driven by its own `folio bench` with half the
# clients at once (their sum).
#
# Progress goes to standard error, the results to standard output. Needs
# PostgreSQL's server binaries and pgbench (apt-get install postgresql).
set -euo pipefail

clients=${CLIENTS:-32}
duration=${DURATION:-10}
docs=${DOCS:-100000}
doc_size=${DOC_SIZE:-300}
read_clients=${READ_CLIENTS:-2}
import_docs=${IMPORT_DOCS:-1000000}
cluster=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cluster) cluster=1; shift ;;
    --clients) clients=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --docs) docs=$2; shift 2 ;;
    --import-docs) import_docs=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for number in "$clients" "$docs" "$doc_size" "$read_clients" "$import_docs"; do
  [[ "$number" =~ ^[0-9]+$ ]] || { echo "compare.sh: $number is not a whole number" >&2; exit 2; }
done
[[ "$duration" =~ ^[0-9]+$ && "$duration" -gt 0 ]] || { echo "compare.sh: the duration is a whole number of seconds" >&2; exit 2; }
[ "$docs" -ge 10 ] && [ "$docs" -le 9999999 ] || { echo "compare.sh: --docs must be 10 to 9,999,999" >&2; exit 2; }
[ "$clients" -ge 1 ] && [ "$read_clients" -ge 1 ] || { echo "compare.sh: clients must be at least 1" >&2; exit 2; }

say() { echo "== $*" >&2; }
# 12345.6 → 12,346
thousands() { awk -v x="$1" 'BEGIN {
  s = sprintf("%.0f", x); out = ""
  while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
  print s out }'; }
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say "building the release binary"
cargo build --release --locked --quiet -p folio-cli --bin folio
target_dir=$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
folio="$target_dir/release/folio"

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pg_bin/initdb" ] && command -v pgbench >/dev/null \
  || { echo "compare.sh: PostgreSQL server binaries and pgbench not found (apt-get install postgresql)" >&2; exit 1; }

work=$(mktemp -d)
chmod 755 "$work"
pids=()
run_as=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  [ -d "$work/pg/data" ] && "${run_as[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  [ -d "$work/ha" ] && python3 scripts/ha-cluster stop --dir "$work/ha" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 30000))
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

# --- PostgreSQL ------------------------------------------------------------
mkdir -p "$work/pg" "$work/logs"
if [ "$(id -u)" = 0 ]; then chown postgres "$work/pg"; run_as=(runuser -u postgres --); fi
if [ "$cluster" = 1 ]; then
  say "starting a Patroni cluster (scripts/ha-cluster)"
  cluster_url=$(python3 scripts/ha-cluster start --dir "$work/ha" | tail -1)
  # The first node leads when the cluster starts.
  pg_port=$(sed -E 's|.*@127\.0\.0\.1:([0-9]+),.*|\1|' <<<"$cluster_url")
  pg_user=postgres
else
  pg_port=$(free_port)
  pg_user=bench
  say "starting PostgreSQL ($("$pg_bin/postgres" --version)) on port $pg_port"
  "${run_as[@]}" "$pg_bin/initdb" -D "$work/pg/data" -A trust -U bench --encoding UTF8 --locale C >/dev/null
  "${run_as[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w -o \
    "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB -c fsync=on -c synchronous_commit=on" \
    start >/dev/null
fi
pg_url="postgres://$pg_user@127.0.0.1:$pg_port/postgres"
psql=(psql -X -q -h 127.0.0.1 -p "$pg_port" -U "$pg_user" -d postgres -v ON_ERROR_STOP=1)

say "loading $docs documents of $doc_size bytes into PostgreSQL"
# The JSON text of `folio bench`'s document number n (tools/bench.rs,
# Account::new), its note padded to DOC_SIZE bytes.
"${psql[@]}" -v docs="$docs" -v size="$doc_size" <<'SQL'
CREATE TABLE docs (id text PRIMARY KEY, version bigint NOT NULL, body jsonb NOT NULL);
INSERT INTO docs
SELECT 'accounts/' || lpad(n::text, 7, '0'), 1,
       (head || repeat('x', greatest(0, :size - length(head) - 2)) || '"}')::jsonb
FROM (SELECT n, format('{"id":"accounts/%s","owner":"Owner Number %s","email":"owner%s@example.com",'
                       '"address":{"street":"%s Long Street Name","city":"%s","postcode":"%s"},'
                       '"tags":["customer","segment-%s","active"],"balance":%s,"visits":0,"note":"',
                       lpad(n::text, 7, '0'), n, n, n % 997, (ARRAY['Oslo','Lyon','Porto','Turku'])[n % 4 + 1],
                       lpad((n % 99991)::text, 5, '0'), n % 17, (n::bigint * 7919) % 100000) AS head
      FROM generate_series(0, :docs - 1) AS n) AS numbered;
VACUUM ANALYZE docs;
CHECKPOINT;
SQL

# --- pgbench scripts -------------------------------------------------------
id_of() { echo "'accounts/' || lpad(:$1::text, 7, '0')"; }
cat >"$work/read.sql" <<SQL
\set n random(0, :docs - 1)
SELECT body FROM docs WHERE id = $(id_of n);
SQL
update_sql() {
  cat <<SQL
SELECT version AS v, body AS b FROM docs WHERE id = $(id_of n) \gset
UPDATE docs SET body = jsonb_set(body, '{visits}', to_jsonb((body->>'visits')::bigint + 1)), version = version + 1
 WHERE id = $(id_of n) AND version = :v;
SQL
}
{ echo '\set n random(0, :docs - 1)'; update_sql; } >"$work/update.sql"
{ echo '\set n 0'; update_sql; } >"$work/hot.sql"
{
  # One id from each tenth of the table, ascending, as `folio bench batch10`.
  echo '\set slice :docs / 10'
  for i in $(seq 0 9); do echo "\\set n$i $i * :slice + random(0, :slice - 1)"; done
  printf 'SELECT '
  for i in $(seq 0 9); do
    [ "$i" -gt 0 ] && printf ',\n       '
    printf '(SELECT version FROM docs WHERE id = %s) AS v%s, (SELECT body FROM docs WHERE id = %s) AS b%s' \
      "$(id_of "n$i")" "$i" "$(id_of "n$i")" "$i"
  done
  echo ' \gset'
  echo '\startpipeline'
  echo 'BEGIN;'
  for i in $(seq 0 9); do
    echo "UPDATE docs SET body = jsonb_set(body, '{visits}', to_jsonb((body->>'visits')::bigint + 1)), version = version + 1 WHERE id = $(id_of "n$i") AND version = :v$i;"
  done
  echo 'COMMIT;'
  echo '\endpipeline'
} >"$work/batch10.sql"

# pgbench_run NAME CLIENTS SCRIPT-ARGS…: sets pg_tps, pg_p50, pg_p99 (ms).
pgbench_run() {
  local name=$1 run_clients=$2 output threads
  shift 2
  threads=$((run_clients < 2 ? run_clients : 2))
  rm -f "$work/logs"/*
  if ! output=$(cd "$work/logs" && pgbench -h 127.0.0.1 -p "$pg_port" -U "$pg_user" -n -M prepared \
      -c "$run_clients" -j "$threads" -T "$duration" -D docs="$docs" -l --log-prefix="$work/logs/$name" \
      "$@" postgres 2>&1); then
    echo "$output" >&2
    echo "compare.sh: pgbench $name failed" >&2
    exit 1
  fi
  pg_tps=$(grep -oE '^tps = [0-9.]+' <<<"$output" | head -1 | cut -d' ' -f3)
  # Column 3 of pgbench's transaction log is the latency in microseconds.
  read -r pg_p50 pg_p99 < <(cat "$work/logs/$name".* | awk '{ print $3 }' | sort -n | awk '
    { latency[NR] = $1 }
    END { p50 = int(NR * 0.50); if (p50 < NR * 0.50) p50++; p99 = int(NR * 0.99); if (p99 < NR * 0.99) p99++;
          printf "%.3f %.3f\n", latency[p50] / 1000, latency[p99] / 1000 }')
}

hot_version() { "${psql[@]}" -tA -c "SELECT version FROM docs WHERE id = 'accounts/0000000'"; }

# --- Folio -----------------------------------------------------------------
embedded="embedded:$work/embedded"
postgres="postgres:$pg_url"
# start_serve NAME ARGS…: `folio serve ARGS` on a free port; sets serve_port.
start_serve() {
  local name=$1 pid
  shift
  serve_port=$(free_port)
  FOLIO_LOG=warn "$folio" serve --listen "127.0.0.1:$serve_port" "$@" >"$work/$name.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$serve_port/healthz" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/$name.log" >&2; echo "compare.sh: folio serve did not start" >&2; exit 1; }
    sleep 0.1
  done
  serve_pid=$pid
}
rss_of() { ps -o rss= -p "$1" | tr -d ' '; }
if [ "$cluster" = 1 ]; then
  start_serve serve1 --postgres "$cluster_url"
  served="http://127.0.0.1:$serve_port/db/bench"
  start_serve serve2 --postgres "$cluster_url"
  served2="http://127.0.0.1:$serve_port/db/bench"
  targets=(postgres primary serve)
  declare -A target_name=([postgres]="postgres:$cluster_url" [primary]=$postgres [serve]=$served)
  declare -A target_label=([postgres]="PostgreSQL engine, both nodes" [primary]="PostgreSQL engine, the primary's URL" [serve]="two folio serve on the cluster")
else
  start_serve serve --data "$work/served"
  served="http://127.0.0.1:$serve_port/db/bench"
  targets=(embedded postgres serve)
  declare -A target_name=([embedded]=$embedded [postgres]=$postgres [serve]=$served)
  declare -A target_label=([embedded]="embedded" [postgres]="PostgreSQL engine" [serve]="folio serve (HTTP, embedded)")
fi
rss_idle_start=$(rss_of "$serve_pid")

# folio_run WORKLOAD TARGET CLIENTS [SECONDS]: the JSON report.
folio_run() {
  FOLIO_LOG=warn "$folio" bench "$1" --target "${target_name[$2]}" --clients "$3" \
    --duration "${4:-$duration}" --docs "$docs" --doc-size "$doc_size" --json
}
field() { sed -E 's/.*"'"$2"'":"?([^,"}]*).*/\1/' <<<"$1"; }
# folio_pair WORKLOAD CLIENTS: one `folio bench` per server of the
# cluster, half the clients each, at once: one report with their sums
# (ops_per_s) and the larger p99.
folio_pair() {
  local half=$(( ($2 + 1) / 2 )) first second
  FOLIO_LOG=warn "$folio" bench "$1" --target "$served" --clients "$half" --duration "$duration" \
    --docs "$docs" --doc-size "$doc_size" --json >"$work/pair1.json" &
  first=$!
  FOLIO_LOG=warn "$folio" bench "$1" --target "$served2" --clients "$half" --duration "$duration" \
    --docs "$docs" --doc-size "$doc_size" --json >"$work/pair2.json" &
  second=$!
  wait "$first" && wait "$second" || { echo "compare.sh: folio bench failed" >&2; exit 1; }
  local a b
  a=$(cat "$work/pair1.json"); b=$(cat "$work/pair2.json")
  awk -v o1="$(field "$a" ops_per_s)" -v o2="$(field "$b" ops_per_s)" \
      -v p1="$(field "$a" p99_ms)" -v p2="$(field "$b" p99_ms)" \
      'BEGIN { printf "{\"ops_per_s\":%.1f,\"p99_ms\":%.3f}\n", o1 + o2, (p1 > p2 ? p1 : p2) }'
}

for target in "${targets[@]}"; do
  say "loading the data set for Folio, ${target_label[$target]}"
  folio_run read "$target" 2 1 >/dev/null
done

# --- the runs --------------------------------------------------------------
rows=()
notes=()
# row WORKLOAD-LABEL CLIENTS TARGET FOLIO FOLIO-P99 PGBENCH PGBENCH-P99
row() { rows+=("$1|$2|$3|$4|$5|$6|$7"); }
# table PGBENCH-HEADING: the rows as one markdown table.
table() {
  local entry label run_clients target value p99 pg_value pg_p99_value ratio
  echo "| workload | clients | Folio on | Folio | p99 ms | $1 | p99 ms | Folio ÷ pgbench |"
  echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
  for entry in "${rows[@]}"; do
    IFS='|' read -r label run_clients target value p99 pg_value pg_p99_value <<<"$entry"
    ratio=$(awk -v a="$value" -v b="$pg_value" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "—" }')
    printf '| %s | %s | %s | %s | %.3f | %s | %.3f | %s |\n' "$label" "$run_clients" "$target" \
      "$(thousands "$value")" "$p99" "$(thousands "$pg_value")" "$pg_p99_value" "$ratio"
  done
}

measure() { # WORKLOAD CLIENTS FIELD LABEL PGBENCH-VALUE
  local workload=$1 run_clients=$2 value_field=$3 label=$4 pg_value=$5 target report
  for target in "${targets[@]}"; do
    say "Folio $workload on ${target_label[$target]}, $run_clients clients, ${duration} s"
    if [ "$cluster" = 1 ] && [ "$target" = serve ]; then
      report=$(folio_pair "$workload" "$run_clients")
    elif [ "$target" = serve ] && [ "$workload" = update ]; then
      # Sample the server's memory while the clients run.
      (peak=0; while sleep 0.2; do rss=$(rss_of "$serve_pid") || break; [ "${rss:-0}" -gt "$peak" ] && peak=$rss && echo "$peak" >"$work/rss_peak"; done) &
      sampler=$!
      report=$(folio_run "$workload" "$target" "$run_clients")
      kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
    else
      report=$(folio_run "$workload" "$target" "$run_clients")
    fi
    row "$label" "$run_clients" "${target_label[$target]}" "$(field "$report" "$value_field")" \
      "$(field "$report" p99_ms)" "$pg_value" "$pg_p99"
    if [ "$workload" = update-hot ]; then
      notes+=("update-hot, Folio on ${target_label[$target]}: $(thousands "$(field "$report" ops_per_s)") attempts/s, $(thousands "$(field "$report" successes_per_s)") successes/s, $(thousands "$(field "$report" conflicts_per_s)") conflicts/s")
    fi
  done
}

say "pgbench read, $read_clients clients, ${duration} s"
pgbench_run read "$read_clients" -f "$work/read.sql"
measure read "$read_clients" ops_per_s "read (loads/s)" "$pg_tps"

if [ "$clients" != "$read_clients" ]; then
  say "pgbench read, $clients clients, ${duration} s"
  pgbench_run read "$clients" -f "$work/read.sql"
  measure read "$clients" ops_per_s "read (loads/s)" "$pg_tps"
fi

say "pgbench update, $clients clients, ${duration} s"
pgbench_run update "$clients" -f "$work/update.sql"
measure update "$clients" ops_per_s "update (saves/s)" "$pg_tps"

if [ "$cluster" = 1 ]; then
  echo "## folio bench vs pgbench on a Patroni cluster"
  echo
  echo "Two PostgreSQL nodes on this machine (scripts/ha-cluster: strict synchronous replication); $docs documents of $doc_size bytes, ${duration} s per run."
  echo "Machine: $(nproc) vCPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -sr); $(date -u '+%Y-%m-%d %H:%M UTC'). Load average before/after: $load_before / $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  table "pgbench (leader)"
  exit 0
fi

say "pgbench update-hot, $clients clients, ${duration} s"
before=$(hot_version)
pgbench_run hot "$clients" -f "$work/hot.sql"
after=$(hot_version)
hot_successes=$(awk -v n=$((after - before)) -v s="$duration" 'BEGIN { printf "%.1f", n / s }')
notes+=("update-hot, pgbench: $(thousands "$pg_tps") attempts/s, $(thousands "$hot_successes") successes/s (the row's version went from $before to $after)")
measure update-hot "$clients" successes_per_s "update-hot (successes/s)" "$hot_successes"

say "pgbench batch10, $clients clients, ${duration} s"
pgbench_run batch10 "$clients" -f "$work/batch10.sql"
measure batch10 "$clients" documents_per_s "batch10 (documents/s)" "$(awk -v t="$pg_tps" 'BEGIN { printf "%.1f", t * 10 }')"

say "pgbench mixed, $clients clients, ${duration} s"
pgbench_run mixed "$clients" -f "$work/read.sql@9" -f "$work/update.sql@1"
measure mixed "$clients" ops_per_s "mixed 90/10 (ops/s)" "$pg_tps"

rss_idle_after=$(rss_of "$serve_pid")
rss_peak=$(cat "$work/rss_peak" 2>/dev/null || echo 0)

# --- footprint: import ------------------------------------------------------
import_line="skipped (IMPORT_DOCS=0)"
if [ "$import_docs" -gt 0 ]; then
  say "writing $import_docs documents as JSON Lines"
  awk -v count="$import_docs" -v size="$doc_size" 'BEGIN {
    split("Oslo Lyon Porto Turku", city, " ")
    pad = "x"; while (length(pad) < size) pad = pad pad
    for (n = 0; n < count; n++) {
      head = sprintf("{\"id\":\"accounts/%07d\",\"owner\":\"Owner Number %d\",\"email\":\"owner%d@example.com\",\"address\":{\"street\":\"%d Long Street Name\",\"city\":\"%s\",\"postcode\":\"%05d\"},\"tags\":[\"customer\",\"segment-%d\",\"active\"],\"balance\":%d,\"visits\":0,\"note\":\"",
                     n, n, n, n % 997, city[n % 4 + 1], n % 99991, n % 17, (n * 7919) % 100000)
      fill = size - length(head) - 2
      print head (fill > 0 ? substr(pad, 1, fill) : "") "\"}"
    }
  }' >"$work/import.jsonl"
  curl -sf -X PUT "http://127.0.0.1:$serve_port/db/import" >/dev/null
  say "folio import of $import_docs documents into folio serve (embedded)"
  started=$(date +%s.%N)
  FOLIO_LOG=warn "$folio" import "$work/import.jsonl" --collection accounts \
    --server "http://127.0.0.1:$serve_port" --db import 2>"$work/import.log" || { cat "$work/import.log" >&2; exit 1; }
  finished=$(date +%s.%N)
  seconds=$(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.1f", b - a }')
  rate=$(awk -v n="$import_docs" -v a="$started" -v b="$finished" 'BEGIN { print n / (b - a) }')
  on_disk=$(du -ch "$work/served"/import.sqlite* | tail -1 | cut -f1)
  import_line="$(thousands "$import_docs") documents in $seconds s: $(thousands "$rate") documents/s"
  import_line="$import_line (one \`folio import\` process, batches of 1,000, four in flight; $on_disk on disk;"
  import_line="$import_line the server's RSS then $(($(rss_of "$serve_pid") / 1024)) MiB)"
fi

# --- the table --------------------------------------------------------------

echo "## folio bench vs pgbench"
echo
echo "$docs documents of $doc_size bytes, ${duration} s per run, durable commits everywhere."
echo "Machine: $(nproc) vCPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr); $("$pg_bin/postgres" --version | sed -E 's/^postgres \(PostgreSQL\) /PostgreSQL /'); $(date -u '+%Y-%m-%d %H:%M UTC')."
echo "Load average before/after: $load_before / $(cut -d' ' -f1-3 /proc/loadavg)."
echo
table pgbench
echo
for note in "${notes[@]}"; do echo "* $note"; done
echo
echo "## Footprint"
echo
echo "* \`folio serve\` RSS: $((rss_idle_start / 1024)) MiB idle at start; peak $((rss_peak / 1024)) MiB under the $clients-client update load; $((rss_idle_after / 1024)) MiB idle after all runs."
echo "* \`folio import\` into the embedded engine: $import_line."
