#!/usr/bin/env python3
"""NVML sampler cost from `perfwatt infer --sampler-ab` reports (raw per-run latencies).

Per file and pooled: the mean paired difference (sampler on - paused) over the paused mean,
with a 95% CI from the paired differences (the estimator `perfwatt` reports since
2026-11-22; earlier reports' `overhead_pct` was the mean of per-pair ratios, biased upward
by about the runs' squared CV). Usage: scripts/nvml-ab.py FILE.json...
"""
import json, math, statistics as st, sys

def pairs(path):
    r = json.load(open(path))
    if r["sampler_ab"].get("unit", "runs") != "runs":
        return None  # per-step reports: perfwatt's own summary is in the file
    lat, on = r["run_latencies_s"], r["sampler_ab"]["sampler_on"]
    out = []
    for i in range(0, len(lat) - 1, 2):
        if on[i] != on[i + 1]:
            out.append((lat[i], lat[i + 1]) if on[i] else (lat[i + 1], lat[i]))
    return r["energy"]["sample_hz_target"], r["batch"], r["new_tokens"], out

def rel_diffs(ps):
    """(on - paused) of each pair, in % of the group's paused mean."""
    off = st.mean(p[1] for p in ps)
    return off, [(a - b) / off * 100 for a, b in ps]

def line(name, d, off=None):
    m, h = st.mean(d), 1.96 * st.stdev(d) / math.sqrt(len(d))
    off = f"{off:.4f}" if off is not None else "-"
    return f"| {name} | {len(d)} | {off} | {m:+.2f}% | [{m - h:+.2f}, {m + h:+.2f}] |"

print("| report | pairs | paused mean latency (s) | sampler overhead | 95% CI |")
print("|---|---:|---:|---:|---|")
pool = {}
for f in sys.argv[1:]:
    got = pairs(f)
    if got is None:
        a = json.load(open(f))["sampler_ab"]
        o = a["overhead_pct"]
        print(f"| {f.split('/')[-1]} (decode steps, perfwatt's figures) | {a['pairs']} | {a['latency_paused_s']['mean']:.5f} | {o['mean']:+.2f}% | [{o['ci95_low']:+.2f}, {o['ci95_high']:+.2f}] |")
        continue
    hz, b, t, ps = got
    print(line(f.split("/")[-1], rel_diffs(ps)[1], rel_diffs(ps)[0]))
    pool.setdefault((hz, b, t), []).extend(ps)
alld = []
for (hz, b, t), ps in sorted(pool.items()):
    off, d = rel_diffs(ps)
    alld += d
    print(line(f"pooled: {hz:g} Hz, batch {b}, {t} new tokens", d, off))
# Every configuration's pairs in % of its own paused mean, pooled.
print(line("all configurations (each in % of its own paused mean)", alld))
