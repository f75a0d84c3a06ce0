//! The element types of the KV cache (`kv_layout.rs`) as the attention and cache-store kernels see them: f16 and
//! q8_0. Everything those kernels do differently by type (read a key piece, multiply it with q, read values,
//! store a row) is a method of [`KvType`], so each kernel is written once, generic over the type, and exported
//! once per type (`attention_f16` / `attention_q8_0`, `attention_decode_g*` / `attention_decode_q8_0_g*`,
//! `kv_store_*`, `rope_store_*`).
//!
//! q8_0 follows ggml's CPU flash attention over such a cache (the CPU twin `host::backend::cpu::attention_q8_0_rows`):
//! the stored blocks are ggml's AVX2 `quantize_row_q8_0` of the f32 row (d = amax / 127 rounded to f16,
//! q = round-half-even(x * 127 / amax)); q is quantized the same way, block by block, and q.k is the integer dot
//! product of each pair of blocks times d_k * d_q, times the attention scale at the end; values are dequantized in
//! registers (q * d).

use core::arch::asm;

use crate::common::*;
use crate::kv_layout::*;
use crate::quant::q8::{dp4a, fabs, round_even};
use crate::quant::unroll;

/// The start of row (position) `j` of a cache of `width`-element rows.
#[inline(always)]
pub unsafe fn row<E: KvType>(cache: *const u8, width: u32, j: u32) -> *const u8 {
    cache.add(j as usize * E::row_bytes(width))
}

/// A KV cache element type. `row` pointers come from [`row`]; `e` is an element index within the row (the KV
/// head's offset plus the element within the head). Methods marked warp-collective must be called by all 32 lanes
/// of a warp together, lane l with the element of index 32 b + l of some block b.
pub trait KvType {
    /// log2 of the elements of one key piece, the 16 bytes a decode lane reads of a key: 8 f16 or 16 i8.
    const LOG_KPIECE: u32;
    /// q is quantized to q8_0 blocks before its products with the keys (`quantize_q`).
    const QUANT_Q: bool;
    /// A key piece as loaded.
    type KPiece: Copy;
    /// The query elements of one key piece, ready for `dot`.
    type QPiece: Copy;
    /// 8 consecutive values as loaded.
    type VPiece: Copy;
    /// A query's elements lane + 32 i (i < 8) in one lane, ready for `dot_lane`.
    type QLane: Copy;

    /// Bytes of a row of `width` elements.
    fn row_bytes(width: u32) -> usize;

    // ---- the decode kernel: pieces of keys, 8 values per lane ----
    fn kpiece_zero() -> Self::KPiece;
    /// The key piece at element `e` (a multiple of the piece size) of `row`.
    unsafe fn load_kpiece(row: *const u8, width: u32, e: u32) -> Self::KPiece;
    /// Whole block: turn the `n` floats of q at `qs` (shared memory) into what `q_piece` reads from `qq` (shared,
    /// `n / 32 * 9` words). A barrier must follow before `q_piece`.
    unsafe fn quantize_q(qs: *const f32, qq: *mut u32, n: u32);
    /// The query piece at element `e` of the group's q (`qs` as written, `qq` as `quantize_q` left it).
    unsafe fn q_piece(qs: *const f32, qq: *const u32, e: u32, scale: f32) -> Self::QPiece;
    /// The part of q.k (scaled or not: `score` finishes it) of one piece.
    fn dot(q: &Self::QPiece, k: &Self::KPiece) -> f32;
    fn vpiece_zero() -> Self::VPiece;
    /// The 8 values at element `e` (a multiple of 8) of `row`.
    unsafe fn load_vpiece(row: *const u8, width: u32, e: u32) -> Self::VPiece;
    fn unpack_v(v: &Self::VPiece) -> [f32; 8];

    /// The attention score from the sum of `dot` or `dot_lane` over a key's pieces.
    fn score(s: f32, scale: f32) -> f32;

    // ---- the batch kernel: a key per warp, element lane + 32 i in lane `lane` ----
    /// Warp-collective (q8_0): `q[i]` is element lane + 32 i of a query head, for i < `dpl`.
    fn q_lane(q: &[f32; 8], dpl: u32, scale: f32) -> Self::QLane;
    /// This lane's part of q.k over elements e0 + 32 i, i < `dpl`, of `row`.
    unsafe fn dot_lane(q: &Self::QLane, row: *const u8, width: u32, e0: u32, dpl: u32) -> f32;
    /// One value.
    unsafe fn load_value(row: *const u8, width: u32, e: u32) -> f32;

    // ---- the cache store ----
    /// Warp-collective (q8_0): store x as element `e` of `row`.
    unsafe fn store(row: *mut u8, width: u32, e: u32, x: f32);
}

/// Half precision: what the kernels did before q8_0 came, with the same arithmetic (q pre-multiplied by the
/// scale, q.k as a chain of fma over the piece), so f16 results are unchanged.
pub struct F16;

impl KvType for F16 {
    const LOG_KPIECE: u32 = 3;
    const QUANT_Q: bool = false;
    type KPiece = [u32; 4];
    type QPiece = [f32; 8];
    type VPiece = [u32; 4];
    type QLane = [f32; 8];

    #[inline(always)]
    fn row_bytes(width: u32) -> usize {
        2 * width as usize
    }

    #[inline(always)]
    fn kpiece_zero() -> [u32; 4] {
        [0; 4]
    }
    #[inline(always)]
    unsafe fn load_kpiece(row: *const u8, _width: u32, e: u32) -> [u32; 4] {
        ldg16(row.add(2 * e as usize))
    }
    #[inline(always)]
    unsafe fn quantize_q(_qs: *const f32, _qq: *mut u32, _n: u32) {}
    #[inline(always)]
    unsafe fn q_piece(qs: *const f32, _qq: *const u32, e: u32, scale: f32) -> [f32; 8] {
        let mut r = [0.0f32; 8];
        for (i, x) in r.iter_mut().enumerate() {
            *x = *qs.add(e as usize + i) * scale;
        }
        r
    }
    #[inline(always)]
    fn dot(q: &[f32; 8], k: &[u32; 4]) -> f32 {
        let kf = unpack_f16x8(k);
        let mut d = 0.0f32;
        for e in 0..8 {
            d = fma(q[e], kf[e], d);
        }
        d
    }
    #[inline(always)]
    fn vpiece_zero() -> [u32; 4] {
        [0; 4]
    }
    #[inline(always)]
    unsafe fn load_vpiece(row: *const u8, _width: u32, e: u32) -> [u32; 4] {
        ldg16(row.add(2 * e as usize))
    }
    #[inline(always)]
    fn unpack_v(v: &[u32; 4]) -> [f32; 8] {
        unpack_f16x8(v)
    }

    #[inline(always)]
    fn score(s: f32, _scale: f32) -> f32 {
        s
    }

    #[inline(always)]
    fn q_lane(q: &[f32; 8], dpl: u32, scale: f32) -> [f32; 8] {
        let mut r = [0.0f32; 8];
        for (j, x) in r.iter_mut().enumerate() {
            if (j as u32) < dpl {
                *x = q[j] * scale;
            }
        }
        r
    }
    #[inline(always)]
    unsafe fn dot_lane(q: &[f32; 8], row: *const u8, _width: u32, e0: u32, dpl: u32) -> f32 {
        let kr = row as *const u16;
        let mut dot = 0.0f32;
        for (d, &qv) in q.iter().enumerate() {
            if (d as u32) < dpl {
                dot += qv * f16_to_f32(*kr.add((e0 + 32 * d as u32) as usize));
            }
        }
        dot
    }
    #[inline(always)]
    unsafe fn load_value(row: *const u8, _width: u32, e: u32) -> f32 {
        f16_to_f32(*(row as *const u16).add(e as usize))
    }

    #[inline(always)]
    unsafe fn store(row: *mut u8, _width: u32, e: u32, x: f32) {
        *(row as *mut u16).add(e as usize) = f32_to_f16(x);
    }
}

/// q8_0 blocks in the split layout of `kv_layout.rs`.
pub struct Q8_0;

impl KvType for Q8_0 {
    const LOG_KPIECE: u32 = 4;
    const QUANT_Q: bool = true;
    /// 16 quants and the f16 d of their block.
    type KPiece = ([u32; 4], u16);
    /// 16 quants of q and the f16-rounded d of their block.
    type QPiece = ([u32; 4], f32);
    /// 8 quants and the f16 d of their block.
    type VPiece = ([u32; 2], u16);
    /// q's quants and their blocks' d (f16-rounded).
    type QLane = ([i32; 8], [f32; 8]);

    #[inline(always)]
    fn row_bytes(width: u32) -> usize {
        q8_0_row_bytes(width) as usize
    }

    #[inline(always)]
    fn kpiece_zero() -> ([u32; 4], u16) {
        ([0; 4], 0)
    }
    #[inline(always)]
    unsafe fn load_kpiece(row: *const u8, width: u32, e: u32) -> ([u32; 4], u16) {
        (ldg16(row.add(e as usize)), ldg_u16(row.add(q8_0_scale_offset(width, e) as usize)))
    }
    /// Warp w quantizes blocks w, w + 8, ...: block b's 32 quants as bytes at `qq + 36 b`, its d as an f32 after.
    #[inline(always)]
    unsafe fn quantize_q(qs: *const f32, qq: *mut u32, n: u32) {
        let (lane, warp, n_warps) = (tid() & 31, tid() >> 5, ntid() >> 5);
        let mut b = warp;
        while b * QK8_0 < n {
            let (d, q) = q8_0_warp(*qs.add((b * QK8_0 + lane) as usize));
            *(qq.add(9 * b as usize) as *mut i8).add(lane as usize) = q as i8;
            if lane == 0 {
                *qq.add(9 * b as usize + 8) = f16_to_f32(f32_to_f16(d)).to_bits();
            }
            b += n_warps;
        }
    }
    #[inline(always)]
    unsafe fn q_piece(_qs: *const f32, qq: *const u32, e: u32, _scale: f32) -> ([u32; 4], f32) {
        let blk = qq.add(9 * (e / QK8_0) as usize);
        let w = blk.add(4 * ((e / 16) & 1) as usize);
        ([*w, *w.add(1), *w.add(2), *w.add(3)], f32::from_bits(*blk.add(8)))
    }
    /// ggml's `vec_dot_q8_0_q8_0` for half a block: (d_k * d_q) * (integer sum of the 16 products).
    #[inline(always)]
    fn dot(q: &([u32; 4], f32), k: &([u32; 4], u16)) -> f32 {
        let mut s = 0i32;
        for i in 0..4 {
            s = dp4a(k.0[i], q.0[i], s);
        }
        f16_to_f32(k.1) * q.1 * s as f32
    }
    #[inline(always)]
    fn vpiece_zero() -> ([u32; 2], u16) {
        ([0; 2], 0)
    }
    #[inline(always)]
    unsafe fn load_vpiece(row: *const u8, width: u32, e: u32) -> ([u32; 2], u16) {
        (ldg8(row.add(e as usize)), ldg_u16(row.add(q8_0_scale_offset(width, e) as usize)))
    }
    /// q * d, as the CPU dequantizes a value row.
    #[inline(always)]
    fn unpack_v(v: &([u32; 2], u16)) -> [f32; 8] {
        let d = f16_to_f32(v.1);
        let mut r = [0.0f32; 8];
        for (i, x) in r.iter_mut().enumerate() {
            *x = i8_at(v.0[i / 4], i % 4) as f32 * d;
        }
        r
    }

    #[inline(always)]
    fn score(s: f32, scale: f32) -> f32 {
        s * scale
    }

    #[inline(always)]
    fn q_lane(q: &[f32; 8], dpl: u32, _scale: f32) -> ([i32; 8], [f32; 8]) {
        let mut r = ([0i32; 8], [0.0f32; 8]);
        unroll::<8>(|j| {
            if (j as u32) < dpl {
                let (d, qi) = q8_0_warp(q[j]);
                r.0[j] = qi;
                r.1[j] = f16_to_f32(f32_to_f16(d));
            }
        });
        r
    }
    #[inline(always)]
    unsafe fn dot_lane(q: &([i32; 8], [f32; 8]), row: *const u8, width: u32, e0: u32, dpl: u32) -> f32 {
        let mut dot = 0.0f32;
        unroll::<8>(|j| {
            if (j as u32) < dpl {
                let e = e0 + 32 * j as u32;
                let kq = *(row.add(e as usize) as *const i8);
                let kd = *(row.add(q8_0_scale_offset(width, e) as usize) as *const u16);
                dot += f16_to_f32(kd) * q.1[j] * (kq as i32 * q.0[j]) as f32;
            }
        });
        dot
    }
    #[inline(always)]
    unsafe fn load_value(row: *const u8, width: u32, e: u32) -> f32 {
        let q = *(row.add(e as usize) as *const i8);
        let d = *(row.add(q8_0_scale_offset(width, e) as usize) as *const u16);
        q as f32 * f16_to_f32(d)
    }

    /// ggml's AVX2 `quantize_row_q8_0`: the warp's 32 values are one block; lane 0 writes its d.
    #[inline(always)]
    unsafe fn store(row: *mut u8, width: u32, e: u32, x: f32) {
        let (d, q) = q8_0_warp(x);
        *(row.add(e as usize) as *mut i8) = q as i8;
        if e % QK8_0 == 0 {
            *(row.add(q8_0_scale_offset(width, e) as usize) as *mut u16) = f32_to_f16(d);
        }
    }
}

/// ggml's AVX2 `quantize_row_q8_0` of one block of 32 values, one per lane (warp-collective): the block's d
/// (amax / 127, before its rounding to f16) and this lane's q = round-half-even(x * 127 / amax), as
/// `host::quant::ggml_avx2::q8_0_block_avx`.
#[inline(always)]
fn q8_0_warp(x: f32) -> (f32, i32) {
    let amax = warp_max(fabs(x));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let q = round_even(x * id);
    (d, if q < -128 { -128 } else if q > 127 { 127 } else { q })
}

/// Byte `i` of `w` as a signed value.
#[inline(always)]
fn i8_at(w: u32, i: usize) -> i32 {
    ((w << (24 - 8 * i)) as i32) >> 24
}

/// 16-byte read-only global load; `p` 16-aligned (the cache was written by an earlier kernel).
#[inline(always)]
pub unsafe fn ldg16(p: *const u8) -> [u32; 4] {
    let (x, y, z, w): (u32, u32, u32, u32);
    asm!("ld.global.nc.v4.u32 {{{x}, {y}, {z}, {w}}}, [{p}];", x = out(reg32) x, y = out(reg32) y, z = out(reg32) z,
         w = out(reg32) w, p = in(reg64) p, options(pure, readonly, nostack));
    [x, y, z, w]
}

/// 8-byte read-only global load; `p` 8-aligned.
#[inline(always)]
unsafe fn ldg8(p: *const u8) -> [u32; 2] {
    let (x, y): (u32, u32);
    asm!("ld.global.nc.v2.u32 {{{x}, {y}}}, [{p}];", x = out(reg32) x, y = out(reg32) y, p = in(reg64) p,
         options(pure, readonly, nostack));
    [x, y]
}

/// 2-byte read-only global load; `p` 2-aligned.
#[inline(always)]
unsafe fn ldg_u16(p: *const u8) -> u16 {
    let x: u16;
    asm!("ld.global.nc.u16 {x}, [{p}];", x = out(reg16) x, p = in(reg64) p, options(pure, readonly, nostack));
    x
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
