#!/usr/bin/env bash
# Two (or more) builds of `folio` side by side on the embedded engine, in
# alternating rounds, each run on a fresh copy of one database: the way
# BENCHMARKS.md compares a change with what came before it on a machine
# whose speed drifts.
#
#   bash bench/ab.sh [--rounds N] [--workload W] [--duration SECS] FOLIO_A FOLIO_B...
#
# Prints, per run: ops/s, p99, and the CPU time per operation of the whole
# process and of the writer thread (from /proc). The template database
# (100,000 documents of 300 bytes, `folio bench`'s) is made once in
# $AB_DIR (default /tmp/folio-ab) by the first binary.
set -euo pipefail
rounds=2
workload=update
duration=8
while [ $# -gt 0 ]; do
  case "$1" in
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
  read -r -a f < "/proc/$pid/stat" 2>/dev/null && process=$(( ${f[13]} + ${f[14]} ))
  for task in /proc/"$pid"/task/*; do
    if [[ "$(cat "$task/comm" 2>/dev/null)" == folio-sqlite-wr* ]]; then
      read -r -a f < "$task/stat" 2>/dev/null && writer=$(( ${f[13]} + ${f[14]} ))
    fi
  done
  echo "$process $writer"
}
for round in $(seq "$rounds"); do
  for binary in "$@"; do
    rm -rf "$dir/run"
    cp -r "$dir/template" "$dir/run"
    "$binary" bench "$workload" --target "embedded:$dir/run" --duration "$duration" --json > "$dir/result.json" 2> /dev/null &
    pid=$!
    process=0; writer=0
    while kill -0 "$pid" 2> /dev/null; do
      read -r p w < <(cpu_of "$pid")
      [ "$p" -gt "$process" ] && process=$p
      [ "$w" -gt "$writer" ] && writer=$w
      sleep 0.2
    done
    wait "$pid"
    python3 - "$dir/result.json" "$process" "$writer" "$tick" "$round" "$binary" <<'PY'
import json, sys
path, process, writer, tick, round_, binary = sys.argv[1:]
r = json.load(open(path))
ops = r["ops"]
us = lambda ticks: int(ticks) / int(tick) * 1e6 / ops
print(f"round {round_} {binary}: {r['ops_per_s']:,.0f} ops/s, p99 {r['p99_ms']:.2f} ms, "
      f"CPU per op: process {us(process):.1f} us, writer {us(writer):.1f} us")
PY
  done
done
