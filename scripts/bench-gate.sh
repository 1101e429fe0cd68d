#!/usr/bin/env bash
# Gate-level simulation speed beside RTL, one core each: `perfwatt sim --level gate
# --threads 1` replays the same stream into the RTL model (in-harness counting of its
# sampled signals) and into the yosys netlist's Verilator model (every net counted, in a
# child process fed through a pipe). The netlists are built before the timed runs (cached).
# REPEATS rounds (default 3); medians of simulated cycles/s and the RTL/gate ratio.
# Usage: scripts/bench-gate.sh [PAIRS]   (default 1048576 activation-like int8 pairs, K = 576;
# bf16 designs run on the same values as bf16 bit patterns are not meaningful, so they use
# the shipped sample's shape with a random bf16 CSV of the same length)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1048576}
W=${BENCH_DIR:-target/bench-gate}
mkdir -p "$W"
cargo build --release -q
P=./target/release/perfwatt
python3 - "$N" "$W/bf16.csv" <<'PY'
import random, sys
random.seed(1)
with open(sys.argv[2], "w") as f:
    f.write("a,b\n")
    for _ in range(int(sys.argv[1])):
        f.write(f"{random.gauss(0, 1):.4f},{random.gauss(0, 0.05):.5f}\n")
PY
echo "stream: $N pairs; machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%F); $(yosys -V)"
R="$W/runs.txt"; : > "$R"
for r in $(seq "${REPEATS:-3}"); do
  for run in "baseline:1" "isolated:1" "dot:4" "dot:16" "bf16:1" "bf16-dot:4"; do
    d=${run%%:*}; l=${run#*:}
    case $d in
      bf16*) src=(--operands "$W/bf16.csv" --csv-format bf16) ;;
      *) src=(--synthetic activation-like --pairs "$N") ;;
    esac
    $P sim "${src[@]}" --dot-len 576 --design "$d" --lanes "$l" --threads 1 --level gate --format json > "$W/r.json"
    python3 -c "
import json
for d in json.load(open('$W/r.json'))['designs']:
    g = d.get('gate') or {}
    print(d['design'], d['lanes'], d['level'], d['cycles_per_s'], sum(c['count'] for c in g.get('cells', [])), g.get('nets', 0))" >> "$R"
  done
done
python3 - "$R" <<'PY'
import statistics, sys
runs = {}
for d, l, level, cps, cells, nets in (x.split() for x in open(sys.argv[1])):
    runs.setdefault((d, int(l)), {}).setdefault(level, []).append(float(cps))
    if level == "gate":
        runs[(d, int(l))]["size"] = (int(cells), int(nets))
print("| design | lanes | cells | nets | RTL cycles/s | gate cycles/s | RTL / gate |")
print("|---|---:|---:|---:|---:|---:|---:|")
for (d, l), v in runs.items():
    rtl, gate = statistics.median(v["rtl"]), statistics.median(v["gate"])
    cells, nets = v["size"]
    print(f"| {d} | {l} | {cells:,} | {nets:,} | {rtl:,.0f} | {gate:,.0f} | {rtl / gate:.0f}x |")
PY
