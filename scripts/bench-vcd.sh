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
cat "$VCD" > /dev/null  # warm the page cache for all three
run() {
  local name=$1; shift
  local t0 t1 rss
  /usr/bin/time -f "%e %M" -o "$W/time.txt" "$@" > "$W/$name.out"
  read -r secs rss < "$W/time.txt"
  python3 -c "s=$secs; print(f'| $name | {s:.2f} | {$MB/s:.0f} | {$rss/1024:.1f} |')"
}
echo "| tool | seconds | MB/s | peak RSS MB |"
echo "|---|---:|---:|---:|"
run perfwatt ./target/release/perfwatt toggles "$VCD" --format json
run wellen bench/vcd-compare/target/release/vcd-compare wellen "$VCD"
run vcd-crate bench/vcd-compare/target/release/vcd-compare vcd "$VCD"
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
ours = json.load(open(f"{w}/perfwatt.out"))
print("perfwatt total toggles:", ours["total_toggles"], "|", open(f"{w}/vcd-crate.out").read().strip())
PY
