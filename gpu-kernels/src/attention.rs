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
