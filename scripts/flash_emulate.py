"""CPU emulation of the tensor-core flash attention (gpu-kernels/src/attention.rs, `attention_flash`), for checking
its index logic on a machine without a GPU: every block and warp is replayed with the kernel's index formulas
(cp.async tile copies, q staging, ldmatrix lane addresses, the masks and the online softmax), ldmatrix (plain and
.trans) and mma.sync.m16n8k16 fragments as the PTX ISA defines them, f16 rounding as cvt.rn, and the result is
compared with an independent float64 reference of causal GQA attention. Phases run in barrier order (all warps'
S, then the next key tile, all warps' P V, then the next value tile), so races are not modelled.

Usage: python3 scripts/flash_emulate.py            (the built-in cases)
       python3 scripts/flash_emulate.py 9,3,64,70,30,0,3   (n_heads,n_kv,head_dim,n_tok,pos0,window,heads_per_block)
"""
import sys
import numpy as np

ROWS, KEYS, THREADS = 64, 64, 128
LANE = np.arange(32)


def row_bytes(d): return (d + 8) * 2
def off_k(d): return ROWS * row_bytes(d)
def off_v(d): return off_k(d) + KEYS * row_bytes(d)
def smem_bytes(d, dv): return off_v(d) + KEYS * row_bytes(dv)


class Smem:
    def __init__(s, n):
        # garbage (NaN f16 patterns) where nothing was written, as uninitialised shared memory may hold
        s.b = np.full(n, 0xFF, dtype=np.uint8)

    def st16(s, a, halfs):  # 16 bytes = 8 f16 (np.float16 array)
        assert a % 16 == 0 and a + 16 <= len(s.b), a
        s.b[a:a + 16] = np.asarray(halfs, dtype=np.float16).view(np.uint8)

    def u32(s, addrs):
        addrs = np.asarray(addrs)
        assert (addrs % 4 == 0).all() and (addrs + 4 <= len(s.b)).all()
        w = s.b.view(np.uint32)
        return w[addrs // 4]


def halves(w):
    """u32 array -> (low f16, high f16) as float32."""
    w = np.asarray(w, dtype=np.uint32)
    lo = (w & 0xFFFF).astype(np.uint16).view(np.float16).astype(np.float32)
    hi = (w >> 16).astype(np.uint16).view(np.float16).astype(np.float32)
    return lo, hi


def pack(lo, hi):
    """cvt.rn.f16x2.f32 d, hi, lo: lo in bits 0..16."""
    l = np.asarray(lo, dtype=np.float32).astype(np.float16).view(np.uint16).astype(np.uint32)
    h = np.asarray(hi, dtype=np.float32).astype(np.float16).view(np.uint16).astype(np.uint32)
    return l | (h << 16)


def ldsm_x4(sm, addr):
    """ldmatrix .x4: lane l gives the address of row l % 8 of matrix l // 8; receives word l % 4 of row l // 4."""
    addr = np.asarray(addr)
    out = np.zeros((32, 4), dtype=np.uint32)
    for i in range(4):
        rows = addr[8 * i + LANE // 4]
        out[:, i] = sm.u32(rows + 4 * (LANE % 4))
    return out


def ldsm_x4_trans(sm, addr):
    """ldmatrix .x4 .trans: lane l receives elements (row 2 (l % 4), col l // 4) and (row 2 (l % 4) + 1, same col)."""
    addr = np.asarray(addr)
    out = np.zeros((32, 4), dtype=np.uint32)
    for i in range(4):
        r0 = addr[8 * i + 2 * (LANE % 4)]
        r1 = addr[8 * i + 2 * (LANE % 4) + 1]
        col = LANE // 4
        # element col of a row: the half at byte 2 col
        def elem(rows):
            w = sm.u32(rows + 4 * (col // 2))
            return np.where(col % 2 == 0, w & 0xFFFF, w >> 16).astype(np.uint32)
        out[:, i] = elem(r0) | (elem(r1) << 16)
    return out


def mma(a, b, c):
    """mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 for 32 lanes' fragments: a (32, 4) u32, b (32, 2) u32,
    c (32, 4) f32 -> d (32, 4) f32, per the PTX ISA fragment layouts (g = lane >> 2, t = lane & 3):
    A: a0 (g, 2t..2t+1), a1 (g + 8, 2t..), a2 (g, 2t + 8..), a3 (g + 8, 2t + 8..);
    B: b0 (rows 2t, 2t + 1; col g), b1 (rows 2t + 8, 2t + 9; col g);
    C/D: c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1)."""
    g, t = LANE >> 2, LANE & 3
    A = np.zeros((16, 16)); B = np.zeros((16, 8)); C = np.zeros((16, 8))
    for reg, (ro, co) in enumerate([(0, 0), (8, 0), (0, 8), (8, 8)]):
        lo, hi = halves(a[:, reg])
        A[g + ro, 2 * t + co] = lo
        A[g + ro, 2 * t + co + 1] = hi
    for reg, ro in enumerate([0, 8]):
        lo, hi = halves(b[:, reg])
        B[2 * t + ro, g] = lo
        B[2 * t + ro + 1, g] = hi
    for e, (ro, co) in enumerate([(0, 0), (0, 1), (8, 0), (8, 1)]):
        C[g + ro, 2 * t + co] = c[:, e]
    D = (A @ B + C).astype(np.float32)
    d = np.zeros((32, 4), dtype=np.float32)
    for e, (ro, co) in enumerate([(0, 0), (0, 1), (8, 0), (8, 1)]):
        d[:, e] = D[g + ro, 2 * t + co]
    return d


def shfl_xor(x, m):
    return x[LANE ^ m]


def kernel(out, q, k, v, pos0, n_tok, n_heads, n_kv, hpb, scale_log2, window, D, DV, grid):
    """One launch, block by block, as attention_flash::<D, DV>."""
    gx, gy = grid
    for bx in range(gx):
        for by in range(gy):
            block(out, q, k, v, pos0, n_tok, n_heads, n_kv, hpb, scale_log2, window, D, DV, bx, by, gy)


def block(out, q, k, v, pos0, n_tok, n_heads, n_kv, hpb, scale_log2, window, D, DV, bx, by, gy):
    grp = n_heads // n_kv
    nt = ROWS // hpb
    h0 = bx * hpb
    kvh = h0 // grp
    t0 = (gy - 1 - by) * nt
    t_end = min(t0 + nt, n_tok)
    p0 = pos0
    pos_first, pos_last = p0 + t0, p0 + t_end - 1
    lower = lambda p: p + 1 - window if window > 0 and p + 1 > window else 0
    lo, hi, lo_last = lower(pos_first), pos_last + 1, lower(pos_last)
    j0, j1 = lo // KEYS, (hi - 1) // KEYS
    sm = Smem(smem_bytes(D, DV))
    sq, sk, sv = 0, off_k(D), off_v(D)
    rq, rv = row_bytes(D), row_bytes(DV)
    k_stride, v_stride = n_kv * D, n_kv * DV
    kh, vh = kvh * D, kvh * DV  # element offsets

    def tile(dst, src, base, stride, dd, key0):
        cpr, rb = dd // 8, row_bytes(dd)
        for t in range(THREADS):
            for i in range(dd // 16):
                if THREADS % cpr == 0:
                    r0, cc, rstep = t // cpr, t % cpr, THREADS // cpr
                    r = r0 + rstep * i
                    d = dst + r0 * rb + 16 * cc + rstep * rb * i
                    o = base + (key0 + r0) * stride + 8 * cc + i * rstep * stride
                else:
                    c = t + THREADS * i
                    r, cc = c // cpr, c % cpr
                    d = dst + r * rb + 16 * cc
                    o = base + (key0 + r) * stride + 8 * cc
                if key0 + r < hi:
                    sm.st16(d, src[o:o + 8])
                else:
                    sm.st16(d, np.zeros(8, dtype=np.float16))

    tile(sk, k, kh, k_stride, D, j0 * KEYS)
    tile(sv, v, vh, v_stride, DV, j0 * KEYS)
    for t in range(THREADS):
        for i in range(D // 16):
            c = t + THREADS * i
            r, cc = c // (D // 8), c % (D // 8)
            tl, hl = r // hpb, r % hpb
            w = np.zeros(8, dtype=np.float16)
            if tl < nt and t0 + tl < n_tok:
                o = ((t0 + tl) * n_heads + h0 + hl) * D + 8 * cc
                w = q[o:o + 8].astype(np.float32).astype(np.float16)
            sm.st16(sq + r * rq + 16 * cc, w)

    g, tq = LANE >> 2, LANE & 3
    warps = []
    for warp in range(4):
        W = {}
        rpos, rlo, rout, rok = [], [], [], []
        for i in range(2):
            r = 16 * warp + g + 8 * i
            tl, hl = r // hpb, r % hpb
            rok.append((tl < nt) & (t0 + tl < n_tok))
            rpos.append(np.minimum(p0 + t0 + tl, pos_last))
            rlo.append(np.array([lower(p) for p in rpos[-1]]))
            rout.append(((t0 + tl) * n_heads + h0 + hl) * DV)
        W.update(rpos=rpos, rlo=rlo, rout=rout, rok=rok)
        W['q_lane'] = sq + (16 * warp + (LANE & 7) + 8 * ((LANE >> 3) & 1)) * rq + 16 * (LANE >> 4)
        W['k_lane'] = sk + ((LANE & 7) + 8 * (LANE >> 4)) * rq + 16 * ((LANE >> 3) & 1)
        W['v_lane'] = sv + ((LANE & 7) + 8 * ((LANE >> 3) & 1)) * rv + 16 * (LANE >> 4)
        W['o'] = [np.zeros((32, 4), dtype=np.float32) for _ in range(DV // 8)]
        W['m'] = [np.full(32, -np.inf, dtype=np.float32) for _ in range(2)]
        W['l'] = [np.zeros(32, dtype=np.float32) for _ in range(2)]
        warps.append(W)

    for j in range(j0, j1 + 1):
        key0 = j * KEYS
        for W in warps:
            s = [np.zeros((32, 4), dtype=np.float32) for _ in range(8)]
            for kk in range(D // 16):
                a = ldsm_x4(sm, W['q_lane'] + 32 * kk)
                for np_ in range(4):
                    b = ldsm_x4(sm, W['k_lane'] + 16 * np_ * rq + 32 * kk)
                    s[2 * np_] = mma(a, b[:, 0:2], s[2 * np_])
                    s[2 * np_ + 1] = mma(a, b[:, 2:4], s[2 * np_ + 1])
            full = key0 >= lo_last and key0 + KEYS - 1 <= pos_first
            base = key0 + 2 * tq
            lo_c = [W['rlo'][i] - base for i in range(2)]
            hi_c = [W['rpos'][i] - base for i in range(2)]
            mx = [W['m'][0].copy(), W['m'][1].copy()]
            for n in range(8):
                for e in range(4):
                    x = (s[n][:, e] * np.float32(scale_log2)).astype(np.float32)
                    c, i = 8 * n + e % 2, e // 2
                    ok = full | ((c >= lo_c[i]) & (c <= hi_c[i]))
                    s[n][:, e] = np.where(ok, x, -np.inf)
                    mx[i] = np.maximum(mx[i], s[n][:, e])
            mu, corr = [None, None], [None, None]
            for i in range(2):
                mx[i] = np.maximum(mx[i], shfl_xor(mx[i], 1))
                mx[i] = np.maximum(mx[i], shfl_xor(mx[i], 2))
                mu[i] = np.where(mx[i] == -np.inf, np.float32(0), mx[i])
                with np.errstate(invalid='ignore'):
                    corr[i] = np.exp2(W['m'][i] - mu[i]).astype(np.float32)
                W['m'][i] = mx[i]
                W['l'][i] = (W['l'][i] * corr[i]).astype(np.float32)
            for n in range(8):
                for e in range(4):
                    p = np.exp2(s[n][:, e] - mu[e // 2]).astype(np.float32)
                    s[n][:, e] = p
                    W['l'][e // 2] = (W['l'][e // 2] + p).astype(np.float32)
            for n in range(DV // 8):
                for e in range(4):
                    W['o'][n][:, e] *= corr[e // 2]
            W['pa'] = []
            for kk in range(4):
                x, y = s[2 * kk], s[2 * kk + 1]
                W['pa'].append(np.stack([pack(x[:, 0], x[:, 1]), pack(x[:, 2], x[:, 3]),
                                         pack(y[:, 0], y[:, 1]), pack(y[:, 2], y[:, 3])], axis=1))
        # barrier; next key tile
        if j < j1:
            tile(sk, k, kh, k_stride, D, key0 + KEYS)
        for W in warps:
            for kk in range(4):
                for dp in range(DV // 16):
                    b = ldsm_x4_trans(sm, W['v_lane'] + 16 * kk * rv + 32 * dp)
                    W['o'][2 * dp] = mma(W['pa'][kk], b[:, 0:2], W['o'][2 * dp])
                    W['o'][2 * dp + 1] = mma(W['pa'][kk], b[:, 2:4], W['o'][2 * dp + 1])
        # barrier; next value tile
        if j < j1:
            tile(sv, v, vh, v_stride, DV, key0 + KEYS)

    for W in warps:
        for i in range(2):
            l = W['l'][i]
            l = l + shfl_xor(l, 1)
            l = l + shfl_xor(l, 2)
            W['l'][i] = l
        for i in range(2):
            inv = np.float32(1) / W['l'][i]
            for lane in range(32):
                if not W['rok'][i][lane]:
                    continue
                row = W['rout'][i][lane] + 2 * tq[lane]
                for n in range(DV // 8):
                    out[row + 8 * n] = W['o'][n][lane, 2 * i] * inv[lane]
                    out[row + 8 * n + 1] = W['o'][n][lane, 2 * i + 1] * inv[lane]


def reference(q, k, v, n_tok, pos0, n_heads, n_kv, D, DV, scale, window):
    out = np.zeros(n_tok * n_heads * DV)
    grp = n_heads // n_kv
    for t in range(n_tok):
        pos = pos0 + t
        first = max(0, pos + 1 - window) if window > 0 else 0
        for h in range(n_heads):
            kvh = h // grp
            qh = q[(t * n_heads + h) * D:][:D].astype(np.float64)
            ks = k.reshape(-1, n_kv, D)[first:pos + 1, kvh].astype(np.float64)
            vs = v.reshape(-1, n_kv, DV)[first:pos + 1, kvh].astype(np.float64)
            sc = ks @ qh * scale
            p = np.exp(sc - sc.max())
            out[(t * n_heads + h) * DV:][:DV] = p @ vs / p.sum()
    return out


def run(n_heads, n_kv, D, n_tok, pos0, window, hpb, seed=1):
    DV = D
    rng = np.random.default_rng(seed)
    n_keys = pos0 + n_tok
    q = rng.uniform(-4, 4, n_tok * n_heads * D).astype(np.float32)
    k = rng.uniform(-1, 1, n_keys * n_kv * D).astype(np.float16)
    v = rng.uniform(-1, 1, n_keys * n_kv * DV).astype(np.float16)
    scale = 1 / np.sqrt(D)
    out = np.full(n_tok * n_heads * DV, np.nan, dtype=np.float32)
    nt = ROWS // hpb
    grid = (n_heads // hpb, -(-n_tok // nt))
    kernel(out, q, k, v, pos0, n_tok, n_heads, n_kv, hpb, np.float32(scale * np.log2(np.e)), window, D, DV, grid)
    want = reference(q, k, v, n_tok, pos0, n_heads, n_kv, D, DV, scale, window)
    err = np.abs(out - want).max() / np.abs(want).max() if np.isfinite(out).all() else float('nan')
    ok = err <= 2e-3
    print(f"heads {n_heads}/{n_kv} hd {D} n_tok {n_tok} pos0 {pos0} window {window} heads/block {hpb}: "
          f"error {err:.2e} of the output scale {'ok' if ok else 'FAIL'}", flush=True)
    return ok


CASES = [
    (2, 2, 64, 1, 0, 0, 1),
    (9, 3, 64, 5, 0, 0, 3),
    (9, 3, 64, 70, 30, 0, 3),
    (9, 3, 64, 70, 30, 0, 1),
    (4, 1, 128, 40, 100, 50, 4),
    (2, 1, 96, 65, 0, 0, 2),
    (2, 1, 256, 66, 63, 0, 2),
    (8, 1, 64, 20, 10, 7, 8),
    (2, 2, 64, 150, 20, 70, 1),
    (3, 1, 128, 100, 0, 0, 3),
]

if __name__ == '__main__':
    cases = [tuple(int(x) for x in a.split(',')) for a in sys.argv[1:]] or CASES
    results = [run(*c) for c in cases]
    sys.exit(0 if all(results) else 1)
