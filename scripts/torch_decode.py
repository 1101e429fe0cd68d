#!/usr/bin/env python3
"""PyTorch at its best for batch decoding, measured like `perfwatt infer` (issue 26).

A hand-written decoder over the same GGUF weights (loaded and dequantized by transformers,
then held as plain tensors): q/k/v and gate/up merged into one matmul each, a static KV cache
[layers, batch, kv_heads, capacity, head_dim] written in place at a device-held position,
and one decode step captured as a CUDA graph (`torch.cuda.CUDAGraph`) and replayed per token.
Prefill (one pass over the prompt, the first token read back) and decode (the other tokens)
are timed apart. The graph is checked, not assumed: the replayed loop's tokens are compared
with the same loop run eagerly and with transformers' `generate` (greedy), and the report says
how many leading tokens agree.

Energy is measured the way perfwatt measures short runs: idle windows on the NVML total
energy counter before and after, and the measured runs back to back as one block that lasts
at least --block-seconds (the counter advances about every 100 ms, so >= 1 s spans >= 10 of
its updates); J/token = block energy / tokens of the block, above idle = minus idle power x
block time. Run it in several processes started at different times (the repeats a CI is
over): scripts/gpu-run.sh step `peers` alternates it with `perfwatt infer`, and
scripts/peer_ratio.py gives the ratios with CIs over those processes.

Each decode step reads its token back to the host (as a generation loop that checks for a
stop token must, and as perfwatt does); --no-readback replays the graphs without reading
back until the run ends (an upper bound, said so in the output).

usage: torch_decode.py --gguf MODEL.gguf --prompts ids.json --dtype bf16 --batch 1 \
         --max-new-tokens 128 --warmup 3 --repeats 10 --out result.json [--device cpu]
"""
import argparse
import json
import os
import statistics
import time

from torch_baseline import Nvml, ci95, phase


def rope_theta(cfg):
    theta = getattr(cfg, "rope_theta", None)
    if theta is None:
        theta = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return float(theta)


class Decoder:
    """Llama decoder over a transformers model's weights, with a static KV cache."""

    def __init__(self, hf, batch, cap, dtype, device):
        import torch

        cfg, sd = hf.config, hf.state_dict()
        self.torch = torch
        self.h, self.kvh = cfg.num_attention_heads, cfg.num_key_value_heads
        self.d = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.h
        self.eps = cfg.rms_norm_eps

        def w(name):
            return sd[name].to(device=device, dtype=dtype).contiguous()

        def layer(i):
            p = f"model.layers.{i}"
            return {
                "qkv": torch.cat([w(f"{p}.self_attn.{x}_proj.weight") for x in "qkv"]).t().contiguous(),
                "o": w(f"{p}.self_attn.o_proj.weight").t().contiguous(),
                "gu": torch.cat([w(f"{p}.mlp.{x}_proj.weight") for x in ("gate", "up")]).t().contiguous(),
                "down": w(f"{p}.mlp.down_proj.weight").t().contiguous(),
                "n1": w(f"{p}.input_layernorm.weight"),
                "n2": w(f"{p}.post_attention_layernorm.weight"),
            }

        self.layers = [layer(i) for i in range(cfg.num_hidden_layers)]
        self.emb = w("model.embed_tokens.weight")
        self.head = (w("lm_head.weight") if "lm_head.weight" in sd else self.emb).t().contiguous()
        self.norm = w("model.norm.weight")
        inv = 1.0 / (rope_theta(cfg) ** (torch.arange(0, self.d, 2, device=device).float() / self.d))
        freqs = torch.outer(torch.arange(cap, device=device).float(), inv)
        both = torch.cat([freqs, freqs], -1)
        self.cos, self.sin = both.cos().to(dtype), both.sin().to(dtype)
        shape = (len(self.layers), batch, self.kvh, cap, self.d)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.key_pos = torch.arange(cap, device=device)

    def rms(self, x, weight):
        # transformers' LlamaRMSNorm: in f32, the weight applied in the model's dtype.
        xf = x.float()
        xf = xf * self.torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * xf.to(x.dtype)

    def rope(self, t, cos, sin):
        half = t.shape[-1] // 2
        rot = self.torch.cat([-t[..., half:], t[..., :half]], -1)
        return t * cos + rot * sin

    def forward(self, ids, positions):
        """Greedy next tokens [b] after `ids` [b, s] at `positions` [s] (a device tensor):
        keys and values written into the cache there, attention over the whole capacity
        with the positions after each query masked."""
        F = self.torch.nn.functional
        b, s = ids.shape
        h, kvh, d = self.h, self.kvh, self.d
        x = self.emb[ids]
        cos, sin = self.cos[positions][None, None], self.sin[positions][None, None]
        mask = (self.key_pos[None, :] <= positions[:, None])[None, None]
        for i, lw in enumerate(self.layers):
            q, k, v = (self.rms(x, lw["n1"]) @ lw["qkv"]).split([h * d, kvh * d, kvh * d], -1)
            q = self.rope(q.view(b, s, h, d).transpose(1, 2), cos, sin)
            k = self.rope(k.view(b, s, kvh, d).transpose(1, 2), cos, sin)
            self.k[i].index_copy_(2, positions, k)
            self.v[i].index_copy_(2, positions, v.view(b, s, kvh, d).transpose(1, 2))
            a = F.scaled_dot_product_attention(q, self.k[i], self.v[i], attn_mask=mask, enable_gqa=True)
            x = x + a.transpose(1, 2).reshape(b, s, h * d) @ lw["o"]
            g, u = (self.rms(x, lw["n2"]) @ lw["gu"]).chunk(2, -1)
            x = x + (F.silu(g) * u) @ lw["down"]
        return (self.rms(x[:, -1], self.norm) @ self.head).argmax(-1)


class Loop:
    """Prefill, then decode steps of static shapes: eager, or one captured CUDA graph."""

    def __init__(self, dec, prompt, new_tokens, graph, readback):
        torch = dec.torch
        self.dec, self.torch, self.graph, self.readback = dec, torch, None, readback
        self.prompt, self.t = prompt, new_tokens
        dev = prompt.device
        b, l = prompt.shape
        self.prompt_pos = torch.arange(l, device=dev)
        self.tok = torch.zeros((b, 1), dtype=torch.long, device=dev)
        self.pos = torch.full((1,), l, dtype=torch.long, device=dev)
        self.out = torch.zeros((b, l + new_tokens), dtype=torch.long, device=dev)
        if graph:
            self.prefill()  # the graph's inputs hold real values while it is captured
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm kernels (and cuBLAS workspaces) before capture
                    self.step()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.step()

    def step(self):
        nxt = self.dec.forward(self.tok, self.pos)
        self.out.index_copy_(1, self.pos, nxt[:, None])
        self.tok.copy_(nxt[:, None])
        self.pos.add_(1)

    def prefill(self):
        l = self.prompt.shape[1]
        first = self.dec.forward(self.prompt, self.prompt_pos)
        self.out[:, l] = first
        self.tok.copy_(first[:, None])
        self.pos.fill_(l + 1)
        return first

    def run(self, sync):
        """One generation: (ttft s, decode s, new tokens [b][t])."""
        s0 = time.perf_counter()
        with self.torch.no_grad():
            self.prefill().cpu()  # the first token on the host: time to first token
            s1 = time.perf_counter()
            for _ in range(self.t - 1):
                self.graph.replay() if self.graph else self.step()
                if self.readback:
                    self.tok.cpu()
            sync()
        s2 = time.perf_counter()
        l = self.prompt.shape[1]
        # out[:, l] is the prefill's token, out[:, l + 1..] the decode steps'.
        return s1 - s0, s2 - s1, self.out[:, l: l + self.t].tolist()


def leading_equal(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--prompts", required=True, help="JSON: list of token-id lists (perfwatt's batch)")
    ap.add_argument("--dtype", default="bf16", choices=["f32", "f16", "bf16"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10, help="measured runs at least (the block goes on until --block-seconds)")
    ap.add_argument("--block-seconds", type=float, default=2.0)
    ap.add_argument("--idle-seconds", type=float, default=3.0)
    ap.add_argument("--idle-windows", type=int, default=1)
    ap.add_argument("--device", default="cuda", help="cuda (graphs, NVML energy) or cpu (a functional check: no graph, no energy)")
    ap.add_argument("--no-graph", action="store_true", help="eager decode steps (no CUDA graph)")
    ap.add_argument("--no-readback", action="store_true", help="do not read each token back to the host")
    ap.add_argument("--no-generate-check", action="store_true")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    phase("load")
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    cuda = a.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.time()
    d, f = os.path.split(os.path.abspath(a.gguf))
    hf = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=dt).to(a.device).eval()
    ids = json.load(open(a.prompts))
    ids = [ids[i % len(ids)] for i in range(a.batch)]
    x = torch.tensor(ids, device=a.device)
    cap = x.shape[1] + a.max_new_tokens + 1
    with torch.no_grad():
        dec = Decoder(hf, a.batch, cap, dt, a.device)
        graph = cuda and not a.no_graph
        loop = Loop(dec, x, a.max_new_tokens, graph, not a.no_readback)
        eager = Loop(dec, x, a.max_new_tokens, False, True) if graph else loop
    load_s = time.time() - t0

    # Checks: the graph's tokens against the eager loop's and transformers' greedy ones.
    checks = {}
    eager_tokens = eager.run(sync)[2]
    graph_tokens = loop.run(sync)[2]
    checks["graph_tokens_equal_eager"] = graph_tokens == eager_tokens if graph else None
    if not a.no_generate_check:
        with torch.no_grad():
            # No min_new_tokens: that bans the stop token, which this loop (like perfwatt's)
            # emits and goes past; generate's sequence ends at it instead.
            gen = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=a.max_new_tokens,
                              do_sample=False, pad_token_id=2)
        gen = gen[:, x.shape[1]:].tolist()
        checks["generate_tokens"] = min(len(g) for g in gen)
        checks["leading_tokens_equal_generate"] = min(leading_equal(g, e) for g, e in zip(gen, eager_tokens))
    del hf
    print(json.dumps({"checks": checks}), flush=True)

    nv = Nvml() if cuda else None

    def idle_windows():
        out = []
        for _ in range(a.idle_windows if nv else 0):
            e0 = nv.energy_mj()
            time.sleep(a.idle_seconds)
            out.append((nv.energy_mj() - e0) / 1000.0 / a.idle_seconds)
        return out

    phase("warmup")
    for _ in range(a.warmup):
        loop.run(sync)
    phase("idle-before")
    idle_before = idle_windows()
    phase("runs")
    sync()
    e0, b0 = (nv.energy_mj() if nv else None), time.perf_counter()
    runs = []
    while len(runs) < a.repeats or time.perf_counter() - b0 < a.block_seconds:
        runs.append(loop.run(sync)[:2])
    block_s = time.perf_counter() - b0
    block_j = (nv.energy_mj() - e0) / 1000.0 if nv else None
    phase("idle-after")
    idle_after = idle_windows()

    b, t = a.batch, a.max_new_tokens
    decode_tps = [b * (t - 1) / dec_s for _, dec_s in runs]
    output_tps = [b * t / (tt + dec_s) for tt, dec_s in runs]
    tokens = b * t * len(runs)
    idle = idle_before + idle_after
    idle_w = statistics.median(idle) if idle else None
    res = {
        "impl": f"pytorch {torch.__version__}: hand-written decoder, static KV cache, "
                + ("one CUDA graph per decode step" if graph else "eager steps")
                + ("" if not a.no_readback else ", no per-step readback (upper bound)"),
        "gpu": nv.name() if nv else None, "dtype": a.dtype, "batch": b, "prompt_tokens": x.shape[1],
        "new_tokens": t, "load_s": load_s, "checks": checks, "runs": len(runs),
        "ttft_s": [tt for tt, _ in runs], "decode_s": [dd for _, dd in runs],
        "ttft_mean_s": statistics.mean(tt for tt, _ in runs),
        "tokens_per_s_decode": statistics.mean(decode_tps), "tokens_per_s_decode_ci95": ci95(decode_tps),
        "tokens_per_s_output": statistics.mean(output_tps), "tokens_per_s_output_ci95": ci95(output_tps),
        "block_s": block_s, "block_j": block_j, "energy_basis": "block of back-to-back runs",
        "idle_w": idle_w, "idle_w_before": idle_before, "idle_w_after": idle_after,
        "j_per_token": block_j / tokens if block_j is not None else None,
        "j_per_token_above_idle": (block_j - idle_w * block_s) / tokens if block_j is not None and idle_w is not None else None,
        "tokens": graph_tokens,
    }
    json.dump(res, open(a.out, "w"), indent=1)
    print(json.dumps({k: v for k, v in res.items() if k not in ("tokens", "ttft_s", "decode_s")}))


if __name__ == "__main__":
    main()
