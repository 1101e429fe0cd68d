#!/usr/bin/env python3
"""perfwatt against PyTorch's decode loop, as ratios with CIs over independent processes.

In: a results folder of scripts/gpu-run.sh step `offload-peers`: peer_perfwatt_I.json
(`perfwatt infer`) and peer_torch_DT_I.json (scripts/torch_decode.py), I = 1..n, each a
process of its own (its own model load), run alternately. Out (markdown on stdout): per
dtype, decode-vs-decode and output-vs-output tokens/s ratios and J/token (block energy,
raw and above idle), each the mean over the n pairs with a t-interval over pairs (pair i =
the two processes run next to each other, so slow drift cancels), and the graph checks.

usage: peer_ratio.py RESULTS_DIR
"""
import glob
import json
import os
import statistics
import sys

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def ci(xs):
    m = statistics.mean(xs)
    if len(xs) < 2:
        return m, None, None
    h = T975.get(len(xs) - 1, 2.0) * statistics.stdev(xs) / len(xs) ** 0.5
    return m, m - h, m + h


def fmt(est, digits=3):
    m, lo, hi = est
    if lo is None:
        return f"{m:.{digits}f} (n = 1: no CI)"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def perfwatt_side(j):
    e = j.get("energy") or {}
    jt = (e.get("j_per_token") or {}).get("mean")
    ja = (e.get("j_per_token_above_idle") or {}).get("mean")
    return {"decode": j["tokens_per_s_decode"]["mean"], "output": j["tokens_per_s_output"]["mean"],
            "j": jt, "j_above": ja, "tokens": j.get("tokens")}


def torch_side(j):
    return {"decode": j["tokens_per_s_decode"], "output": j["tokens_per_s_output"],
            "j": j.get("j_per_token"), "j_above": j.get("j_per_token_above_idle"),
            "tokens": j.get("tokens"), "checks": j.get("checks")}


def main():
    d = sys.argv[1]
    pw = {int(f.rsplit("_", 1)[1][:-5]): perfwatt_side(json.load(open(f)))
          for f in glob.glob(os.path.join(d, "peer_perfwatt_*.json"))}
    dtypes = sorted({os.path.basename(f).split("_")[2] for f in glob.glob(os.path.join(d, "peer_torch_*.json"))})
    print(f"# perfwatt (candle Q4_1, --opt all) vs PyTorch's hand-written decode loop\n\nfolder: {d}\n")
    for dt in dtypes:
        pairs = []
        for f in sorted(glob.glob(os.path.join(d, f"peer_torch_{dt}_*.json"))):
            i = int(f.rsplit("_", 1)[1][:-5])
            if i in pw:
                pairs.append((pw[i], torch_side(json.load(open(f)))))
        if not pairs:
            continue
        n = len(pairs)
        print(f"## PyTorch {dt}: {n} pairs of processes\n")
        print("| measure | perfwatt | PyTorch | perfwatt / PyTorch |\n|---|---:|---:|---:|")
        for key, name in [("decode", "decode tok/s"), ("output", "output tok/s")]:
            print(f"| {name} | {fmt(ci([p[key] for p, _ in pairs]), 1)} | {fmt(ci([t[key] for _, t in pairs]), 1)} "
                  f"| {fmt(ci([p[key] / t[key] for p, t in pairs]))} |")
        for key, name in [("j", "J/token"), ("j_above", "J/token above idle")]:
            ok = [(p[key], t[key]) for p, t in pairs if p[key] is not None and t[key] is not None]
            if ok:
                print(f"| {name} | {fmt(ci([p for p, _ in ok]), 4)} | {fmt(ci([t for _, t in ok]), 4)} "
                      f"| {fmt(ci([p / t for p, t in ok]))} |")
        checks = [t["checks"] for _, t in pairs]
        same = sum(1 for c in checks if c.get("graph_tokens_equal_eager"))
        lead = [c.get("leading_tokens_equal_generate") for c in checks]
        agree = [sum(1 for a, b in zip(p["tokens"][0], t["tokens"][0]) if a == b) if p["tokens"] and t["tokens"] else None
                 for p, t in pairs]
        print(f"\nCUDA graph tokens equal the eager loop's in {same} of {n} processes; leading tokens equal to "
              f"transformers' generate: {lead} (of generate's {[c.get('generate_tokens') for c in checks]}); "
              f"positions where perfwatt's Q4_1 tokens equal PyTorch's {dt} ones: {agree}.\n")


if __name__ == "__main__":
    main()
