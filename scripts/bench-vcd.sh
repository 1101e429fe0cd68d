#!/usr/bin/env bash
# VCD benchmark: perfwatt vs a toggle counter on the `vcd` crate vs wellen's VCD loading,
# side by side on the same Verilator-written VCD, in one run. Reports MB/s and peak RSS
# (GNU time). Usage: scripts/bench-vcd.sh [CYCLES] (default 2500000 cycles, about 265 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES=${1:-2500000}
W=${BENCH_DIR:-target/bench-vcd}
mkdir -p "$W"
VCD="$W/counter_${CYCLES}.vcd"
if [ ! -f "$VCD" ]; then
  verilator --binary --timing --trace -Wno-fatal -O3 --Mdir "$W/obj" tests/rtl/counter_tb.v >/dev/null
  "$W/obj/Vcounter_tb" +vcd="$VCD" +cycles="$CYCLES" >/dev/null
fi
cargo build --release -q
(cd bench/vcd-compare && cargo build --release -q)
SIZE=$(stat -c %s "$VCD")
MB=$(python3 -c "print($SIZE/1e6)")
echo "file: $VCD ($MB MB, Verilator $(verilator --version | cut -d' ' -f2))"
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%F)"
cat "$VCD" > /dev/null  # warm the page cache for all of them
REPEATS=${REPEATS:-3}
# Each tool runs REPEATS times, interleaved round by round (drift hits all alike); the
# table shows the median time and the largest peak RSS.
TOOLS=(perfwatt perfwatt-1thread wellen vcd-crate)
cmd() {
  case $1 in
    perfwatt) echo ./target/release/perfwatt toggles "$VCD" --format json ;;
    perfwatt-1thread) echo ./target/release/perfwatt toggles "$VCD" --format json --threads 1 ;;
    wellen) echo bench/vcd-compare/target/release/vcd-compare wellen "$VCD" ;;
    vcd-crate) echo bench/vcd-compare/target/release/vcd-compare vcd "$VCD" ;;
  esac
}
for r in $(seq "$REPEATS"); do
  for t in "${TOOLS[@]}"; do
    /usr/bin/time -f "%e %M" -o "$W/time.txt" $(cmd "$t") > "$W/$t.out"
    echo "$t $(cat "$W/time.txt")" >> "$W/times.$$"
  done
done
python3 - "$W/times.$$" "$MB" "${TOOLS[@]}" <<'PY'
import statistics, sys
path, mb, tools = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
rows = [l.split() for l in open(path)]
secs = {t: [float(r[1]) for r in rows if r[0] == t] for t in tools}
rss = {t: max(float(r[2]) for r in rows if r[0] == t) for t in tools}
print(f"| tool | median seconds (of {len(secs[tools[0]])}) | all runs | MB/s | peak RSS MB |")
print("|---|---:|---|---:|---:|")
med = {t: statistics.median(secs[t]) for t in tools}
for t in tools:
    print(f"| {t} | {med[t]:.2f} | {' '.join(f'{s:.2f}' for s in secs[t])} | {mb / med[t]:.0f} | {rss[t] / 1024:.1f} |")
print(f"\nperfwatt vs vcd crate: {med['vcd-crate'] / med['perfwatt']:.1f}x (1 thread: {med['vcd-crate'] / med['perfwatt-1thread']:.1f}x); vs wellen: {med['wellen'] / med['perfwatt']:.1f}x")
PY
rm -f "$W/times.$$"
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
ours = json.load(open(f"{w}/perfwatt.out"))
one = json.load(open(f"{w}/perfwatt-1thread.out"))
assert ours["signals"] == one["signals"], "threaded and sequential counts differ"
print("perfwatt total toggles:", ours["total_toggles"], "(1 thread: same per signal) |", open(f"{w}/vcd-crate.out").read().strip())
PY
