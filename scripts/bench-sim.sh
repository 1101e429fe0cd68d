#!/usr/bin/env bash
# MAC simulation speed, side by side in one run on the same 1M-operand stream
# (activation-like, 8-bit): Verilator models through perfwatt without counting, with the
# in-harness toggle counter, and dumping + counting a VCD; iverilog running the same RTL
# and stimulus (tests/rtl/mac_tb.v) without and with a VCD dump.
# Every simulator run is repeated REPEATS times (default 3), rounds interleaved, each pinned
# to one core (taskset, where present); the table shows medians and every run.
# Usage: scripts/bench-sim.sh [PAIRS]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
W=${BENCH_DIR:-target/bench-sim}
mkdir -p "$W"
cargo build --release -q
P=./target/release/perfwatt
echo "stream: $N pairs, activation-like, 8-bit; machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%F)"
REPEATS=${REPEATS:-3}
PIN=""; command -v taskset >/dev/null && PIN="taskset -c 1"
# iverilog's start-up (reading the 1M-line stimulus with $readmemh) is timed separately
# (+n=4) and subtracted, so only simulated cycles count.
secs() { local s e; s=$(date +%s.%N); $PIN "$@" > /dev/null; e=$(date +%s.%N); python3 -c "print($e-$s)"; }
R="$W/runs.txt"; : > "$R"
for d in baseline isolated signmag; do
  $P sim --synthetic activation-like --pairs "$N" --design $d --export "$W/stim_$d.hex"
  pw=8; [ $d = signmag ] && pw=9   # sign-magnitude operands: a sign and an 8-bit magnitude
  iverilog -g2012 -DDUT=mac_$d -Pmac_tb.W=8 -Pmac_tb.A_PW=$pw -Pmac_tb.B_PW=$pw -o "$W/$d.vvp" rtl/mac_$d.v tests/rtl/mac_tb.v
done
$P sim --synthetic activation-like --pairs "$N" --export "$W/pairs.csv"
for r in $(seq "$REPEATS"); do
  for d in baseline isolated signmag; do
    t0=$(secs vvp -n "$W/$d.vvp" +stim="$W/stim_$d.hex" +n=4 +nodump)
    t1=$(secs vvp -n "$W/$d.vvp" +stim="$W/stim_$d.hex" +n=$((N + 4)) +nodump)
    t2=$(secs vvp -n "$W/$d.vvp" +stim="$W/stim_$d.hex" +n=$((N + 4)) +vcd="$W/iv_$d.vcd")
    echo "iverilog $d none $(python3 -c "print(($N+4)/($t1-$t0))")" >> "$R"
    echo "iverilog $d vcd $(python3 -c "print(($N+4)/($t2-$t0))")" >> "$R"
  done
  for mode in "--no-count:none" ":harness" "--vcd $W/vl:vcd"; do
    flags=${mode%%:*}; name=${mode#*:}
    $PIN $P sim --operands "$W/pairs.csv" $flags --format json > "$W/vl.json"
    python3 -c "
import json; r = json.load(open('$W/vl.json'))
for d in r['designs']:
    if d['lanes'] == 1: print('verilator', d['design'], '$name', d['cycles_per_s'])" >> "$R"
  done
done
python3 - "$R" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
runs = {}
for sim, d, mode, v in rows:
    runs.setdefault((sim, d, mode), []).append(float(v))
med = {k: statistics.median(v) for k, v in runs.items()}
names = {"none": "none", "vcd": "VCD dump", "harness": "in-harness toggle count (fast path)"}
print(f"| simulator | design | counting | median cycles/s (of {len(next(iter(runs.values())))}) | all runs (M cycles/s) | x iverilog (no dump), median | min ratio |")
print("|---|---|---|---:|---|---:|---:|")
for (sim, d, mode), v in sorted(runs.items(), key=lambda kv: (kv[0][0] != "iverilog", ["none", "harness", "vcd"].index(kv[0][2]), kv[0][1])):
    iv = runs[("iverilog", d, "none")]
    label = {"vcd": "VCD dump" + (" + nom count" if sim == "verilator" else "")}.get(mode, names[mode])
    print(f"| {sim} | {d} | {label} | {med[(sim, d, mode)]:,.0f} | {' '.join(f'{x/1e6:.2f}' for x in v)} | {med[(sim, d, mode)] / med[('iverilog', d, 'none')]:.0f} | {min(v) / max(iv):.0f} |")
PY
