#!/usr/bin/env python3
"""A PyTorch workload with phases of known length, for checking `perfwatt measure`.

Runs bf16 GEMMs (N x N x N, cuBLAS via torch.matmul) back to back in windows of 0.05, 0.3
and 1.5 s (each --repeats times, idle gaps between), reads the NVML energy counter itself
around each window (the counter `perfwatt measure` reads from outside), and prints a
`perfwatt measure` phase marker around each. Writes JSON: per window its name, joules and
seconds ("runs"), and latency_mean_s, the mean time per GEMM over the 1.5 s windows (what
an A/B of the sampler's cost compares).

usage: torch_gemm_phases.py --out result.json [--n 4096] [--repeats 3]
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_baseline import Nvml, phase  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    phase("load")
    import torch

    x = torch.randn(a.n, a.n, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(a.n, a.n, device="cuda", dtype=torch.bfloat16)
    nv = Nvml()
    for _ in range(20):
        x @ y
    torch.cuda.synchronize()
    runs, per_gemm = [], []
    phase("windows")
    for r in range(a.repeats):
        for secs in (0.05, 0.3, 1.5):
            name = f"gemm-{secs}s-{r}"
            time.sleep(0.3)
            torch.cuda.synchronize()
            phase(f"begin {name}")
            e0, t0 = nv.energy_mj(), time.perf_counter()
            n = 0
            while time.perf_counter() - t0 < secs:
                for _ in range(10):
                    x @ y
                torch.cuda.synchronize()
                n += 10
            t = time.perf_counter() - t0
            e1 = nv.energy_mj()
            phase(f"end {name}")
            runs.append({"name": name, "joules": (e1 - e0) / 1000.0, "seconds": t, "gemms": n})
            if secs == 1.5:
                per_gemm.append(t / n)
    res = {"impl": f"pytorch {torch.__version__} bf16 matmul {a.n}^3", "gpu": nv.name(), "runs": runs,
           "latency_mean_s": statistics.mean(per_gemm)}
    json.dump(res, open(a.out, "w"), indent=1)
    print(json.dumps({"latency_mean_s": res["latency_mean_s"], "windows": len(runs)}))


if __name__ == "__main__":
    main()
