#!/usr/bin/env bash
# CPU inference side by side in one run: perfwatt (candle, shipped Q4_1 GGUF, greedy; with
# every optimization, and with none: `--opt none`) and llama.cpp (llama-cpp-python from
# PyPI, same file, same prompt token ids, same thread count, greedy), alternating ROUNDS
# times (default 3). Prints prefill and decode tokens/s (medians) and the ratios. llama-cpp-python is installed into target/llamacpp-venv on
# first use (a source build: about 5 minutes on 2 cores).
# Usage: scripts/bench-cpu-llamacpp.sh [NEW_TOKENS]   (default 64)
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-64}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-$(nproc)}
V=target/llamacpp-venv
W=${BENCH_DIR:-target/bench-llamacpp}
mkdir -p "$W"
[ -x "$V/bin/python" ] || python3 -m venv "$V"
"$V/bin/python" -c "import llama_cpp" 2>/dev/null || "$V/bin/pip" install -q llama-cpp-python
cargo build --release -q
P=./target/release/perfwatt
MODEL=${PERFWATT_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%F); $THREADS threads; $T new tokens; llama-cpp-python $("$V/bin/python" -c 'import llama_cpp;print(llama_cpp.__version__)')"
: > "$W/runs.txt"
for r in $(seq "$ROUNDS"); do
  for opt in all none; do
    $P infer --device cpu --dtype q4_1 --max-new-tokens "$T" --warmup 1 --repeats 3 --opt $opt --out "$W/perfwatt-$opt.json" > /dev/null
    python3 - "$W/perfwatt-$opt.json" "$opt" >> "$W/runs.txt" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
name = "perfwatt" if sys.argv[2] == "all" else "perfwatt--opt-" + sys.argv[2]
for run in d["runs"]:
    print(name, d["prompt_tokens"] / run["ttft_s"], len(run["step_latencies_s"]) / sum(run["step_latencies_s"]))
PY
  done
  "$V/bin/python" - "$MODEL" "$W/perfwatt-all.json" "$T" "$THREADS" >> "$W/runs.txt" <<'PY'
import json, sys, time
from llama_cpp import Llama
model, report, t, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
d = json.load(open(report))
ids = d["prompt_ids"][0]
want = d["tokens"][0]
llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=512, verbose=False)
for run in range(4):  # 1 warmup + 3 measured, as perfwatt
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    tok = llm.sample(temp=0.0)
    t1 = time.perf_counter()
    out = [tok]
    for _ in range(t - 1):
        llm.eval([tok])
        tok = llm.sample(temp=0.0)
        out.append(tok)
    t2 = time.perf_counter()
    if run:
        print("llama.cpp", len(ids) / (t1 - t0), (t - 1) / (t2 - t1))
same = sum(a == b for a, b in zip(out, want))
print(f"# llama.cpp greedy tokens equal perfwatt's for the first {next((i for i, (a, b) in enumerate(zip(out, want)) if a != b), len(want))} of {len(want)}", file=sys.stderr)
PY
done
python3 - "$W/runs.txt" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, pre, dec = line.split()
    runs.setdefault(name, []).append((float(pre), float(dec)))
print("| engine | prefill tok/s (median) | decode tok/s (median) | runs |")
print("|---|---:|---:|---:|")
med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in runs.items()}
for k, (p, d) in med.items():
    print(f"| {k} | {p:.1f} | {d:.1f} | {len(runs[k])} |")
l = med["llama.cpp"]
print()
for k, p in med.items():
    if k != "llama.cpp":
        print(f"{k} / llama.cpp: prefill {p[0] / l[0]:.2f}x, decode {p[1] / l[1]:.2f}x")
PY
