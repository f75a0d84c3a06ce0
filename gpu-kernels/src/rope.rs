//! Rotary position embedding and the KV-cache store (f16 or q8_0, `kv.rs`). CPU twin: `host::backend::cpu::rope`.
//!
//! The angles come from a (ctx, rope_dim / 2) table of cos and sin that the host computes once with the CPU's
//! own formula, so both backends rotate by bit-identical angles.

use crate::common::*;
use crate::kv::{row, KvType, F16, Q8_0};

/// Rotate each head of x in place: row t is at position pos0 + t, with pos0 read from device memory (so a
/// captured CUDA graph replays at the current position). Pair i of a head is (2i, 2i+1) (normal) or
/// (i, i + rope_dim/2) (neox); dims >= rope_dim pass through.
///
/// Launch: grid = (n_tok, 1, 1), block = (256, 1, 1). Traffic: one read and write of x, rope_dim floats of the
/// table per row.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn rope_f32(x: *mut f32 /* (n_tok, n_heads * head_dim) */,
                                           cos: *const f32 /* (ctx, rope_dim / 2) */, sin: *const f32,
                                           pos0: *const u32, n_heads: u32, head_dim: u32, rope_dim: u32, neox: u32) {
    crate::common::pdl_enter();
    let t = bid();
    rope_row(x.add((t * n_heads * head_dim) as usize), cos, sin, *pos0 + t, n_heads, head_dim, rope_dim, neox, tid(),
             ntid());
}

/// Rotate the n_heads heads of one row at position `pos`: this thread takes the (head, pair) items `first`,
/// `first + step`, .. ; shared by `rope_f32` (the block's threads over the row) and `attention_paged::rope_pos_f32`
/// (the row spread over several blocks).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn rope_row(row: *mut f32, cos: *const f32, sin: *const f32, pos: u32, n_heads: u32, head_dim: u32,
                              rope_dim: u32, neox: u32, first: u32, step: u32) {
    let half = rope_dim / 2;
    let (c, s) = (cos.add((pos * half) as usize), sin.add((pos * half) as usize));
    let mut k = first;
    while k < n_heads * half {
        let (h, i) = (udiv(k, half), urem(k, half));
        let (a, b) = if neox != 0 { (i, i + half) } else { (2 * i, 2 * i + 1) };
        let head = row.add((h * head_dim) as usize);
        let (x0, x1) = (*head.add(a as usize), *head.add(b as usize));
        let (cv, sv) = (*c.add(i as usize), *s.add(i as usize));
        *head.add(a as usize) = x0 * cv - x1 * sv;
        *head.add(b as usize) = x0 * sv + x1 * cv;
        k += step;
    }
}

/// Store n_tok rows of x into the cache at positions pos0.. (pos0 from device memory): row pos0 + t of the cache
/// gets x[t * row_len ..][..row_len], as f16 (`kv_store_f16`: f16(x), round to nearest even) or as q8_0 blocks
/// (`kv_store_q8_0`, a warp per block of 32; row_len a multiple of 32).
///
/// Launch: grid = (n_tok, 1, 1), block = (256, 1, 1). Traffic: 4 bytes read + 2 (q8_0: 34 / 32) written per
/// element.
#[inline(always)]
unsafe fn kv_store<E: KvType>(cache: *mut u8, x: *const f32, pos0: *const u32, row_len: u32) {
    let t = bid();
    let dst = row::<E>(cache, row_len, *pos0 + t) as *mut u8;
    let src = x.add((t * row_len) as usize);
    let mut i = tid();
    while i < row_len {
        E::store(dst, row_len, i, *src.add(i as usize));
        i += ntid();
    }
}

/// [`kv_store`] into an f16 cache.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn kv_store_f16(cache: *mut u8, x: *const f32, pos0: *const u32, row_len: u32) {
    crate::common::pdl_enter();
    kv_store::<F16>(cache, x, pos0, row_len)
}

/// [`kv_store`] into a q8_0 cache.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn kv_store_q8_0(cache: *mut u8, x: *const f32, pos0: *const u32, row_len: u32) {
    crate::common::pdl_enter();
    kv_store::<Q8_0>(cache, x, pos0, row_len)
}

/// One decode token's attention inputs in one launch: for the fused projection `qkv` = [q | k | v] (heads of
/// `head_dim`, v heads of `head_dim_v`), RMS-normalise each q and k head (when `q_norm` / `k_norm` are not null,
/// Gemma-3), rotate them by the angles of position pos0, and store k and v into the caches at pos0 (f16:
/// `rope_store_f16`, q8_0: `rope_store_q8_0`): what `rmsnorm_f32` (per head), `rope_f32` and `kv_store_*` do one
/// launch each, with the same arithmetic (a head's sum of squares is reduced in the same order), so the results
/// are bit-identical.
///
/// Launch: grid = (n_heads + n_kv_heads + 1, 1, 1), block = (256, 1, 1): a block per q or k head, the last block
/// stores v; head_dim % 4 == 0 (q8_0: head dims multiples of 32, so that each warp stores whole blocks) and
/// head_dim <= 1024. Traffic: one read and write of q and k, one read of v, 2 bytes (q8_0: 34 / 32) per k and v
/// element written to the caches.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rope_store<E: KvType>(
    qkv: *mut f32, k_cache: *mut u8, v_cache: *mut u8, cos: *const f32 /* (ctx, rope_dim / 2) */,
    sin: *const f32, pos0: *const u32, n_heads: u32, n_kv_heads: u32, head_dim: u32, head_dim_v: u32, rope_dim: u32,
    neox: u32, q_norm: *const f32, k_norm: *const f32, eps: f32,
) {
    let (b, pos) = (bid(), *pos0);
    let (kv_dim, kv_dim_v) = (n_kv_heads * head_dim, n_kv_heads * head_dim_v);
    if b == n_heads + n_kv_heads {
        let src = qkv.add(((n_heads + n_kv_heads) * head_dim) as usize);
        let dst = row::<E>(v_cache, kv_dim_v, pos) as *mut u8;
        let mut i = tid();
        while i < kv_dim_v {
            E::store(dst, kv_dim_v, i, *src.add(i as usize));
            i += ntid();
        }
        return;
    }
    let is_k = b >= n_heads;
    let head = qkv.add((b * head_dim) as usize);
    // 1) optional RMSNorm of the head, as rmsnorm_f32 on a row of head_dim (each thread's float4 chunks t, t + 256)
    let nw = if is_k { k_norm } else { q_norm };
    if !nw.is_null() {
        let n4 = head_dim / 4;
        let mut ss = 0.0f32;
        let mut i = tid();
        while i < n4 {
            let c = ld_f32x4(head.add(4 * i as usize));
            ss += c[0] * c[0] + c[1] * c[1] + c[2] * c[2] + c[3] * c[3];
            i += ntid();
        }
        let scale = 1.0 / sqrt(block_sum(ss) / head_dim as f32 + eps);
        let mut i = tid();
        while i < n4 {
            let o = 4 * i as usize;
            let (v, g) = (ld_f32x4(head.add(o)), ld_f32x4(nw.add(o)));
            st_f32x4(head.add(o), [g[0] * (v[0] * scale), g[1] * (v[1] * scale), g[2] * (v[2] * scale), g[3] * (v[3] * scale)]);
            i += ntid();
        }
        sync_threads();
    }
    // 2) rotate, as rope_f32
    let half = rope_dim / 2;
    let (c, s) = (cos.add((pos * half) as usize), sin.add((pos * half) as usize));
    let mut i = tid();
    while i < half {
        let (a, bb) = if neox != 0 { (i, i + half) } else { (2 * i, 2 * i + 1) };
        let (x0, x1) = (*head.add(a as usize), *head.add(bb as usize));
        let (cv, sv) = (*c.add(i as usize), *s.add(i as usize));
        *head.add(a as usize) = x0 * cv - x1 * sv;
        *head.add(bb as usize) = x0 * sv + x1 * cv;
        i += ntid();
    }
    // 3) k heads into the cache
    if is_k {
        sync_threads();
        let (dst, e0) = (row::<E>(k_cache, kv_dim, pos) as *mut u8, (b - n_heads) * head_dim);
        let mut i = tid();
        while i < head_dim {
            E::store(dst, kv_dim, e0 + i, *head.add(i as usize));
            i += ntid();
        }
    }
}

macro_rules! rope_store_kernels {
    ($($name:ident: $ty:ty;)*) => {$(
        /// [`rope_store`] into caches of
        #[doc = stringify!($ty)]
        /// elements.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            qkv: *mut f32, k_cache: *mut u8, v_cache: *mut u8, cos: *const f32, sin: *const f32, pos0: *const u32,
            n_heads: u32, n_kv_heads: u32, head_dim: u32, head_dim_v: u32, rope_dim: u32, neox: u32,
            q_norm: *const f32, k_norm: *const f32, eps: f32,
        ) {
            crate::common::pdl_enter();
            rope_store::<$ty>(qkv, k_cache, v_cache, cos, sin, pos0, n_heads, n_kv_heads, head_dim, head_dim_v,
                              rope_dim, neox, q_norm, k_norm, eps)
        }
    )*};
}

rope_store_kernels! {
    rope_store_f16: F16;
    rope_store_q8_0: Q8_0;
}

