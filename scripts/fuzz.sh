#!/usr/bin/env bash
# Fuzz the VCD parser with cargo-fuzz (libFuzzer). Stable toolchain: RUSTC_BOOTSTRAP lets
# cargo-fuzz pass its -Z flags. Usage: scripts/fuzz.sh [SECONDS] (default 120)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
mkdir -p corpus/vcd_parse
cp -n seeds/vcd/* corpus/vcd_parse/ 2>/dev/null || true
RUSTC_BOOTSTRAP=1 cargo fuzz run vcd_parse corpus/vcd_parse -- -max_total_time="${1:-120}" -max_len=4096
