//! Integer tensor-core mat-mul Y = X_q W^T for many activation rows (the prefill path): int8
//! `mma.sync.m16n8k32` on the weight quants and the 8-bit activations of `quantize_q8_act`. CPU twin:
//! `host::quant::matmul_q8`, whose numerics these kernels follow (as the dp4a mat-vec kernels of `q8.rs` do):
//! per block of 32 (a K-quant sub-block of 32, or of 16 for Q6_K), the integer dot of the weight quants with the
//! activation quants is exact, then scaled in f32 (weight scale x activation scale, plus min x activation sum
//! for the types with a min). Only the order of the f32 sums differs from the CPU.
//!
//! Per k-tile (128 columns for the legacy types, one 256-column super-block for the K-quants, `mmq_layout.rs`):
//! 1. `cp.async` copies, one k-tile ahead, the tile's raw weight bytes (as in the file, any alignment), the
//!    activation quants and their scales into one of two stages;
//! 2. the block decodes the raw weights into i8 quants (`q - offset`) and per-32 f32 scale pairs, and the
//!    activation metadata into per-32 f32 (d, d * sum) pairs;
//! 3. each warp loads its fragments with `ldmatrix` and runs one m16n8k32 per 16 rows x 8 tokens x 32 columns,
//!    with the accumulator preset to 1.5 * 2^23 as integer so that its bits read as the exact float
//!    1.5 * 2^23 + dot (|dot| < 2^22): one FADD converts it (int-to-float conversions issue at a quarter of the
//!    FMA rate), then FMAs add scale * dot (and min * sum) into f32 accumulators.

use core::arch::asm;

use super::mmq_layout::{MmqGeom, ROWS, THIN_THREADS, THREADS, TOKS};
use super::q8_layout as lay;
use super::{cp_async16, cp_async16_full, cp_async_commit, cp_async_wait, f16, fma, lds_u32, ldsm_x4, sts_u4, unroll};
use crate::common::*;

// The block's dynamic shared memory (size set by the launcher from `MmqGeom::smem_bytes`).
core::arch::global_asm!(".extern .shared .align 16 .b8 mmq_smem[];");

// ----------------------------------------------------------------------------
// Device primitives
// ----------------------------------------------------------------------------

/// 32-bit shared address of the dynamic shared memory.
#[inline(always)]
fn dyn_smem() -> u32 {
    let p: u32;
    // SAFETY: reads the address of the module's dynamic shared array.
    unsafe { asm!("mov.u32 {p}, mmq_smem;", p = out(reg32) p, options(pure, nomem, nostack)) };
    p
}

/// Integer bits of 1.5 * 2^23: `f32::from_bits(MAGIC + i) - 1.5 * 2^23 == i` for |i| < 2^22.
const MAGIC: i32 = 0x4B40_0000;
const MAGIC_F: f32 = 12_582_912.0;

/// D = A B + C for a 16x32 i8 tile A (row-major fragments a), a 32x8 i8 tile B (column-major fragments b) and C
/// all `c`.
#[inline(always)]
fn mma_k32(a: [u32; 4], b: [u32; 2], c: i32) -> [i32; 4] {
    let (d0, d1, d2, d3): (i32, i32, i32, i32);
    // SAFETY: pure register arithmetic (warp-synchronous: every lane of the warp executes it).
    unsafe {
        asm!("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {{{d0}, {d1}, {d2}, {d3}}}, {{{a0}, {a1}, {a2}, {a3}}}, \
              {{{b0}, {b1}}}, {{{c}, {c}, {c}, {c}}};",
             d0 = out(reg32) d0, d1 = out(reg32) d1, d2 = out(reg32) d2, d3 = out(reg32) d3,
             a0 = in(reg32) a[0], a1 = in(reg32) a[1], a2 = in(reg32) a[2], a3 = in(reg32) a[3],
             b0 = in(reg32) b[0], b1 = in(reg32) b[1], c = in(reg32) c, options(pure, nomem, nostack))
    };
    [d0, d1, d2, d3]
}

/// The m16n8k16 variant: A 16x16 (fragments a), B 16x8 (fragment b).
#[inline(always)]
fn mma_k16(a: [u32; 2], b: u32, c: i32) -> [i32; 4] {
    let (d0, d1, d2, d3): (i32, i32, i32, i32);
    // SAFETY: as `mma_k32`.
    unsafe {
        asm!("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {{{d0}, {d1}, {d2}, {d3}}}, {{{a0}, {a1}}}, {{{b0}}}, \
              {{{c}, {c}, {c}, {c}}};",
             d0 = out(reg32) d0, d1 = out(reg32) d1, d2 = out(reg32) d2, d3 = out(reg32) d3,
             a0 = in(reg32) a[0], a1 = in(reg32) a[1], b0 = in(reg32) b, c = in(reg32) c,
             options(pure, nomem, nostack))
    };
    [d0, d1, d2, d3]
}

/// 4-byte asynchronous copy global -> shared (through L1); both addresses 4-byte aligned.
#[inline(always)]
unsafe fn cp_async4(dst: u32, src: *const u8) {
    asm!("cp.async.ca.shared.global [{d}], [{s}], 4;", d = in(reg32) dst, s = in(reg64) src, options(nostack));
}

#[inline(always)]
unsafe fn lds16(a: u32) -> u32 {
    let r: u32;
    asm!("ld.shared.u16 {r}, [{a}];", r = out(reg32) r, a = in(reg32) a, options(pure, readonly, nostack));
    r
}

#[inline(always)]
unsafe fn lds_s16(a: u32) -> i32 {
    let r: i32;
    asm!("ld.shared.s16 {r}, [{a}];", r = out(reg32) r, a = in(reg32) a, options(pure, readonly, nostack));
    r
}

#[inline(always)]
unsafe fn lds_f2(a: u32) -> [f32; 2] {
    let (x, y): (f32, f32);
    asm!("ld.shared.v2.f32 {{{x}, {y}}}, [{a}];", x = out(reg32) x, y = out(reg32) y, a = in(reg32) a,
         options(pure, readonly, nostack));
    [x, y]
}

#[inline(always)]
unsafe fn lds_f4(a: u32) -> [f32; 4] {
    let (x, y, z, w): (f32, f32, f32, f32);
    asm!("ld.shared.v4.f32 {{{x}, {y}, {z}, {w}}}, [{a}];", x = out(reg32) x, y = out(reg32) y, z = out(reg32) z,
         w = out(reg32) w, a = in(reg32) a, options(pure, readonly, nostack));
    [x, y, z, w]
}

#[inline(always)]
unsafe fn sts_f2(a: u32, v: [f32; 2]) {
    asm!("st.shared.v2.f32 [{a}], {{{x}, {y}}};", a = in(reg32) a, x = in(reg32) v[0], y = in(reg32) v[1],
         options(nostack));
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

/// N consecutive little-endian words at the 2-aligned shared address `a`: N + 1 aligned loads joined by funnel
/// shifts (reads up to 4 bytes past the end).
#[inline(always)]
unsafe fn lds_words<const N: usize>(a: u32) -> [u32; N] {
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

const M4: u32 = 0x0F0F_0F0F;

/// Each byte of `v` (below 0x80 + `off`) minus `off`, as i8: no carry crosses a byte.
#[inline(always)]
fn sub_off(v: u32, off: u32) -> u32 {
    v.wrapping_add((0x80 - off) * 0x0101_0101) ^ 0x8080_8080
}

/// Bits 0..4 of `h` moved to bit 4 of bytes 0..4 (the fifth bit of four Q5 quants).
#[inline(always)]
fn spread4_hi(h: u32) -> u32 {
    (h & 0xF).wrapping_mul(0x0204_0810) & 0x1010_1010
}

// ----------------------------------------------------------------------------
// Per-type decoders: a sub-block of 32 weights to i8 quants and a pair of f32 scales
// ----------------------------------------------------------------------------

/// One weight type: blocks of `BS` elements in `TS` bytes.
pub trait MmqType {
    const BS: u32;
    const TS: u32;
    /// The second scale is a min, multiplied by the activation block's d * sum (Q4_1, Q5_1, Q4_K, Q5_K).
    const MIN: bool;
    /// The two scales belong to the two halves of 16 of the sub-block (Q6_K).
    const SUB16: bool = false;
    /// Tile layout.
    const G: MmqGeom = MmqGeom::of(Self::BS, Self::TS);
    /// Sub-block `j` (32 elements) of the block at the 2-aligned shared address `a`: its quants as 8 words of i8
    /// in element order and its (scale, second scale).
    unsafe fn unit(a: u32, j: u32) -> ([u32; 8], f32, f32);
    /// The (scale, second scale) of sub-block `j`, as `unit` gives them.
    unsafe fn scales(a: u32, j: u32) -> (f32, f32);
    /// Words `k` and `4 + k` (k < 4) of `unit`'s quants: elements 4k .. 4k + 4 and 16 + 4k .. 20 + 4k, the part
    /// of a sub-block one lane holds of an `mma` A fragment. Decoded from the words that hold them only.
    unsafe fn frag(a: u32, j: u32, k: u32) -> [u32; 2];
}

/// The little-endian word at the 2-aligned shared address `a`.
#[inline(always)]
unsafe fn lds_word(a: u32) -> u32 {
    lds_words::<1>(a)[0]
}

/// The low and high nibbles of `w`, each minus `off`.
#[inline(always)]
fn nibble_pair(w: u32, off: u32) -> [u32; 2] {
    [sub_off(w & M4, off), sub_off((w >> 4) & M4, off)]
}

/// Q5 quants of word k: low and high nibbles of `w` with fifth bits from `qh` (bit e = element e), minus `off`.
#[inline(always)]
fn q5_pair(w: u32, qh: u32, k: u32, off: u32) -> [u32; 2] {
    [sub_off((w & M4) | spread4_hi(qh >> (4 * k)), off), sub_off(((w >> 4) & M4) | spread4_hi(qh >> (16 + 4 * k)), off)]
}

/// Low nibbles of `qs` = elements 0..16, high nibbles = 16..32, each minus `off`.
#[inline(always)]
fn nibbles(qs: [u32; 4], off: u32) -> [u32; 8] {
    let mut q = [0u32; 8];
    unroll::<4>(|k| [q[k], q[4 + k]] = nibble_pair(qs[k], off));
    q
}

/// Q5 quants from low nibbles `qs` and fifth bits `qh` (bit e = element e), each minus `off`.
#[inline(always)]
fn q5(qs: [u32; 4], qh: u32, off: u32) -> [u32; 8] {
    let mut q = [0u32; 8];
    unroll::<4>(|k| [q[k], q[4 + k]] = q5_pair(qs[k], qh, k as u32, off));
    q
}

/// Q4_0: x = d (q - 8), 18 bytes: d, 16 bytes of nibbles.
pub struct Q4_0;
impl MmqType for Q4_0 {
    const BS: u32 = 32;
    const TS: u32 = 18;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn unit(a: u32, j: u32) -> ([u32; 8], f32, f32) {
        let (s0, s1) = Self::scales(a, j);
        (nibbles(lds_words::<4>(a + 2), 8), s0, s1)
    }
    #[inline(always)]
    unsafe fn scales(a: u32, _j: u32) -> (f32, f32) {
        (f16(lds16(a)), 0.0)
    }
    #[inline(always)]
    unsafe fn frag(a: u32, _j: u32, k: u32) -> [u32; 2] {
        nibble_pair(lds_word(a + 2 + 4 * k), 8)
    }
}

/// Q4_1: x = d q + m, 20 bytes: d, m, 16 bytes of nibbles.
pub struct Q4_1;
impl MmqType for Q4_1 {
    const BS: u32 = 32;
    const TS: u32 = 20;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn unit(a: u32, _j: u32) -> ([u32; 8], f32, f32) {
        let w = lds_words::<5>(a);
        (nibbles([w[1], w[2], w[3], w[4]], 0), f16(w[0]), f16(w[0] >> 16))
    }
    #[inline(always)]
    unsafe fn scales(a: u32, _j: u32) -> (f32, f32) {
        let w = lds_word(a);
        (f16(w), f16(w >> 16))
    }
    #[inline(always)]
    unsafe fn frag(a: u32, _j: u32, k: u32) -> [u32; 2] {
        nibble_pair(lds_word(a + 4 + 4 * k), 0)
    }
}

/// Q5_0: x = d (q - 16), 22 bytes: d, qh (4), 16 bytes of low nibbles.
pub struct Q5_0;
impl MmqType for Q5_0 {
    const BS: u32 = 32;
    const TS: u32 = 22;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn unit(a: u32, j: u32) -> ([u32; 8], f32, f32) {
        let w = lds_words::<5>(a + 2);
        let (s0, s1) = Self::scales(a, j);
        (q5([w[1], w[2], w[3], w[4]], w[0], 16), s0, s1)
    }
    #[inline(always)]
    unsafe fn scales(a: u32, _j: u32) -> (f32, f32) {
        (f16(lds16(a)), 0.0)
    }
    #[inline(always)]
    unsafe fn frag(a: u32, _j: u32, k: u32) -> [u32; 2] {
        q5_pair(lds_word(a + 6 + 4 * k), lds_word(a + 2), k, 16)
    }
}

/// Q5_1: x = d q + m, 24 bytes: d, m, qh (4), 16 bytes of low nibbles.
pub struct Q5_1;
impl MmqType for Q5_1 {
    const BS: u32 = 32;
    const TS: u32 = 24;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn unit(a: u32, _j: u32) -> ([u32; 8], f32, f32) {
        let w = lds_words::<6>(a);
        (q5([w[2], w[3], w[4], w[5]], w[1], 0), f16(w[0]), f16(w[0] >> 16))
    }
    #[inline(always)]
    unsafe fn scales(a: u32, j: u32) -> (f32, f32) {
        Q4_1::scales(a, j)
    }
    #[inline(always)]
    unsafe fn frag(a: u32, _j: u32, k: u32) -> [u32; 2] {
        q5_pair(lds_word(a + 8 + 4 * k), lds_word(a + 4), k, 0)
    }
}

/// Q8_0: x = d q, 34 bytes: d, 32 signed quants.
pub struct Q8_0;
impl MmqType for Q8_0 {
    const BS: u32 = 32;
    const TS: u32 = 34;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn unit(a: u32, j: u32) -> ([u32; 8], f32, f32) {
        let (s0, s1) = Self::scales(a, j);
        (lds_words::<8>(a + 2), s0, s1)
    }
    #[inline(always)]
    unsafe fn scales(a: u32, _j: u32) -> (f32, f32) {
        (f16(lds16(a)), 0.0)
    }
    #[inline(always)]
    unsafe fn frag(a: u32, _j: u32, k: u32) -> [u32; 2] {
        [lds_word(a + 2 + 4 * k), lds_word(a + 18 + 4 * k)]
    }
}

/// ggml `get_scale_min_k4` of sub-block `j` from the 12 scale bytes (words s0, s1, s2): (scale, min).
#[inline(always)]
fn scale_min_k4(j: u32, s0: u32, s1: u32, s2: u32) -> (u32, u32) {
    let sh = 8 * (j & 3);
    let (a, b, e) = (s0 >> sh, s1 >> sh, s2 >> sh);
    if j < 4 {
        (a & 63, b & 63)
    } else {
        ((e & 0xF) | ((a >> 2) & 0x30), ((e >> 4) & 0xF) | ((b >> 2) & 0x30))
    }
}

/// Q4_K / Q5_K scale pair of sub-block `j`: (d sc, -dmin m).
#[inline(always)]
unsafe fn scales_k4(a: u32, j: u32) -> (f32, f32) {
    let h = lds_words::<4>(a);
    let (sc, m) = scale_min_k4(j, h[1], h[2], h[3]);
    (f16(h[0]) * sc as f32, -(f16(h[0] >> 16) * m as f32))
}

/// Q4_K: 144 bytes: d, dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles (sub-block 2c + h: the
/// low (h = 0) or high nibbles of bytes 32c .. 32c + 32).
pub struct Q4K;
impl MmqType for Q4K {
    const BS: u32 = 256;
    const TS: u32 = 144;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn unit(a: u32, j: u32) -> ([u32; 8], f32, f32) {
        let qs = lds_words::<8>(a + 16 + 32 * (j >> 1));
        let sh = 4 * (j & 1);
        let mut q = [0u32; 8];
        unroll::<8>(|k| q[k] = (qs[k] >> sh) & M4);
        let (s, m) = scales_k4(a, j);
        (q, s, m)
    }
    #[inline(always)]
    unsafe fn scales(a: u32, j: u32) -> (f32, f32) {
        scales_k4(a, j)
    }
    #[inline(always)]
    unsafe fn frag(a: u32, j: u32, k: u32) -> [u32; 2] {
        let (qs, sh) = (a + 16 + 32 * (j >> 1) + 4 * k, 4 * (j & 1));
        [(lds_word(qs) >> sh) & M4, (lds_word(qs + 16) >> sh) & M4]
    }
}

/// Q5_K: 176 bytes: d, dmin, 12 scale bytes, qh (32: bit j of byte l is the fifth bit of element 32j + l), 128
/// bytes of low nibbles as Q4_K.
pub struct Q5K;
impl MmqType for Q5K {
    const BS: u32 = 256;
    const TS: u32 = 176;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn unit(a: u32, j: u32) -> ([u32; 8], f32, f32) {
        let qh = lds_words::<8>(a + 16);
        let qs = lds_words::<8>(a + 48 + 32 * (j >> 1));
        let sh = 4 * (j & 1);
        let mut q = [0u32; 8];
        unroll::<8>(|k| q[k] = ((qs[k] >> sh) & M4) | (((qh[k] >> j) & 0x0101_0101) << 4));
        let (s, m) = scales_k4(a, j);
        (q, s, m)
    }
    #[inline(always)]
    unsafe fn scales(a: u32, j: u32) -> (f32, f32) {
        scales_k4(a, j)
    }
    #[inline(always)]
    unsafe fn frag(a: u32, j: u32, k: u32) -> [u32; 2] {
        let (qs, qh, sh) = (a + 48 + 32 * (j >> 1) + 4 * k, a + 16 + 4 * k, 4 * (j & 1));
        let e = |o: u32| ((lds_word(qs + o) >> sh) & M4) | (((lds_word(qh + o) >> j) & 0x0101_0101) << 4);
        [e(0), e(16)]
    }
}

/// Q6_K: x = d sc (q - 32), 210 bytes: ql (128), qh (64), 16 signed 8-bit scales (one per 16 elements), d.
/// Sub-block j = 4n + o (n: 128-element half) holds the low (o < 2) or high nibbles of ql[64n + 32 (o & 1) ..]
/// with bits 2o, 2o + 1 of qh[32n ..] on top.
pub struct Q6K;
impl MmqType for Q6K {
    const BS: u32 = 256;
    const TS: u32 = 210;
    const MIN: bool = false;
    const SUB16: bool = true;
    #[inline(always)]
    unsafe fn unit(a: u32, j: u32) -> ([u32; 8], f32, f32) {
        let (n, o) = (j >> 2, j & 3);
        let ql = lds_words::<8>(a + 64 * n + 32 * (o & 1));
        let qh = lds_words::<8>(a + 128 + 32 * n);
        let (sl, sh) = (4 * (o >> 1), 2 * o);
        let mut q = [0u32; 8];
        unroll::<8>(|k| q[k] = sub_off(((ql[k] >> sl) & M4) | (((qh[k] >> sh) & 0x0303_0303) << 4), 32));
        let (s0, s1) = Self::scales(a, j);
        (q, s0, s1)
    }
    #[inline(always)]
    unsafe fn scales(a: u32, j: u32) -> (f32, f32) {
        let sc = lds16(a + 192 + 2 * j);
        let d = f16(lds16(a + 208));
        (d * (sc as u8 as i8) as f32, d * ((sc >> 8) as u8 as i8) as f32)
    }
    #[inline(always)]
    unsafe fn frag(a: u32, j: u32, k: u32) -> [u32; 2] {
        let (n, o) = (j >> 2, j & 3);
        let (ql, qh) = (a + 64 * n + 32 * (o & 1) + 4 * k, a + 128 + 32 * n + 4 * k);
        let (sl, sh) = (4 * (o >> 1), 2 * o);
        let e = |x: u32| sub_off(((lds_word(ql + x) >> sl) & M4) | (((lds_word(qh + x) >> sh) & 0x0303_0303) << 4), 32);
        [e(0), e(16)]
    }
}

// ----------------------------------------------------------------------------
// Pieces shared by the two kernel bodies
// ----------------------------------------------------------------------------

/// Where a block's k-tiles come from and how one is copied into a stage (`cp.async`, no wait): the weight rows
/// `row0 ..` + `g.rows` and the tokens `tok0 ..` + `g.toks` of the block (clamped to the last row and token, whose
/// duplicates are not stored).
#[derive(Clone, Copy)]
struct TileSrc {
    g: MmqGeom,
    w: *const u8,
    xq: *const u8,
    row0: u32,
    tok0: u32,
    n_cols: u32,
    /// Bytes of one weight row, of its part in one k-tile, and of the whole weight.
    row_bytes: u32,
    kt_bytes: u32,
    total: u32,
    last_row: u32,
    last_tok: u32,
    /// Bytes of one activation row, and the offsets of its quants, its q8_1 meta or q8_K d, and its q8_K sums.
    act_rb: u64,
    q_off: u32,
    m_off: u32,
    s_off: u32,
}

impl TileSrc {
    #[inline(always)]
    fn new<T: MmqType>(g: MmqGeom, w: *const u8, xq: *const u8, n_rows: u32, n_cols: u32, n_tok: u32) -> TileSrc {
        let row_bytes = n_cols / T::BS * T::TS;
        let (q_off, m_off, s_off) = if g.kq {
            (lay::off_kq(n_cols), lay::off_kd(n_cols), lay::off_ks(n_cols))
        } else {
            (0, lay::off_meta(n_cols), 0)
        };
        TileSrc {
            g,
            w,
            xq,
            row0: bid() * g.rows,
            tok0: bid_y() * g.toks,
            n_cols,
            row_bytes,
            kt_bytes: g.nb * T::TS,
            total: n_rows * row_bytes,
            last_row: n_rows - 1,
            last_tok: n_tok - 1,
            act_rb: lay::row_bytes(n_cols) as u64,
            q_off,
            m_off,
            s_off,
        }
    }

    /// Activation row of the block's token `tt`.
    #[inline(always)]
    unsafe fn tok_row(&self, tt: u32) -> *const u8 {
        self.xq.add((min_u32(self.tok0 + tt, self.last_tok) as u64 * self.act_rb) as usize)
    }

    /// Byte offset in the weight of the block's row `r` in k-tile `kt` (its stage row starts at `& 15` of it).
    #[inline(always)]
    fn row_start(&self, r: u32, kt: u32) -> u32 {
        min_u32(self.row0 + r, self.last_row) * self.row_bytes + kt * self.kt_bytes
    }

    /// Copy the raw weights of k-tile `kt` into the stage at `st`: chunk f = t + threads k is row f / ch, chunk
    /// f % ch, from the row's 16-aligned start.
    #[inline(always)]
    unsafe fn issue_w(&self, kt: u32, st: u32) {
        let (g, t) = (self.g, tid());
        let ch = g.raw_stride / 16;
        let len = min_u32(self.kt_bytes, self.row_bytes - kt * self.kt_bytes);
        unroll::<16>(
            #[inline(always)]
            |k| {
                let f = t + g.threads * k as u32;
                if (g.threads * k as u32) < g.rows * ch && f < g.rows * ch {
                    let (r, c) = (f / ch, f % ch);
                    let start = self.row_start(r, kt);
                    if 16 * c < (start & 15) + len {
                        let src = (start & !15) + 16 * c;
                        let dst = st + r * g.raw_stride + 16 * c;
                        if src + 16 <= self.total {
                            cp_async16_full(dst, self.w.add(src as usize));
                        } else {
                            cp_async16(dst, self.w.add(src as usize), self.total - src);
                        }
                    }
                }
            },
        );
    }

    /// Copy the activation quants and metadata of k-tile `kt` into the stage at `st`.
    #[inline(always)]
    unsafe fn issue_x(&self, kt: u32, st: u32) {
        let (g, t) = (self.g, tid());
        // quants: token f / (kt / 16), chunk f % (kt / 16)
        let (aq, cpt) = (st + g.raw_bytes(), g.kt / 16);
        let col0 = kt * g.kt;
        unroll::<4>(
            #[inline(always)]
            |k| {
                let f = t + g.threads * k as u32;
                if (g.threads * k as u32) < g.toks * cpt && f < g.toks * cpt {
                    let (tt, c) = (f / cpt, f % cpt);
                    if col0 + 16 * c < self.n_cols {
                        let src = self.tok_row(tt).add((self.q_off + col0 + 16 * c) as usize);
                        cp_async16_full(aq + tt * g.q_stride() + 16 * c, src);
                    }
                }
            },
        );
        let meta = aq + g.act_bytes();
        let nsub = g.nsub();
        if !g.kq {
            // the 16-byte q8_1 record of token t / nsub, block t % nsub
            let (tt, j) = (t / nsub, t % nsub);
            if t < g.toks * nsub && kt * nsub + j < self.n_cols / 32 {
                cp_async16_full(meta + 16 * t, self.tok_row(tt).add((self.m_off + 16 * (kt * nsub + j)) as usize));
            }
        } else {
            if t < g.toks {
                cp_async4(meta + 4 * t, self.tok_row(t).add((self.m_off + 4 * kt) as usize));
            }
            if t < 2 * g.toks {
                let (tt, h) = (t / 2, t % 2);
                cp_async16_full(
                    meta + g.toks * 16 + 32 * tt + 16 * h,
                    self.tok_row(tt).add((self.s_off + 32 * kt + 16 * h) as usize),
                );
            }
        }
    }

    #[inline(always)]
    unsafe fn issue(&self, kt: u32, st: u32) {
        self.issue_w(kt, st);
        self.issue_x(kt, st);
    }
}

/// One 16-row x 8-token x 32-column product, scaled into `acc`: the mma of the A fragments `a` (rows g, g + 8 as
/// the `mma` takes them) and the B fragments `b`, then per element e (row g + 8 (e / 2), token 2 tq + e % 2)
/// `acc += ws * as * dot (+ min * as_sum)`, with `wsc` = the rows' (scale, second scale) and `asv` = the two
/// tokens' (d, d * sum). K-quants other than Q6_K leave out the activation d (the caller multiplies it in once per
/// super-block); Q6_K (`SUB16`) takes two m16n8k16 products, one per half of 16 with its own scale.
#[inline(always)]
fn scale_add<T: MmqType>(a: [u32; 4], b: [u32; 2], wsc: [[f32; 2]; 2], asv: [f32; 4], acc: &mut [f32; 4]) {
    if !T::SUB16 {
        let d = mma_k32(a, b, MAGIC);
        unroll::<4>(
            #[inline(always)]
            |e| {
                let (sw, sa) = (wsc[e / 2], [asv[2 * (e % 2)], asv[2 * (e % 2) + 1]]);
                let f = f32::from_bits(d[e] as u32) - MAGIC_F;
                let mut v = if T::G.kq { fma(sw[0], f, acc[e]) } else { fma(sw[0] * sa[0], f, acc[e]) };
                if T::MIN {
                    v = fma(sw[1], sa[1], v);
                }
                acc[e] = v;
            },
        );
    } else {
        let d0 = mma_k16([a[0], a[1]], b[0], MAGIC);
        let d1 = mma_k16([a[2], a[3]], b[1], MAGIC);
        unroll::<4>(
            #[inline(always)]
            |e| {
                let (sw, dy) = (wsc[e / 2], asv[2 * (e % 2)]);
                let f0 = f32::from_bits(d0[e] as u32) - MAGIC_F;
                let f1 = f32::from_bits(d1[e] as u32) - MAGIC_F;
                acc[e] = fma(dy, fma(sw[0], f0, sw[1] * f1), acc[e]);
            },
        );
    }
}

/// Whether the type's products gather per super-block before the activation d multiplies them (`scale_add`).
#[inline(always)]
const fn per_superblock<T: MmqType>() -> bool {
    T::G.kq && !T::SUB16
}

/// The end of a block: its values go straight into y with one split; else into its split's slice of `part`
/// (n_tok n_rows floats per split), and the tile's last block to get there adds the tile's slices up in order of z
/// into y (slice 0 + slice 1 + ..., the same sum whatever the order the blocks finish in), each thread with the
/// loads of 4 elements x 8 splits in flight at once. `store(dst)` writes the block's values into the (n_tok,
/// n_rows) array at dst; `tile_done` holds one counter per tile of the grid, zero before the launch and left zero
/// after it; null: the slices are left to `sum_splits_f32`.
#[inline(always)]
unsafe fn finish_tile(src: &TileSrc, y: *mut f32, part: *mut f32, tile_done: *mut u32, n_rows: u32, n_tok: u32,
                      store: impl Fn(*mut f32)) {
    let splits = nctaid_z();
    if splits == 1 {
        store(y);
        return;
    }
    let n = n_tok as usize * n_rows as usize;
    store(part.add(bid_z() as usize * n));
    if tile_done.is_null()
        || !last_block(tile_done.add((bid_y() * nctaid() + bid()) as usize), splits, block_scratch_u32())
    {
        return;
    }
    let (g, t) = (src.g, tid());
    let per = g.rows * g.toks / g.threads; // elements per thread: 4 (thin, 8 tokens) to 32 (prefill tile)
    let at = |o: usize| f32::from_bits(ld_gpu_u32(part.add(o) as *const u32));
    unroll::<8>(
        #[inline(always)]
        |k4| {
            if 4 * k4 as u32 >= per {
                return;
            }
            // elements t + threads (4 k4 + e): rows t % rows .. (coalesced), token t / rows ..
            let mut off = [usize::MAX; 4];
            unroll::<4>(
                #[inline(always)]
                |e| {
                    let i = t + g.threads * (4 * k4 as u32 + e as u32);
                    let (r, tk) = (src.row0 + i % g.rows, src.tok0 + i / g.rows);
                    if r < n_rows && tk < n_tok {
                        off[e] = tk as usize * n_rows as usize + r as usize;
                    }
                },
            );
            let mut acc = [0.0f32; 4];
            let mut z0 = 0;
            while z0 < splits {
                let mut v = [[0.0f32; 8]; 4];
                unroll::<4>(
                    #[inline(always)]
                    |e| {
                        unroll::<8>(
                            #[inline(always)]
                            |zz| {
                                if z0 + (zz as u32) < splits && off[e] != usize::MAX {
                                    v[e][zz] = at((z0 as usize + zz) * n + off[e]);
                                }
                            },
                        )
                    },
                );
                unroll::<4>(
                    #[inline(always)]
                    |e| {
                        unroll::<8>(
                            #[inline(always)]
                            |zz| {
                                if z0 + (zz as u32) < splits {
                                    acc[e] += v[e][zz];
                                }
                            },
                        )
                    },
                );
                z0 += 8;
            }
            unroll::<4>(
                #[inline(always)]
                |e| {
                    if off[e] != usize::MAX {
                        *y.add(off[e]) = acc[e];
                    }
                },
            );
        },
    );
}

// ----------------------------------------------------------------------------
// The prefill kernel body: 128 x 64 tiles, weights decoded into shared memory
// ----------------------------------------------------------------------------

/// y[t, r] = sum_c W[r, c] x[t, c] for a tile of `ROWS` weight rows x `TOKS` tokens, x quantized by
/// `quantize_q8_act`.
///
/// Warp w computes rows 32 (w % 4) .. + 32 and tokens 32 (w / 4) .. + 32 of the tile: 2 x 4 m16n8 fragments,
/// 8 mma per 32 columns. Rows past `n_rows` and tokens past `n_tok` read the last row / token and are not
/// stored; columns past `n_cols` (a last partial legacy k-tile) are skipped.
///
/// Split-K: block z of the grid's third dimension takes k-tiles z kt_split .. (z + 1) kt_split and writes its
/// partial sums to slice z of `part`, which the tile's last block adds up into y (`finish_tile`); with one split
/// (kt_split >= the number of k-tiles) the block writes y itself. Few tiles (a decode batch of 33 to 64 tokens has
/// one token tile, so a 4096-row weight gives 32 blocks for 132 SMs) thus still fill the GPU.
///
/// Launch: grid = (ceil(n_rows / 128), ceil(n_tok / 64), splits), block = (256, 1, 1), dynamic shared memory
/// `MmqGeom::smem_bytes`; `xq` 16-byte aligned, the weight tensor under 4 GiB. Traffic: W read ceil(n_tok / 64)
/// times and xq ceil(n_rows / 128) times (mostly from L2), y (or each split's slice) written once; 2 n_rows
/// n_cols n_tok integer ops.
#[inline(always)]
unsafe fn mmq<T: MmqType>(w: *const u8, xq: *const u8, y: *mut f32, part: *mut f32, tile_done: *mut u32, n_rows: u32,
                          n_cols: u32, n_tok: u32, kt_split: u32) {
    let g = T::G;
    let (nsub, rs, qs) = (g.nsub(), g.raw_stride, g.q_stride());
    let src = TileSrc::new::<T>(g, w, xq, n_rows, n_cols, n_tok);
    let smem = dyn_smem();
    let (wq, ws, asc) = (smem + g.off_wq(), smem + g.off_ws(), smem + g.off_as());
    let stage = |i: u32| smem + g.stage(i);
    let (t, lane, warp) = (tid(), tid() & 31, tid() >> 5);
    let n_sub_all = n_cols / 32;
    let n_kt = n_cols.div_ceil(g.kt);

    // Decode the raw weights and the activation metadata of stage `st` (k-tile `kt`, `nsv` valid sub-blocks).
    let decode = #[inline(always)]
    |kt: u32, st: u32, nsv: u32| {
        unroll::<8>(
            #[inline(always)]
            |k| {
                let u = t + THREADS * k as u32;
                if (THREADS * k as u32) < ROWS * nsub {
                    let (r, j) = (u / nsub, u % nsub);
                    if j < nsv {
                        let a = st + r * rs + (src.row_start(r, kt) & 15);
                        let (q, s0, s1) = if g.nb > 1 { T::unit(a + j * T::TS, 0) } else { T::unit(a, j) };
                        sts_u4(wq + r * qs + 32 * j, [q[0], q[1], q[2], q[3]]);
                        sts_u4(wq + r * qs + 32 * j + 16, [q[4], q[5], q[6], q[7]]);
                        sts_f2(ws + (j * ROWS + r) * 8, [s0, s1]);
                    }
                }
            },
        );
        let meta = st + g.raw_bytes() + g.act_bytes();
        unroll::<4>(
            #[inline(always)]
            |k| {
                let e = t + THREADS * k as u32;
                if (THREADS * k as u32) < TOKS * nsub {
                    let (tt, j) = (e % TOKS, e / TOKS);
                    if j < nsv {
                        sts_f2(asc + (j * TOKS + tt) * 8, act_scales::<T>(meta, TOKS, tt, j, nsub));
                    }
                }
            },
        );
    };

    // The warp's fragments and accumulators.
    let (wm, wn) = (warp & 3, warp >> 2);
    let (gq, tq) = (lane >> 2, lane & 3);
    let a_lane = wq + (32 * wm + (lane & 7) + 8 * ((lane >> 3) & 1)) * qs + 16 * (lane >> 4);
    let b_lane = (32 * wn + (lane & 7) + 8 * (lane >> 4)) * qs + 16 * ((lane >> 3) & 1);
    let mut acc = [[[0.0f32; 4]; 4]; 2];
    let compute = #[inline(always)]
    |st: u32, nsv: u32, acc: &mut [[[f32; 4]; 4]; 2]| {
        let b_base = st + g.raw_bytes() + b_lane;
        // Q4_K / Q5_K: the k-tile is one super-block, whose activation d is common to its sub-blocks: sum
        // scale * dot - min * sum over them first, then multiply by d once.
        let mut inner = [[[0.0f32; 4]; 4]; 2];
        unroll::<8>(
            #[inline(always)]
            |j| {
                let j = j as u32;
                if j >= nsub || j >= nsv {
                    return;
                }
                let af = [ldsm_x4(a_lane + 32 * j), ldsm_x4(a_lane + 16 * qs + 32 * j)];
                let bp = [ldsm_x4(b_base + 32 * j), ldsm_x4(b_base + 16 * qs + 32 * j)];
                let bf = [[bp[0][0], bp[0][1]], [bp[0][2], bp[0][3]], [bp[1][0], bp[1][1]], [bp[1][2], bp[1][3]]];
                let mut wsc = [[[0.0f32; 2]; 2]; 2]; // [mi][row g / g + 8][scale, second]
                unroll::<2>(
                    #[inline(always)]
                    |mi| {
                        let r = 32 * wm + 16 * mi as u32 + gq;
                        wsc[mi] = [lds_f2(ws + (j * ROWS + r) * 8), lds_f2(ws + (j * ROWS + r + 8) * 8)];
                    },
                );
                let mut asv = [[0.0f32; 4]; 4]; // [ni][d tok 2tq, sum tok 2tq, d tok 2tq + 1, sum tok 2tq + 1]
                unroll::<4>(
                    #[inline(always)]
                    |ni| asv[ni] = lds_f4(asc + (j * TOKS + 32 * wn + 8 * ni as u32 + 2 * tq) * 8),
                );
                unroll::<2>(
                    #[inline(always)]
                    |mi| {
                        unroll::<4>(
                            #[inline(always)]
                            |ni| {
                                let target = if per_superblock::<T>() { &mut inner[mi][ni] } else { &mut acc[mi][ni] };
                                scale_add::<T>(af[mi], bf[ni], wsc[mi], asv[ni], target);
                            },
                        );
                    },
                );
            },
        );
        if per_superblock::<T>() {
            unroll::<4>(
                #[inline(always)]
                |ni| {
                    let dy = lds_f4(asc + (32 * wn + 8 * ni as u32 + 2 * tq) * 8); // sub-block 0: d of both tokens
                    unroll::<2>(
                        #[inline(always)]
                        |mi| {
                            unroll::<4>(
                                #[inline(always)]
                                |e| acc[mi][ni][e] = fma(dy[2 * (e % 2)], inner[mi][ni][e], acc[mi][ni][e]),
                            );
                        },
                    );
                },
            );
        }
    };

    // This block's k-tiles.
    let kt0 = bid_z() * kt_split;
    let kt_end = min_u32(kt0 + kt_split, n_kt);

    // Pipeline: k-tile kt + 1 is copied while kt is decoded and multiplied.
    src.issue(kt0, stage(kt0));
    cp_async_commit();
    for kt in kt0..kt_end {
        cp_async_wait(0);
        sync_threads(); // stage kt visible; every warp is done with k-tile kt - 1 (its stage and the decoded tile)
        if kt + 1 < kt_end {
            src.issue(kt + 1, stage(kt + 1));
        }
        cp_async_commit();
        let nsv = min_u32(nsub, n_sub_all - kt * nsub);
        decode(kt, stage(kt), nsv);
        sync_threads();
        compute(stage(kt), nsv, &mut acc);
    }

    // Store: y (n_tok, n_rows).
    let store = #[inline(always)]
    |dst: *mut f32| {
        unroll::<2>(
            #[inline(always)]
            |mi| {
                unroll::<4>(
                    #[inline(always)]
                    |ni| {
                        unroll::<4>(
                            #[inline(always)]
                            |e| {
                                let r = src.row0 + 32 * wm + 16 * mi as u32 + gq + 8 * (e as u32 / 2);
                                let tk = src.tok0 + 32 * wn + 8 * ni as u32 + 2 * tq + (e as u32 % 2);
                                if r < n_rows && tk < n_tok {
                                    *dst.add(tk as usize * n_rows as usize + r as usize) = acc[mi][ni][e];
                                }
                            },
                        );
                    },
                );
            },
        );
    };
    finish_tile(&src, y, part, tile_done, n_rows, n_tok, store);
}

/// The (d, d * sum) of token `tt` and sub-block `j` from a stage's activation metadata at `meta` (a tile of `toks`
/// tokens, `nsub` sub-blocks per k-tile); for q8_K (d, sum of the sub-block's quants): the K-quants multiply by d
/// per super-block.
#[inline(always)]
unsafe fn act_scales<T: MmqType>(meta: u32, toks: u32, tt: u32, j: u32, nsub: u32) -> [f32; 2] {
    if !T::G.kq {
        lds_f2(meta + 16 * (tt * nsub + j))
    } else {
        // groups 2j, 2j + 1 sit at 8 (j / 4) + j % 4 and 4 further (q8_layout::BSUM_POS)
        let d = f32::from_bits(lds_u32(meta + 4 * tt));
        let p = meta + toks * 16 + 32 * tt + 2 * (8 * (j >> 2) + (j & 3));
        [d, (lds_s16(p) + lds_s16(p + 8)) as f32]
    }
}

// ----------------------------------------------------------------------------
// The decode-batch kernel body: 64 rows x 8/16/32 tokens, fragments decoded in registers
// ----------------------------------------------------------------------------

/// The thin tile of type `T` and `NT` tokens.
struct Thin<T, const NT: u32>(core::marker::PhantomData<T>);
impl<T: MmqType, const NT: u32> Thin<T, NT> {
    const G: MmqGeom = MmqGeom::thin(T::BS, T::TS, NT);
}

/// y[t, r] = sum_c W[r, c] x[t, c] for a tile of `THIN_ROWS` (64) weight rows x `NT` (8, 16 or 32) tokens: the
/// decode step of a batch of sequences, where `mmq`'s 64-token tile would be mostly empty. Same numbers as `mmq`
/// (the same integer dots, scaled the same way; only the f32 summation order differs).
///
/// Warp w computes rows 16 w .. + 16 and all NT tokens: per sub-block of 32 columns each lane decodes its own A
/// fragment words (`MmqType::frag`: 2 words of each of rows g, g + 8) and scales straight from the raw k-tile in
/// shared memory, loads its B fragments (NT / 8 pairs of words) and runs NT / 8 m16n8k32 (Q6_K: two m16n8k16
/// each). No decoded tile, so one barrier per k-tile; `cp.async` keeps 3 k-tiles in flight (4 stages), the first
/// ones' weights issued before the wait for the previous kernel (`pdl_enter`), as they do not depend on it.
/// Split-K as `mmq`, summed by the tile's last block.
///
/// Launch: grid = (ceil(n_rows / 64), ceil(n_tok / NT), splits), block = (128, 1, 1), dynamic shared memory
/// `MmqGeom::thin(..).smem_bytes()`. Traffic: W read ceil(n_tok / NT) times, xq ceil(n_rows / 64) times (from
/// L2), y (or each split's slice) written once.
#[inline(always)]
unsafe fn mmq_thin<T: MmqType, const NT: u32>(w: *const u8, xq: *const u8, y: *mut f32, part: *mut f32,
                                              tile_done: *mut u32, n_rows: u32, n_cols: u32, n_tok: u32,
                                              kt_split: u32) {
    let g = Thin::<T, NT>::G;
    let (nsub, rs, qs) = (g.nsub(), g.raw_stride, g.q_stride());
    let src = TileSrc::new::<T>(g, w, xq, n_rows, n_cols, n_tok);
    let smem = dyn_smem();
    let (lane, warp) = (tid() & 31, tid() >> 5);
    let (gq, tq) = (lane >> 2, lane & 3);
    let ni_n = NT as usize / 8; // m16n8 tiles per warp
    let n_sub_all = n_cols / 32;
    let n_kt = n_cols.div_ceil(g.kt);
    let kt0 = bid_z() * kt_split;
    let kt_end = min_u32(kt0 + kt_split, n_kt);
    let rows = [16 * warp + gq, 16 * warp + gq + 8];

    let mut acc = [[0.0f32; 4]; 4];
    let compute = #[inline(always)]
    |kt: u32, st: u32, acc: &mut [[f32; 4]; 4]| {
        let nsv = min_u32(nsub, n_sub_all - kt * nsub);
        let (aq, meta) = (st + g.raw_bytes(), st + g.raw_bytes() + g.act_bytes());
        let base = [rows[0], rows[1]].map(|r| st + r * rs + (src.row_start(r, kt) & 15));
        let mut inner = [[0.0f32; 4]; 4];
        unroll::<8>(
            #[inline(always)]
            |j| {
                let j = j as u32;
                if j >= nsub || j >= nsv {
                    return;
                }
                // legacy types: sub-block j is block j of the k-tile; K-quants: sub-block j of its one block
                let (blk, sj) = if g.nb > 1 { (j * T::TS, 0) } else { (0, j) };
                let (f0, f1) = (T::frag(base[0] + blk, sj, tq), T::frag(base[1] + blk, sj, tq));
                let (s0, s1) = (T::scales(base[0] + blk, sj), T::scales(base[1] + blk, sj));
                let (a, wsc) = ([f0[0], f1[0], f0[1], f1[1]], [[s0.0, s0.1], [s1.0, s1.1]]);
                unroll::<4>(
                    #[inline(always)]
                    |ni| {
                        if ni >= ni_n {
                            return;
                        }
                        let t0 = 8 * ni as u32;
                        let bw = aq + (t0 + gq) * qs + 32 * j + 4 * tq;
                        let b = [lds_u32(bw), lds_u32(bw + 16)];
                        let (x0, x1) = (
                            act_scales::<T>(meta, NT, t0 + 2 * tq, j, nsub),
                            act_scales::<T>(meta, NT, t0 + 2 * tq + 1, j, nsub),
                        );
                        let target = if per_superblock::<T>() { &mut inner[ni] } else { &mut acc[ni] };
                        scale_add::<T>(a, b, wsc, [x0[0], x0[1], x1[0], x1[1]], target);
                    },
                );
            },
        );
        if per_superblock::<T>() {
            unroll::<4>(
                #[inline(always)]
                |ni| {
                    if ni < ni_n {
                        let t0 = 8 * ni as u32 + 2 * tq;
                        let dy = [lds_u32(meta + 4 * t0), lds_u32(meta + 4 * t0 + 4)].map(f32::from_bits);
                        unroll::<4>(
                            #[inline(always)]
                            |e| acc[ni][e] = fma(dy[e % 2], inner[ni][e], acc[ni][e]),
                        );
                    }
                },
            );
        }
    };

    // Pipeline: k-tiles kt + 1 .. kt + 3 in flight while kt is multiplied; one barrier per k-tile, after which
    // every warp is done with kt - 1, whose stage the next copy reuses.
    let ahead = g.stages - 1;
    for s in 0..ahead {
        if kt0 + s < kt_end {
            src.issue_w(kt0 + s, smem + g.stage(kt0 + s));
        }
    }
    crate::common::pdl_enter();
    for s in 0..ahead {
        if kt0 + s < kt_end {
            src.issue_x(kt0 + s, smem + g.stage(kt0 + s));
        }
        cp_async_commit();
    }
    for kt in kt0..kt_end {
        cp_async_wait(ahead - 1);
        sync_threads();
        if kt + ahead < kt_end {
            src.issue(kt + ahead, smem + g.stage(kt + ahead));
        }
        cp_async_commit();
        compute(kt, smem + g.stage(kt), &mut acc);
    }

    // Store: y (n_tok, n_rows).
    let store = #[inline(always)]
    |dst: *mut f32| {
        unroll::<4>(
            #[inline(always)]
            |ni| {
                unroll::<4>(
                    #[inline(always)]
                    |e| {
                        let r = src.row0 + rows[e / 2];
                        let tk = src.tok0 + 8 * ni as u32 + 2 * tq + (e as u32 % 2);
                        if ni < ni_n && r < n_rows && tk < n_tok {
                            *dst.add(tk as usize * n_rows as usize + r as usize) = acc[ni][e];
                        }
                    },
                );
            },
        );
    };
    finish_tile(&src, y, part, tile_done, n_rows, n_tok, store);
}

macro_rules! mmq_kernels {
    ($($name:ident, [$t8:ident, $t16:ident, $t32:ident]: $ty:ty;)*) => {$(
        /// y = X_q W^T; see [`mmq`] for the launch shape (geometry in `mmq_layout.rs`) and traffic.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(w: *const u8 /* (n_rows, n_cols) blocks */,
                                                xq: *const u8 /* (n_tok, row_bytes(n_cols)), quantize_q8_act */,
                                                y: *mut f32 /* (n_tok, n_rows) */,
                                                part: *mut f32 /* (splits, n_tok, n_rows) when split */,
                                                tile_done: *mut u32 /* one per tile, zero */, n_rows: u32,
                                                n_cols: u32, n_tok: u32, kt_split: u32) {
            crate::common::pdl_enter();
            const G: MmqGeom = MmqGeom::of(<$ty as MmqType>::BS, <$ty as MmqType>::TS);
            crate::launch_bounds!(THREADS, G.min_blocks());
            mmq::<$ty>(w, xq, y, part, tile_done, n_rows, n_cols, n_tok, kt_split)
        }
        mmq_kernels!(@thin $ty, $t8 8, $t16 16, $t32 32);
    )*};
    (@thin $ty:ty, $($name:ident $nt:literal),*) => {$(
        /// y = X_q W^T for a decode batch; see [`mmq_thin`] for the launch shape and traffic.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(w: *const u8, xq: *const u8, y: *mut f32, part: *mut f32,
                                                tile_done: *mut u32, n_rows: u32, n_cols: u32, n_tok: u32,
                                                kt_split: u32) {
            crate::launch_bounds!(THIN_THREADS, Thin::<$ty, $nt>::G.min_blocks());
            mmq_thin::<$ty, $nt>(w, xq, y, part, tile_done, n_rows, n_cols, n_tok, kt_split)
        }
    )*};
}

mmq_kernels! {
    mmq_q4_0, [mmqt_q4_0_t8, mmqt_q4_0_t16, mmqt_q4_0_t32]: Q4_0;
    mmq_q4_1, [mmqt_q4_1_t8, mmqt_q4_1_t16, mmqt_q4_1_t32]: Q4_1;
    mmq_q5_0, [mmqt_q5_0_t8, mmqt_q5_0_t16, mmqt_q5_0_t32]: Q5_0;
    mmq_q5_1, [mmqt_q5_1_t8, mmqt_q5_1_t16, mmqt_q5_1_t32]: Q5_1;
    mmq_q8_0, [mmqt_q8_0_t8, mmqt_q8_0_t16, mmqt_q8_0_t32]: Q8_0;
    mmq_q4_k, [mmqt_q4_k_t8, mmqt_q4_k_t16, mmqt_q4_k_t32]: Q4K;
    mmq_q5_k, [mmqt_q5_k_t8, mmqt_q5_k_t16, mmqt_q5_k_t32]: Q5K;
    mmq_q6_k, [mmqt_q6_k_t8, mmqt_q6_k_t16, mmqt_q6_k_t32]: Q6K;
}
