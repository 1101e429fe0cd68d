#!/usr/bin/env bash
# Simulated MAC operations per second: serial MACs (one pair per cycle) against W-lane
# dot-product units (W pairs per cycle), side by side in one run on the same 1M-pair
# activation-like int8 stream (and the bf16 MAC against the fused bf16 dot unit on 1M
# normal bf16 pairs), without counting (lean models) and with the in-harness toggle counter. Every run is pinned to one core, REPEATS rounds (default 3) interleaved;
# the table shows medians of MAC/s = pairs / simulated time (cycles/s x lanes).
# Usage: scripts/bench-dot.sh [PAIRS]   (default 1048576; a multiple of 64)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1048576}
W=${BENCH_DIR:-target/bench-dot}
mkdir -p "$W"
cargo build --release -q
P=./target/release/perfwatt
echo "stream: $N pairs, activation-like, 8-bit; machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%F)"
REPEATS=${REPEATS:-3}
PIN=""; command -v taskset >/dev/null && PIN="taskset -c 1"
$P sim --synthetic activation-like --pairs "$N" --export "$W/pairs.csv"
python3 - "$N" "$W/bf16.csv" <<'PY'
import random, sys
random.seed(1)
with open(sys.argv[2], "w") as f:
    f.write("a,b\n")
    for _ in range(int(sys.argv[1])):
        f.write(f"{random.gauss(0, 1):.6g},{random.gauss(0, 0.05):.6g}\n")
PY
R="$W/runs.txt"; : > "$R"
for r in $(seq "$REPEATS"); do
  for mode in "--no-count:none" ":harness"; do
    flags=${mode%%:*}; name=${mode#*:}
    for run in "baseline:1" "isolated:1" "dot:4" "dot-isolated:4" "dot:16" "dot-isolated:16" "dot:64" "dot-isolated:64" "bf16:1" "bf16-dot:4" "bf16-dot:16"; do
      d=${run%%:*}; l=${run#*:}
      src="$W/pairs.csv"; [[ $d == bf16* ]] && src="$W/bf16.csv --csv-format bf16"
      # shellcheck disable=SC2086
      $PIN $P sim --operands $src --design "$d" --lanes "$l" $flags --format json > "$W/r.json"
      python3 -c "
import json; d = json.load(open('$W/r.json'))['designs'][0]
print(d['design'], d['lanes'], '$name', d['cycles_per_s'] * d['lanes'], d['cycles_per_s'])" >> "$R"
    done
  done
done
python3 - "$R" <<'PY'
import statistics, sys
runs = {}
for d, lanes, mode, macs, cyc in (l.split() for l in open(sys.argv[1])):
    runs.setdefault((d, int(lanes), mode), []).append((float(macs), float(cyc)))
print("| design | lanes | counting | median MAC/s | median cycles/s | x serial MAC (same counting) | all runs (M MAC/s) |")
print("|---|---:|---|---:|---:|---:|---|")
for (d, lanes, mode), v in sorted(runs.items(), key=lambda kv: (kv[0][2] != "none", kv[0][1], kv[0][0])):
    mac = statistics.median(x[0] for x in v)
    serial = "bf16" if d.startswith("bf16") else "isolated" if "isolated" in d else "baseline"
    base = statistics.median(x[0] for x in runs[(serial, 1, mode)])
    print(f"| {d} | {lanes} | {'none (lean model)' if mode == 'none' else 'in-harness toggle count'} | {mac:,.0f} | {statistics.median(x[1] for x in v):,.0f} | {mac / base:.1f} | {' '.join(f'{x[0]/1e6:.1f}' for x in v)} |")
PY
