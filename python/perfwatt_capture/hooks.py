"""Forward hooks on `nn.Linear` layers that sample the operand pairs they multiply.

In: a torch model and which of its `nn.Linear` layers to watch. While the `Capture` is
entered, every forward call of a watched layer offers each of its input vectors (calls x
positions x batch rows) to a seeded reservoir (Algorithm R, one per layer, seed derived
from the capture seed and the layer's name), so every vector seen has the same chance to
be kept whatever the number of calls. Out: `write_ops` lays the kept vectors against `rows`
evenly spaced weight rows as `perfwatt infer --capture` does (per layer, for each vector,
for each weight row j, for i in 0..K: (x_i, w_ji)) in the layer's own format: bf16 and f16
as their bit patterns, f32 rounded to bf16 (round to nearest even, said in the metadata),
or with `int8=True` int8 x int8 under symmetric per-tensor scales (perfwatt's int8
fallback). `write_npy` writes each layer's kept activations and full weight as `.npy`
pairs for `perfwatt gemm-energy --operands`.
"""
import random
import zlib

import torch

from .ops import OpsStream, write_ops


class _Layer:
    def __init__(self, name, module, seed):
        self.name, self.module = name, module
        self.seen, self.kept = 0, []
        self.rng = random.Random(seed * 1_000_003 + zlib.crc32(name.encode()))


class Capture:
    def __init__(self, model, match=None, vectors=8, rows=4, seed=0, int8=False, skip_positions=0):
        """Watch the `nn.Linear` layers of `model` whose qualified name contains any string
        of `match` (all of them when None); keep `vectors` input vectors per layer and pair
        them with `rows` weight rows. `skip_positions` drops the first N positions of every
        call longer than N (a prompt's chat template, as `perfwatt infer --capture` does);
        shorter calls (decode steps) are kept whole."""
        self.vectors, self.rows, self.seed, self.int8 = vectors, rows, seed, int8
        self.skip = skip_positions
        self.layers = [
            _Layer(n, m, seed)
            for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and (match is None or any(s in n for s in match))
        ]
        if not self.layers:
            names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
            raise ValueError(f"no nn.Linear layer matches {match}; the model has {names[:8]}...")
        self.model_name = type(model).__name__
        self._handles = []

    def __enter__(self):
        self._handles = [l.module.register_forward_hook(self._hook(l)) for l in self.layers]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        return False

    def _hook(self, layer):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            if x.dim() >= 2 and x.shape[-2] > self.skip:
                x = x[..., self.skip:, :]
            for v in x.reshape(-1, x.shape[-1]):
                layer.seen += 1
                if len(layer.kept) < self.vectors:
                    layer.kept.append(v.clone())
                else:
                    j = layer.rng.randrange(layer.seen)
                    if j < self.vectors:
                        layer.kept[j] = v.clone()
        return hook

    def _format(self, dtype):
        """(format name, precision label, arithmetic) of a layer of `dtype`."""
        if self.int8:
            return "i8", "int8", f"int8 x int8: a {dtype} nn.Linear under symmetric per-tensor scales (round to nearest even)"
        if dtype == torch.bfloat16:
            return "bf16", "bf16", "bf16 x bf16: PyTorch nn.Linear in bf16"
        if dtype == torch.float16:
            return "f16", "f16", "f16 x f16: PyTorch nn.Linear in f16"
        if dtype == torch.float32:
            return "bf16", "f32 rounded to bf16", "f32 x f32 PyTorch nn.Linear, operands rounded to bf16 (round to nearest even)"
        raise ValueError(f"nn.Linear of dtype {dtype}: bf16, f16, f32 or int8=True")

    def _encode(self, layer):
        """(activations (vectors x K), weight (N x K), format, scales) as the stream holds them:
        integers (int8) or 16-bit patterns."""
        w = layer.module.weight.detach()
        x = torch.stack(layer.kept).to(w.device)
        fmt, _, _ = self._format(w.dtype)
        if fmt == "i8":
            def q(t):
                s = float(t.float().abs().max()) / 127 or 1.0
                return torch.round(t.float() / s).clamp(-127, 127).to(torch.int16), s
            (xq, sx), (wq, sw) = q(x), q(w)
            return xq, wq, fmt, {"scale_a": sx, "scale_b": sw}
        dt = torch.float16 if fmt == "f16" else torch.bfloat16
        return x.to(dt).view(torch.int16), w.to(dt).view(torch.int16), fmt, {}

    def stream(self, source=""):
        """The captured pairs of every watched layer that saw input, as one `OpsStream`."""
        a, b, segments, formats = [], [], [], set()
        for layer in self.layers:
            if not layer.kept:
                continue
            xq, wq, fmt, scales = self._encode(layer)
            formats.add((fmt,) + self._format(layer.module.weight.dtype)[1:])
            n_out, k = wq.shape
            rows = [j * n_out // self.rows for j in range(min(self.rows, n_out))]
            start = len(a)
            xs, ws = xq.cpu().tolist(), wq[rows].cpu().tolist()
            for xv in xs:
                for wv in ws:
                    a.extend(xv)
                    b.extend(wv)
            n = len(a) - start
            zero = (lambda v: v == 0) if fmt == "i8" else (lambda v: v & 0x7FFF == 0)
            segments.append({
                "layer": layer.name, "proj": layer.name.rsplit(".", 1)[-1], "start": start, "pairs": n,
                "dot_len": k, "vectors": len(xs), "vectors_seen": layer.seen, "rows": rows,
                "a_zero_fraction": sum(zero(v) for v in a[start:]) / n if n else 0.0,
                "dtype": str(layer.module.weight.dtype).replace("torch.", ""), **scales,
            })
        if not segments:
            raise ValueError("no watched layer ran a forward pass inside the Capture")
        if len(formats) > 1:
            raise ValueError(f"watched layers differ in format {sorted(formats)}: capture them apart")
        fmt, precision, arithmetic = formats.pop()
        meta = {
            "source": source or f"perfwatt_capture (PyTorch {torch.__version__}): {self.model_name}",
            "capture": f"perfwatt_capture, PyTorch {torch.__version__}",
            "precision": precision,
            "segments": segments,
            "sampling": f"reservoir per layer (Algorithm R), seed {self.seed}, over every input vector of every forward call: calls, positions, batch rows",
            "order": "per segment: for each activation vector, for each weight row j, for i in 0..dot_len: (x_i, w_ji)",
        }
        if fmt == "i8":
            meta["quantization"] = "symmetric int8, per-tensor scale, round to nearest even"
        return OpsStream(fmt, fmt, a, b, meta), arithmetic

    def write_ops(self, path, source=""):
        s, arithmetic = self.stream(source)
        write_ops(path, s, arithmetic)
        return s

    def write_npy(self, folder):
        """Per watched layer, FOLDER/NAME.A.npy (kept activations, M = vectors x K) and
        NAME.B.npy (the weight transposed, K x N: `gemm-energy --operands A B` computes
        A B), as the stream's values: int8, or the 16-bit format's values widened to
        float32. Returns the (A, B) paths."""
        import os
        import numpy as np
        os.makedirs(folder, exist_ok=True)
        out = []
        for layer in self.layers:
            if not layer.kept:
                continue
            xq, wq, fmt, _ = self._encode(layer)
            dt = {"i8": None, "f16": torch.float16, "bf16": torch.bfloat16}[fmt]
            as_np = (lambda t: t.to(torch.int8).cpu().numpy()) if dt is None else (lambda t: t.view(dt).float().cpu().numpy())
            pa, pb = (os.path.join(folder, f"{layer.name}.{s}.npy") for s in "AB")
            np.save(pa, as_np(xq))
            np.save(pb, as_np(wq).T.copy())
            out.append((pa, pb))
        return out
