"""Operand capture from PyTorch models, in perfwatt's `.ops` format.

`ops` writes and reads `.ops` operand streams (the standard library only): the format of
perfwatt's `src/trace.rs`, version 1. `hooks.Capture` puts forward hooks on a model's
`nn.Linear` layers and samples the operand pairs they multiply (seeded reservoir sampling
over calls, positions and batch rows), in the layer's own number format, laid out as
`perfwatt infer --capture` lays out its streams, so that `perfwatt sim --operands` and
`perfwatt gemm-energy --operands` take them.

    from perfwatt_capture import Capture
    with Capture(model, match=["q_proj", "down_proj"], vectors=8, rows=4, seed=0) as cap:
        model(**inputs)
    cap.write_ops("traces/mine.ops", source="my model, my prompt")
"""
from .ops import ELEM_FORMATS, OpsStream, read_ops, write_ops

__all__ = ["ELEM_FORMATS", "OpsStream", "read_ops", "write_ops", "Capture"]


def __getattr__(name):
    # The hooks need torch; the writer does not, so torch is imported only when asked for.
    if name == "Capture":
        from .hooks import Capture
        return Capture
    raise AttributeError(name)
