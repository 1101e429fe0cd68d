#!/usr/bin/env bash
# perfwatt serve against llama.cpp's server (llama-cpp-python[server]) on the same GGUF,
# the same CPU threads and the same offered loads, measured by the same load generator
# (perfwatt load, chat requests), one server after the other in one run.
#   LLAMA_PY=venv/bin/python scripts/bench-serve-llamacpp.sh OUT
# Needs a release build (cargo build --release) and `pip install 'llama-cpp-python[server]'`
# in the venv LLAMA_PY belongs to.
set -euo pipefail
OUT=${1:-experiments/runs/serve-vs-llamacpp}
LLAMA_PY=${LLAMA_PY:-python3}
RATES=${RATES:-0.25,0.5,1,2}; N=${N:-12}; TOKENS=${TOKENS:-32}
THREADS=${THREADS:-$(nproc)}
MODEL=${PERFWATT_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
BIN=target/release/perfwatt
mkdir -p "$OUT"
wait_up() { for _ in $(seq 1 120); do curl -sf "$1/v1/models" > /dev/null && return 0; sleep 1; done; echo "no server at $1"; exit 1; }
load() { "$BIN" load --url "$1" --chat --rate "$RATES" --requests "$N" --max-tokens "$TOKENS" --warmup 2 \
  --seed 1 --idle-s 0 --out "$OUT/$2" 2>&1 | tail -n +1; }

"$BIN" serve --port 8101 --max-batch 4 --max-context 512 > "$OUT/perfwatt-serve.log" 2>&1 &
PW=$!; trap 'kill $PW 2>/dev/null || true' EXIT
wait_up http://127.0.0.1:8101
load http://127.0.0.1:8101 perfwatt
kill $PW; wait $PW 2>/dev/null || true

"$LLAMA_PY" -m llama_cpp.server --model "$MODEL" --n_threads "$THREADS" --n_threads_batch "$THREADS" \
  --n_ctx 2048 --port 8102 > "$OUT/llamacpp-server.log" 2>&1 &
LC=$!; trap 'kill $LC 2>/dev/null || true' EXIT
wait_up http://127.0.0.1:8102
load http://127.0.0.1:8102 llamacpp
kill $LC

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = {k: [json.loads(l) for l in open(f"{out}/{k}/results.jsonl")] for k in ("perfwatt", "llamacpp")}
ms = lambda v: "n/a" if v is None else f"{v * 1e3:.0f}"
num = lambda v, d=2: "n/a" if v is None else f"{v:.{d}f}"
print("| offered req/s | perfwatt output tok/s | llama.cpp output tok/s | ratio | perfwatt TTFT p50 / E2E p50 (ms) | llama.cpp TTFT p50 / E2E p50 (ms) |")
print("|---:|---:|---:|---:|---|---|")
for a, b in zip(rows["perfwatt"], rows["llamacpp"]):
    ra = (a["output_tps"] or 0) / b["output_tps"] if b["output_tps"] else None
    print(f"| {a['load']} | {num(a['output_tps'], 1)} | {num(b['output_tps'], 1)} | {num(ra)} | "
          f"{ms(a['ttft']['p50'])} / {ms(a['e2e']['p50'])} | {ms(b['ttft']['p50'])} / {ms(b['e2e']['p50'])} |")
PY
