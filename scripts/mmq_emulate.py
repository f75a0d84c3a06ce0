"""CPU emulation of the int8 tensor-core mat-mul kernels (gpu-kernels/src/quant/mmq.rs), for checking their index
logic on a machine without a GPU: the kernel body is replayed thread by thread with the same index formulas and
decoders, ldmatrix / mma.sync fragments as the PTX ISA defines them, and compared with an independent reference
(llama.cpp CPU numerics, float64). Slow: small shapes only.

Usage: python3 scripts/mmq_emulate.py q4_0,q4_k 130x256x65,129x576x70   (types, ROWSxCOLSxTOKENS)
"""
import numpy as np, struct, sys, time

ROWS, TOKS, THREADS = 128, 64, 256
BSUM_POS = [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]
M4 = 0x0F0F0F0F
U32 = 0xFFFFFFFF

def r16(n): return (n + 15) & ~15

class Geom:
    def __init__(s, bs, ts):
        s.kt = 256 if bs == 256 else 128
        s.nb = s.kt // bs
        s.raw_stride = r16(s.nb * ts + 14)
        s.kq = bs == 256
        s.nsub = s.kt // 32
        s.qs = s.kt + 16
        s.raw_bytes = ROWS * s.raw_stride + 16
        s.act_bytes = TOKS * s.qs
        s.meta_bytes = TOKS * 48 if s.kq else TOKS * s.nsub * 16
        s.stage_bytes = s.raw_bytes + s.act_bytes + s.meta_bytes
        s.off_wq = 2 * s.stage_bytes
        s.off_ws = s.off_wq + ROWS * s.qs
        s.off_as = s.off_ws + s.nsub * ROWS * 8
        s.smem = s.off_as + s.nsub * TOKS * 8

# q8 layout
def k_cols(n): return n if n % 256 == 0 else 0
def off_meta(n): return n
def off_kq(n): return n + n // 32 * 16
def off_kd(n): return off_kq(n) + k_cols(n)
def off_ks(n): return off_kd(n) + r16(k_cols(n) // 256 * 4)
def act_row_bytes(n): return off_ks(n) + r16(k_cols(n) // 16 * 2)

def f16(h): return float(np.frombuffer(struct.pack('<H', h & 0xFFFF), dtype=np.float16)[0])
def f32(x): return np.float32(x)

class Smem:
    def __init__(s, n): s.b = bytearray(n + 64)
    def u32(s, a): assert a % 4 == 0; return struct.unpack_from('<I', s.b, a)[0]
    def u16(s, a): assert a % 2 == 0; return struct.unpack_from('<H', s.b, a)[0]
    def s16(s, a): assert a % 2 == 0; return struct.unpack_from('<h', s.b, a)[0]
    def f32(s, a): return np.float32(struct.unpack_from('<f', s.b, a)[0])
    def st_u32(s, a, v): struct.pack_into('<I', s.b, a, v & U32)
    def st_f32(s, a, v): struct.pack_into('<f', s.b, a, float(v))
    def words(s, a, n):
        base, sh = a & ~3, (a & 3) * 8
        w = [s.u32(base + 4 * k) for k in range(n + 1)]
        return [((w[k] | (w[k + 1] << 32)) >> sh) & U32 for k in range(n)]

def sub_off(v, off): return ((v + (0x80 - off) * 0x01010101) & U32) ^ 0x80808080
def spread4_hi(h): return ((h & 0xF) * 0x02040810) & 0x10101010

def nibbles(qs, off):
    return [sub_off(qs[k] & M4, off) for k in range(4)] + [sub_off((qs[k] >> 4) & M4, off) for k in range(4)]

def q5(qs, qh, off):
    return [sub_off((qs[k] & M4) | spread4_hi(qh >> (4 * k)), off) for k in range(4)] + \
           [sub_off(((qs[k] >> 4) & M4) | spread4_hi(qh >> (16 + 4 * k)), off) for k in range(4)]

def scale_min_k4(j, s0, s1, s2):
    sh = 8 * (j & 3)
    a, b, e = s0 >> sh, s1 >> sh, s2 >> sh
    if j < 4: return a & 63, b & 63
    return (e & 0xF) | ((a >> 2) & 0x30), ((e >> 4) & 0xF) | ((b >> 2) & 0x30)

def scales_k4(m, a, j):
    h = m.words(a, 4)
    sc, mn = scale_min_k4(j, h[1], h[2], h[3])
    return f32(f32(f16(h[0])) * f32(sc)), f32(-(f32(f16(h[0] >> 16)) * f32(mn)))

def unit(ty, m, a, j):
    if ty == 'q4_0': return nibbles(m.words(a + 2, 4), 8), f16(m.u16(a)), 0.0
    if ty == 'q4_1':
        w = m.words(a, 5); return nibbles(w[1:5], 0), f16(w[0]), f16(w[0] >> 16)
    if ty == 'q5_0':
        w = m.words(a + 2, 5); return q5(w[1:5], w[0], 16), f16(m.u16(a)), 0.0
    if ty == 'q5_1':
        w = m.words(a, 6); return q5(w[2:6], w[1], 0), f16(w[0]), f16(w[0] >> 16)
    if ty == 'q8_0': return m.words(a + 2, 8), f16(m.u16(a)), 0.0
    if ty == 'q4_k':
        qs = m.words(a + 16 + 32 * (j >> 1), 8); sh = 4 * (j & 1)
        s, mn = scales_k4(m, a, j)
        return [(q >> sh) & M4 for q in qs], s, mn
    if ty == 'q5_k':
        qh = m.words(a + 16, 8); qs = m.words(a + 48 + 32 * (j >> 1), 8); sh = 4 * (j & 1)
        s, mn = scales_k4(m, a, j)
        return [((qs[k] >> sh) & M4) | (((qh[k] >> j) & 0x01010101) << 4) for k in range(8)], s, mn
    if ty == 'q6_k':
        n, o = j >> 2, j & 3
        ql = m.words(a + 64 * n + 32 * (o & 1), 8); qh = m.words(a + 128 + 32 * n, 8)
        sl, sh = 4 * (o >> 1), 2 * o
        q = [sub_off(((ql[k] >> sl) & M4) | (((qh[k] >> sh) & 0x03030303) << 4), 32) for k in range(8)]
        sc = m.u16(a + 192 + 2 * j); d = f16(m.u16(a + 208))
        s0 = ((sc & 0xFF) ^ 0x80) - 0x80; s1 = ((sc >> 8) ^ 0x80) - 0x80
        return q, f32(f32(d) * f32(s0)), f32(f32(d) * f32(s1))

TYPES = {'q4_0': (32, 18, False, False), 'q4_1': (32, 20, True, False), 'q5_0': (32, 22, False, False),
         'q5_1': (32, 24, True, False), 'q8_0': (32, 34, False, False), 'q4_k': (256, 144, True, False),
         'q5_k': (256, 176, True, False), 'q6_k': (256, 210, False, True)}

def i8s(w):  # word -> 4 int8
    return [((((w >> (8 * i)) & 0xFF) ^ 0x80) - 0x80) for i in range(4)]

def ldsm_x4(m, addrs):
    """addrs[lane] -> regs[lane][i]: word lane%4 of row lane//4 of matrix i (row r of matrix i at addrs[8i + r])."""
    return [[m.u32(addrs[8 * i + l // 4] + 4 * (l % 4)) for i in range(4)] for l in range(32)]

def mma(a_regs, b_regs, c, k):
    """a_regs[lane] (4 regs for k32, 2 for k16), b_regs[lane] (2 or 1) -> d[lane][4]."""
    A = np.zeros((16, k), np.int64); B = np.zeros((k, 8), np.int64)
    for l in range(32):
        g, t = l // 4, l % 4
        regs = a_regs[l]
        for ri, reg in enumerate(regs):
            row = g + 8 * (ri % 2); col0 = 4 * t + 16 * (ri // 2)
            for i, v in enumerate(i8s(reg)): A[row, col0 + i] = v
        for ri, reg in enumerate(b_regs[l]):
            k0 = 4 * t + 16 * ri
            for i, v in enumerate(i8s(reg)): B[k0 + i, g] = v
    D = A @ B + c
    return [[D[l // 4 + 8 * (e // 2), 2 * (l % 4) + e % 2] for e in range(4)] for l in range(32)]

MAGIC = 0x4B400000; MAGIC_F = np.float32(12582912.0)
def magic_f(d):
    return np.frombuffer(struct.pack('<I', int(d) & U32), np.float32)[0] - MAGIC_F

def kernel(ty, w, xq, n_rows, n_cols, n_tok):
    bs, ts, MIN, SUB16 = TYPES[ty]
    g = Geom(bs, ts)
    y = np.full(n_tok * n_rows, np.nan, np.float32)
    row_bytes = n_cols // bs * ts; total = n_rows * row_bytes
    arb = act_row_bytes(n_cols)
    q_off, m_off, s_off = (off_kq(n_cols), off_kd(n_cols), off_ks(n_cols)) if g.kq else (0, off_meta(n_cols), 0)
    n_sub_all = n_cols // 32; n_kt = -(-n_cols // g.kt); ch = g.raw_stride // 16
    for bx in range(-(-n_rows // ROWS)):
        for by in range(-(-n_tok // TOKS)):
            row0, tok0 = bx * ROWS, by * TOKS
            m = Smem(g.smem)
            stage = lambda i: (i & 1) * g.stage_bytes
            tok_row = lambda tt: min(tok0 + tt, n_tok - 1) * arb
            row_start = lambda r, kt: min(row0 + r, n_rows - 1) * row_bytes + kt * g.nb * ts
            def issue(kt, st):
                ln = min(g.nb * ts, row_bytes - kt * g.nb * ts)
                for t in range(THREADS):
                    for k in range(16):
                        f = t + THREADS * k
                        if f < ROWS * ch:
                            r, c = f // ch, f % ch
                            start = row_start(r, kt)
                            if 16 * c < (start & 15) + ln:
                                src = (start & ~15) + 16 * c; dst = st + r * g.raw_stride + 16 * c
                                n = min(16, total - src)
                                m.b[dst:dst + 16] = bytes(w[src:src + n]) + bytes(16 - n)
                    aq, cpt = st + g.raw_bytes, g.kt // 16; col0 = kt * g.kt
                    for k in range(4):
                        f = t + THREADS * k
                        if THREADS * k < TOKS * cpt:
                            tt, c = f // cpt, f % cpt
                            if col0 + 16 * c < n_cols:
                                s = tok_row(tt) + q_off + col0 + 16 * c
                                m.b[aq + tt * g.qs + 16 * c: aq + tt * g.qs + 16 * c + 16] = xq[s:s + 16]
                    meta = aq + g.act_bytes
                    if not g.kq:
                        tt, j = t // g.nsub, t % g.nsub
                        if t < TOKS * g.nsub and kt * g.nsub + j < n_sub_all:
                            s = tok_row(tt) + m_off + 16 * (kt * g.nsub + j)
                            m.b[meta + 16 * t: meta + 16 * t + 16] = xq[s:s + 16]
                    else:
                        if t < TOKS:
                            s = tok_row(t) + m_off + 4 * kt; m.b[meta + 4 * t: meta + 4 * t + 4] = xq[s:s + 4]
                        if t < 2 * TOKS:
                            tt, h = t // 2, t % 2
                            s = tok_row(tt) + s_off + 32 * kt + 16 * h
                            d = meta + TOKS * 16 + 32 * tt + 16 * h
                            m.b[d:d + 16] = xq[s:s + 16]
            def decode(kt, st, nsv):
                for t in range(THREADS):
                    for k in range(8):
                        u = t + THREADS * k
                        if THREADS * k < ROWS * g.nsub:
                            r, j = u // g.nsub, u % g.nsub
                            if j < nsv:
                                a = st + r * g.raw_stride + (row_start(r, kt) & 15)
                                q, s0, s1 = unit(ty, m, a + j * ts, 0) if g.nb > 1 else unit(ty, m, a, j)
                                for i in range(8): m.st_u32(g.off_wq + r * g.qs + 32 * j + 4 * i, q[i])
                                m.st_f32(g.off_ws + (j * ROWS + r) * 8, s0); m.st_f32(g.off_ws + (j * ROWS + r) * 8 + 4, s1)
                    meta = st + g.raw_bytes + g.act_bytes
                    for k in range(4):
                        e = t + THREADS * k
                        if THREADS * k < TOKS * g.nsub:
                            tt, j = e % TOKS, e // TOKS
                            if j < nsv:
                                if not g.kq:
                                    v = [m.f32(meta + 16 * (tt * g.nsub + j)), m.f32(meta + 16 * (tt * g.nsub + j) + 4)]
                                else:
                                    d = m.f32(meta + 4 * tt)
                                    p = meta + TOKS * 16 + 32 * tt + 2 * (8 * (j >> 2) + (j & 3))
                                    v = [d, f32(m.s16(p) + m.s16(p + 8))]
                                m.st_f32(g.off_as + (j * TOKS + tt) * 8, v[0]); m.st_f32(g.off_as + (j * TOKS + tt) * 8 + 4, v[1])
            acc = np.zeros((8, 32, 2, 4, 4), np.float32)
            def compute(st, nsv):
                inner = np.zeros((8, 32, 2, 4, 4), np.float32)
                for warp in range(8):
                    wm, wn = warp & 3, warp >> 2
                    a_lane = [g.off_wq + (32 * wm + (l & 7) + 8 * ((l >> 3) & 1)) * g.qs + 16 * (l >> 4) for l in range(32)]
                    b_lane = [st + g.raw_bytes + (32 * wn + (l & 7) + 8 * (l >> 4)) * g.qs + 16 * ((l >> 3) & 1) for l in range(32)]
                    for j in range(min(g.nsub, nsv)):
                        af = [ldsm_x4(m, [a + 32 * j for a in a_lane]), ldsm_x4(m, [a + 16 * g.qs + 32 * j for a in a_lane])]
                        bp = [ldsm_x4(m, [b + 32 * j for b in b_lane]), ldsm_x4(m, [b + 16 * g.qs + 32 * j for b in b_lane])]
                        bf = [[[bp[0][l][0], bp[0][l][1]] for l in range(32)], [[bp[0][l][2], bp[0][l][3]] for l in range(32)],
                              [[bp[1][l][0], bp[1][l][1]] for l in range(32)], [[bp[1][l][2], bp[1][l][3]] for l in range(32)]]
                        for mi in range(2):
                            for ni in range(4):
                                if not SUB16:
                                    d = mma(af[mi], bf[ni], MAGIC, 32)
                                else:
                                    d0 = mma([[af[mi][l][0], af[mi][l][1]] for l in range(32)], [[bf[ni][l][0]] for l in range(32)], MAGIC, 16)
                                    d1 = mma([[af[mi][l][2], af[mi][l][3]] for l in range(32)], [[bf[ni][l][1]] for l in range(32)], MAGIC, 16)
                                for l in range(32):
                                    gq, tq = l >> 2, l & 3
                                    r = 32 * wm + 16 * mi + gq
                                    wsc = [[m.f32(g.off_ws + (j * ROWS + r) * 8), m.f32(g.off_ws + (j * ROWS + r) * 8 + 4)],
                                           [m.f32(g.off_ws + (j * ROWS + r + 8) * 8), m.f32(g.off_ws + (j * ROWS + r + 8) * 8 + 4)]]
                                    ab = g.off_as + (j * TOKS + 32 * wn + 8 * ni + 2 * tq) * 8
                                    asv = [m.f32(ab + 4 * i) for i in range(4)]
                                    for e in range(4):
                                        sw = wsc[e // 2]; sa = [asv[2 * (e % 2)], asv[2 * (e % 2) + 1]]
                                        if not SUB16:
                                            f = magic_f(d[l][e])
                                            if g.kq:
                                                v = f32(sw[0] * f) + inner[warp, l, mi, ni, e]
                                                if MIN: v = f32(sw[1] * sa[1]) + v
                                                inner[warp, l, mi, ni, e] = v
                                            else:
                                                v = f32(f32(sw[0] * sa[0]) * f) + acc[warp, l, mi, ni, e]
                                                if MIN: v = f32(sw[1] * sa[1]) + v
                                                acc[warp, l, mi, ni, e] = v
                                        else:
                                            f0, f1 = magic_f(d0[l][e]), magic_f(d1[l][e])
                                            acc[warp, l, mi, ni, e] = f32(sa[0] * f32(sw[0] * f0 + f32(sw[1] * f1))) + acc[warp, l, mi, ni, e]
                    if g.kq and not SUB16:
                        for l in range(32):
                            tq = l & 3
                            for ni in range(4):
                                dy = [m.f32(g.off_as + (32 * wn + 8 * ni + 2 * tq) * 8 + 4 * i) for i in range(4)]
                                for mi in range(2):
                                    for e in range(4):
                                        acc[warp, l, mi, ni, e] += f32(dy[2 * (e % 2)] * inner[warp, l, mi, ni, e])
            issue(0, stage(0))
            for kt in range(n_kt):
                if kt + 1 < n_kt: issue(kt + 1, stage(kt + 1))
                nsv = min(g.nsub, n_sub_all - kt * g.nsub)
                decode(kt, stage(kt), nsv)
                compute(stage(kt), nsv)
            for warp in range(8):
                wm, wn = warp & 3, warp >> 2
                for l in range(32):
                    gq, tq = l >> 2, l & 3
                    for mi in range(2):
                        for ni in range(4):
                            for e in range(4):
                                r = row0 + 32 * wm + 16 * mi + gq + 8 * (e // 2)
                                tk = tok0 + 32 * wn + 8 * ni + 2 * tq + e % 2
                                if r < n_rows and tk < n_tok:
                                    assert np.isnan(y[tk * n_rows + r])
                                    y[tk * n_rows + r] = acc[warp, l, mi, ni, e]
    return y


def f16a(b, o): return np.frombuffer(bytes(b[o:o+2]), np.float16)[0].astype(np.float64)

def scale_min_ref(j, q):
    if j < 4: return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)

def decode_legacy(ty, b):
    if ty in ('q4_0', 'q4_1'):
        d = f16a(b, 0); mn = f16a(b, 2) if ty == 'q4_1' else 0.0; qs = b[4:20] if ty == 'q4_1' else b[2:18]
        off = 8 if ty == 'q4_0' else 0
        q = [ (qs[j] & 0xF) - off for j in range(16)] + [(qs[j] >> 4) - off for j in range(16)]
        return np.array(q), d, mn
    if ty in ('q5_0', 'q5_1'):
        d = f16a(b, 0)
        if ty == 'q5_1': mn = f16a(b, 2); qh = struct.unpack_from('<I', b, 4)[0]; qs = b[8:24]; off = 0
        else: mn = 0.0; qh = struct.unpack_from('<I', b, 2)[0]; qs = b[6:22]; off = 16
        q = [0] * 32
        for j in range(16):
            xh0 = ((qh >> j) << 4) & 0x10; xh1 = (qh >> (j + 12)) & 0x10
            q[j] = ((qs[j] & 0xF) | xh0) - off; q[j + 16] = ((qs[j] >> 4) | xh1) - off
        return np.array(q), d, mn
    if ty == 'q8_0':
        return np.frombuffer(bytes(b[2:34]), np.int8).astype(np.int64), f16a(b, 0), 0.0

def decode_k(ty, b):
    q = np.zeros(256, np.int64); sc = np.zeros(16, np.int64); mn = np.zeros(16, np.int64)
    if ty in ('q4_k', 'q5_k'):
        d, dmin = f16a(b, 0), f16a(b, 2); scales = b[4:16]
        if ty == 'q4_k': qs = b[16:144]; qh = None
        else: qh = b[16:48]; qs = b[48:176]
        for j in range(4):
            for l in range(32):
                lo, hi = qs[32 * j + l] & 0xF, qs[32 * j + l] >> 4
                if qh is not None:
                    lo += 16 if qh[l] & (1 << (2 * j)) else 0
                    hi += 16 if qh[l] & (2 << (2 * j)) else 0
                q[64 * j + l] = lo; q[64 * j + 32 + l] = hi
        for s in range(8):
            a, m_ = scale_min_ref(s, scales)
            sc[2 * s] = sc[2 * s + 1] = a; mn[2 * s] = mn[2 * s + 1] = m_
        return q, sc, mn, d, dmin
    if ty == 'q6_k':
        ql, qh = b[0:128], b[128:192]; scales = np.frombuffer(bytes(b[192:208]), np.int8); d = f16a(b, 208)
        for n in range(2):
            for l in range(32):
                L, H = ql[64 * n:], qh[32 * n:]
                q[128 * n + l] = ((L[l] & 0xF) | ((H[l] & 3) << 4)) - 32
                q[128 * n + l + 32] = ((L[l + 32] & 0xF) | (((H[l] >> 2) & 3) << 4)) - 32
                q[128 * n + l + 64] = ((L[l] >> 4) | (((H[l] >> 4) & 3) << 4)) - 32
                q[128 * n + l + 96] = ((L[l + 32] >> 4) | (((H[l] >> 6) & 3) << 4)) - 32
        sc[:] = scales
        return q, sc, mn, d, 0.0

def make(ty, n_rows, n_cols, n_tok, rng):
    bs, ts, _, _ = TYPES[ty]
    nb = n_cols // bs
    w = bytearray(rng.integers(0, 256, n_rows * nb * ts, dtype=np.uint8).tobytes())
    fields = {'q4_0': [0], 'q5_0': [0], 'q8_0': [0], 'q4_1': [0, 2], 'q5_1': [0, 2], 'q4_k': [0, 2], 'q5_k': [0, 2], 'q6_k': [208]}[ty]
    for blk in range(n_rows * nb):
        for o in fields:
            struct.pack_into('<e', w, blk * ts + o, float(rng.uniform(-1, 1) / 16))
    arb = act_row_bytes(n_cols)
    xq = bytearray(n_tok * arb)
    q1 = rng.integers(-127, 128, (n_tok, n_cols)); d1 = rng.uniform(0.001, 0.1, (n_tok, n_cols // 32)).astype(np.float16).astype(np.float32)
    s1 = (d1 * q1.reshape(n_tok, -1, 32).sum(-1)).astype(np.float16).astype(np.float32)
    qk = rng.integers(-127, 128, (n_tok, n_cols)); dk = rng.uniform(-0.1, 0.1, (n_tok, max(1, n_cols // 256))).astype(np.float32)
    for t in range(n_tok):
        o = t * arb
        xq[o:o + n_cols] = q1[t].astype(np.int8).tobytes()
        for b in range(n_cols // 32):
            struct.pack_into('<ffiI', xq, o + off_meta(n_cols) + 16 * b, d1[t, b], s1[t, b], int(q1[t, 32*b:32*b+32].sum()), 0)
        if k_cols(n_cols):
            xq[o + off_kq(n_cols): o + off_kq(n_cols) + n_cols] = qk[t].astype(np.int8).tobytes()
            for b in range(n_cols // 256):
                struct.pack_into('<f', xq, o + off_kd(n_cols) + 4 * b, dk[t, b])
                for gg in range(16):
                    struct.pack_into('<h', xq, o + off_ks(n_cols) + 32 * b + 2 * BSUM_POS[gg], int(qk[t, 256*b+16*gg:256*b+16*gg+16].sum()))
    # reference
    y = np.zeros((n_tok, n_rows))
    for r in range(n_rows):
        for b in range(nb):
            blk = w[(r * nb + b) * ts:(r * nb + b + 1) * ts]
            if bs == 32:
                q, d, mn = decode_legacy(ty, blk)
                y[:, r] += d * d1[:, b] * (q1[:, 32*b:32*b+32] @ q) + mn * s1[:, b]
            else:
                q, sc, mnn, d, dmin = decode_k(ty, blk)
                xs = qk[:, 256*b:256*b+256]
                dots = (xs * q).reshape(n_tok, 16, 16).sum(-1)
                bsum = xs.reshape(n_tok, 16, 16).sum(-1)
                y[:, r] += d * dk[:, b] * (dots @ sc) - dmin * dk[:, b] * (bsum @ mnn)
    return bytes(w), bytes(xq), y

if __name__ == '__main__':
    rng = np.random.default_rng(1)
    for ty in sys.argv[1].split(','):
        for (nr, nc, nt) in [tuple(map(int, s.split('x'))) for s in sys.argv[2].split(',')]:
            bs = TYPES[ty][0]
            if nc % bs: continue
            w, xq, ref = make(ty, nr, nc, nt, rng)
            t0 = time.time()
            y = kernel(ty, w, xq, nr, nc, nt).reshape(nt, nr)
            err = np.abs(y - ref).max(1) / np.abs(ref).max(1)
            print(f"{ty} {nr}x{nc} n_tok {nt}: max rel err {np.nanmax(err) if not np.isnan(err).any() else 'NaN'} ({time.time()-t0:.0f}s)", flush=True)
