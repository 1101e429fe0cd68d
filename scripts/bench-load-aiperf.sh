#!/usr/bin/env bash
# perfwatt load against aiperf (NVIDIA's load generator, PyPI), side by side on the same
# server and offered rate: the mock OpenAI server of the tests, whose latencies are set
# (80 ms to the first token, 20 ms between tokens, 16 tokens), so both tools' TTFT, ITL and
# end-to-end figures can be read against the truth and against each other.
#   AIPERF=/path/to/venv/bin/aiperf TOKENIZER=DIR scripts/bench-load-aiperf.sh OUT
# aiperf needs a Hugging Face tokenizer folder even with --use-server-token-count; one saved
# from the shipped GGUF by transformers works (BENCHMARKS.md says how).
set -euo pipefail
OUT=${1:-experiments/runs/load-vs-aiperf}
AIPERF=${AIPERF:-aiperf}
RATE=${RATE:-4}; N=${N:-40}
mkdir -p "$OUT"
python3 tests/load/mock_openai.py --ttft-ms 80 --itl-ms 20 --tokens 16 > "$OUT/port.txt" &
MOCK=$!; trap 'kill $MOCK' EXIT; sleep 1
URL=http://127.0.0.1:$(sed 's/PORT //' "$OUT/port.txt")
"$AIPERF" profile -m mock-model --url "$URL" --endpoint-type completions --streaming --request-rate "$RATE" \
  --request-count "$N" --tokenizer "$TOKENIZER" --prompt-output-tokens-mean 16 --use-server-token-count \
  --use-legacy-max-tokens --random-seed 1 --warmup-request-count 4 --output-artifact-dir "$OUT/aiperf" > "$OUT/aiperf.log" 2>&1
cargo run -q -- load --url "$URL" --rate "$RATE" --requests "$N" --warmup 1 --max-tokens 16 --seed 1 --idle-s 0 --out "$OUT/perfwatt"
cat "$OUT/aiperf/profile_export_console.txt"
sed -n '/## Latency/,/## Throughput/p' "$OUT/perfwatt/report.md"
