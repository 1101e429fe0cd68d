#!/usr/bin/env python3
"""Checks of `perfwatt measure` against a workload's own in-process energy.

agree MEASURE_DIR TORCH_JSON
    Per measured window of scripts/torch_gemm_phases.py or run of torch_baseline.py (run
    under `perfwatt measure`, which makes them print a phase around their own counter
    readings): the script's counter
    energy and duration beside the phase's, the difference, and the counter's resolution
    (one update's energy: the GPU's mean power x the counter's update period). Markdown.

overhead --fast A.json ... --slow B.json ...
    The sampler's cost: torch_baseline.py's mean latency in processes measured at a short
    interval (--fast) against processes at a long one (--slow), run in alternating order;
    the ratio per pair, its mean and 95% t-interval over pairs (the unit: a process pair).
"""
import json
import statistics
import sys

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def ci(xs):
    m = statistics.mean(xs)
    if len(xs) < 2:
        return m, None
    return m, T95.get(len(xs) - 1, 2.0) * statistics.stdev(xs) / len(xs) ** 0.5


def agree(measure_dir, torch_json):
    m = json.load(open(f"{measure_dir}/measure.json"))
    t = json.load(open(torch_json))
    if not m["gpus"]:
        sys.exit(f"no GPU energy in {measure_dir}: {m['energy_reason']}")
    g = m["gpus"][0]
    period = g["counter_period_s"]
    phases = {p["name"]: p for p in m["phases"]}
    print(f"GPU {g['index']} {g['name']}: energy counter update period {period} s (median, from {m['interval_ms']} ms samples)\n")
    print("| window | in-process (J) | measure phase (J) | diff (J) | diff (%) | one counter update (J) | in-process (s) | phase (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    diffs, steps = [], []
    # torch_gemm_phases.py lists its windows; torch_baseline.py its runs as run-N.
    runs = t.get("runs") or [{"name": f"run-{i}", "joules": j, "seconds": s}
                              for i, (j, s) in enumerate(zip(t["joules"], t["latency_s"]))]
    for r in runs:
        name, j, s = r["name"], r["joules"], r["seconds"]
        p = phases[name]
        e = p["energy"][0]["energy_j"]
        step = (e / p["duration_s"]) * period if period else float("nan")
        diffs.append(e - j)
        steps.append(step)
        flag = "" if p["energy"][0]["resolved"] else " (unresolved)"
        print(f"| {name}{flag} | {j:.3f} | {e:.3f} | {e - j:+.3f} | {100 * (e - j) / j:+.2f} | {step:.3f} | {s:.4f} | {p['duration_s']:.4f} |")
    within = sum(abs(d) <= s for d, s in zip(diffs, steps))
    print(f"\n{within} of {len(diffs)} runs agree within one counter update; largest |diff| {max(map(abs, diffs)):.3f} J.")
    whole = g["energy_j"]
    print(f"Whole command: {whole:.2f} J over {m['duration_s']:.2f} s ({g['above_idle_j']:.2f} J above the idle of {g['idle']['median_w']:.1f} W).")


def overhead(args):
    fast = args[args.index("--fast") + 1:args.index("--slow")]
    slow = args[args.index("--slow") + 1:]
    lat = lambda f: json.load(open(f))["latency_mean_s"]
    ratios = [lat(a) / lat(b) for a, b in zip(fast, slow)]
    m, h = ci(ratios)
    print(f"latency ratio short/long sampling interval over {len(ratios)} process pairs: {m:.4f}"
          + (f" [{m - h:.4f}, {m + h:.4f}]" if h is not None else "")
          + " (1 = no cost; " + ", ".join(f"{r:.4f}" for r in ratios) + ")")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "agree":
        agree(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 2 and sys.argv[1] == "overhead":
        overhead(sys.argv[2:])
    else:
        sys.exit(__doc__)
