#!/usr/bin/env bash
# Simulation on several threads against one: `perfwatt sim --threads N` on the same
# synthetic activation-like int8 stream (generated in-process, outside the timed part) (in-harness toggle counting, the exact join checked at every
# seam; dot products of K = 576, SmolLM2's hidden size), REPEATS rounds (default 3) interleaved, medians of simulated MAC/s and the speed-up
# over one thread. Usage: scripts/bench-threads.sh [PAIRS] [THREADS...]
#   (default 16777216 pairs; threads 1 and every core). PERFWATT=/path/to/perfwatt uses that
#   binary instead of building one (the GPU machine has no cargo).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-16777216}; shift || true
THREADS=${*:-"1 $(nproc)"}
W=${BENCH_DIR:-target/bench-threads}
mkdir -p "$W"
if [ -z "${PERFWATT:-}" ]; then cargo build --release -q; fi
P=${PERFWATT:-./target/release/perfwatt}
echo "stream: $N pairs, activation-like, 8-bit; machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%F)"
R="$W/runs.txt"; : > "$R"
for r in $(seq "${REPEATS:-3}"); do
  for run in "baseline:1" "isolated:1" "dot:16" "dot-isolated:16"; do
    d=${run%%:*}; l=${run#*:}
    for t in $THREADS; do
      $P sim --synthetic activation-like --pairs "$N" --design "$d" --lanes "$l" --threads "$t" --dot-len 576 --format json > "$W/r.json"
      python3 -c "
import json; d = json.load(open('$W/r.json'))['designs'][0]
print(d['design'], $t, d['cycles_per_s'] * d['lanes'], d['datapath_toggles'])" >> "$R"
    done
  done
done
python3 - "$R" <<'PY'
import statistics, sys
runs = {}
for d, t, macs, tgl in (l.split() for l in open(sys.argv[1])):
    runs.setdefault((d, int(t)), []).append((float(macs), int(tgl)))
print("| design | threads | median MAC/s | x one thread | datapath toggles (equal for every thread count) |")
print("|---|---:|---:|---:|---:|")
for (d, t), v in sorted(runs.items()):
    mac = statistics.median(x[0] for x in v)
    one = statistics.median(x[0] for x in runs[(d, 1)])
    assert len({x[1] for x in v} | {x[1] for x in runs[(d, 1)]}) == 1, f"{d}: toggles differ between thread counts"
    print(f"| {d} | {t} | {mac:,.0f} | {mac / one:.2f} | {v[0][1]:,} |")
PY
