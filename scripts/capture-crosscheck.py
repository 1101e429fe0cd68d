#!/usr/bin/env python3
"""Cross-check: perfwatt's own operand capture against the Python one on the same weights.

perfwatt (candle, CPU, bf16) captures layer 0's q and v projections of the shipped GGUF on
its prompt; transformers loads the same GGUF (dequantized to bf16) and `perfwatt_capture`
hooks the same two nn.Linear layers on the same prompt ids, skipping the same chat-template
positions. Compared: the activation vectors element by element (same positions), the weight
rows bit for bit (v; q's rows are permuted by transformers' GGUF loader, which undoes
llama.cpp's rotary permutation, so only their statistics compare), value statistics, zero
fractions, and toggles per pair on perfwatt's bf16 MAC (`perfwatt sim`). Markdown out.

usage: PYTHONPATH=python:TRANSFORMERS_DIR /usr/bin/python3 scripts/capture-crosscheck.py \
         --gguf models/SmolLM2-135M-Instruct.Q4_1.gguf --perfwatt target/debug/perfwatt --out DIR
(transformers >= 4.41 with GGUF support, gguf and accelerate; BENCHMARKS.md says which.)
"""
import argparse
import json
import os
import re
import statistics
import struct
import subprocess

from perfwatt_capture import Capture, read_ops


def bf16(v):
    """A bf16 pattern (signed 16-bit) as a float."""
    return struct.unpack("<f", struct.pack("<I", (v & 0xFFFF) << 16))[0]


def segments(s):
    """Per segment: (name, activation vectors, weight rows) of an `.ops` stream."""
    out = []
    for g in s.meta["segments"]:
        a, k, n = g["start"], g["dot_len"], len(g["rows"])
        pa, pb = s.a[a:a + g["pairs"]], s.b[a:a + g["pairs"]]
        vecs = [pa[i:i + k] for i in range(0, len(pa), k * n)]
        rows = [pb[j * k:(j + 1) * k] for j in range(n)]
        out.append((str(g["proj"]).replace("_proj", ""), vecs, rows))
    return out


def toggles_per_pair(perfwatt, path):
    j = json.loads(subprocess.run([perfwatt, "sim", "--operands", path, "--design", "bf16", "--format", "json"],
                                  check=True, capture_output=True, text=True).stdout)
    return j["designs"][0]["datapath_toggles"] / j["designs"][0]["pairs"]


def stats(vals):
    f = sorted(bf16(v) for v in vals)
    q = lambda p: f[min(len(f) - 1, int(p * len(f)))]
    return {"mean": statistics.mean(f), "sd": statistics.pstdev(f), "p1": q(0.01), "p50": q(0.5), "p99": q(0.99),
            "zero": sum(v & 0x7FFF == 0 for v in vals) / len(vals)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--perfwatt", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    pw_ops, py_ops = os.path.join(a.out, "perfwatt.ops"), os.path.join(a.out, "python.ops")
    subprocess.run([a.perfwatt, "infer", "--device", "cpu", "--dtype", "bf16", "--max-new-tokens", "1", "--warmup", "0",
                    "--repeats", "1", "--capture", pw_ops, "--capture-layers", "0", "--capture-projs", "q,v",
                    "--out", os.path.join(a.out, "infer.json")], check=True, capture_output=True,
                   env=dict(os.environ, PERFWATT_MODEL=os.path.abspath(a.gguf)))
    ids = json.load(open(os.path.join(a.out, "infer.json")))["prompt_ids"][0]
    pw = read_ops(pw_ops)
    skip = int(re.search(r"positions from (\d+) on", pw.meta["sampling"]).group(1))

    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    d, f = os.path.split(os.path.abspath(a.gguf))
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.bfloat16).eval()
    with Capture(model, match=["layers.0.self_attn.q_proj", "layers.0.self_attn.v_proj"], vectors=10_000, rows=4,
                 skip_positions=skip) as cap:
        with torch.no_grad():
            model(torch.tensor([ids]))
    cap.write_ops(py_ops, source=f"transformers {transformers.__version__}, PyTorch {torch.__version__}: {f} bf16")
    py = read_ops(py_ops)

    print(f"# Operand capture: perfwatt (candle, CPU, bf16) vs perfwatt_capture (transformers {transformers.__version__}, "
          f"PyTorch {torch.__version__}, CPU, bf16)\n")
    print(f"Same GGUF `{f}`, same {len(ids)} prompt ids, layer 0, positions {skip}..{len(ids) - 1}; "
          f"`python3 scripts/capture-crosscheck.py --gguf ... --perfwatt ... --out {a.out}`.\n")
    print("| proj | vectors | activations: identical bf16 | max abs diff (ulps) | weight rows: identical bf16 | "
          "a mean / sd (perfwatt) | a mean / sd (python) | a p1 / p50 / p99 (perfwatt) | a p1 / p50 / p99 (python) | a zero fraction |")
    print("|---|---:|---:|---:|---:|---|---|---|---|---|")
    for (name, va, ra), (_, vb, rb) in zip(segments(pw), segments(py)):
        xa = [v for vec in va for v in vec]
        xb = [v for vec in vb for v in vec]
        same = sum(x == y for x, y in zip(xa, xb)) / len(xa)
        diff = max(abs(bf16(x) - bf16(y)) for x, y in zip(xa, xb))
        # Units in the last place: the patterns' distance where both have the same sign.
        ulps = max((abs(x - y) for x, y in zip(xa, xb) if (x < 0) == (y < 0)), default=0)
        wa = [v for r in ra for v in r]
        wb = [v for r in rb for v in r]
        wsame = sum(x == y for x, y in zip(wa, wb)) / len(wa)
        sa, sb = stats(xa), stats(xb)
        note = " (rows permuted by the loader)" if name == "q" else ""
        print(f"| {name} | {len(va)} / {len(vb)} | {100 * same:.2f}% | {diff:.4g} ({ulps}) | {100 * wsame:.2f}%{note} | "
              f"{sa['mean']:.4f} / {sa['sd']:.4f} | {sb['mean']:.4f} / {sb['sd']:.4f} | "
              f"{sa['p1']:.3f} / {sa['p50']:.3f} / {sa['p99']:.3f} | {sb['p1']:.3f} / {sb['p50']:.3f} / {sb['p99']:.3f} | "
              f"{sa['zero']:.4f} / {sb['zero']:.4f} |")
    ta, tb = toggles_per_pair(a.perfwatt, pw_ops), toggles_per_pair(a.perfwatt, py_ops)
    print(f"\nbf16 MAC (`perfwatt sim --design bf16`), datapath toggles per pair: perfwatt's capture {ta:.2f}, "
          f"the Python capture {tb:.2f} ({100 * (tb - ta) / ta:+.2f}%).")


if __name__ == "__main__":
    main()
