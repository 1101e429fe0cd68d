#!/usr/bin/env bash
# Gemma 3 270M CPU decode: perfwatt (release) against llama.cpp (llama-cpp-python) on the
# same GGUF, threads, prompt length and new tokens, each in processes of its own, in
# alternating order over ROUNDS rounds (drift cancels); the ratio's CI is over rounds.
# Needs: cargo build --release; a venv with llama-cpp-python (PY, default python3).
# Usage: scripts/bench-gemma-llamacpp.sh [ROUNDS] > experiments/results/cpu-DATE-gemma-vs-llamacpp/log.txt
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-4}
PY=${PY:-python3}
MODEL=models/gemma-3-270m-q4_k_m.gguf
T=64; THREADS=2; LEN=40; REPS=5
OUT=$(mktemp -d)
for r in $(seq 1 "$ROUNDS"); do
  order="perfwatt llamacpp"; [ $((r % 2)) = 0 ] && order="llamacpp perfwatt"
  for who in $order; do
    if [ "$who" = perfwatt ]; then
      ./target/release/perfwatt infer --model gemma3 --dtype gguf --threads $THREADS --prompt-len $LEN \
        --max-new-tokens $T --warmup 1 --repeats $REPS --out "$OUT/p$r.json" > /dev/null
      python3 -c "import json,sys; d=json.load(open('$OUT/p$r.json')); r=d['runs']; print(json.dumps({'round': $r, 'who': 'perfwatt', 'prompt_tokens': d['prompt_tokens'], 'decode_tok_s': [($T-1)/(x['latency_s']-x['ttft_s']) for x in r]}))"
    else
      $PY scripts/llamacpp_decode.py $MODEL --threads $THREADS --prompt-len $LEN --new-tokens $T --repeats $REPS \
        | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d.update(round=$r, who='llamacpp'); print(json.dumps(d))"
    fi
  done
done | tee "$OUT/all.jsonl"
python3 - "$OUT/all.jsonl" <<'PY'
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
per = {}
for r in rows:
    per.setdefault(r["round"], {})[r["who"]] = st.mean(r["decode_tok_s"])
ratios = [v["perfwatt"] / v["llamacpp"] for v in per.values()]
m = st.mean(ratios); n = len(ratios)
t = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57}.get(n, 2.0)
h = t * st.stdev(ratios) / n ** 0.5 if n > 1 else float("nan")
for k, v in sorted(per.items()):
    print(f"round {k}: perfwatt {v['perfwatt']:.1f} tok/s, llama.cpp {v['llamacpp']:.1f} tok/s, ratio {v['perfwatt']/v['llamacpp']:.3f}")
print(f"decode tok/s ratio perfwatt / llama.cpp: {m:.3f} [{m-h:.3f}, {m+h:.3f}] (95% t-interval over {n} rounds)")
PY
