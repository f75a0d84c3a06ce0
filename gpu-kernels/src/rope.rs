//! Rotary position embedding and the KV-cache store. CPU twin: `host::backend::cpu::rope`.
//!
//! The angles come from a (ctx, rope_dim / 2) table of cos and sin that the host computes once with the CPU's
//! own formula, so both backends rotate by bit-identical angles.

use crate::common::*;

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
    let half = rope_dim / 2;
    let pos = *pos0 + t;
    let row = x.add((t * n_heads * head_dim) as usize);
    let (c, s) = (cos.add((pos * half) as usize), sin.add((pos * half) as usize));
    let mut k = tid();
    while k < n_heads * half {
        let (h, i) = (udiv(k, half), urem(k, half));
        let (a, b) = if neox != 0 { (i, i + half) } else { (2 * i, 2 * i + 1) };
        let head = row.add((h * head_dim) as usize);
        let (x0, x1) = (*head.add(a as usize), *head.add(b as usize));
        let (cv, sv) = (*c.add(i as usize), *s.add(i as usize));
        *head.add(a as usize) = x0 * cv - x1 * sv;
        *head.add(b as usize) = x0 * sv + x1 * cv;
        k += ntid();
    }
}

/// Store n_tok rows of x into the f16 cache at positions pos0.. (pos0 from device memory):
/// cache[(pos0 + t) * row_len + i] = f16(x[t * row_len + i]).
///
/// Launch: grid = (n_tok, 1, 1), block = (256, 1, 1). Traffic: 4 bytes read + 2 written per element.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn kv_store_f16(cache: *mut u16, x: *const f32, pos0: *const u32, row_len: u32) {
    crate::common::pdl_enter();
    let t = bid();
    let dst = cache.add(((*pos0 + t) * row_len) as usize);
    let src = x.add((t * row_len) as usize);
    let mut i = tid();
    while i < row_len {
        *dst.add(i as usize) = f32_to_f16(*src.add(i as usize));
        i += ntid();
    }
}
