//! Causal grouped-query attention over an f16 or q8_0 KV cache, for one new token (decode) or a prompt batch
//! (prefill), split across the sequence in chunks and combined with an online softmax (flash-decoding): no score
//! matrix is ever stored. CPU twins: `host::backend::cpu::attention` (f16) and `attention_q8_0_rows` (q8_0).
//!
//! Cache layout (per layer, `kv_layout.rs`): k (ctx rows of n_kv_heads * head_dim), v (ctx rows of
//! n_kv_heads * head_dim_v). Each kernel is written once, generic over the element type (`kv::KvType`), and
//! exported once per type. Query t of the batch is at position pos0 + t (pos0 read from device memory) and sees
//! keys max(0, pos - window + 1) ..= pos.

use core::arch::asm;

use crate::common::*;
use crate::kv::{row, KvType, F16, Q8_0};
use crate::quant::unroll;

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
/// Launch (`attention_f16`, `attention_q8_0`): grid = (n_heads, n_tok, n_splits), block = (128, 1, 1) (4 warps;
/// a warp per key, lanes over dims); `counters` zero before the first launch.
/// Traffic: each block reads its chunk of K and V once (2 bytes per element, or 34 / 32 for q8_0) and q once; the
/// combining block reads n_splits * (head_dim_v + 2) floats (from L2) and writes head_dim_v.
///
/// The body, for query row t (block (h, t, s)) at position `pos`, its keys and values read from cache row
/// `slot(j)` for position j (the identity for a contiguous cache, the page table for a paged one:
/// `attention_paged::attention_paged_f16`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn attention_split<E: KvType>(
    out: *mut f32 /* (n_tok, n_heads * head_dim_v) */, part: *mut f32, counters: *mut u32,
    q: *const f32 /* (n_tok, n_heads * head_dim) */, k: *const u8, v: *const u8, t: u32, pos: u32,
    slot: impl Fn(u32) -> u32, n_heads: u32, n_kv_heads: u32, head_dim: u32, head_dim_v: u32, scale: f32, window: u32,
    n_splits: u32,
) {
    let (h, s) = (bid(), bid_z());
    let first = if window > 0 && pos + 1 > window { pos + 1 - window } else { 0 };
    let (lo, hi) = (max_u32(first, s * CHUNK), min_u32(pos + 1, (s + 1) * CHUNK)); // keys lo..hi
    let (lane, warp) = (tid() % WARP_SIZE, tid() / WARP_SIZE);
    let kvh = udiv(h, udiv(n_heads, n_kv_heads));
    let (dpl, dplv) = (head_dim / WARP_SIZE, head_dim_v / WARP_SIZE);

    // q of this head, lane holds dims lane + 32 j (f16: pre-multiplied by the scale; q8_0: quantized)
    let qh = q.add(((t * n_heads + h) * head_dim) as usize);
    let mut qf = [0.0f32; MAX_PER_LANE];
    for (j, r) in qf.iter_mut().enumerate() {
        if (j as u32) < dpl {
            *r = *qh.add((lane + 32 * j as u32) as usize);
        }
    }
    let qr = E::q_lane(&qf, dpl, scale);
    // online softmax over this warp's keys
    let (k_width, v_width) = (n_kv_heads * head_dim, n_kv_heads * head_dim_v);
    let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
    let mut acc = [0.0f32; MAX_PER_LANE];
    let mut j = lo + warp;
    while j < hi {
        let kr = row::<E>(k, k_width, slot(j));
        let sc = E::score(warp_sum(E::dot_lane(&qr, kr, k_width, kvh * head_dim + lane, dpl)), scale);
        let m_new = fmax(m, sc);
        let (corr, p) = (exp(m - m_new), exp(sc - m_new));
        l = l * corr + p;
        let vr = row::<E>(v, v_width, slot(j));
        for (d, a) in acc.iter_mut().enumerate() {
            if (d as u32) < dplv {
                *a = *a * corr + p * E::load_value(vr, v_width, kvh * head_dim_v + lane + 32 * d as u32);
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

macro_rules! attention_batch_kernels {
    ($($name:ident: $ty:ty;)*) => {$(
        /// [`attention_split`] over a contiguous cache of
        #[doc = stringify!($ty)]
        /// elements.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            out: *mut f32, part: *mut f32, counters: *mut u32, q: *const f32, k: *const u8, v: *const u8,
            pos0: *const u32, n_heads: u32, n_kv_heads: u32, head_dim: u32, head_dim_v: u32, scale: f32, window: u32,
            n_splits: u32,
        ) {
            crate::common::pdl_enter();
            let t = bid_y();
            attention_split::<$ty>(out, part, counters, q, k, v, t, *pos0 + t, |j| j, n_heads, n_kv_heads, head_dim,
                                   head_dim_v, scale, window, n_splits)
        }
    )*};
}

attention_batch_kernels! {
    attention_f16: F16;
    attention_q8_0: Q8_0;
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
/// warps' V partials (8 x G x head_dim_v; first the quantized q of q8_0, 9 words per block of 32, until the
/// scores are done), then max / sum per group head and the last-block flag.
pub(crate) const fn dec_floats(g: usize) -> usize {
    g * dec_max_dim(g) + g * CHUNK as usize + 8 * g * dec_max_dim(g) + 2 * g + 4
}

/// Attention of one new token at position `*pos0` (flash-decoding): block (g, s) takes the keys of chunk s
/// (`CHUNK` positions, clipped to the causal range and the sliding window) for KV head g and all its query heads
/// (GQA: the K/V tile is read once for the group). Scores: each key's row read as 16-byte pieces (head_dim / 8
/// lanes per key for f16, head_dim / 16 for q8_0 plus each piece's block scale; several keys in flight per lane),
/// q.k summed over the key's lanes by shuffles (q8_0: q quantized once per block into shared memory, integer
/// products by `dp4a`); softmax over the chunk in shared memory; V read as 8 values per lane (16 bytes of f16, or
/// 8 quants and their scale, dequantized in registers), each lane accumulating its 8 dims for a subset of keys,
/// then summed over lanes and warps. Each chunk's (max, sum, acc) goes to `part` in `attention_f16`'s layout; the last
/// of the active chunks to finish (arrival counter `counters[g]`, left at zero) combines them into `out`. Chunks
/// past the position (the graph covers the whole context) exit at once and are not counted.
///
/// Launch (the kernels `attention_decode_g{1,2,4,8}` (f16) and `attention_decode_q8_0_g{1,2,4,8}`, for groups of up
/// to that many heads): grid = (n_kv_heads, n_splits, 1), block = (256, 1, 1); head_dim and head_dim_v powers of
/// two from 32 to `dec_max_dim(G)`.
/// Traffic: the causal range of K and V once (2 bytes per element, 34 / 32 for q8_0), q once per block, partials
/// (group x (head_dim_v + 2) floats per active chunk) written once and read once by the combining block.
///
/// The body takes one query row: `q`, `out`, `part` and `counters` point at that row's (the paged kernels
/// `attention_paged::attention_paged_decode_g*` offset them per batch token), `pos` is its position, and key j
/// lies in cache row `row_of(j)` (the identity here, the page table there).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn attention_decode<E: KvType, const G: usize>(
    sm: *mut f32, out: *mut f32, part: *mut f32, counters: *mut u32, q: *const f32, k: *const u8, v: *const u8,
    pos: u32, row_of: impl Fn(u32) -> u32, n_heads: u32, n_kv_heads: u32, head_dim: u32, head_dim_v: u32, scale: f32,
    window: u32, n_splits: u32,
) {
    let (kvh, s) = (bid(), bid_y());
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

    // q of the group
    let qg = q.add(kvh as usize * grp * hd);
    let mut i = t as usize;
    while i < grp * hd {
        *qs.add(i) = *qg.add(i);
        i += DEC_THREADS as usize;
    }
    sync_threads();
    if E::QUANT_Q {
        // into the V-partial area, unused until the scores are done
        E::quantize_q(qs, red as *mut u32, (grp * hd) as u32);
        sync_threads();
    }

    // ---- scores: key j's row in head_dim / piece pieces of 16 bytes, one lane each ----
    // head dims are powers of two (checked by the launcher): divisions are shifts
    let lpk = head_dim.trailing_zeros() - E::LOG_KPIECE;
    let pk = 1u32 << lpk; // pieces (lanes) per key
    let kpp = DEC_THREADS >> lpk; // keys per pass
    let (piece, slot) = (t & (pk - 1), t >> lpk);
    // the group loops are unrolled by hand (`unroll`), so that `qr` and `acc` stay in registers
    let mut qr = [E::q_piece(qs, red as *const u32, 0, scale); G];
    unroll::<G>(|g| {
        if g < grp {
            qr[g] = E::q_piece(qs, red as *const u32, (g * hd) as u32 + (piece << E::LOG_KPIECE), scale);
        }
    });
    let k_width = n_kv_heads * head_dim;
    let ke = kvh * head_dim + (piece << E::LOG_KPIECE); // this lane's element of a key row
    let mut base = 0;
    while base < n {
        let mut kw = [E::kpiece_zero(); 4];
        for (u, w) in kw.iter_mut().enumerate() {
            let j = base + slot + u as u32 * kpp;
            if j < n {
                *w = E::load_kpiece(row::<E>(k, k_width, row_of(lo + j)), k_width, ke);
            }
        }
        unroll::<4>(|u| {
            let j = base + slot + u as u32 * kpp;
            unroll::<G>(|g| {
                if g < grp {
                    let mut d = E::dot(&qr[g], &kw[u]);
                    let mut m = 1;
                    while m < pk {
                        d += shfl_xor(d, m);
                        m <<= 1;
                    }
                    if piece == 0 && j < n {
                        *sc.add(g * CHUNK as usize + j as usize) = E::score(d, scale);
                    }
                }
            });
        });
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
    let v_width = n_kv_heads * head_dim_v;
    let ve = kvh * head_dim_v + vpiece * 8; // this lane's element of a value row
    let mut acc = [[0.0f32; 8]; G];
    let mut base = 0;
    while base < n {
        let mut vw = [E::vpiece_zero(); 4];
        for (u, w) in vw.iter_mut().enumerate() {
            let j = base + kg + u as u32 * kgn;
            if j < n {
                *w = E::load_vpiece(row::<E>(v, v_width, row_of(lo + j)), v_width, ve);
            }
        }
        unroll::<4>(|u| {
            let j = base + kg + u as u32 * kgn;
            if j < n {
                let vf = E::unpack_v(&vw[u]);
                unroll::<G>(|g| {
                    if g < grp {
                        let p = *sc.add(g * CHUNK as usize + j as usize);
                        unroll::<8>(|e| acc[g][e] = fma(p, vf[e], acc[g][e]));
                    }
                });
            }
        });
        base += 4 * kgn;
    }
    // over the key groups of the warp (lanes pv apart), then over the warps through shared memory
    unroll::<G>(|g| {
        unroll::<8>(|e| {
            let mut m = pv;
            while m < 32 {
                acc[g][e] += shfl_xor(acc[g][e], m);
                m <<= 1;
            }
        })
    });
    let gd = grp * hdv;
    if lane < pv {
        unroll::<G>(|g| {
            if g < grp {
                unroll::<8>(|e| *red.add(warp as usize * gd + g * hdv + vpiece as usize * 8 + e) = acc[g][e]);
            }
        });
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
    ($($name:ident: $ty:ty, $g:literal;)*) => {$(
        /// [`attention_decode`] over a cache of
        #[doc = stringify!($ty)]
        /// elements, for query groups of up to
        #[doc = stringify!($g)]
        /// heads.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            out: *mut f32 /* (n_heads * head_dim_v) */, part: *mut f32, counters: *mut u32,
            q: *const f32 /* (n_heads * head_dim) */, k: *const u8, v: *const u8,
            pos0: *const u32, n_heads: u32, n_kv_heads: u32, head_dim: u32, head_dim_v: u32, scale: f32, window: u32,
            n_splits: u32,
        ) {
            crate::common::pdl_enter();
            let p: u64;
            // SAFETY: declares a shared array local to this asm scope and returns its generic address.
            asm!("{{", concat!(".shared .align 16 .b8 ", stringify!($name), "_smem[{n}];"),
                 concat!("cvta.shared.u64 {p}, ", stringify!($name), "_smem;"), "}}",
                 n = const dec_floats($g) * 4, p = out(reg64) p);
            attention_decode::<$ty, $g>(p as *mut f32, out, part, counters, q, k, v, *pos0, |j| j, n_heads,
                                        n_kv_heads, head_dim, head_dim_v, scale, window, n_splits)
        }
    )*};
}

attention_decode_kernels! {
    attention_decode_g1: F16, 1;
    attention_decode_g2: F16, 2;
    attention_decode_g4: F16, 4;
    attention_decode_g8: F16, 8;
    attention_decode_q8_0_g1: Q8_0, 1;
    attention_decode_q8_0_g2: Q8_0, 2;
    attention_decode_q8_0_g4: Q8_0, 4;
    attention_decode_q8_0_g8: Q8_0, 8;
}

// ----------------------------------------------------------------------------
// Prefill: flash attention on tensor cores for a batch of queries
// ----------------------------------------------------------------------------

// The block's dynamic shared memory (size from `flash_layout::smem_bytes`, set by the launcher).
core::arch::global_asm!(".extern .shared .align 16 .b8 fa_smem[];");

/// 32-bit shared address of the dynamic shared memory.
#[inline(always)]
fn fa_smem() -> u32 {
    let p: u32;
    // SAFETY: reads the address of the module's dynamic shared array.
    unsafe { asm!("mov.u32 {p}, fa_smem;", p = out(reg32) p, options(pure, nomem, nostack)) };
    p
}

/// D = A B + C for a 16x16 f16 tile A (row-major fragments a), a 16x8 f16 tile B (column-major fragments b),
/// f32 C and D.
#[inline(always)]
fn mma_f16(a: [u32; 4], b: [u32; 2], c: [f32; 4]) -> [f32; 4] {
    let (d0, d1, d2, d3): (f32, f32, f32, f32);
    // SAFETY: pure register arithmetic (warp-synchronous: every lane of the warp executes it).
    unsafe {
        asm!("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {{{d0}, {d1}, {d2}, {d3}}}, \
              {{{a0}, {a1}, {a2}, {a3}}}, {{{b0}, {b1}}}, {{{c0}, {c1}, {c2}, {c3}}};",
             d0 = out(reg32) d0, d1 = out(reg32) d1, d2 = out(reg32) d2, d3 = out(reg32) d3,
             a0 = in(reg32) a[0], a1 = in(reg32) a[1], a2 = in(reg32) a[2], a3 = in(reg32) a[3],
             b0 = in(reg32) b[0], b1 = in(reg32) b[1], c0 = in(reg32) c[0], c1 = in(reg32) c[1], c2 = in(reg32) c[2],
             c3 = in(reg32) c[3], options(pure, nomem, nostack))
    };
    [d0, d1, d2, d3]
}

/// Two f32 as an f16x2 word, round to nearest even: `lo` in bits 0..16 (the lower column), `hi` above.
#[inline(always)]
fn pack_f16x2(lo: f32, hi: f32) -> u32 {
    let r: u32;
    // SAFETY: pure conversion.
    unsafe {
        asm!("cvt.rn.f16x2.f32 {r}, {hi}, {lo};", r = out(reg32) r, hi = in(reg32) hi, lo = in(reg32) lo,
             options(pure, nomem, nostack))
    };
    r
}

/// 2^x (the hardware approximation, relative error ~2^-22; 2^-inf = 0).
#[inline(always)]
fn ex2(x: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic.
    unsafe { asm!("ex2.approx.ftz.f32 {r}, {x};", r = out(reg32) r, x = in(reg32) x, options(pure, nomem, nostack)) };
    r
}

/// 8-byte store of two floats to global memory; `p` 8-byte aligned.
#[inline(always)]
unsafe fn stg_f32x2(p: *mut f32, x: f32, y: f32) {
    asm!("st.global.v2.f32 [{p}], {{{x}, {y}}};", p = in(reg64) p, x = in(reg32) x, y = in(reg32) y, options(nostack));
}

/// Causal GQA attention of a prompt batch on tensor cores (flash attention): the function of `attention_f16`
/// (CPU twin `host::backend::cpu::attention`) with q and the probabilities rounded to f16 as the products'
/// operands, every sum in f32.
///
/// Block (b, y) takes `hpb` query heads b hpb .. (b + 1) hpb (all of one KV head's group, or a divisor of it)
/// and the 64 / hpb tokens of query block y (the last block first: it has the most keys), as 64 rows r = (token
/// r / hpb, head r % hpb); warp w owns rows 16 w .. 16 w + 16. Per tile of 64 keys from the first row's window
/// start to the last row's position (tiles past the diagonal are never visited; GQA: one K/V tile serves all
/// rows of the group's heads):
/// 1. S = Q K^T with `mma.m16n8k16` (f16 operands, f32 accumulators): Q (f16, converted once into shared
///    memory) times the key tile, both as fragments from `ldmatrix` (Q is read again per tile rather than held
///    in registers: that leaves room for 3-4 resident blocks per SM up to head dim 128, 2 at 256);
/// 2. S scaled by scale x log2(e), keys outside a row's range [pos - window + 1, pos] set to -inf (only in tiles
///    that cross a row's diagonal or window start), online softmax in f32 registers: new running max per row
///    (over the 4 lanes of the row), old sum and accumulators rescaled by 2^(m_old - m_new), p = 2^(s - m_new);
/// 3. O += P V: the S accumulators of 16 keys are the A fragment of P (converted to f16), V's B fragments come
///    from `ldmatrix.trans` of the row-major value tile.
///
/// K and V tiles go through their own buffers by `cp.async`: key tile j + 1 loads during P V of tile j, value
/// tile j + 1 during S of tile j + 1 (2 barriers per tile). Keys past the last row's position are zero-filled.
/// Finally out = O / l. Positions: query t of the batch is at `*pos0 + t` (read on the device).
///
/// Launch: grid = (n_heads / hpb, ceil(n_tok / (64 / hpb)), 1), block = (128, 1, 1), dynamic shared memory
/// `flash_layout::smem_bytes(D, DV)` (q, one key tile, one value tile, rows padded by 16 bytes); `hpb` divides
/// n_heads / n_kv_heads and is at most 64; q 16-byte aligned. Traffic: q read once, out written once; each block
/// reads the K and V rows of its key range once (2 bytes per element; the group's other head blocks and the
/// earlier query blocks read the same rows, mostly from L2). Work: 2 (D + DV) tensor-core flops per visited
/// (row, key) pair, n_tok^2 n_heads (D + DV) for a batch from position 0 plus the masked parts of the diagonal
/// tiles. Resources (ptxas 12.9, sm_80): 128 / 168 / 167 / 242 registers for head dims 64 / 96 / 128 / 256, no
/// spills, under launch bounds of 4 / 3 / 3 / 2 blocks per SM; 27 / 39 / 51 / 99 KiB of shared memory.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn attention_flash<const D: usize, const DV: usize>(
    out: *mut f32, q: *const f32, k: *const u16, v: *const u16, pos0: *const u32, n_tok: u32, n_heads: u32,
    n_kv_heads: u32, hpb: u32, scale_log2: f32, window: u32,
) {
    use crate::flash_layout::{off_k, off_v, row_bytes, KEYS, ROWS, THREADS};
    use crate::quant::{cp_async16, cp_async16_full, cp_async_commit, cp_async_wait, ldsm_x4, ldsm_x4_trans, sts_u4};
    let (t, lane, warp) = (tid(), tid() & 31, tid() >> 5);
    let (gq, tq) = (lane >> 2, lane & 3);
    let grp = udiv(n_heads, n_kv_heads);
    let nt = udiv(ROWS, hpb); // tokens per block
    let h0 = bid() * hpb;
    let kvh = udiv(h0, grp);
    let t0 = (nctaid_y() - 1 - bid_y()) * nt;
    let t_end = min_u32(t0 + nt, n_tok);
    let p0 = *pos0;
    let (pos_first, pos_last) = (p0 + t0, p0 + t_end - 1);
    let lower = |p: u32| if window > 0 && p + 1 > window { p + 1 - window } else { 0 };
    let (lo, hi, lo_last) = (lower(pos_first), pos_last + 1, lower(pos_last));
    let (j0, j1) = (lo / KEYS, (hi - 1) / KEYS);

    let sm = fa_smem();
    let (sq, sk, sv) = (sm, sm + off_k(D as u32), sm + off_v(D as u32));
    let (rq, rv) = (row_bytes(D as u32), row_bytes(DV as u32));
    let (k_stride, v_stride) = ((n_kv_heads as usize) * D, (n_kv_heads as usize) * DV);
    let (kh, vh) = (k.add(kvh as usize * D), v.add(kvh as usize * DV));

    // Copy the tile of keys key0 .. key0 + 64 of `src` (rows of `dd` f16, `stride` apart) to `dst`: 16-byte
    // chunk c = t + 128 i is row c / (dd / 8), piece c % (dd / 8); rows from `hi` on are zero-filled (the
    // source address of a zero-byte copy is not read). Where dd / 8 divides 128 (all but dd = 96), thread t
    // keeps its piece and steps 128 / (dd / 8) rows per i, so one pointer serves all its copies.
    let tile = #[inline(always)]
    |dst: u32, src: *const u16, stride: usize, dd: usize, key0: u32| {
        let (cpr, rb) = (dd as u32 / 8, row_bytes(dd as u32));
        if THREADS % cpr == 0 {
            let (r0, cc, rstep) = (t / cpr, t % cpr, THREADS / cpr);
            // (wrapping: rows past the cache's end get a pointer too, never read)
            let mut p = src.wrapping_add((key0 + r0) as usize * stride + 8 * cc as usize);
            let d0 = dst + r0 * rb + 16 * cc;
            unroll::<16>(
                #[inline(always)]
                |i| {
                    if i < dd / 16 {
                        let d = d0 + rstep * rb * i as u32;
                        if key0 + r0 + rstep * (i as u32) < hi {
                            cp_async16_full(d, p as *const u8);
                        } else {
                            cp_async16(d, src as *const u8, 0);
                        }
                        p = p.wrapping_add(rstep as usize * stride);
                    }
                },
            );
        } else {
            unroll::<16>(
                #[inline(always)]
                |i| {
                    if i < dd / 16 {
                        let c = t + THREADS * i as u32;
                        let (r, cc) = (c / cpr, c % cpr);
                        let d = dst + r * rb + 16 * cc;
                        if key0 + r < hi {
                            cp_async16_full(d, src.add((key0 + r) as usize * stride + 8 * cc as usize) as *const u8);
                        } else {
                            cp_async16(d, src as *const u8, 0);
                        }
                    }
                },
            );
        }
    };
    tile(sk, kh, k_stride, D, j0 * KEYS);
    cp_async_commit();
    tile(sv, vh, v_stride, DV, j0 * KEYS);
    cp_async_commit();

    // Q of the block's rows to f16 in shared memory (zeros for rows past the batch): chunk c = t + 128 i of 8
    // values is row c / (D / 8), piece c % (D / 8)
    unroll::<16>(
        #[inline(always)]
        |i| {
            if i < D / 16 {
                let c = t + THREADS * i as u32;
                let (r, cc) = (c / (D as u32 / 8), c % (D as u32 / 8));
                let (tl, hl) = (udiv(r, hpb), urem(r, hpb));
                let mut w = [0u32; 4];
                if tl < nt && t0 + tl < n_tok {
                    let src = q.add(((t0 + tl) * n_heads + h0 + hl) as usize * D + 8 * cc as usize);
                    let (a, b) = (ld_nc_f32x4(src), ld_nc_f32x4(src.add(4)));
                    w = [pack_f16x2(a[0], a[1]), pack_f16x2(a[2], a[3]), pack_f16x2(b[0], b[1]), pack_f16x2(b[2], b[3])];
                }
                sts_u4(sq + r * rq + 16 * cc, w);
            }
        },
    );

    // This lane's two rows (16 warp + gq and 8 further): position, window start, and where the output goes
    let mut rpos = [0u32; 2];
    let mut rlo = [0u32; 2];
    let mut rout = [0usize; 2];
    let mut rok = [false; 2];
    unroll::<2>(
        #[inline(always)]
        |i| {
            let r = 16 * warp + gq + 8 * i as u32;
            let (tl, hl) = (udiv(r, hpb), urem(r, hpb));
            rok[i] = tl < nt && t0 + tl < n_tok;
            rpos[i] = min_u32(p0 + t0 + tl, pos_last);
            rlo[i] = lower(rpos[i]);
            rout[i] = ((t0 + tl) * n_heads + h0 + hl) as usize * DV;
        },
    );

    // ldmatrix lane addresses. A (Q rows): row (lane & 7) + 8 ((lane >> 3) & 1), column 8 (lane >> 4): matrices
    // (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15) = a0..a3.
    let q_lane = sq + (16 * warp + (lane & 7) + 8 * ((lane >> 3) & 1)) * rq + 16 * (lane >> 4);
    // B of S (key rows, non-transposed): key (lane & 7) + 8 (lane >> 4), dim 8 ((lane >> 3) & 1): matrices
    // (keys 0-7, dims 0-7), (0-7, 8-15), (8-15, 0-7), (8-15, 8-15) = b0, b1 of key group n, then of n + 1.
    let k_lane = sk + ((lane & 7) + 8 * (lane >> 4)) * rq + 16 * ((lane >> 3) & 1);
    // B of P V (value rows, transposed): key (lane & 7) + 8 ((lane >> 3) & 1), dim 8 (lane >> 4): matrices
    // (keys 0-7, dims 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15) = b0, b1 of dim group n, then of n + 1.
    let v_lane = sv + ((lane & 7) + 8 * ((lane >> 3) & 1)) * rv + 16 * (lane >> 4);

    cp_async_wait(1);
    sync_threads(); // q and key tile j0 visible

    // accumulators: dims 8 n + 2 tq (+1) of rows gq (elements 0, 1) and gq + 8 (2, 3)
    let mut o = [[0.0f32; 4]; 32];
    let mut m = [f32::NEG_INFINITY; 2];
    let mut l = [0.0f32; 2];
    for j in j0..=j1 {
        let key0 = j * KEYS;
        // 1) S = Q K^T: 8 key groups of 8
        let mut s = [[0.0f32; 4]; 8];
        unroll::<16>(
            #[inline(always)]
            |kk| {
                if kk < D / 16 {
                    let a = ldsm_x4(q_lane + 32 * kk as u32);
                    unroll::<4>(
                        #[inline(always)]
                        |np| {
                            let b = ldsm_x4(k_lane + 16 * np as u32 * rq + 32 * kk as u32);
                            s[2 * np] = mma_f16(a, [b[0], b[1]], s[2 * np]);
                            s[2 * np + 1] = mma_f16(a, [b[2], b[3]], s[2 * np + 1]);
                        },
                    );
                }
            },
        );
        // 2) scale, mask, online softmax
        // key key0 + 2 tq + c (c = 8 n + e % 2) is in row i's range iff lo_c[i] <= c <= hi_c[i] (offsets from this
        // tile, so that no per-element bound is loop-invariant and kept in a register)
        let full = key0 >= lo_last && key0 + KEYS - 1 <= pos_first;
        let base = (key0 + 2 * tq) as i32;
        let (lo_c, hi_c) = ([rlo[0] as i32 - base, rlo[1] as i32 - base], [rpos[0] as i32 - base, rpos[1] as i32 - base]);
        let mut mx = m;
        unroll::<8>(
            #[inline(always)]
            |n| {
                unroll::<4>(
                    #[inline(always)]
                    |e| {
                        let x = s[n][e] * scale_log2;
                        let (c, i) = ((8 * n + e % 2) as i32, e / 2);
                        s[n][e] = if full || (c >= lo_c[i] && c <= hi_c[i]) { x } else { f32::NEG_INFINITY };
                        mx[i] = fmax(mx[i], s[n][e]);
                    },
                );
            },
        );
        let mut mu = [0.0f32; 2];
        let mut corr = [0.0f32; 2];
        unroll::<2>(
            #[inline(always)]
            |i| {
                mx[i] = fmax(mx[i], shfl_xor(mx[i], 1));
                mx[i] = fmax(mx[i], shfl_xor(mx[i], 2));
                // a row without keys so far keeps m = -inf: subtract 0 instead (its p are all 0)
                mu[i] = if mx[i] == f32::NEG_INFINITY { 0.0 } else { mx[i] };
                corr[i] = ex2(m[i] - mu[i]);
                m[i] = mx[i];
                l[i] *= corr[i];
            },
        );
        unroll::<8>(
            #[inline(always)]
            |n| {
                unroll::<4>(
                    #[inline(always)]
                    |e| {
                        let p = ex2(s[n][e] - mu[e / 2]);
                        s[n][e] = p;
                        l[e / 2] += p;
                    },
                );
            },
        );
        unroll::<16>(
            #[inline(always)]
            |n| {
                if n < DV / 8 {
                    unroll::<4>(
                        #[inline(always)]
                        |e| o[n][e] *= corr[e / 2],
                    );
                }
            },
        );
        unroll::<16>(
            #[inline(always)]
            |n| {
                if n + 16 < DV / 8 {
                    unroll::<4>(
                        #[inline(always)]
                        |e| o[n + 16][e] *= corr[e / 2],
                    );
                }
            },
        );
        // P as A fragments: keys 16 kk .. 16 kk + 16 are key groups 2 kk (a0, a1) and 2 kk + 1 (a2, a3)
        let mut pa = [[0u32; 4]; 4];
        unroll::<4>(
            #[inline(always)]
            |kk| {
                let (x, y) = (s[2 * kk], s[2 * kk + 1]);
                pa[kk] = [pack_f16x2(x[0], x[1]), pack_f16x2(x[2], x[3]), pack_f16x2(y[0], y[1]), pack_f16x2(y[2], y[3])];
            },
        );
        cp_async_wait(0);
        sync_threads(); // value tile j visible; every warp is done with key tile j
        if j < j1 {
            tile(sk, kh, k_stride, D, key0 + KEYS);
        }
        cp_async_commit();
        // 3) O += P V: dims in pairs of groups of 8
        unroll::<4>(
            #[inline(always)]
            |kk| {
                unroll::<16>(
                    #[inline(always)]
                    |dp| {
                        if dp < DV / 16 {
                            let b = ldsm_x4_trans(v_lane + 16 * kk as u32 * rv + 32 * dp as u32);
                            o[2 * dp] = mma_f16(pa[kk], [b[0], b[1]], o[2 * dp]);
                            o[2 * dp + 1] = mma_f16(pa[kk], [b[2], b[3]], o[2 * dp + 1]);
                        }
                    },
                );
            },
        );
        cp_async_wait(0);
        sync_threads(); // key tile j + 1 visible; every warp is done with value tile j
        if j < j1 {
            tile(sv, vh, v_stride, DV, key0 + KEYS);
        }
        cp_async_commit();
    }

    // out = O / l, l summed over the row's 4 lanes
    unroll::<2>(
        #[inline(always)]
        |i| {
            l[i] += shfl_xor(l[i], 1);
            l[i] += shfl_xor(l[i], 2);
        },
    );
    unroll::<2>(
        #[inline(always)]
        |i| {
            if rok[i] {
                let inv = 1.0 / l[i];
                let row = out.add(rout[i] + 2 * tq as usize);
                unroll::<16>(
                    #[inline(always)]
                    |n| {
                        if n < DV / 8 {
                            stg_f32x2(row.add(8 * n), o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
                        }
                    },
                );
                unroll::<16>(
                    #[inline(always)]
                    |n| {
                        if n + 16 < DV / 8 {
                            stg_f32x2(row.add(8 * (n + 16)), o[n + 16][2 * i] * inv, o[n + 16][2 * i + 1] * inv);
                        }
                    },
                );
            }
        },
    );
}

macro_rules! attention_flash_kernels {
    ($($name:ident: $d:literal, $dv:literal, $mb:literal;)*) => {$(
        /// [`attention_flash`] for head dims
        #[doc = concat!(stringify!($d), " (q, k) and ", stringify!($dv), " (v), with registers for ", stringify!($mb),
                        " resident blocks per SM.")]
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            out: *mut f32 /* (n_tok, n_heads * head_dim_v) */, q: *const f32 /* (n_tok, n_heads * head_dim) */,
            k: *const u16, v: *const u16, pos0: *const u32, n_tok: u32, n_heads: u32, n_kv_heads: u32, hpb: u32,
            scale_log2: f32, window: u32,
        ) {
            crate::common::pdl_enter();
            crate::launch_bounds!(crate::flash_layout::THREADS, $mb);
            attention_flash::<$d, $dv>(out, q, k, v, pos0, n_tok, n_heads, n_kv_heads, hpb, scale_log2, window)
        }
    )*};
}

attention_flash_kernels! {
    attention_flash_d64: 64, 64, 4;
    attention_flash_d96: 96, 96, 3;
    attention_flash_d128: 128, 128, 3;
    attention_flash_d256: 256, 256, 2;
}
