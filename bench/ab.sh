#!/usr/bin/env bash
# Two (or more) builds of `folio` side by side on the embedded engine, in
# alternating rounds, each run on a fresh copy of one database: the way
# BENCHMARKS.md compares a change with what came before it on a machine
# whose speed drifts.
#
#   bash bench/ab.sh [--rounds N] [--workload W] [--duration SECS] [--serve] FOLIO_A FOLIO_B...
#
# Prints, per run: ops/s, p99, and the CPU time per operation of the whole
# process and of the writer thread (from /proc). With --serve, each build
# runs `folio serve` on the copy and `folio bench` drives it over loopback
# HTTP (the remote engine): the CPU per operation is then the server's
# (and its writer's) and the client's. The template database (100,000
# documents of 300 bytes, `folio bench`'s) is made once in $AB_DIR
# (default /tmp/folio-ab) by the first binary.
set -euo pipefail
rounds=2
workload=update
duration=8
serve=0
while [ $# -gt 0 ]; do
  case "$1" in
    --serve) serve=1; shift ;;
    --rounds) rounds=$2; shift 2 ;;
    --workload) workload=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "ab.sh: name at least one folio binary (see --help)" >&2; exit 2; }
dir=${AB_DIR:-/tmp/folio-ab}
mkdir -p "$dir"
if [ ! -e "$dir/template/bench.sqlite" ]; then
  echo "== making the template database in $dir/template" >&2
  "$1" bench read --target "embedded:$dir/template" --duration 1 --json > /dev/null
fi
tick=$(getconf CLK_TCK)
cpu_of() { # PID → "process_ticks writer_ticks" (the highest seen so far is kept by the caller)
  local pid=$1 process=0 writer=0 task
  read -r -a f 2>/dev/null < "/proc/$pid/stat" && process=$(( ${f[13]} + ${f[14]} ))
  for task in /proc/"$pid"/task/*; do
    if [[ "$(cat "$task/comm" 2>/dev/null)" == folio-sqlite-wr* ]]; then
      read -r -a f 2>/dev/null < "$task/stat" && writer=$(( ${f[13]} + ${f[14]} ))
    fi
  done
  echo "$process $writer"
}
for round in $(seq "$rounds"); do
  for binary in "$@"; do
    rm -rf "$dir/run"
    cp -r "$dir/template" "$dir/run"
    target="embedded:$dir/run"
    server=""
    if [ "$serve" = 1 ]; then
      port=$(( 20000 + RANDOM % 20000 ))
      "$binary" serve --data "$dir/run" --listen "127.0.0.1:$port" > "$dir/serve.log" 2>&1 &
      server=$!
      for _ in $(seq 500); do
        curl -sf "http://127.0.0.1:$port/healthz" > /dev/null && break
        sleep 0.02
      done
      target="http://127.0.0.1:$port/db/bench"
    fi
    "$binary" bench "$workload" --target "$target" --duration "$duration" --json > "$dir/result.json" 2> /dev/null &
    pid=$!
    measured=${server:-$pid}
    process=0; writer=0; client=0
    while kill -0 "$pid" 2> /dev/null; do
      read -r p w < <(cpu_of "$measured")
      [ "$p" -gt "$process" ] && process=$p
      [ "$w" -gt "$writer" ] && writer=$w
      if [ -n "$server" ]; then
        read -r c _ < <(cpu_of "$pid")
        [ "$c" -gt "$client" ] && client=$c
      fi
      sleep 0.2
    done
    wait "$pid"
    if [ -n "$server" ]; then
      kill "$server"
      wait "$server" || true
    fi
    python3 - "$dir/result.json" "$process" "$writer" "$client" "$serve" "$tick" "$round" "$binary" <<'PY'
import json, sys
path, process, writer, client, serve, tick, round_, binary = sys.argv[1:]
r = json.load(open(path))
ops = r["ops"]
us = lambda ticks: int(ticks) / int(tick) * 1e6 / ops
where = f"server {us(process):.1f} us, writer {us(writer):.1f} us, client {us(client):.1f} us" \
    if serve == "1" else f"process {us(process):.1f} us, writer {us(writer):.1f} us"
print(f"round {round_} {binary}: {r['ops_per_s']:,.0f} ops/s, p99 {r['p99_ms']:.2f} ms, "
      f"CPU per op: {where}")
PY
  done
done
