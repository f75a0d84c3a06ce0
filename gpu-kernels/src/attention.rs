//! Causal grouped-query attention over an f16 KV cache, for one new token (decode) or a prompt batch (prefill),
//! split across the sequence in chunks and combined with an online softmax (flash-decoding): no score matrix is
//! ever stored. CPU twin: `host::backend::cpu::attention`.
//!
//! Cache layout (per layer, as on the CPU): k (ctx, n_kv_heads * head_dim), v (ctx, n_kv_heads * head_dim_v).
//! Query t of the batch is at position pos0 + t (pos0 read from device memory) and sees keys
//! max(0, pos - window + 1) ..= pos.

use core::arch::asm;

use crate::common::*;

/// Positions per split: each block covers at most this many keys of one (query, head).
pub const CHUNK: u32 = 256;
/// Largest head dimension: each lane holds head_dim / 32 <= 8 values.
const MAX_PER_LANE: usize = 8;
const WARPS: u32 = 4;

/// Per (query, head, split): the partial (max, sum, acc[head_dim_v]) of its key chunk, written to
/// `part[((t * n_heads + h) * n_splits + s) * (head_dim_v + 2) ..]` as [m, l, acc...]; the last of the (query,
/// head)'s split blocks to finish (an arrival counter in `counters[t * n_heads + h]`, left at zero again)
/// combines them: out[t, h, :] = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s over the splits that hold keys.
/// One launch, no separate combine kernel.
///
/// Launch: grid = (n_heads, n_tok, n_splits), block = (128, 1, 1) (4 warps; a warp per key, lanes over dims);
/// `counters` zero before the first launch.
/// Traffic: each block reads its chunk of K and V once (2 bytes per element) and q once; the combining block
/// reads n_splits * (head_dim_v + 2) floats (from L2) and writes head_dim_v.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn attention_f16(
    out: *mut f32 /* (n_tok, n_heads * head_dim_v) */, part: *mut f32, counters: *mut u32,
    q: *const f32 /* (n_tok, n_heads * head_dim) */, k: *const u16, v: *const u16,
    pos0: *const u32, n_heads: u32, n_kv_heads: u32, head_dim: u32, head_dim_v: u32, scale: f32, window: u32,
    n_splits: u32,
) {
    crate::common::pdl_enter();
    let (h, t, s) = (bid(), bid_y(), bid_z());
    let pos = *pos0 + t;
    let first = if window > 0 && pos + 1 > window { pos + 1 - window } else { 0 };
    let (lo, hi) = (max_u32(first, s * CHUNK), min_u32(pos + 1, (s + 1) * CHUNK)); // keys lo..hi
    let (lane, warp) = (tid() % WARP_SIZE, tid() / WARP_SIZE);
    let kvh = udiv(h, udiv(n_heads, n_kv_heads));
    let (dpl, dplv) = (head_dim / WARP_SIZE, head_dim_v / WARP_SIZE);

    // q of this head, lane holds dims lane + 32 j, pre-multiplied by the scale
    let qh = q.add(((t * n_heads + h) * head_dim) as usize);
    let mut qr = [0.0f32; MAX_PER_LANE];
    for (j, r) in qr.iter_mut().enumerate() {
        if (j as u32) < dpl {
            *r = *qh.add((lane + 32 * j as u32) as usize) * scale;
        }
    }
    // online softmax over this warp's keys
    let (k_stride, v_stride) = (n_kv_heads * head_dim, n_kv_heads * head_dim_v);
    let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
    let mut acc = [0.0f32; MAX_PER_LANE];
    let mut j = lo + warp;
    while j < hi {
        let kr = k.add((j * k_stride + kvh * head_dim) as usize);
        let mut dot = 0.0f32;
        for (d, &qv) in qr.iter().enumerate() {
            if (d as u32) < dpl {
                dot += qv * f16_to_f32(*kr.add((lane + 32 * d as u32) as usize));
            }
        }
        let sc = warp_sum(dot);
        let m_new = fmax(m, sc);
        let (corr, p) = (exp(m - m_new), exp(sc - m_new));
        l = l * corr + p;
        let vr = v.add((j * v_stride + kvh * head_dim_v) as usize);
        for (d, a) in acc.iter_mut().enumerate() {
            if (d as u32) < dplv {
                *a = *a * corr + p * f16_to_f32(*vr.add((lane + 32 * d as u32) as usize));
            }
        }
        m = m_new;
        j += WARPS;
    }
    // combine the 4 warps through shared memory: [m, l, acc[head_dim_v]] per warp
    let sm = attn_smem();
    let row = 2 + head_dim_v as usize;
    let w = sm.add(warp as usize * row);
    if lane == 0 {
        *w = m;
        *w.add(1) = l;
    }
    for (d, &a) in acc.iter().enumerate() {
        if (d as u32) < dplv {
            *w.add(2 + (lane + 32 * d as u32) as usize) = a;
        }
    }
    sync_threads();
    let mine = part.add((((t * n_heads + h) * n_splits + s) as usize) * row);
    let mut mm = f32::NEG_INFINITY;
    for i in 0..WARPS as usize {
        mm = fmax(mm, *sm.add(i * row));
    }
    let mut i = tid();
    while i < head_dim_v + 2 {
        let mut val = 0.0f32;
        for wi in 0..WARPS as usize {
            let wm = *sm.add(wi * row);
            let c = if wm == f32::NEG_INFINITY { 0.0 } else { exp(wm - mm) };
            val += c * *sm.add(wi * row + if i == 0 { 1 } else { i as usize });
        }
        // slot 0: max, slot 1: sum, 2..: acc
        *mine.add(i as usize) = if i == 0 { mm } else { val };
        i += ntid();
    }

    // the last split block of this (query, head) combines all splits
    let flag = sm.add(WARPS as usize * (2 + MAX_PER_LANE * 32)) as *mut u32;
    if !last_block(counters.add((t * n_heads + h) as usize), n_splits, flag) {
        return;
    }
    let base = part.add((((t * n_heads + h) * n_splits) as usize) * row);
    let at = |i: usize| f32::from_bits(ld_gpu_u32(base.add(i) as *const u32));
    let mut mm = f32::NEG_INFINITY;
    for s in 0..n_splits as usize {
        mm = fmax(mm, at(s * row));
    }
    let mut d = tid();
    while d < head_dim_v {
        let (mut num, mut den) = (0.0f32, 0.0f32);
        for s in 0..n_splits as usize {
            let ms = at(s * row);
            if ms != f32::NEG_INFINITY {
                let c = exp(ms - mm);
                den += c * at(s * row + 1);
                num += c * at(s * row + 2 + d as usize);
            }
        }
        *out.add(((t * n_heads + h) * head_dim_v + d) as usize) = num / den;
        d += ntid();
    }
}

/// 4 warps x (2 + 256) floats of block-shared scratch for the warp combine, and the last-block flag.
#[inline(always)]
fn attn_smem() -> *mut f32 {
    let p: u64;
    // SAFETY: declares a shared array local to this asm scope and returns its generic address.
    unsafe { asm!("{{", ".shared .align 16 .b8 attn_smem[4144];", "cvta.shared.u64 {p}, attn_smem;", "}}", p = out(reg64) p) };
    p as *mut f32
}

// ----------------------------------------------------------------------------
// Decode: one new token, a block per (KV head, chunk of the cache) serving the head's whole query group
// ----------------------------------------------------------------------------

/// Threads of a decode-attention block.
const DEC_THREADS: u32 = 256;
/// Largest query group (n_heads / n_kv_heads) the decode kernels serve (kernels for groups of up to 1, 2, 4, 8).
pub const DEC_MAX_GROUP: u32 = 8;
/// Largest head dimension of the decode kernel for groups of up to G heads: 256, and G x head_dim <= 1024.
pub const fn dec_max_dim(g: usize) -> usize {
    if g * 256 <= 1024 {
        256
    } else {
        1024 / g
    }
}

/// Shared floats of the decode kernel for groups of up to G heads: q (G x head_dim), scores (G x CHUNK), the
/// warps' V partials (8 x G x head_dim_v), then max / sum per group head and the last-block flag.
const fn dec_floats(g: usize) -> usize {
    g * dec_max_dim(g) + g * CHUNK as usize + 8 * g * dec_max_dim(g) + 2 * g + 4
}

/// Attention of one new token at position `*pos0` (flash-decoding): block (g, s) takes the keys of chunk s
/// (`CHUNK` positions, clipped to the causal range and the sliding window) for KV head g and all its query heads
/// (GQA: the K/V tile is read once for the group). Scores: each key's row read as 16-byte pieces (head_dim / 8
/// lanes per key, several keys in flight per lane), q.k summed over the key's lanes by shuffles; softmax over the
/// chunk in shared memory; V read the same way, each lane accumulating its 8 dims for a subset of keys, then
/// summed over lanes and warps. Each chunk's (max, sum, acc) goes to `part` in `attention_f16`'s layout; the last
/// of the active chunks to finish (arrival counter `counters[g]`, left at zero) combines them into `out`. Chunks
/// past the position (the graph covers the whole context) exit at once and are not counted.
///
/// Launch (the kernels `attention_decode_g{1,2,4,8}`, for groups of up to that many heads): grid = (n_kv_heads,
/// n_splits, 1), block = (256, 1, 1); head_dim and head_dim_v powers of two from 32 to `dec_max_dim(G)`.
/// Traffic: the causal range of K and V once (2 bytes per element), q once per block, partials
/// (group x (head_dim_v + 2) floats per active chunk) written once and read once by the combining block.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn attention_decode<const G: usize>(
    sm: *mut f32, out: *mut f32, part: *mut f32, counters: *mut u32, q: *const f32, k: *const u16, v: *const u16,
    pos0: *const u32, n_heads: u32, n_kv_heads: u32, head_dim: u32, head_dim_v: u32, scale: f32, window: u32,
    n_splits: u32,
) {
    let (kvh, s) = (bid(), bid_y());
    let pos = *pos0;
    let first = if window > 0 && pos + 1 > window { pos + 1 - window } else { 0 };
    let (lo, hi) = (max_u32(first, s * CHUNK), min_u32(pos + 1, (s + 1) * CHUNK));
    if lo >= hi {
        return; // the whole block: an idle chunk
    }
    let n = hi - lo;
    let grp = udiv(n_heads, n_kv_heads) as usize;
    let (hd, hdv) = (head_dim as usize, head_dim_v as usize);
    let t = tid();
    let (lane, warp) = (t & 31, t >> 5);
    let (qs, sc) = (sm, sm.add(G * dec_max_dim(G)));
    let red = sc.add(G * CHUNK as usize);
    let ml = red.add(8 * G * dec_max_dim(G));

    // q of the group, pre-multiplied by the scale
    let qg = q.add(kvh as usize * grp * hd);
    let mut i = t as usize;
    while i < grp * hd {
        *qs.add(i) = *qg.add(i) * scale;
        i += DEC_THREADS as usize;
    }
    sync_threads();

    // ---- scores: key j's row in head_dim / 8 pieces of 16 bytes, one lane each ----
    // head dims are powers of two (checked by the launcher): divisions are shifts
    let lpk = head_dim.trailing_zeros() - 3;
    let pk = 1u32 << lpk; // pieces (lanes) per key
    let kpp = DEC_THREADS >> lpk; // keys per pass
    let (piece, slot) = (t & (pk - 1), t >> lpk);
    let mut qr = [[0.0f32; 8]; G];
    for (g, qv) in qr.iter_mut().enumerate() {
        if g < grp {
            for (e, x) in qv.iter_mut().enumerate() {
                *x = *qs.add(g * hd + piece as usize * 8 + e);
            }
        }
    }
    let k_stride = (n_kv_heads * head_dim) as usize;
    let kbase = k.add(kvh as usize * hd + piece as usize * 8).add(lo as usize * k_stride);
    let mut base = 0;
    while base < n {
        let mut kw = [[0u32; 4]; 4];
        for (u, w) in kw.iter_mut().enumerate() {
            let j = base + slot + u as u32 * kpp;
            if j < n {
                *w = ldg16(kbase.add(j as usize * k_stride) as *const u8);
            }
        }
        for (u, w) in kw.iter().enumerate() {
            let j = base + slot + u as u32 * kpp;
            let kf = unpack_f16x8(w);
            for (g, qv) in qr.iter().enumerate() {
                if g < grp {
                    let mut d = 0.0f32;
                    for e in 0..8 {
                        d = fma(qv[e], kf[e], d);
                    }
                    let mut m = 1;
                    while m < pk {
                        d += shfl_xor(d, m);
                        m <<= 1;
                    }
                    if piece == 0 && j < n {
                        *sc.add(g * CHUNK as usize + j as usize) = d;
                    }
                }
            }
        }
        base += 4 * kpp;
    }
    sync_threads();

    // ---- softmax over the chunk: warp g for query head g ----
    if (warp as usize) < grp {
        let row = sc.add(warp as usize * CHUNK as usize);
        let mut m = f32::NEG_INFINITY;
        let mut j = lane;
        while j < n {
            m = fmax(m, *row.add(j as usize));
            j += 32;
        }
        m = warp_max(m);
        let mut l = 0.0f32;
        let mut j = lane;
        while j < n {
            let p = exp(*row.add(j as usize) - m);
            *row.add(j as usize) = p;
            l += p;
            j += 32;
        }
        l = warp_sum(l);
        if lane == 0 {
            *ml.add(warp as usize) = m;
            *ml.add(G + warp as usize) = l;
        }
    }
    sync_threads();

    // ---- p V: lane (piece, key group) accumulates its 8 dims over the keys of its group ----
    let lpv = head_dim_v.trailing_zeros() - 3;
    let pv = 1u32 << lpv;
    let kgn = DEC_THREADS >> lpv; // key groups
    let (vpiece, kg) = (t & (pv - 1), t >> lpv);
    let v_stride = (n_kv_heads * head_dim_v) as usize;
    let vbase = v.add(kvh as usize * hdv + vpiece as usize * 8).add(lo as usize * v_stride);
    let mut acc = [[0.0f32; 8]; G];
    let mut base = 0;
    while base < n {
        let mut vw = [[0u32; 4]; 4];
        for (u, w) in vw.iter_mut().enumerate() {
            let j = base + kg + u as u32 * kgn;
            if j < n {
                *w = ldg16(vbase.add(j as usize * v_stride) as *const u8);
            }
        }
        for (u, w) in vw.iter().enumerate() {
            let j = base + kg + u as u32 * kgn;
            if j < n {
                let vf = unpack_f16x8(w);
                for (g, a) in acc.iter_mut().enumerate() {
                    if g < grp {
                        let p = *sc.add(g * CHUNK as usize + j as usize);
                        for e in 0..8 {
                            a[e] = fma(p, vf[e], a[e]);
                        }
                    }
                }
            }
        }
        base += 4 * kgn;
    }
    // over the key groups of the warp (lanes pv apart), then over the warps through shared memory
    for a in acc.iter_mut() {
        for x in a.iter_mut() {
            let mut m = pv;
            while m < 32 {
                *x += shfl_xor(*x, m);
                m <<= 1;
            }
        }
    }
    let gd = grp * hdv;
    if lane < pv {
        for (g, a) in acc.iter().enumerate() {
            if g < grp {
                for (e, &x) in a.iter().enumerate() {
                    *red.add(warp as usize * gd + g * hdv + vpiece as usize * 8 + e) = x;
                }
            }
        }
    }
    sync_threads();
    let row = hdv + 2;
    let mut idx = t as usize;
    while idx < gd {
        let mut sum = 0.0f32;
        for w in 0..(DEC_THREADS / 32) as usize {
            sum += *red.add(w * gd + idx);
        }
        let (g, d) = (idx >> lpv >> 3, idx & (hdv - 1));
        let h = kvh as usize * grp + g;
        *part.add((h * n_splits as usize + s as usize) * row + 2 + d) = sum;
        idx += DEC_THREADS as usize;
    }
    if (t as usize) < grp {
        let h = kvh as usize * grp + t as usize;
        let mine = part.add((h * n_splits as usize + s as usize) * row);
        *mine = *ml.add(t as usize);
        *mine.add(1) = *ml.add(G + t as usize);
    }

    // ---- the last active chunk combines ----
    let (s_first, s_last) = (first / CHUNK, pos / CHUNK);
    let flag = ml.add(2 * G) as *mut u32;
    if !last_block(counters.add(kvh as usize), s_last - s_first + 1, flag) {
        return;
    }
    let at = |i: usize| f32::from_bits(ld_gpu_u32(part.add(i) as *const u32));
    let mut idx = t as usize;
    while idx < gd {
        let (g, d) = (idx >> lpv >> 3, idx & (hdv - 1));
        let hb = (kvh as usize * grp + g) * n_splits as usize;
        let mut mm = f32::NEG_INFINITY;
        for s in s_first..=s_last {
            mm = fmax(mm, at((hb + s as usize) * row));
        }
        let (mut num, mut den) = (0.0f32, 0.0f32);
        for s in s_first..=s_last {
            let o = (hb + s as usize) * row;
            let c = exp(at(o) - mm);
            den += c * at(o + 1);
            num += c * at(o + 2 + d);
        }
        *out.add((kvh as usize * grp + g) * hdv + d) = num / den;
        idx += DEC_THREADS as usize;
    }
}

macro_rules! attention_decode_kernels {
    ($($name:ident: $g:literal;)*) => {$(
        /// [`attention_decode`] for query groups of up to
        #[doc = stringify!($g)]
        /// heads.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            out: *mut f32 /* (n_heads * head_dim_v) */, part: *mut f32, counters: *mut u32,
            q: *const f32 /* (n_heads * head_dim) */, k: *const u16, v: *const u16,
            pos0: *const u32, n_heads: u32, n_kv_heads: u32, head_dim: u32, head_dim_v: u32, scale: f32, window: u32,
            n_splits: u32,
        ) {
            crate::common::pdl_enter();
            let p: u64;
            // SAFETY: declares a shared array local to this asm scope and returns its generic address.
            asm!("{{", concat!(".shared .align 16 .b8 ", stringify!($name), "_smem[{n}];"),
                 concat!("cvta.shared.u64 {p}, ", stringify!($name), "_smem;"), "}}",
                 n = const dec_floats($g) * 4, p = out(reg64) p);
            attention_decode::<$g>(p as *mut f32, out, part, counters, q, k, v, pos0, n_heads, n_kv_heads, head_dim,
                                   head_dim_v, scale, window, n_splits)
        }
    )*};
}

attention_decode_kernels! {
    attention_decode_g1: 1;
    attention_decode_g2: 2;
    attention_decode_g4: 4;
    attention_decode_g8: 8;
}

/// 16-byte read-only global load; `p` 16-aligned (the cache was written by an earlier kernel).
#[inline(always)]
unsafe fn ldg16(p: *const u8) -> [u32; 4] {
    let (x, y, z, w): (u32, u32, u32, u32);
    asm!("ld.global.nc.v4.u32 {{{x}, {y}, {z}, {w}}}, [{p}];", x = out(reg32) x, y = out(reg32) y, z = out(reg32) z,
         w = out(reg32) w, p = in(reg64) p, options(pure, readonly, nostack));
    [x, y, z, w]
}

/// The 8 f16 values of 16 bytes, as f32.
#[inline(always)]
fn unpack_f16x8(w: &[u32; 4]) -> [f32; 8] {
    let mut r = [0.0f32; 8];
    for (i, &x) in w.iter().enumerate() {
        r[2 * i] = f16_to_f32(x as u16);
        r[2 * i + 1] = f16_to_f32((x >> 16) as u16);
    }
    r
}
