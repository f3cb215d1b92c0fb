#!/usr/bin/env bash
# The embedded writer's cost per save, without the disk: `folio bench` on
# the in-memory target, and `perf stat` on the writer thread for 4 s in
# the middle of the run (instructions and CPU time per save). Steadier than
# throughput on a shared machine; BENCHMARKS.md quotes it for changes of
# the writer's statements.
#
#   bash bench/writer-cost.sh FOLIO [CLIENTS] [WORKLOAD]
#
# Needs `perf` (linux-perf) and permission to use it.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
binary=$1
clients=${2:-32}
workload=${3:-update}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$binary" bench "$workload" --target memory: --clients "$clients" --duration 10 --json > "$out/result.json" 2> /dev/null &
pid=$!
sleep 5
writer=""
for task in /proc/"$pid"/task/*; do
  [[ "$(cat "$task/comm")" == folio-sqlite-wr* ]] && writer=$(basename "$task")
done
[ -n "$writer" ] || { echo "writer-cost.sh: no writer thread found" >&2; exit 1; }
perf stat -e instructions,task-clock -t "$writer" -o "$out/stat.txt" -- sleep 4
wait "$pid"
python3 - "$out/result.json" "$out/stat.txt" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1]))
text = open(sys.argv[2]).read()
instructions = int(re.search(r"([\d,]+)\s+instructions", text).group(1).replace(",", ""))
ms = float(re.search(r"([\d.,]+)\s+msec task-clock", text).group(1).replace(",", ""))
saves = r["ops_per_s"] * 4
print(f"{r['ops_per_s']:,.0f} saves/s; writer: {instructions / saves:,.0f} instructions and {ms * 1000 / saves:.1f} us of CPU per save")
PY
