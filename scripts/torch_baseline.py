#!/usr/bin/env python3
"""PyTorch baseline on the same GGUF weights, measured like `perfwatt infer`.

Loads SmolLM2-135M-Instruct from the GGUF with transformers (dequantized to the chosen
dtype), builds the same chat prompts of exactly --prompt-len tokens from perfwatt's token
ids (passed in a JSON file), generates --max-new-tokens greedily with `generate` (KV cache),
and measures latency and NVML energy (total-energy counter via ctypes on libnvidia-ml, the
same counter perfwatt reads). Writes one JSON object. Under `perfwatt measure` (which sets
PERFWATT_PHASE_FIFO) it prints phase markers: load, idle, warmup, and a `run-N` window
around each measured run's own counter readings, so both measurements of a run compare.

usage: torch_baseline.py --gguf MODEL.gguf --prompts ids.json --dtype bf16 --batch 1 \
         --max-new-tokens 64 --warmup 2 --repeats 5 --out result.json
"""
import argparse
import ctypes
import json
import os
import statistics
import time


class Nvml:
    """Just the calls we need, from the driver's libnvidia-ml."""

    def __init__(self, index=0):
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        assert self.lib.nvmlInit_v2() == 0
        self.dev = ctypes.c_void_p()
        assert self.lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(self.dev)) == 0

    def energy_mj(self):
        e = ctypes.c_ulonglong()
        assert self.lib.nvmlDeviceGetTotalEnergyConsumption(self.dev, ctypes.byref(e)) == 0
        return e.value

    def name(self):
        buf = ctypes.create_string_buffer(96)
        self.lib.nvmlDeviceGetName(self.dev, buf, 96)
        return buf.value.decode()


MEASURED = "PERFWATT_PHASE_FIFO" in os.environ


def phase(marker):
    """A `perfwatt measure` phase marker (only when run under it)."""
    if MEASURED:
        print(f"PERFWATT_PHASE {marker}", flush=True)


def ci95(xs):
    if len(xs) < 2:
        return [xs[0], xs[0]] if xs else [None, None]
    t = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}.get(len(xs) - 1, 2.0)
    m, s = statistics.mean(xs), statistics.stdev(xs)
    h = t * s / len(xs) ** 0.5
    return [m - h, m + h]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--prompts", required=True, help="JSON: list of token-id lists (perfwatt's batch)")
    ap.add_argument("--dtype", default="bf16", choices=["f32", "f16", "bf16"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--idle-seconds", type=float, default=5.0, help="length of one idle window")
    ap.add_argument("--idle-windows", type=int, default=2, help="idle windows before and after the runs (perfwatt's definition: the median of all)")
    ap.add_argument("--static-cache", action="store_true",
                    help="generate with cache_implementation='static' (transformers compiles it with CUDA graphs)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    phase("load")
    import torch
    from transformers import AutoModelForCausalLM

    dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    t0 = time.time()
    d, f = os.path.split(os.path.abspath(a.gguf))
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=dt).cuda().eval()
    load_s = time.time() - t0
    ids = json.load(open(a.prompts))
    ids = [ids[i % len(ids)] for i in range(a.batch)]
    x = torch.tensor(ids, device="cuda")
    att = torch.ones_like(x)
    nv = Nvml()

    def idle_windows():
        out = []
        for _ in range(a.idle_windows):
            e0 = nv.energy_mj()
            time.sleep(a.idle_seconds)
            out.append((nv.energy_mj() - e0) / 1000.0 / a.idle_seconds)
        return out

    phase("idle-before")
    idle_before = idle_windows()
    extra = {"cache_implementation": "static"} if a.static_cache else {}

    def run(name):
        torch.cuda.synchronize()
        phase(f"begin {name}")
        e0, s = nv.energy_mj(), time.perf_counter()
        with torch.no_grad():
            out = model.generate(x, attention_mask=att, max_new_tokens=a.max_new_tokens, min_new_tokens=a.max_new_tokens,
                                 do_sample=False, use_cache=True, pad_token_id=2, **extra)
        torch.cuda.synchronize()
        t, e1 = time.perf_counter() - s, nv.energy_mj()
        phase(f"end {name}")
        return t, (e1 - e0) / 1000.0, out[:, x.shape[1]:].tolist()

    phase("warmup")
    for i in range(a.warmup):
        run(f"warmup-{i}")
    phase("runs")
    lat, joules, toks = [], [], None
    for i in range(a.repeats):
        t, j, toks = run(f"run-{i}")
        lat.append(t)
        joules.append(j)
    phase("idle-after")
    idle_after = idle_windows()
    idle_w = statistics.median(idle_before + idle_after)
    n_out = a.batch * a.max_new_tokens
    above = [j - idle_w * t for j, t in zip(joules, lat)]  # never clamped
    res = {
        "impl": f"pytorch {torch.__version__} + transformers generate" + (" (static cache)" if a.static_cache else ""),
        "gpu": nv.name(), "dtype": a.dtype, "batch": a.batch, "prompt_tokens": len(ids[0]),
        "new_tokens": a.max_new_tokens, "repeats": a.repeats, "load_s": load_s,
        "latency_s": lat, "latency_mean_s": statistics.mean(lat), "latency_ci95": ci95(lat),
        "tokens_per_s_output": n_out / statistics.mean(lat),
        "joules": joules, "joules_mean": statistics.mean(joules), "joules_ci95": ci95(joules),
        "idle_w": idle_w, "idle_w_before": idle_before, "idle_w_after": idle_after,
        "j_per_token": statistics.mean(joules) / n_out,
        "j_per_token_above_idle": statistics.mean(above) / n_out,
        "j_per_token_above_idle_ci95": [x / n_out for x in ci95(above)] if ci95(above) else None,
        "tokens": toks,
    }
    json.dump(res, open(a.out, "w"), indent=1)
    print(json.dumps({k: v for k, v in res.items() if k not in ("tokens", "latency_s", "joules")}))


if __name__ == "__main__":
    main()
