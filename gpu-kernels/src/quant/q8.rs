//! Integer mat-vec y = W x_q on 8-bit activations (the fast decode path; `matvec.rs` stays the exact f32 path).
//! CPU twin: `host::quant::matvec_q8`, whose numerics these kernels follow: the activations are quantized once per
//! vector by `quantize_q8_act` into both of llama.cpp's CPU formats (q8_1 blocks of 32 for the legacy types, q8_K
//! blocks of 256 for the K-quants; layout in `q8_layout.rs`), and each weight block's integer dot product with
//! them is exact (`dp4a`, 4 products per instruction), scaled in f32 as ggml's `ggml_vec_dot_*_q8_*` do. Only the
//! order of the f32 sums differs from the CPU.
//!
//! Mat-vec design (see ../../../shared/docs/PERFORMANCE.md, 3(b)): warps come in groups of KS that own R
//! consecutive rows and take turns over the rows' steps of NB blocks (split-K: adjacent steps are read at the same
//! time; the KS partial sums meet in shared memory at the end). A step's bytes of the R rows are copied global ->
//! shared with 16-byte `cp.async` (coalesced, L1 bypassed, any block size or row alignment: the copy is aligned
//! down to 16 bytes and the decoder adds the phase), S steps in flight per warp. Each lane takes U items (a fixed
//! share of a block: a whole legacy block, 1/8 of a Q4_K/Q5_K block, 1/4 of a Q6_K block) per row and step, loads
//! the items' activations a step ahead with 16-byte loads and reuses them for the R rows. Blocks that are only
//! 2-byte aligned are read as aligned words joined by a funnel shift. At the end, a shuffle reduction per row.
//!
//! Multi-column kernels (`mmvq_*_c{2,4,8}`, decode of up to 8 sequences): the same body reads each weight step
//! once and applies it to N activation rows, decoding each weight item into registers once; each output sums the
//! same products in the same order as the single-column kernel, so every column is bit-identical to it.
//!
//! Measured (H100, bench `gpu_q8`): 1.84-2.46 TB/s on 25-48 MB weights, where a pure 16-byte-load read of the same
//! buffers in the same launch pattern (`stream_probe`) reaches 2.18-2.57 TB/s; the rest is DRAM latency (ncu: the
//! top stall is the wait for the weight copies, about half the DRAM peak averaged over a 14 us kernel).

use core::arch::asm;

use super::q8_layout::{self as lay, MqGeom};
use super::{cp_async16, cp_async16_full, cp_async_commit, cp_async_wait, f16, lds_u32, sync_warp, unroll,
            unrolled_array};
use crate::common::*;

// ----------------------------------------------------------------------------
// Device primitives
// ----------------------------------------------------------------------------

/// Four signed 8-bit products of a and b, added to c.
#[inline(always)]
pub(crate) fn dp4a(a: u32, b: u32, c: i32) -> i32 {
    let d: i32;
    // SAFETY: pure arithmetic.
    unsafe {
        asm!("dp4a.s32.s32 {d}, {a}, {b}, {c};", d = out(reg32) d, a = in(reg32) a, b = in(reg32) b, c = in(reg32) c,
                  options(pure, nomem, nostack))
    };
    d
}

/// The 32 bits at bit `sh` (0..=32) of the 64-bit `hi:lo`.
#[inline(always)]
fn shf(lo: u32, hi: u32, sh: u32) -> u32 {
    let d: u32;
    // SAFETY: pure arithmetic.
    unsafe {
        asm!("shf.r.clamp.b32 {d}, {lo}, {hi}, {sh};", d = out(reg32) d, lo = in(reg32) lo, hi = in(reg32) hi,
                  sh = in(reg32) sh, options(pure, nomem, nostack))
    };
    d
}

/// Signed `len`-bit field of `w` at bit `pos`.
#[inline(always)]
fn bfe_s(w: u32, pos: u32, len: u32) -> i32 {
    let d: i32;
    // SAFETY: pure arithmetic.
    unsafe {
        asm!("bfe.s32 {d}, {w}, {p}, {l};", d = out(reg32) d, w = in(reg32) w, p = in(reg32) pos, l = in(reg32) len,
                  options(pure, nomem, nostack))
    };
    d
}

/// Round half away from zero, as Rust's `f32::round` (the CPU's q8_1 rounding), to an integer.
#[inline(always)]
fn round_away(x: f32) -> i32 {
    let (t, i): (f32, i32);
    // SAFETY: pure conversions.
    unsafe {
        asm!("cvt.rzi.f32.f32 {t}, {x};", t = out(reg32) t, x = in(reg32) x, options(pure, nomem, nostack));
        asm!("cvt.rzi.s32.f32 {i}, {x};", i = out(reg32) i, x = in(reg32) x, options(pure, nomem, nostack));
    }
    let f = x - t; // exact
    i + (f >= 0.5) as i32 - (f <= -0.5) as i32
}

/// Round half to even to an integer (ggml's `nearest_int`, the CPU's q8_K rounding).
#[inline(always)]
pub(crate) fn round_even(x: f32) -> i32 {
    let i: i32;
    // SAFETY: pure conversion.
    unsafe { asm!("cvt.rni.s32.f32 {i}, {x};", i = out(reg32) i, x = in(reg32) x, options(pure, nomem, nostack)) };
    i
}

/// f32 rounded to f16 and back.
#[inline(always)]
fn f16_round(x: f32) -> f32 {
    f16(f32_to_f16(x) as u32)
}

#[inline(always)]
unsafe fn lds2(a: u32) -> [u32; 2] {
    let (x, y): (u32, u32);
    asm!("ld.shared.v2.u32 {{{x}, {y}}}, [{a}];", x = out(reg32) x, y = out(reg32) y, a = in(reg32) a,
         options(pure, readonly, nostack));
    [x, y]
}

#[inline(always)]
unsafe fn lds4(a: u32) -> [u32; 4] {
    let (x, y, z, w): (u32, u32, u32, u32);
    asm!("ld.shared.v4.u32 {{{x}, {y}, {z}, {w}}}, [{a}];", x = out(reg32) x, y = out(reg32) y, z = out(reg32) z,
         w = out(reg32) w, a = in(reg32) a, options(pure, readonly, nostack));
    [x, y, z, w]
}

#[inline(always)]
unsafe fn lds16(a: u32) -> u32 {
    let r: u32;
    asm!("ld.shared.u16 {r}, [{a}];", r = out(reg32) r, a = in(reg32) a, options(pure, readonly, nostack));
    r
}

/// N consecutive words at the 2-aligned shared address `a`: N + 1 aligned loads joined by funnel shifts (reads up
/// to 4 bytes past the end).
#[inline(always)]
unsafe fn lds_words2<const N: usize>(a: u32) -> [u32; N] {
    let (base, sh) = (a & !3, (a & 3) * 8);
    let mut w = [0u32; 16];
    unroll::<16>(|k| {
        if k <= N {
            w[k] = lds_u32(base + 4 * k as u32);
        }
    });
    let mut r = [0u32; N];
    unroll::<16>(|k| {
        if k < N {
            r[k] = shf(w[k], w[k + 1], sh);
        }
    });
    r
}

/// 16-byte read-only global load; `p` 16-aligned.
#[inline(always)]
unsafe fn ldg4(p: *const u8) -> [u32; 4] {
    let (x, y, z, w): (u32, u32, u32, u32);
    asm!("ld.global.nc.v4.u32 {{{x}, {y}, {z}, {w}}}, [{p}];", x = out(reg32) x, y = out(reg32) y, z = out(reg32) z,
         w = out(reg32) w, p = in(reg64) p, options(pure, readonly, nostack));
    [x, y, z, w]
}

/// 16-byte generic load (global or shared); `p` 16-aligned.
#[inline(always)]
unsafe fn ldx4(p: *const u8) -> [u32; 4] {
    let (x, y, z, w): (u32, u32, u32, u32);
    asm!("ld.v4.u32 {{{x}, {y}, {z}, {w}}}, [{p}];", x = out(reg32) x, y = out(reg32) y, z = out(reg32) z,
         w = out(reg32) w, p = in(reg64) p, options(pure, readonly, nostack));
    [x, y, z, w]
}

/// 8-byte generic load; `p` 8-aligned.
#[inline(always)]
unsafe fn ldx2(p: *const u8) -> [u32; 2] {
    let (x, y): (u32, u32);
    asm!("ld.v2.u32 {{{x}, {y}}}, [{p}];", x = out(reg32) x, y = out(reg32) y, p = in(reg64) p,
         options(pure, readonly, nostack));
    [x, y]
}

/// 4-byte generic load; `p` 4-aligned.
#[inline(always)]
unsafe fn ldx1(p: *const u8) -> u32 {
    let x: u32;
    asm!("ld.u32 {x}, [{p}];", x = out(reg32) x, p = in(reg64) p, options(pure, readonly, nostack));
    x
}

/// The generic address of the shared address `a`.
#[inline(always)]
fn shared_ptr(a: u32) -> *mut u8 {
    let p: u64;
    // SAFETY: pure address conversion.
    unsafe { asm!("cvt.u64.u32 {p}, {a};", "cvta.shared.u64 {p}, {p};", p = out(reg64) p, a = in(reg32) a, options(pure, nomem, nostack)) };
    p as *mut u8
}

/// 8-byte generic store; `p` 8-aligned.
#[inline(always)]
unsafe fn stg2(p: *mut u8, a: u32, b: u32) {
    asm!("st.v2.u32 [{p}], {{{a}, {b}}};", p = in(reg64) p, a = in(reg32) a, b = in(reg32) b, options(nostack));
}

/// 16-byte generic store; `p` 16-aligned.
#[inline(always)]
unsafe fn stg4(p: *mut u8, v: [u32; 4]) {
    asm!("st.v4.u32 [{p}], {{{a}, {b}, {c}, {d}}};", p = in(reg64) p, a = in(reg32) v[0], b = in(reg32) v[1],
         c = in(reg32) v[2], d = in(reg32) v[3], options(nostack));
}

/// Bits 0..4 of `h` moved to bit 4 of bytes 0..4 (the fifth bit of four Q5 quants).
#[inline(always)]
fn spread4_hi(h: u32) -> u32 {
    (h & 0xF).wrapping_mul(0x0204_0810) & 0x1010_1010
}

const M4: u32 = 0x0F0F_0F0F;

/// The two i16 of the pair `p` (little-endian), sign-extended.
#[inline(always)]
fn i16_pair(p: u32) -> (i32, i32) {
    (((p << 16) as i32) >> 16, (p as i32) >> 16)
}

// ----------------------------------------------------------------------------
// Activation quantization
// ----------------------------------------------------------------------------

/// Quantize rows of f32 activations into both 8-bit formats (`q8_layout.rs`): x (n_tok, n) -> xq (n_tok,
/// `row_bytes(n)`), n a multiple of 32. q8_1 blocks as `q8_1_block` (d = amax / 127, q = round half away),
/// q8_K blocks as `q8_k_block` (d = -max / 127 of the first value of largest magnitude, q = round half even,
/// sums of 16), when n is a multiple of 256.
///
/// Launch: grid = (ceil(n / 1024), n_tok, 1), block = (`QA_THREADS` = 128, 1, 1): a warp per 256 columns, 8 per
/// lane. Traffic: 4 bytes read and ~2.6 bytes written per element.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn quantize_q8_act(
    x: *const f32, /* (n_tok, n) */
    xq: *mut u8,   /* (n_tok, row_bytes(n)) */
    n: u32,
) {
    crate::common::pdl_enter();
    let (lane, gw) = (tid() & 31, bid() * (lay::QA_THREADS / 32) + (tid() >> 5));
    if gw * 256 >= n {
        return;
    }
    let tok = bid_y() as u64;
    let xr = x.add((tok * n as u64) as usize);
    let qr = xq.add((tok * lay::row_bytes(n) as u64) as usize);
    let c0 = gw * 256 + lane * 8;
    let active = c0 < n; // n is whole blocks of 32, so lanes are active in groups of 4
    let mut v = [0.0f32; 8];
    if active {
        let a = ld_nc_f32x4(xr.add(c0 as usize));
        let b = ld_nc_f32x4(xr.add(c0 as usize + 4));
        v = [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]];
    }
    quantize_group(v, active, lane, gw, qr, n);
}

/// Quantize 256 columns (group `gw` of the row, 8 per lane in `v`; lanes past `n` inactive) into the row `qr` of
/// the activation layout (global or shared, generic address), as `quantize_q8_act` describes. Called by a whole
/// warp.
#[inline(always)]
unsafe fn quantize_group(v: [f32; 8], active: bool, lane: u32, gw: u32, qr: *mut u8, n: u32) {
    let c0 = gw * 256 + lane * 8;
    // q8_1: a block of 32 is 4 lanes.
    let mut amax = 0.0f32;
    unroll::<8>(|i| amax = fmax(amax, fabs(v[i])));
    amax = fmax(amax, shfl_xor(amax, 1));
    amax = fmax(amax, shfl_xor(amax, 2));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0i32; 8];
    let mut sum = 0i32;
    unroll::<8>(|i| {
        q[i] = round_away(v[i] * id);
        sum += q[i];
    });
    sum += shfl_xor_u32(sum as u32, 1) as i32;
    sum += shfl_xor_u32(sum as u32, 2) as i32;
    if active {
        stg2(qr.add(c0 as usize), pack4(&q, 0), pack4(&q, 4));
        if lane & 3 == 0 {
            let meta = [f16_round(d).to_bits(), f16_round(sum as f32 * d).to_bits(), sum as u32, 0];
            stg4(qr.add((lay::off_meta(n) + c0 / 32 * lay::META_BYTES) as usize), meta);
        }
    }

    // q8_K: the warp's 256 columns are one block.
    if lay::k_cols(n) == 0 {
        return;
    }
    let (mut am, mut mx) = (0.0f32, 0.0f32); // first value of largest magnitude in this lane
    unroll::<8>(|i| {
        if am < fabs(v[i]) {
            am = fabs(v[i]);
            mx = v[i];
        }
    });
    let mut src = lane; // lane the candidate came from: ties go to the lower lane (the earlier column)
    let mut m = 1;
    while m < 32 {
        let (oam, omx, osrc) = (shfl_xor(am, m), shfl_xor(mx, m), shfl_xor_u32(src, m));
        if oam > am || (oam == am && osrc < src) {
            (am, mx, src) = (oam, omx, osrc);
        }
        m <<= 1;
    }
    let mut qk = [0i32; 8];
    let mut d_k = 0.0f32;
    if am != 0.0 {
        let iscale = -127.0 / mx;
        unroll::<8>(|i| qk[i] = min_i32(round_even(iscale * v[i]), 127));
        d_k = 1.0 / iscale;
    }
    let mut s16 = 0i32;
    unroll::<8>(|i| s16 += qk[i]);
    s16 += shfl_xor_u32(s16 as u32, 1) as i32;
    stg2(qr.add((lay::off_kq(n) + c0) as usize), pack4(&qk, 0), pack4(&qk, 4));
    if lane == 0 {
        *(qr.add((lay::off_kd(n) + gw * 4) as usize) as *mut f32) = d_k;
    }
    if lane & 1 == 0 {
        let g = lane >> 1; // group of 16 = 8n + 2o + m
        let pos = 8 * (g >> 3) + 4 * (g & 1) + ((g >> 1) & 3);
        *(qr.add((lay::off_ks(n) + gw * 32 + pos * 2) as usize) as *mut i16) = s16 as i16;
    }
}

#[inline(always)]
fn pack4(q: &[i32; 8], o: usize) -> u32 {
    (q[o] as u32 & 0xFF)
        | ((q[o + 1] as u32 & 0xFF) << 8)
        | ((q[o + 2] as u32 & 0xFF) << 16)
        | ((q[o + 3] as u32) << 24)
}

#[inline(always)]
pub(crate) fn fabs(x: f32) -> f32 {
    f32::from_bits(x.to_bits() & 0x7FFF_FFFF)
}

#[inline(always)]
fn min_i32(a: i32, b: i32) -> i32 {
    if a < b {
        a
    } else {
        b
    }
}

// ----------------------------------------------------------------------------
// Per-type items: what one lane reads of a weight block and of the activations, and its partial dot product
// ----------------------------------------------------------------------------

/// Pointers into one activation row (`q8_layout.rs`).
#[derive(Clone, Copy)]
pub struct ActRow {
    /// q8_1 quants / q8_K quants.
    q: *const u8,
    /// q8_1 metadata / q8_K scales.
    a: *const u8,
    /// q8_K group sums.
    b: *const u8,
}

impl ActRow {
    /// The same parts `off` bytes further on (the next activation rows).
    #[inline(always)]
    unsafe fn at(self, off: usize) -> ActRow {
        ActRow { q: self.q.add(off), a: self.a.add(off), b: self.b.add(off) }
    }
}

/// One weight type: blocks of `BS` elements in `TS` bytes, each cut into `IPB` items of `BS / IPB` elements.
///
/// An item's dot product is split in two so that the multi-column kernels decode a weight item once for all
/// their activation columns: `decode` reads it from shared memory into registers (quants unpacked to bytes,
/// scales to numbers: exact steps only), `dot` applies it to one column. The single-column kernel runs the same
/// two functions, so every column's arithmetic is the same instructions on the same values.
pub trait MqType {
    const BS: u32;
    const TS: u32;
    const IPB: u32;
    /// Reads the q8_K parts of the activations (else q8_1).
    const KQ: bool;
    type Act: Copy;
    /// One item of a block, decoded.
    type W: Copy;
    /// The activations of item `j` of block `kb` of the row.
    unsafe fn act(x: ActRow, kb: u32, j: u32) -> Self::Act;
    /// Item `j` of the block at shared address `a`.
    unsafe fn decode(a: u32, j: u32) -> Self::W;
    /// A decoded item dotted with its activations.
    fn dot(w: &Self::W, x: &Self::Act) -> f32;
}

/// A q8_1 block: 32 quants and (d, s, sum q).
#[derive(Clone, Copy)]
pub struct Act32 {
    y: [u32; 8],
    d: f32,
    s: f32,
    sum: i32,
}

#[inline(always)]
unsafe fn act32(x: ActRow, kb: u32) -> Act32 {
    let (a, b) = (ldx4(x.q.add(32 * kb as usize)), ldx4(x.q.add(32 * kb as usize + 16)));
    let m = ldx4(x.a.add((kb * lay::META_BYTES) as usize));
    Act32 {
        y: [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]],
        d: f32::from_bits(m[0]),
        s: f32::from_bits(m[1]),
        sum: m[2] as i32,
    }
}

/// A decoded legacy block: scale, min (types with one) and the 32 quants as bytes, elements 4k .. 4k + 4 in
/// `q[k]`, ready for `dp4a` with the q8_1 quants.
#[derive(Clone, Copy)]
pub struct W32 {
    d: f32,
    m: f32,
    q: [u32; 8],
}

/// The integer dot product of a decoded legacy block with its q8_1 quants.
#[inline(always)]
fn idot32(w: &W32, y: &[u32; 8]) -> i32 {
    let mut s = 0;
    unroll::<8>(|k| s = dp4a(w.q[k], y[k], s));
    s
}

/// 16 bytes of nibbles `qs` (low nibbles = elements 0..16, high = 16..32) as 8 words of bytes.
#[inline(always)]
fn nibbles(qs: [u32; 4]) -> [u32; 8] {
    let mut q = [0u32; 8];
    unroll::<4>(|k| {
        q[k] = qs[k] & M4;
        q[4 + k] = (qs[k] >> 4) & M4;
    });
    q
}

/// Q4_0: x = d (q - 8), 18 bytes (2-aligned): d, 16 bytes of nibbles. CPU: `idot(q - 8, y) * (d * d_y)`.
pub struct Q4_0;
impl MqType for Q4_0 {
    const BS: u32 = 32;
    const TS: u32 = 18;
    const IPB: u32 = 1;
    const KQ: bool = false;
    type Act = Act32;
    type W = W32;
    #[inline(always)]
    unsafe fn act(x: ActRow, kb: u32, _j: u32) -> Act32 {
        act32(x, kb)
    }
    #[inline(always)]
    unsafe fn decode(a: u32, _j: u32) -> W32 {
        let (base, sh) = (a & !3, (a & 3) * 8);
        let mut w = [0u32; 5];
        unroll::<5>(|k| w[k] = lds_u32(base + 4 * k as u32));
        let mut qs = [0u32; 4];
        unroll::<4>(|k| qs[k] = shf(w[k], w[k + 1], sh + 16));
        W32 { d: f16(shf(w[0], w[1], sh)), m: 0.0, q: nibbles(qs) }
    }
    #[inline(always)]
    fn dot(w: &W32, x: &Act32) -> f32 {
        let sumi = idot32(w, &x.y) - 8 * x.sum;
        (w.d * x.d) * sumi as f32
    }
}

/// Q4_1: x = d q + m, 20 bytes (4-aligned): d, m, 16 bytes of nibbles. CPU: `(d d_y) idot(q, y) + m s_y`.
pub struct Q4_1;
impl MqType for Q4_1 {
    const BS: u32 = 32;
    const TS: u32 = 20;
    const IPB: u32 = 1;
    const KQ: bool = false;
    type Act = Act32;
    type W = W32;
    #[inline(always)]
    unsafe fn act(x: ActRow, kb: u32, _j: u32) -> Act32 {
        act32(x, kb)
    }
    #[inline(always)]
    unsafe fn decode(a: u32, _j: u32) -> W32 {
        let dm = lds_u32(a);
        let mut qs = [0u32; 4];
        unroll::<4>(|k| qs[k] = lds_u32(a + 4 + 4 * k as u32));
        W32 { d: f16(dm), m: f16(dm >> 16), q: nibbles(qs) }
    }
    #[inline(always)]
    fn dot(w: &W32, x: &Act32) -> f32 {
        fma(w.d * x.d, idot32(w, &x.y) as f32, w.m * x.s)
    }
}

/// A Q5 block's quants as bytes: nibbles `qs` with fifth bits `qh` (bit e = element e).
#[inline(always)]
fn quants_q5(qs: [u32; 4], qh: u32) -> [u32; 8] {
    let mut q = [0u32; 8];
    unroll::<4>(|k| {
        q[k] = (qs[k] & M4) | spread4_hi(qh >> (4 * k));
        q[4 + k] = ((qs[k] >> 4) & M4) | spread4_hi(qh >> (16 + 4 * k));
    });
    q
}

/// Q5_0: x = d (q - 16), 22 bytes (2-aligned): d, qh (4), 16 bytes of low nibbles. CPU: `idot(q - 16, y) d d_y`.
pub struct Q5_0;
impl MqType for Q5_0 {
    const BS: u32 = 32;
    const TS: u32 = 22;
    const IPB: u32 = 1;
    const KQ: bool = false;
    type Act = Act32;
    type W = W32;
    #[inline(always)]
    unsafe fn act(x: ActRow, kb: u32, _j: u32) -> Act32 {
        act32(x, kb)
    }
    #[inline(always)]
    unsafe fn decode(a: u32, _j: u32) -> W32 {
        let (base, sh) = (a & !3, (a & 3) * 8);
        let mut w = [0u32; 6];
        unroll::<6>(|k| w[k] = lds_u32(base + 4 * k as u32));
        let qh = shf(w[0], w[1], sh + 16);
        let mut qs = [0u32; 4];
        unroll::<4>(|k| qs[k] = shf(w[k + 1], w[k + 2], sh + 16));
        W32 { d: f16(shf(w[0], w[1], sh)), m: 0.0, q: quants_q5(qs, qh) }
    }
    #[inline(always)]
    fn dot(w: &W32, x: &Act32) -> f32 {
        let sumi = idot32(w, &x.y) - 16 * x.sum;
        (w.d * x.d) * sumi as f32
    }
}

/// Q5_1: x = d q + m, 24 bytes (8-aligned): d, m, qh (4), 16 bytes of low nibbles.
pub struct Q5_1;
impl MqType for Q5_1 {
    const BS: u32 = 32;
    const TS: u32 = 24;
    const IPB: u32 = 1;
    const KQ: bool = false;
    type Act = Act32;
    type W = W32;
    #[inline(always)]
    unsafe fn act(x: ActRow, kb: u32, _j: u32) -> Act32 {
        act32(x, kb)
    }
    #[inline(always)]
    unsafe fn decode(a: u32, _j: u32) -> W32 {
        let [dm, qh] = lds2(a);
        let [q0, q1] = lds2(a + 8);
        let [q2, q3] = lds2(a + 16);
        W32 { d: f16(dm), m: f16(dm >> 16), q: quants_q5([q0, q1, q2, q3], qh) }
    }
    #[inline(always)]
    fn dot(w: &W32, x: &Act32) -> f32 {
        fma(w.d * x.d, idot32(w, &x.y) as f32, w.m * x.s)
    }
}

/// Q8_0: x = d q, 34 bytes (2-aligned): d, 32 signed quants. CPU: `idot(q, y) * (d * d_y)`.
pub struct Q8_0;
impl MqType for Q8_0 {
    const BS: u32 = 32;
    const TS: u32 = 34;
    const IPB: u32 = 1;
    const KQ: bool = false;
    type Act = Act32;
    type W = W32;
    #[inline(always)]
    unsafe fn act(x: ActRow, kb: u32, _j: u32) -> Act32 {
        act32(x, kb)
    }
    #[inline(always)]
    unsafe fn decode(a: u32, _j: u32) -> W32 {
        let (base, sh) = (a & !3, (a & 3) * 8);
        let mut w = [0u32; 9];
        unroll::<9>(|k| w[k] = lds_u32(base + 4 * k as u32));
        let mut q = [0u32; 8];
        unroll::<8>(|k| q[k] = shf(w[k], w[k + 1], sh + 16));
        W32 { d: f16(shf(w[0], w[1], sh)), m: 0.0, q }
    }
    #[inline(always)]
    fn dot(w: &W32, x: &Act32) -> f32 {
        (w.d * x.d) * idot32(w, &x.y) as f32
    }
}

/// 32 q8_K quants (two runs of 16), the block's d and two group sums.
#[derive(Clone, Copy)]
pub struct ActK2 {
    y: [u32; 8],
    d: f32,
    bs: u32,
}

/// Q4_K / Q5_K item j = 2c + h (c: 64-element chunk, h: half): elements 64c + 16h + 0..16 (low nibbles, scale
/// group 2c) and 64c + 32 + 16h + 0..16 (high nibbles, group 2c + 1).
#[inline(always)]
unsafe fn act_k2(x: ActRow, kb: u32, j: u32) -> ActK2 {
    let (c, h) = (j >> 1, j & 1);
    let e = 256 * kb + 64 * c + 16 * h;
    let (a, b) = (ldx4(x.q.add(e as usize)), ldx4(x.q.add(e as usize + 32)));
    let pos = 8 * (c >> 1) + 4 * h + 2 * (c & 1); // groups 4c + h and 4c + h + 2, adjacent (q8_layout::BSUM_POS)
    ActK2 {
        y: [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]],
        d: f32::from_bits(ldx1(x.a.add(4 * kb as usize))),
        bs: ldx1(x.b.add((32 * kb + 2 * pos) as usize)),
    }
}

/// ggml `get_scale_min_k4` of the scale groups 2c and 2c + 1 from the 12 scale bytes (words s0, s1, s2): (scale
/// 2c, scale 2c + 1, min 2c, min 2c + 1).
#[inline(always)]
fn scales_k4(s0: u32, s1: u32, s2: u32, c: u32) -> (i32, i32, i32, i32) {
    let sh = 16 * (c & 1);
    let (a, b, e) = (s0 >> sh, s1 >> sh, s2 >> sh);
    let (sc, mn) = if c < 2 {
        (a & 0x3F3F, b & 0x3F3F)
    } else {
        ((e & 0x0F0F) | ((a >> 2) & 0x3030), ((e >> 4) & 0x0F0F) | ((b >> 2) & 0x3030))
    };
    ((sc & 0xFF) as i32, ((sc >> 8) & 0xFF) as i32, (mn & 0xFF) as i32, ((mn >> 8) & 0xFF) as i32)
}

/// A decoded Q4_K / Q5_K item: d, dmin, the scales and mins of its two scale groups, and its 32 quants as bytes
/// (`lo`: the first group's 16, `hi`: the second's).
#[derive(Clone, Copy)]
pub struct WK4<const K: usize> {
    d: f32,
    dmin: f32,
    sc: [i32; 2],
    mn: [i32; 2],
    lo: [u32; K],
    hi: [u32; K],
}

/// The header words `hdr` (d, dmin, 12 scale bytes) of a Q4_K / Q5_K block decoded for the groups 2c, 2c + 1.
#[inline(always)]
fn wk4<const K: usize>(hdr: [u32; 4], c: u32, lo: [u32; K], hi: [u32; K]) -> WK4<K> {
    let (sc0, sc1, m0, m1) = scales_k4(hdr[1], hdr[2], hdr[3], c);
    WK4 { d: f16(hdr[0]), dmin: f16(hdr[0] >> 16), sc: [sc0, sc1], mn: [m0, m1], lo, hi }
}

/// Q4_K / Q5_K item total from its group dot products and min sums: d d_y sum(scale q.y) - dmin d_y sum(min
/// bsum), as ggml's `ggml_vec_dot_q4_K_q8_K`.
#[inline(always)]
fn finish_k4<const K: usize>(w: &WK4<K>, lo: i32, hi: i32, b0: i32, b1: i32, d_y: f32) -> f32 {
    let sumi = w.sc[0] * lo + w.sc[1] * hi;
    let summ = w.mn[0] * b0 + w.mn[1] * b1;
    fma(w.d * d_y, sumi as f32, -(w.dmin * d_y) * summ as f32)
}

/// `dot` of a 32-quant Q4_K / Q5_K item.
#[inline(always)]
fn dot_k2(w: &WK4<4>, x: &ActK2) -> f32 {
    let (mut lo, mut hi) = (0, 0);
    unroll::<4>(|k| {
        lo = dp4a(w.lo[k], x.y[k], lo);
        hi = dp4a(w.hi[k], x.y[4 + k], hi);
    });
    let (b0, b1) = i16_pair(x.bs);
    finish_k4(w, lo, hi, b0, b1, x.d)
}

/// Q4_K: 144 bytes (16-aligned): d, dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles; 8 items.
pub struct Q4K;
impl MqType for Q4K {
    const BS: u32 = 256;
    const TS: u32 = 144;
    const IPB: u32 = 8;
    const KQ: bool = true;
    type Act = ActK2;
    type W = WK4<4>;
    #[inline(always)]
    unsafe fn act(x: ActRow, kb: u32, j: u32) -> ActK2 {
        act_k2(x, kb, j)
    }
    #[inline(always)]
    unsafe fn decode(a: u32, j: u32) -> WK4<4> {
        let qs = lds4(a + 16 + 16 * j); // 32c + 16h
        let q = nibbles(qs);
        wk4(lds4(a), j >> 1, [q[0], q[1], q[2], q[3]], [q[4], q[5], q[6], q[7]])
    }
    #[inline(always)]
    fn dot(w: &WK4<4>, x: &ActK2) -> f32 {
        dot_k2(w, x)
    }
}

/// 64 q8_K quants (elements 64c + 0..64), the block's d and the four group sums 4c .. 4c + 4.
#[derive(Clone, Copy)]
pub struct ActK64 {
    y: [u32; 16],
    d: f32,
    bs: [u32; 2],
}

/// Q4_K / Q5_K item c of 4: the 64 elements 64c + 0..64 (scale groups 2c: low nibbles, 2c + 1: high nibbles).
#[inline(always)]
unsafe fn act_k64(x: ActRow, kb: u32, c: u32) -> ActK64 {
    let e = (256 * kb + 64 * c) as usize;
    let v = [ldx4(x.q.add(e)), ldx4(x.q.add(e + 16)), ldx4(x.q.add(e + 32)), ldx4(x.q.add(e + 48))];
    let pos = 8 * (c >> 1) + 2 * (c & 1); // groups 4c, 4c + 2 at pos, pos + 1; 4c + 1, 4c + 3 at pos + 4, pos + 5
    let mut y = [0u32; 16];
    unroll::<16>(|k| y[k] = v[k / 4][k % 4]);
    ActK64 {
        y,
        d: f32::from_bits(ldx1(x.a.add(4 * kb as usize))),
        bs: [ldx1(x.b.add((32 * kb + 2 * pos) as usize)), ldx1(x.b.add((32 * kb + 2 * pos + 8) as usize))],
    }
}

/// Q4_K with 4 items per block (one 64-element chunk each: one scale decode per 64 weights).
pub struct Q4K64;
impl MqType for Q4K64 {
    const BS: u32 = 256;
    const TS: u32 = 144;
    const IPB: u32 = 4;
    const KQ: bool = true;
    type Act = ActK64;
    type W = WK4<8>;
    #[inline(always)]
    unsafe fn act(x: ActRow, kb: u32, c: u32) -> ActK64 {
        act_k64(x, kb, c)
    }
    #[inline(always)]
    unsafe fn decode(a: u32, c: u32) -> WK4<8> {
        let (q0, q1) = (nibbles(lds4(a + 16 + 32 * c)), nibbles(lds4(a + 32 + 32 * c)));
        let lo = [q0[0], q0[1], q0[2], q0[3], q1[0], q1[1], q1[2], q1[3]];
        let hi = [q0[4], q0[5], q0[6], q0[7], q1[4], q1[5], q1[6], q1[7]];
        wk4(lds4(a), c, lo, hi)
    }
    #[inline(always)]
    fn dot(w: &WK4<8>, x: &ActK64) -> f32 {
        let (mut lo, mut hi) = (0, 0);
        unroll::<4>(|k| {
            lo = dp4a(w.lo[k], x.y[k], lo);
            hi = dp4a(w.hi[k], x.y[8 + k], hi);
        });
        unroll::<4>(|k| {
            lo = dp4a(w.lo[4 + k], x.y[4 + k], lo);
            hi = dp4a(w.hi[4 + k], x.y[12 + k], hi);
        });
        let (g0, g2) = i16_pair(x.bs[0]); // groups 4c, 4c + 2
        let (g1, g3) = i16_pair(x.bs[1]); // groups 4c + 1, 4c + 3
        finish_k4(w, lo, hi, g0 + g1, g2 + g3, x.d)
    }
}

/// Q5_K: 176 bytes (16-aligned): d, dmin, 12 scale bytes, qh (32: bit 2c / 2c + 1 of byte l is the fifth bit of
/// element 64c + l / 64c + 32 + l), 128 bytes of low nibbles; 8 items.
pub struct Q5K;
impl MqType for Q5K {
    const BS: u32 = 256;
    const TS: u32 = 176;
    const IPB: u32 = 8;
    const KQ: bool = true;
    type Act = ActK2;
    type W = WK4<4>;
    #[inline(always)]
    unsafe fn act(x: ActRow, kb: u32, j: u32) -> ActK2 {
        act_k2(x, kb, j)
    }
    #[inline(always)]
    unsafe fn decode(a: u32, j: u32) -> WK4<4> {
        let (c, h) = (j >> 1, j & 1);
        let qh = lds4(a + 16 + 16 * h);
        let qs = lds4(a + 48 + 16 * j);
        let (mut lo, mut hi) = ([0u32; 4], [0u32; 4]);
        unroll::<4>(|k| {
            lo[k] = (qs[k] & M4) | (((qh[k] >> (2 * c)) & 0x0101_0101) << 4);
            hi[k] = ((qs[k] >> 4) & M4) | (((qh[k] >> (2 * c + 1)) & 0x0101_0101) << 4);
        });
        wk4(lds4(a), c, lo, hi)
    }
    #[inline(always)]
    fn dot(w: &WK4<4>, x: &ActK2) -> f32 {
        dot_k2(w, x)
    }
}

/// 64 q8_K quants (four runs of 16), the block's d and the four group sums.
#[derive(Clone, Copy)]
pub struct ActK4 {
    y: [[u32; 4]; 4],
    d: f32,
    bs: [u32; 2],
}

/// A decoded Q6_K item: d, the 4 scales of its groups and its 64 quants as bytes (run o of 16 in `q[o]`).
#[derive(Clone, Copy)]
pub struct W6K {
    d: f32,
    s: [i32; 4],
    q: [[u32; 4]; 4],
}

/// Q6_K: x = d sc (q - 32), 210 bytes (2-aligned): ql (128), qh (64), 16 signed 8-bit scales, d. Item j = 2n + m
/// (n: 128-element half, m: 16-byte run): ql[64n + 16m ..], ql[64n + 32 + 16m ..], qh[32n + 16m ..] give the
/// elements 128n + 32o + 16m + 0..16 (o = 0..4, scale group 8n + 2o + m).
pub struct Q6K;
impl MqType for Q6K {
    const BS: u32 = 256;
    const TS: u32 = 210;
    const IPB: u32 = 4;
    const KQ: bool = true;
    type Act = ActK4;
    type W = W6K;
    #[inline(always)]
    unsafe fn act(x: ActRow, kb: u32, j: u32) -> ActK4 {
        let (n, m) = (j >> 1, j & 1);
        let e = (256 * kb + 128 * n + 16 * m) as usize;
        ActK4 {
            y: [ldx4(x.q.add(e)), ldx4(x.q.add(e + 32)), ldx4(x.q.add(e + 64)), ldx4(x.q.add(e + 96))],
            d: f32::from_bits(ldx1(x.a.add(4 * kb as usize))),
            bs: ldx2(x.b.add((32 * kb + 2 * (8 * n + 4 * m)) as usize)),
        }
    }
    #[inline(always)]
    unsafe fn decode(a: u32, j: u32) -> W6K {
        let (n, m) = (j >> 1, j & 1);
        let ql0 = lds_words2::<4>(a + 64 * n + 16 * m);
        let ql1 = lds_words2::<4>(a + 64 * n + 32 + 16 * m);
        let qh = lds_words2::<4>(a + 128 + 32 * n + 16 * m);
        let sc = lds_words2::<2>(a + 192 + 8 * n);
        let mut q = [[0u32; 4]; 4];
        unroll::<4>(|k| {
            q[0][k] = (ql0[k] & M4) | ((qh[k] << 4) & 0x3030_3030);
            q[1][k] = (ql1[k] & M4) | ((qh[k] << 2) & 0x3030_3030);
            q[2][k] = ((ql0[k] >> 4) & M4) | (qh[k] & 0x3030_3030);
            q[3][k] = ((ql1[k] >> 4) & M4) | ((qh[k] >> 2) & 0x3030_3030);
        });
        let s =
            [bfe_s(sc[0], 8 * m, 8), bfe_s(sc[0], 8 * m + 16, 8), bfe_s(sc[1], 8 * m, 8), bfe_s(sc[1], 8 * m + 16, 8)];
        W6K { d: f16(lds16(a + 208)), s, q }
    }
    #[inline(always)]
    fn dot(w: &W6K, x: &ActK4) -> f32 {
        let mut dots = [0i32; 4];
        unroll::<4>(|k| unroll::<4>(|o| dots[o] = dp4a(w.q[o][k], x.y[o][k], dots[o])));
        let (b0, b1) = i16_pair(x.bs[0]);
        let (b2, b3) = i16_pair(x.bs[1]);
        let sumi = w.s[0] * (dots[0] - 32 * b0)
            + w.s[1] * (dots[1] - 32 * b1)
            + w.s[2] * (dots[2] - 32 * b2)
            + w.s[3] * (dots[3] - 32 * b3);
        (w.d * x.d) * sumi as f32
    }
}

// ----------------------------------------------------------------------------
// Fused prologue: the block makes its own activations
// ----------------------------------------------------------------------------

/// What a fused mat-vec does before its dot products (`q8_layout::PRO_*`), and after them.
#[derive(Clone, Copy)]
pub struct Fused {
    /// f32 source values: the vector (PRO_QUANT, PRO_RMSNORM) or gate then up (PRO_SWIGLU, PRO_GELU).
    src: *const f32,
    /// RMSNorm weights (PRO_RMSNORM).
    nw: *const f32,
    eps: f32,
    /// 0: no prologue (the activations are already quantized in `xq`).
    mode: u32,
    /// Shared address of `FUSED_ACT_BYTES` for the quantized row.
    act: u32,
    /// y[r] += W x instead of y[r] = W x (a residual add).
    accumulate: bool,
}

impl Fused {
    const NONE: Fused =
        Fused { src: core::ptr::null(), nw: core::ptr::null(), eps: 0.0, mode: 0, act: 0, accumulate: false };
}

/// The fused prologue, run by the whole block: the activation vector of `n` columns from `f.src` as `f.mode`
/// says, quantized into shared memory in the `quantize_q8_act` layout (so the numbers equal those of the separate
/// kernels: `rmsnorm_f32`, `swiglu_f32` / `gelu_tanh_mul_f32`, then `quantize_q8_act`). Returns the row's
/// generic address. Every block recomputes it (the source is a few KB, read from L2).
#[inline(always)]
unsafe fn prologue(f: &Fused, n: u32) -> *const u8 {
    let dst = shared_ptr(f.act);
    make_act(f, n, dst, tid() >> 5, ntid() >> 5);
    sync_threads();
    dst
}

/// The activation groups gw0, gw0 + gstride, .. (256 columns each, a warp per group) of the row `dst` (generic
/// address, global or shared) made from `f.src` as `f.mode` says and quantized as `quantize_group` does. The
/// RMSNorm scale is computed over the whole row by every block. Called by the whole block.
#[inline(always)]
unsafe fn make_act(f: &Fused, n: u32, dst: *mut u8, gw0: u32, gstride: u32) {
    let lane = tid() & 31;
    let mut scale = 1.0f32;
    if f.mode == lay::PRO_RMSNORM {
        let mut ss = 0.0f32;
        let mut c = tid() * 4;
        while c < n {
            let v = ld_f32x4(f.src.add(c as usize));
            ss += v[0] * v[0] + v[1] * v[1] + v[2] * v[2] + v[3] * v[3];
            c += ntid() * 4;
        }
        scale = 1.0 / sqrt(block_sum(ss) / n as f32 + f.eps);
    }
    let mut gw = gw0;
    while gw * 256 < n {
        let c0 = gw * 256 + lane * 8;
        let active = c0 < n;
        let mut v = [0.0f32; 8];
        if active {
            let ld8 = |p: *const f32| {
                let (a, b) = (ld_f32x4(p), ld_f32x4(p.add(4)));
                [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
            };
            v = ld8(f.src.add(c0 as usize));
            match f.mode {
                lay::PRO_RMSNORM => {
                    let w = ld8(f.nw.add(c0 as usize));
                    unroll::<8>(|i| v[i] = w[i] * (v[i] * scale));
                }
                lay::PRO_SWIGLU => {
                    let u = ld8(f.src.add((n + c0) as usize));
                    unroll::<8>(|i| v[i] = crate::activation::silu_mul(v[i], u[i]));
                }
                lay::PRO_GELU => {
                    let u = ld8(f.src.add((n + c0) as usize));
                    unroll::<8>(|i| v[i] = crate::activation::gelu_tanh_mul(v[i], u[i]));
                }
                _ => {}
            }
        }
        quantize_group(v, active, lane, gw, dst, n);
        gw += gstride;
    }
}

/// The fused prologue as a kernel of its own: xq = quantize(act(src)) for one token, `act` as `mode` says
/// (`q8_layout::PRO_*`), in the `quantize_q8_act` layout, any width (a multiple of 32). Its output feeds the
/// plain mat-vecs: one launch makes the activations that every block of the mat-vec would otherwise remake.
///
/// Launch: grid = (ceil(n / (256 `PA_WARPS`)), 1, 1), block = (32 `PA_WARPS`, 1, 1): a warp per 256 columns.
/// Traffic: src (n or 2n floats; with RMSNorm every block reads the whole row once more for the norm) and nw
/// read, ~2.6 bytes per column written.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn act_prologue_q8(
    src: *const f32, /* (n,) or gate then up (2n,) */
    nw: *const f32,  /* (n,) RMSNorm weights, PRO_RMSNORM */
    eps: f32,
    mode: u32,
    xq: *mut u8, /* row_bytes(n) */
    n: u32,
) {
    crate::common::pdl_enter();
    let f = Fused { src, nw, eps, mode, act: 0, accumulate: false };
    make_act(&f, n, xq, bid() * (ntid() >> 5) + (tid() >> 5), nctaid() * (ntid() >> 5));
}

// ----------------------------------------------------------------------------
// The mat-vec kernel body
// ----------------------------------------------------------------------------

/// Shared bytes of one row's stage: the step's bytes, the phase (up to 14) and 16 bytes of slack for the
/// word-joining reads past the end.
#[inline(always)]
pub const fn stage_row_bytes(ts: u32, ipb: u32, g: MqGeom) -> u32 {
    (32 * g.items / ipb * ts + 14).div_ceil(16) * 16 + 16
}

/// Static shared bytes of one block: the warps' stages and the split-K partial sums.
#[inline(always)]
pub const fn block_bytes(ts: u32, ipb: u32, g: MqGeom) -> u32 {
    let stages = g.warps * g.stages * g.rows * stage_row_bytes(ts, ipb, g);
    let n = stages + if g.ksplit > 1 { g.warps * g.cols * g.rows * 4 } else { 0 };
    assert!(g.warps % g.ksplit == 0);
    assert!(n <= 48 * 1024, "mat-vec shared memory over the 48 KiB static limit");
    assert!(g.stages >= 2 && g.stages <= 4);
    assert!(g.rows * (stage_row_bytes(ts, ipb, g) / 16 - 1) <= 16 * 32, "more than 16 copies per lane and step");
    assert!(g.cols >= 1 && g.cols * g.rows <= 32, "more outputs per warp than lanes");
    n
}

/// Y[c, r] = sum_k W[r, k] X[c, k] for the R rows of each warp and the `n_x` <= N activation rows X[c] of `xq`
/// (`quantize_q8_act` rows, one after the other), each weight step read once for all of them.
///
/// Warps come in groups of KS that share R rows and take turns over their steps (split-K, for few rows), summed
/// through shared memory at the end. A step's weight items are decoded once (`MqType::decode`) and applied to
/// the columns in turn, the next column's activations loading while one is computed. Every (row, column) output
/// sums the same item products in the same order as the single-column kernel (N = 1) of the same items per lane
/// U and split KS: per lane over its steps and items, then `warp_sum`, then the KS warps in order; R, NW, S and
/// N change which warp computes an output and when, never its arithmetic. So each column's result is the same bits
/// as the single-column kernel gives on that column alone.
///
/// Launch: grid = (ceil(n_rows / (R NW / KS)), 1, 1), block = (32 NW, 1, 1), static shared memory `block_bytes`; `xq`
/// 16-byte aligned, the weight tensor under 4 GiB. Traffic: every weight byte once (plus at most one 16-byte chunk
/// per row and step of alignment slack, served by L2), the activations from L1/L2 (about 1.5 bytes per column per
/// R rows, for each of the n_x rows), 4 n_x bytes per row written (y is (n_x, n_rows)).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn mmvq<T: MqType, const R: usize, const U: usize, const S: u32, const NW: u32, const KS: u32, const N: usize>(
    smem: u32,
    w: *const u8,
    xq: *const u8,
    y: *mut f32,
    n_rows: u32,
    n_cols: u32,
    n_x: u32,
    fused: Fused,
) {
    let g = MqGeom { rows: R as u32, warps: NW, items: U as u32, stages: S, ksplit: KS, min_blocks: 0, cols: N as u32 };
    let n_x = if N == 1 { 1 } else { min_u32(n_x, N as u32) }; // (a constant in the single-column kernels)
    let nb = 32 * U as u32 / T::IPB; // blocks per step
    let sb = nb * T::TS; // bytes per row and step
    let rowb = stage_row_bytes(T::TS, T::IPB, g);
    let ch = rowb / 16 - 1; // 16-byte chunks copied per row and step (at most)
    let stage_b = R as u32 * rowb;

    let (lane, warp) = (tid() & 31, tid() >> 5);
    let (grp, kw) = (warp / KS, warp % KS);
    // warps past the last row copy and compute nothing, but stay for the block-wide barriers of the prologue
    let row0 = (bid() * (NW / KS) + grp) * R as u32;
    let my = smem + warp * S * stage_b;
    let red = smem + NW * S * stage_b; // (NW, N, R) partial sums of the split-K warps
    let nb_row = n_cols / T::BS;
    let row_bytes = nb_row * T::TS;
    let total = n_rows * row_bytes;
    let n_steps = nb_row.div_ceil(nb);
    // This warp's steps: kw, kw + KS, .. (the KS warps of a group read adjacent steps at the same time).
    let n_mine = if row0 < n_rows && n_steps > kw { (n_steps - kw).div_ceil(KS) } else { 0 };
    let last = n_rows - 1;
    let mut roff = [0u32; R];
    unroll::<R>(|r| roff[r] = min_u32(row0 + r as u32, last) * row_bytes);

    // This lane's copies: chunk f = lane + 32 k of a stage is row f / ch, chunk f % ch.
    let (mut c_row, mut c_16, mut c_dst) = ([0u32; 16], [u32::MAX / 2; 16], [0u32; 16]);
    unroll::<16>(|k| {
        let f = lane + 32 * k as u32;
        if 32 * (k as u32) < R as u32 * ch && f < R as u32 * ch {
            let (r, c) = (f / ch, f % ch);
            c_row[k] = min_u32(row0 + r, last) * row_bytes;
            c_16[k] = 16 * c;
            c_dst[k] = r * rowb + 16 * c;
        }
    });
    // Copy step t into the stage at `st`: the chunks from the step's first byte (aligned down) to its last.
    let issue = |t: u32, st: u32| {
        let t_off = t * sb;
        let len = min_u32(sb, row_bytes - t_off);
        unroll::<16>(|k| {
            if 32 * (k as u32) >= R as u32 * ch {
                return;
            }
            let start = c_row[k] + t_off;
            if c_16[k] < (start & 15) + len {
                let src = (start & !15) + c_16[k];
                if src + 16 <= total {
                    cp_async16_full(st + c_dst[k], w.add(src as usize));
                } else {
                    cp_async16(st + c_dst[k], w.add(src as usize), total - src);
                }
            }
        });
    };

    let mut acc = [[0.0f32; R]; N];
    for i in 0..S - 1 {
        if i < n_mine {
            issue(kw + KS * i, my + i * stage_b);
        }
        cp_async_commit();
    }
    // The weights do not depend on the previous kernel, so their first copies are in flight before the wait for
    // it (programmatic dependent launch); the activations do.
    crate::common::pdl_enter();
    let xq = if fused.mode != 0 { prologue(&fused, n_cols) } else { xq };
    let x = if T::KQ {
        ActRow {
            q: xq.add(lay::off_kq(n_cols) as usize),
            a: xq.add(lay::off_kd(n_cols) as usize),
            b: xq.add(lay::off_ks(n_cols) as usize),
        }
    } else {
        ActRow { q: xq, a: xq.add(lay::off_meta(n_cols) as usize), b: xq }
    };
    let x_stride = lay::row_bytes(n_cols) as usize; // between activation rows
    // This lane's items of step t (block in step, item in block, block inside the row) and their activations in
    // activation row c.
    let load = |t: u32, c: usize| {
        let mut item = [(0u32, 0u32, false); U];
        let xc = x.at(c * x_stride);
        let xs: [T::Act; U] = unrolled_array(|u| {
            let idx = lane + 32 * u as u32;
            let (bi, j) = (idx / T::IPB, idx % T::IPB);
            let kb = t * nb + bi;
            item[u] = (bi, j, kb < nb_row);
            T::act(xc, min_u32(kb, nb_row - 1), j)
        });
        (item, xs)
    };
    // The first column's activations are loaded a step ahead (they come from L1 or L2, whose latency the weight
    // pipeline does not cover). One column: each item is decoded where it is used. Several: the step's items are
    // decoded once, and the activations of the next column (or of the next step's first) load while one column
    // is computed.
    let (mut item_next, mut xs_next) = load(kw, 0);
    let (mut rd, mut wr) = (0u32, S - 1); // stages read and written this step
    for i in 0..n_mine {
        let t = kw + KS * i;
        sync_warp(); // every lane is done with the stage the next copy overwrites
        if i + S - 1 < n_mine {
            issue(t + KS * (S - 1), my + wr * stage_b);
        }
        cp_async_commit();
        let (item, mut xs) = (item_next, xs_next);
        if N == 1 && i + 1 < n_mine {
            (item_next, xs_next) = load(t + KS, 0);
        }
        cp_async_wait(S - 1);
        sync_warp(); // step t's bytes, copied by all lanes, are visible to all lanes
        let st = my + rd * stage_b;
        let base = |r: usize| st + r as u32 * rowb + ((roff[r] + t * sb) & 15);
        if N == 1 {
            unroll::<U>(|u| {
                let (bi, j, valid) = item[u];
                if valid {
                    unroll::<R>(|r| acc[0][r] += T::dot(&T::decode(base(r) + bi * T::TS, j), &xs[u]));
                }
            });
        } else {
            let wts: [[T::W; U]; R] =
                unrolled_array(|r| unrolled_array(|u| T::decode(base(r) + item[u].0 * T::TS, item[u].1)));
            unroll::<N>(|c| {
                if c as u32 >= n_x {
                    return;
                }
                let xs_c = xs;
                if c + 1 < N && c as u32 + 1 < n_x {
                    xs = load(t, c + 1).1;
                } else if i + 1 < n_mine {
                    (item_next, xs_next) = load(t + KS, 0);
                }
                unroll::<U>(|u| {
                    if item[u].2 {
                        unroll::<R>(|r| acc[c][r] += T::dot(&wts[r][u], &xs_c[u]));
                    }
                });
            });
        }
        rd = if rd + 1 == S { 0 } else { rd + 1 };
        wr = if wr + 1 == S { 0 } else { wr + 1 };
    }

    // Sum over the warp, then (split-K) over the group's KS warps in a fixed order. Output (c, r) is written by
    // lane c R + r.
    let out = |c: u32, r: u32, s: f32| {
        let yr = y.add(c as usize * n_rows as usize + (row0 + r) as usize);
        *yr = if fused.accumulate { *yr + s } else { s };
    };
    if KS == 1 {
        unroll::<N>(|c| {
            unroll::<R>(|r| {
                if (c as u32) < n_x {
                    let s = warp_sum(acc[c][r]);
                    if lane == (c * R + r) as u32 && row0 + (r as u32) < n_rows {
                        out(c as u32, r as u32, s);
                    }
                }
            });
        });
    } else {
        unroll::<N>(|c| {
            unroll::<R>(|r| {
                if (c as u32) < n_x {
                    let s = warp_sum(acc[c][r]);
                    if lane == (c * R + r) as u32 {
                        super::sts_f32(red + ((warp * N as u32 + c as u32) * R as u32 + r as u32) * 4, s);
                    }
                }
            });
        });
        sync_threads();
        let (c, r) = if N == 1 { (0, lane) } else { (lane / R as u32, lane % R as u32) };
        if kw == 0 && lane < n_x * R as u32 && row0 + r < n_rows {
            let mut s = 0.0;
            for k in 0..KS {
                s += f32::from_bits(lds_u32(red + ((grp * KS + k) * (N * R) as u32 + lane) * 4));
            }
            out(c, r, s);
        }
    }
}

macro_rules! mmvq_kernels {
    ($($name:ident: $ty:ty, $g:expr;)*) => {$(
        /// y (+)= W x_q; see [`mmvq`] for the launch shape (geometry in `q8_layout.rs`) and traffic.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(w: *const u8 /* (n_rows, n_cols) blocks */,
                                                xq: *const u8 /* row_bytes(n_cols), quantize_q8_act */,
                                                y: *mut f32 /* (n_rows,) */, n_rows: u32, n_cols: u32,
                                                accumulate: u32 /* 1: y += W x_q (a residual add) */) {
            const G: MqGeom = $g;
            const SMEM: u32 = block_bytes(<$ty as MqType>::TS, <$ty as MqType>::IPB, G);
            const _: () = assert!(G.cols == 1);
            crate::launch_bounds!(G.warps * 32, G.min_blocks);
            let smem = crate::shared_array!("mq_smem", SMEM);
            let fused = Fused { accumulate: accumulate != 0, ..Fused::NONE };
            mmvq::<$ty, { G.rows as usize }, { G.items as usize }, { G.stages }, { G.warps }, { G.ksplit }, 1>(
                smem, w, xq, y, n_rows, n_cols, 1, fused)
        }
    )*};
}

macro_rules! mmvq_cols_kernels {
    ($($name:ident: $ty:ty, $g:expr;)*) => {$(
        /// Y (+)= X W^T for n_x <= `G.cols` activation rows X (decode of several sequences), each weight step
        /// read once for all of them; every column bit-identical to the single-column kernel on it. See
        /// [`mmvq`] for the launch shape (geometry in `q8_layout.rs`, whose `cols` keeps the single-column
        /// kernel's items and split) and traffic.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(w: *const u8 /* (n_rows, n_cols) blocks */,
                                                xq: *const u8 /* (n_x, row_bytes(n_cols)), quantize_q8_act */,
                                                y: *mut f32 /* (n_x, n_rows) */, n_rows: u32, n_cols: u32,
                                                n_x: u32 /* 1..=G.cols */,
                                                accumulate: u32 /* 1: y += X W^T (a residual add) */) {
            const G: MqGeom = $g;
            const SMEM: u32 = block_bytes(<$ty as MqType>::TS, <$ty as MqType>::IPB, G);
            crate::launch_bounds!(G.warps * 32, G.min_blocks);
            let smem = crate::shared_array!("mq_smem", SMEM);
            let fused = Fused { accumulate: accumulate != 0, ..Fused::NONE };
            mmvq::<$ty, { G.rows as usize }, { G.items as usize }, { G.stages }, { G.warps }, { G.ksplit },
                   { G.cols as usize }>(smem, w, xq, y, n_rows, n_cols, n_x, fused)
        }
    )*};
}

macro_rules! mmvq_fused_kernels {
    ($($name:ident: $ty:ty, $g:expr;)*) => {$(
        /// y = W act(src) or y += W act(src) for one token, the activations made and quantized by the block
        /// itself (`prologue`; `mode` one of `q8_layout::PRO_*`, `n_cols` with `row_bytes(n_cols) <=
        /// FUSED_ACT_BYTES`): one launch instead of norm / gating, quantize, mat-vec and residual add.
        ///
        /// Launch: as the plain kernel of the type (see [`mmvq`]), plus `FUSED_ACT_BYTES` of static shared memory.
        /// Traffic: the plain kernel's, plus per block one read of src (n_cols or 2 n_cols floats) and of nw, from L2.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(w: *const u8 /* (n_rows, n_cols) blocks */, y: *mut f32 /* (n_rows,) */,
                                                n_rows: u32, n_cols: u32, src: *const f32, nw: *const f32, eps: f32,
                                                mode: u32, accumulate: u32) {
            const G: MqGeom = $g;
            const SMEM: u32 = block_bytes(<$ty as MqType>::TS, <$ty as MqType>::IPB, G);
            const _: () = assert!(SMEM + lay::FUSED_ACT_BYTES <= 48 * 1024 && G.cols == 1);
            crate::launch_bounds!(G.warps * 32, G.min_blocks);
            let smem = crate::shared_array!("mq_smem", SMEM);
            let act = crate::shared_array!("mq_act", lay::FUSED_ACT_BYTES);
            let fused = Fused { src, nw, eps, mode, act, accumulate: accumulate != 0 };
            mmvq::<$ty, { G.rows as usize }, { G.items as usize }, { G.stages }, { G.warps }, { G.ksplit }, 1>(
                smem, w, core::ptr::null(), y, n_rows, n_cols, 1, fused)
        }
    )*};
}

mmvq_fused_kernels! {
    mmvq_fused_q4_0: Q4_0, lay::MQ_Q4_0;
    mmvq_fused_q4_1: Q4_1, lay::MQ_Q4_1;
    mmvq_fused_q5_0: Q5_0, lay::MQ_Q5_0;
    mmvq_fused_q5_1: Q5_1, lay::MQ_Q5_1;
    mmvq_fused_q8_0: Q8_0, lay::MQ_Q8_0;
    mmvq_fused_q4_k: Q4K, lay::MQ_Q4_K;
    mmvq_fused_q5_k: Q5K, lay::MQ_Q5_K;
    mmvq_fused_q6_k: Q6K, lay::MQ_Q6_K;
}

mmvq_kernels! {
    mmvq_q4_0: Q4_0, lay::MQ_Q4_0;
    mmvq_q4_1: Q4_1, lay::MQ_Q4_1;
    mmvq_q5_0: Q5_0, lay::MQ_Q5_0;
    mmvq_q5_1: Q5_1, lay::MQ_Q5_1;
    mmvq_q8_0: Q8_0, lay::MQ_Q8_0;
    mmvq_q4_k: Q4K, lay::MQ_Q4_K;
    mmvq_q5_k: Q5K, lay::MQ_Q5_K;
    mmvq_q6_k: Q6K, lay::MQ_Q6_K;
    // Benchmark-only variants (q8_layout::MQ_VARIANTS).
    mmvq_q4_0_r2w4u1s3k1m4: Q4_0, lay::MQ_VARIANTS[0].2;
    mmvq_q4_k_r2w4u1s3k1m4: Q4K, lay::MQ_VARIANTS[1].2;
    mmvq_q4_k64_r2w8u1s2k2m3: Q4K64, lay::MQ_VARIANTS[2].2;
    mmvq_q5_k_r2w8u1s2k2m3: Q5K, lay::MQ_VARIANTS[3].2;
    mmvq_q6_k_r2w4u1s2k1m4: Q6K, lay::MQ_VARIANTS[4].2;
}

mmvq_cols_kernels! {
    mmvq_q4_0_c2: Q4_0, lay::MC_Q4_0[0];
    mmvq_q4_0_c4: Q4_0, lay::MC_Q4_0[1];
    mmvq_q4_0_c8: Q4_0, lay::MC_Q4_0[2];
    mmvq_q4_1_c2: Q4_1, lay::MC_Q4_1[0];
    mmvq_q4_1_c4: Q4_1, lay::MC_Q4_1[1];
    mmvq_q4_1_c8: Q4_1, lay::MC_Q4_1[2];
    mmvq_q5_0_c2: Q5_0, lay::MC_Q5_0[0];
    mmvq_q5_0_c4: Q5_0, lay::MC_Q5_0[1];
    mmvq_q5_0_c8: Q5_0, lay::MC_Q5_0[2];
    mmvq_q5_1_c2: Q5_1, lay::MC_Q5_1[0];
    mmvq_q5_1_c4: Q5_1, lay::MC_Q5_1[1];
    mmvq_q5_1_c8: Q5_1, lay::MC_Q5_1[2];
    mmvq_q8_0_c2: Q8_0, lay::MC_Q8_0[0];
    mmvq_q8_0_c4: Q8_0, lay::MC_Q8_0[1];
    mmvq_q8_0_c8: Q8_0, lay::MC_Q8_0[2];
    mmvq_q4_k_c2: Q4K, lay::MC_Q4_K[0];
    mmvq_q4_k_c4: Q4K, lay::MC_Q4_K[1];
    mmvq_q4_k_c8: Q4K, lay::MC_Q4_K[2];
    mmvq_q5_k_c2: Q5K, lay::MC_Q5_K[0];
    mmvq_q5_k_c4: Q5K, lay::MC_Q5_K[1];
    mmvq_q5_k_c8: Q5K, lay::MC_Q5_K[2];
    mmvq_q6_k_c2: Q6K, lay::MC_Q6_K[0];
    mmvq_q6_k_c4: Q6K, lay::MC_Q6_K[1];
    mmvq_q6_k_c8: Q6K, lay::MC_Q6_K[2];
    // Benchmark-only variants (q8_layout::MQ_VARIANTS).
    mmvq_q4_0_c8_r2w8s3m2: Q4_0, lay::MQ_VARIANTS[5].2;
    mmvq_q4_k_c8_r2w8s3m1: Q4K, lay::MQ_VARIANTS[6].2;
    mmvq_q4_0_c4_r4w4s3m3: Q4_0, lay::MQ_VARIANTS[7].2;
    mmvq_q4_k_c4_r4w4s2m2: Q4K, lay::MQ_VARIANTS[8].2;
    mmvq_q4_0_c2_r2w8s2m2: Q4_0, lay::MQ_VARIANTS[9].2;
    mmvq_q4_k_c2_r2w8s2m2: Q4K, lay::MQ_VARIANTS[10].2;
}

/// Benchmark-only bandwidth probe: reads `n16` 16-byte chunks of `p` (grid-stride, 4 independent 16-byte loads in
/// flight per thread) and writes the XOR of everything read to `out[bid]` when it equals a marker that random data
/// never gives, so that the loads are not removed. It is the floor a mat-vec of the same bytes can approach in the
/// same launch pattern.
///
/// Launch: any grid of 256-thread blocks; `p` 16-byte aligned.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn stream_probe(p: *const u8, n16: u32, out: *mut u32) {
    crate::common::pdl_enter();
    let stride = nctaid() * 256;
    let mut i = bid() * 256 + tid();
    let mut acc = 0u32;
    while i + 3 * stride < n16 {
        let v = [
            ldg4(p.add(16 * i as usize)),
            ldg4(p.add(16 * (i + stride) as usize)),
            ldg4(p.add(16 * (i + 2 * stride) as usize)),
            ldg4(p.add(16 * (i + 3 * stride) as usize)),
        ];
        unroll::<4>(|k| acc ^= v[k][0] ^ v[k][1] ^ v[k][2] ^ v[k][3]);
        i += 4 * stride;
    }
    while i < n16 {
        let v = ldg4(p.add(16 * i as usize));
        acc ^= v[0] ^ v[1] ^ v[2] ^ v[3];
        i += stride;
    }
    if acc == 0x1234_5678 {
        *out.add(bid() as usize) = acc;
    }
}
