#!/usr/bin/env python3
"""Fixtures for tests/gpu_quant.rs: for every type with GPU kernels, a small random tensor in GGUF block layout and
its dequantization by gguf-py (`gguf.quants.dequantize`; Q8_K, which gguf-py lacks, as ggml defines it: d * q).

Each file tests/fixtures/gpu_quant/<TYPE>.bin holds: u32 n_rows, u32 n_cols, u32 n_bytes (little-endian), the
n_bytes of blocks, then n_rows * n_cols f32 values. Quant bytes are random with small finite f16 scales; plain
types hold values in [-1, 1). Plain types use 43 columns (rows 2 bytes off a 4-byte boundary, a 3-element tail).

Usage: python3 scripts/make_gpu_quant_fixtures.py   (from the repository root; needs `pip install gguf numpy`)
"""
import struct
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, quants

OUT = Path("tests/fixtures/gpu_quant")
N_ROWS = 3
# byte offsets of the f16 scale fields (d, and dmin / m) in each block
F16_FIELDS = {"Q4_0": [0], "Q5_0": [0], "Q8_0": [0], "Q4_1": [0, 2], "Q5_1": [0, 2], "Q4_K": [0, 2], "Q5_K": [0, 2],
              "Q2_K": [80, 82], "Q3_K": [108], "Q6_K": [208]}


def tensor(name, rng):
    t = getattr(T, name)
    bs, ts = GGML_QUANT_SIZES[t]
    if name in ("F32", "F16", "BF16"):
        n_cols = 43
        v = rng.uniform(-1, 1, N_ROWS * n_cols).astype(np.float32)
        if name == "F32":
            raw = v.view(np.uint8)
        elif name == "F16":
            raw = v.astype(np.float16).view(np.uint8)
        else:
            raw = (v.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    else:
        n_cols = 2 * 256 if bs == 256 else 5 * 32
        nb = N_ROWS * n_cols // bs
        blocks = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
        for o in F16_FIELDS.get(name, []):
            d = (rng.uniform(-1, 1, nb) / 16).astype(np.float16)
            blocks[:, o:o + 2] = d.view(np.uint8).reshape(nb, 2)
        if name == "Q8_K":
            d = (rng.uniform(-1, 1, nb) / 16).astype(np.float32)
            blocks[:, 0:4] = d.view(np.uint8).reshape(nb, 4)
        raw = blocks.reshape(-1)
    if name == "Q8_K":
        b = raw.reshape(-1, ts)
        d = b[:, 0:4].copy().view(np.float32)
        q = b[:, 4:260].copy().view(np.int8).astype(np.float32)
        out = (d * q).reshape(-1)
    else:
        out = quants.dequantize(raw, t).astype(np.float32).reshape(-1)
    assert out.size == N_ROWS * n_cols and np.all(np.isfinite(out)), name
    return n_cols, raw.tobytes(), out


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261123)
    for name in ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                 "Q6_K", "Q8_K"]:
        n_cols, raw, out = tensor(name, rng)
        path = OUT / f"{name}.bin"
        path.write_bytes(struct.pack("<3I", N_ROWS, n_cols, len(raw)) + raw + out.astype("<f4").tobytes())
        print(path, N_ROWS, n_cols, len(raw))


if __name__ == "__main__":
    main()
