"""`.ops` operand streams: perfwatt's format (src/trace.rs), version 1, little-endian.

    magic "PWOPS\\r\\n\\x1a" | version u16 = 1 | width u8 (8 or 16) | reserved u8 = 0
    count u64 (pairs) | meta_len u32 | meta JSON | pairs a0 b0 a1 b1 ... | crc32 u32

Values are signed integers of `width` bits, or for bf16/f16 their 16-bit patterns (stored
as signed 16-bit). `meta.format` names each operand's number format; `meta.segments` the
dot products (`dot_len`) of each captured layer. CRC-32 (IEEE) covers every byte before it.
"""
import json
import struct
import zlib
from dataclasses import dataclass, field

MAGIC = b"PWOPS\r\n\x1a"
VERSION = 1
# Format -> (storage bits, integer range or None for floating point), as src/trace.rs.
ELEM_FORMATS = {
    "i4": (8, (-8, 7)),
    "u4": (8, (0, 15)),
    "i8": (8, (-128, 127)),
    "i16": (16, (-32768, 32767)),
    "bf16": (16, None),
    "f16": (16, None),
}


@dataclass
class OpsStream:
    a_format: str
    b_format: str
    a: list  # activations (ints: values or 16-bit patterns as signed)
    b: list  # weights
    meta: dict = field(default_factory=dict)

    @property
    def width(self):
        return max(ELEM_FORMATS[self.a_format][0], ELEM_FORMATS[self.b_format][0])


def _check(values, fmt, which):
    bits, rng = ELEM_FORMATS[fmt]
    lo, hi = rng if rng else (-32768, 32767)
    for i, v in enumerate(values):
        if not (lo <= v <= hi):
            raise ValueError(f"{which}[{i}] = {v} does not fit {fmt}")


def to_bytes(s: OpsStream, arithmetic: str) -> bytes:
    """The file's bytes; `arithmetic` names the kernel's arithmetic (recorded in meta.format)."""
    if s.a_format not in ELEM_FORMATS or s.b_format not in ELEM_FORMATS:
        raise ValueError(f"formats {s.a_format} x {s.b_format}: known are {sorted(ELEM_FORMATS)}")
    if len(s.a) != len(s.b):
        raise ValueError(f"{len(s.a)} activations but {len(s.b)} weights")
    _check(s.a, s.a_format, "a")
    _check(s.b, s.b_format, "b")
    meta = dict(s.meta)
    meta["format"] = {"a": s.a_format, "b": s.b_format, "arithmetic": arithmetic}
    # Compact and UTF-8, as serde_json writes it: perfwatt re-encodes such a file byte for byte.
    m = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()
    width = s.width
    head = MAGIC + struct.pack("<HBBQI", VERSION, width, 0, len(s.a), len(m)) + m
    code = "b" if width == 8 else "h"
    body = bytearray(len(s.a) * 2 * (width // 8))
    inter = [v for pair in zip(s.a, s.b) for v in pair]
    struct.pack_into(f"<{len(inter)}{code}", body, 0, *inter)
    data = head + bytes(body)
    return data + struct.pack("<I", zlib.crc32(data) & 0xFFFFFFFF)


def write_ops(path, s: OpsStream, arithmetic: str):
    """Write atomically (a temp file in the same folder, then rename)."""
    import os
    import tempfile
    data = to_bytes(s, arithmetic)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".ops.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_ops(path) -> OpsStream:
    """Read a stream back; a corrupt or truncated file is a ValueError saying why."""
    data = open(path, "rb").read()
    if data[:8] != MAGIC:
        raise ValueError(f"{path}: not an .ops operand stream (bad magic)")
    if len(data) < 28:
        raise ValueError(f"{path}: truncated ({len(data)} bytes)")
    version, width, _, count, mlen = struct.unpack_from("<HBBQI", data, 8)
    if version != VERSION or width not in (8, 16):
        raise ValueError(f"{path}: version {version} / width {width} unsupported")
    start = 24 + mlen
    end = start + count * 2 * (width // 8)
    if len(data) != end + 4:
        raise ValueError(f"{path}: {len(data)} bytes, header says {end + 4}")
    (crc,) = struct.unpack_from("<I", data, end)
    if zlib.crc32(data[:end]) & 0xFFFFFFFF != crc:
        raise ValueError(f"{path}: CRC mismatch (corrupt)")
    meta = json.loads(data[24:start])
    vals = struct.unpack_from(f"<{2 * count}{'b' if width == 8 else 'h'}", data, start)
    fmt = meta.get("format", {})
    default = "i8" if width == 8 else "i16"
    return OpsStream(fmt.get("a", default), fmt.get("b", default), list(vals[0::2]), list(vals[1::2]), meta)
