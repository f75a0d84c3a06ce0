#!/usr/bin/env python3
"""Make the quantization fixtures of tests/quant.rs with gguf-py (PyPI `gguf`) and numpy.

For every type the engine computes, it writes block bytes and their f32 dequantization:
  * random blocks: random bytes whose scale fields hold random *finite* f16 (or f32) values, covering the whole
    f16 range (subnormals, negatives, up to 65504);
  * real blocks taken from the SmolLM2-135M Q4_1 and Gemma-3-270M Q4_K_M files (read with gguf.GGUFReader),
    when those files are present.
The f32 output is gguf-py's `gguf.quants.dequantize`. gguf-py has no Q8_1 or Q8_K dequantizer (and its size
table has the old 40-byte Q8_1); for those two the output is a numpy port of ggml's `dequantize_row_q8_{1,K}`
(x = q * d, one f32 product per element, so the operation order cannot differ).

It also writes quantization cases: f32 inputs (random with varied block scales, hand-made edge blocks and real
weights) and gguf-py's `gguf.quants.quantize` bytes for F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, plus a numpy port
of ggml's `quantize_row_q8_K_ref` for Q8_K (gguf-py has none).

Files (little-endian): <name>.q = block bytes, <name>.f32 = f32 values, listed in manifest.txt as
  dequant <TYPE> <source> <n_elements> <name>     (.q -> .f32 is the expected dequantization)
  quantize <TYPE> <source> <n_elements> <name>    (.f32 -> .q is the expected quantization)

Usage: python3 scripts/make_quant_fixtures.py [models_dir] (default: models/)
"""

import os
import sys

from importlib.metadata import version

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "quant")
MODELS = sys.argv[1] if len(sys.argv) > 1 else "models"
SMOL = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")
GEMMA = os.path.join(MODELS, "gemma-3-270m-q4_k_m.gguf")

# (type, elements per block, bytes per block) as ggml has them (gguf-py's Q8_1 size is stale: 36, not 40)
SIZES = {
    T.F32: (1, 4), T.F16: (1, 2), T.BF16: (1, 2),
    T.Q4_0: (32, 18), T.Q4_1: (32, 20), T.Q5_0: (32, 22), T.Q5_1: (32, 24), T.Q8_0: (32, 34), T.Q8_1: (32, 36),
    T.Q2_K: (256, 84), T.Q3_K: (256, 110), T.Q4_K: (256, 144), T.Q5_K: (256, 176), T.Q6_K: (256, 210),
    T.Q8_K: (256, 292),
}
# byte offsets of the f16 scale fields in each block (gpu-kernels/src/blocks.rs)
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.Q8_1: [0, 2],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}

rng = np.random.default_rng(20240604)
manifest = []


def write(kind, ty, source, n, name, q_bytes, f32_values):
    q_bytes = np.ascontiguousarray(q_bytes, dtype=np.uint8)
    f32_values = np.ascontiguousarray(f32_values, dtype=np.float32)
    assert f32_values.size == n, (name, f32_values.size, n)
    block, size = SIZES[ty]
    assert q_bytes.size == n // block * size, (name, q_bytes.size)
    q_bytes.tofile(os.path.join(OUT, name + ".q"))
    f32_values.astype("<f4").tofile(os.path.join(OUT, name + ".f32"))
    manifest.append(f"{kind} {ty.name} {source} {n} {name}")


def finite_f16_bits(n):
    """Random f16 bit patterns that are not inf / NaN (every sign, exponent and mantissa otherwise)."""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    bad = ((bits >> 10) & 0x1F) == 0x1F
    while bad.any():
        bits[bad] = rng.integers(0, 1 << 16, size=int(bad.sum()), dtype=np.uint32).astype(np.uint16)
        bad = ((bits >> 10) & 0x1F) == 0x1F
    return bits


def finite_f32_bits(n):
    bits = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32)
    bad = ((bits >> 23) & 0xFF) == 0xFF
    bits[bad] &= np.uint32(0xBFFFFFFF)  # clear the top exponent bit: finite
    return bits


def reference_dequant(ty, blocks):
    """Expected f32 of (n_blocks, type_size) bytes: gguf-py, or a numpy port of ggml where gguf-py has none."""
    if ty == T.Q8_1:  # d f16, s f16, qs[32]
        d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
        return (blocks[:, 4:].view(np.int8).astype(np.float32) * d).reshape(-1)
    if ty == T.Q8_K:  # d f32, qs[256], bsums[16]
        d = blocks[:, 0:4].copy().view(np.float32)
        with np.errstate(over="ignore"):  # huge random d: inf on both sides
                return (d * blocks[:, 4:260].view(np.int8).astype(np.float32)).reshape(-1)
    if ty in (T.F32, T.F16, T.BF16):
        return dequantize(blocks.reshape(-1).copy(), ty).reshape(-1)
    return dequantize(blocks, ty).reshape(-1)


def random_blocks(ty, n_blocks):
    block, size = SIZES[ty]
    if ty == T.F32:
        return finite_f32_bits(n_blocks).view(np.uint8).reshape(n_blocks, 4)
    if ty == T.F16:
        return finite_f16_bits(n_blocks).view(np.uint8).reshape(n_blocks, 2)
    if ty == T.BF16:
        # bf16 = top half of an f32: keep the exponent below all-ones
        bits = (finite_f32_bits(n_blocks) >> 16).astype(np.uint16)
        return bits.view(np.uint8).reshape(n_blocks, 2)
    b = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint16).astype(np.uint8)
    if ty == T.Q8_K:
        b[:, 0:4] = finite_f32_bits(n_blocks).view(np.uint8).reshape(n_blocks, 4)
    for off in F16_FIELDS.get(ty, []):
        b[:, off:off + 2] = finite_f16_bits(n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return b


def dequant_cases():
    for ty in SIZES:
        block, size = SIZES[ty]
        n_blocks = 512 if block == 1 else (24 if block == 32 else 6)
        b = random_blocks(ty, n_blocks)
        write("dequant", ty, "random", n_blocks * block, f"dequant_{ty.name}_random", b, reference_dequant(ty, b))


def real_blocks(path, label, picks):
    """`picks`: {type: (tensor names, number of blocks)}; blocks are drawn at random positions of the tensors."""
    if not os.path.exists(path):
        print(f"skipping {label}: {path} not found", file=sys.stderr)
        return
    r = gguf.GGUFReader(path)
    tensors = {t.name: t for t in r.tensors}
    for ty, (names, n_blocks) in picks.items():
        block, size = SIZES[ty]
        chosen = []
        for i, name in enumerate(names):
            t = tensors[name]
            assert t.tensor_type == ty, (name, t.tensor_type)
            raw = np.asarray(t.data).view(np.uint8).reshape(-1, size)
            k = n_blocks // len(names) + (1 if i < n_blocks % len(names) else 0)
            idx = np.sort(rng.choice(raw.shape[0], size=k, replace=False))
            chosen.append(raw[idx])
        b = np.concatenate(chosen)
        write("dequant", ty, label, b.shape[0] * block, f"dequant_{ty.name}_{label}", b, reference_dequant(ty, b))


def quantize_cases(real_rows):
    n_blocks = 28  # + 4 edge blocks = 1024 values, four Q8_K super-blocks
    # random: normal values with a different magnitude per 32-element group, then hand-made edge blocks
    x = rng.standard_normal((n_blocks, 32)).astype(np.float32) * (10.0 ** rng.uniform(-4, 3, (n_blocks, 1)))
    x = x.astype(np.float32).reshape(-1)
    edge = np.zeros((4, 32), np.float32)          # block 0: all zeros
    edge[1] = 0.75                                # block 1: constant (Q4_1 / Q5_1 scale 0)
    edge[2, :] = np.arange(32) - 15.5             # block 2: q8 ties: amax 127 below makes d = 1, x * id = k + 0.5
    edge[2, 0] = 127.0
    edge[3, :] = np.arange(32) * 0.5 - 8.0        # block 3: max magnitude -8 at element 0: Q4_0 d = 1, exact .5
    x = np.concatenate([x, edge.reshape(-1)]).astype(np.float32)
    sources = [("random", x)]
    if real_rows is not None:
        sources.append(("real", real_rows))
    for source, data in sources:
        data = data[: data.size // 256 * 256].astype(np.float32)
        for ty in (T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
            q = quantize(data.reshape(1, -1), ty).view(np.uint8).reshape(-1)
            write("quantize", ty, source, data.size, f"quantize_{ty.name}_{source}", q, data)
        write("quantize", T.Q8_K, source, data.size, f"quantize_Q8_K_{source}", quantize_q8_k(data), data)


def quantize_q8_k(x):
    """numpy port of ggml's quantize_row_q8_K_ref (gguf-py has no Q8_K quantizer)."""
    out = []
    for blk in x.reshape(-1, 256):
        b = np.zeros(292, np.uint8)
        a = np.abs(blk)
        if a.max() == 0:
            out.append(b)
            continue
        mx = blk[np.argmax(a)]
        iscale = np.float32(-127.0) / mx
        q = np.minimum(np.rint(iscale * blk), 127).astype(np.int8)  # nearest_int rounds half to even
        b[0:4] = np.array([np.float32(1.0) / iscale], np.float32).view(np.uint8)
        b[4:260] = q.view(np.uint8)
        b[260:292] = q.reshape(16, 16).astype(np.int32).sum(axis=1).astype(np.int16).view(np.uint8)
        out.append(b)
    return np.concatenate(out)


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith((".q", ".f32")) or f == "manifest.txt":
            os.remove(os.path.join(OUT, f))
    dequant_cases()
    real_blocks(SMOL, "smollm2", {
        T.Q4_1: (["blk.0.attn_q.weight", "blk.7.ffn_down.weight", "blk.29.ffn_gate.weight"], 48),
        T.Q8_0: (["token_embd.weight"], 48),
        T.F32: (["output_norm.weight"], 576),
    })
    real_blocks(GEMMA, "gemma3", {
        T.Q4_K: (["blk.0.attn_output.weight", "blk.5.ffn_down.weight"], 12),
        T.Q6_K: (["blk.0.ffn_down.weight", "blk.17.ffn_down.weight"], 12),
        T.Q5_0: (["blk.0.attn_k.weight", "blk.3.ffn_up.weight"], 48),
        T.Q8_0: (["token_embd.weight", "blk.0.attn_v.weight"], 48),
        T.F32: (["blk.0.attn_norm.weight"], 640),
    })
    real_rows = None
    if os.path.exists(SMOL):
        # real weights to quantize: two embedding rows of SmolLM2, dequantized (576 * 2 = 1152 values)
        t = next(t for t in gguf.GGUFReader(SMOL).tensors if t.name == "token_embd.weight")
        real_rows = dequantize(np.asarray(t.data)[[100, 30000]], T.Q8_0).reshape(-1)
    quantize_cases(real_rows)
    with open(os.path.join(OUT, "manifest.txt"), "w") as f:
        f.write("# made by scripts/make_quant_fixtures.py (gguf-py %s, numpy %s)\n"
                % (version("gguf"), np.__version__))
        f.write("# kind type source n_elements name\n")
        f.write("\n".join(manifest) + "\n")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"{len(manifest)} cases, {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
