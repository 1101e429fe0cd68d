#!/usr/bin/env bash
# MAC simulation speed, side by side in one run on the same 1M-operand stream
# (activation-like, 8-bit): Verilator models through perfwatt without counting, with the
# in-harness toggle counter, and dumping + counting a VCD; iverilog running the same RTL
# and stimulus (tests/rtl/mac_tb.v) without and with a VCD dump.
# Usage: scripts/bench-sim.sh [PAIRS]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
W=${BENCH_DIR:-target/bench-sim}
mkdir -p "$W"
cargo build --release -q
P=./target/release/perfwatt
echo "stream: $N pairs, activation-like, 8-bit; machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%F)"
echo "| simulator | design | counting | cycles/s | speedup vs iverilog (no dump) |"
echo "|---|---|---|---:|---:|"
declare -A IV
# iverilog's start-up (reading the 1M-line stimulus with $readmemh) is timed separately
# (+n=4) and subtracted, so only simulated cycles count.
secs() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); python3 -c "print($e-$s)"; }
for d in baseline isolated signmag; do
  $P sim --synthetic activation-like --pairs "$N" --design $d --export "$W/stim_$d.hex"
  iverilog -g2012 -DDUT=mac_$d -Pmac_tb.W=8 -o "$W/$d.vvp" rtl/mac_$d.v tests/rtl/mac_tb.v
  t0=$(secs vvp -n "$W/$d.vvp" +stim="$W/stim_$d.hex" +n=4 +nodump)
  t1=$(secs vvp -n "$W/$d.vvp" +stim="$W/stim_$d.hex" +n=$((N + 4)) +nodump)
  t2=$(secs vvp -n "$W/$d.vvp" +stim="$W/stim_$d.hex" +n=$((N + 4)) +vcd="$W/iv_$d.vcd")
  IV[$d]=$(python3 -c "print(($N+4)/($t1-$t0))")
  echo "| iverilog 11 | $d | none (no dump) | $(printf %.0f ${IV[$d]}) | 1.0 |"
  echo "| iverilog 11 | $d | VCD dump | $(python3 -c "print(round(($N+4)/($t2-$t0)))") | $(python3 -c "print(round((($N+4)/($t2-$t0))/${IV[$d]},2))") |"
done
for mode in "--no-count:none" ":in-harness (fast path)" "--vcd $W/vl:VCD dump + nom count"; do
  flags=${mode%%:*}; name=${mode#*:}
  $P sim --synthetic activation-like --pairs "$N" $flags --format json > "$W/vl.json"
  python3 - "$W/vl.json" "$name" "${IV[baseline]}" "${IV[isolated]}" "${IV[signmag]}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); iv = dict(zip(["baseline", "isolated", "signmag"], map(float, sys.argv[3:6])))
for d in r["designs"]:
    print(f"| Verilator {r['verilator'].split()[1]} | {d['design']} | {sys.argv[2]} | {d['cycles_per_s']:.0f} | {d['cycles_per_s']/iv[d['design']]:.0f} |")
PY
done
