#!/usr/bin/env python3
"""Write the quantization fixtures of tests/quant_gguf_py.rs with gguf-py (PyPI `gguf`), at development time.

For every type: random blocks (random bytes, f16/f32 scale fields replaced by small finite values) and, where the
real models hold that type, the first blocks of a real tensor. Each case is two files in tests/fixtures/quant/:
  NAME.q    the block bytes
  NAME.f32  gguf-py's dequantization (gguf.quants.dequantize), little-endian f32
and for the types gguf-py can quantize, NAME.src.f32 (random input) and NAME.quant (gguf.quants.quantize bytes).

Usage: python3 scripts/make_quant_fixtures.py [models/SmolLM2-135M-Instruct.Q4_1.gguf models/gemma-3-270m-q4_k_m.gguf]
"""
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFReader, quants
from gguf.constants import GGML_QUANT_SIZES

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "quant")
RNG = np.random.default_rng(20261123)

# byte offsets of the f16 scale fields inside each block (all other bytes are quants / packed scales)
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_K]


def dequant(data: np.ndarray, qt) -> np.ndarray:
    if qt == T.Q8_K:  # gguf-py has no Q8_K; its definition is d (f32) * qs (i8), computed the same way here
        blocks = data.reshape(-1, 292)
        d = blocks[:, :4].copy().view(np.float32)
        qs = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        return (d * qs).reshape(-1)
    return quants.dequantize(data, qt).reshape(-1).astype(np.float32)


def random_blocks(qt, n_blocks: int) -> np.ndarray:
    bs, ts = GGML_QUANT_SIZES[qt]
    if qt in (T.F32, T.F16, T.BF16):
        x = RNG.standard_normal(n_blocks * 64).astype(np.float32)
        if qt == T.F32:
            return x.view(np.uint8)
        if qt == T.F16:
            return x.astype(np.float16).view(np.uint8)
        return (x.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    raw = RNG.integers(0, 256, size=(n_blocks, ts), dtype=np.uint8)
    for off in F16_FIELDS.get(qt, []):
        scales = (RNG.standard_normal(n_blocks) * 0.02).astype(np.float16)
        raw[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    if qt == T.Q8_K:
        raw[:, 0:4] = (RNG.standard_normal(n_blocks) * 0.01).astype(np.float32).view(np.uint8).reshape(n_blocks, 4)
    return raw.reshape(-1)


def write(name: str, q: np.ndarray, f: np.ndarray):
    q.astype(np.uint8).tofile(os.path.join(OUT, name + ".q"))
    f.astype("<f4").tofile(os.path.join(OUT, name + ".f32"))


def main():
    os.makedirs(OUT, exist_ok=True)
    for qt in TYPES:
        n_blocks = 8 if GGML_QUANT_SIZES[qt][0] == 256 else 32
        q = random_blocks(qt, n_blocks)
        write(f"random_{qt.name}", q, dequant(q, qt))
        if qt in (T.Q8_0, T.Q4_0, T.Q4_1):
            x = (RNG.standard_normal(512) * 0.5).astype(np.float32)
            x.astype("<f4").tofile(os.path.join(OUT, f"quantize_{qt.name}.src.f32"))
            quants.quantize(x.reshape(1, -1), qt).reshape(-1).tofile(os.path.join(OUT, f"quantize_{qt.name}.quant"))
    for path in sys.argv[1:]:
        model = os.path.basename(path).split("-")[0].split(".")[0].lower()
        seen = set()
        for t in GGUFReader(path).tensors:
            qt = T(t.tensor_type)
            if qt in seen or qt not in TYPES:
                continue
            seen.add(qt)
            bs, ts = GGML_QUANT_SIZES[qt]
            n = 8 * 256 if bs == 256 else 256  # elements taken from the tensor's start
            raw = np.asarray(t.data).reshape(-1).view(np.uint8)[: n // bs * ts]
            write(f"real_{model}_{qt.name}", raw, dequant(raw, qt))
            print(f"{path}: {t.name} {qt.name}")


if __name__ == "__main__":
    main()
