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
    lat, on = r["run_latencies_s"], r["sampler_ab"]["sampler_on"]
    out = []
    for i in range(0, len(lat) - 1, 2):
        if on[i] != on[i + 1]:
            out.append((lat[i], lat[i + 1]) if on[i] else (lat[i + 1], lat[i]))
    return r["energy"]["sample_hz_target"], r["new_tokens"], out

def line(name, ps):
    off = st.mean(p[1] for p in ps)
    d = [(a - b) / off * 100 for a, b in ps]
    m, h = st.mean(d), 1.96 * st.stdev(d) / math.sqrt(len(d))
    return f"| {name} | {len(ps)} | {off:.4f} | {m:+.2f}% | [{m - h:+.2f}, {m + h:+.2f}] |"

print("| report | pairs | paused mean latency (s) | sampler overhead | 95% CI |")
print("|---|---:|---:|---:|---|")
pool = {}
for f in sys.argv[1:]:
    hz, t, ps = pairs(f)
    print(line(f.split("/")[-1], ps))
    pool.setdefault((hz, t), []).extend(ps)
for (hz, t), ps in sorted(pool.items()):
    print(line(f"pooled: {hz:g} Hz, {t} new tokens", ps))
