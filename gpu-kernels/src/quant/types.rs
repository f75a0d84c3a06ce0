//! One decoder per GGUF type: how a unit's quants and a scale group's (scale, min) are read from the block bytes
//! (layouts in `crate::blocks`). Each is a port of ggml's `dequantize_row_*` (ggml-quants.c) cut into units of
//! 4-element runs; the comment on each type gives its value formula and unit layout.

use super::{f16, unroll, Mem, QType};

/// Bits 0..4 of `b` moved to bits 0, 8, 16, 24 (one bit per byte).
#[inline(always)]
fn spread4(b: u32) -> u32 {
    ((b & 0xF).wrapping_mul(0x0020_4081)) & 0x0101_0101
}

/// ggml `get_scale_min_k4`: 6-bit scale and min `s` (0..8) of Q4_K / Q5_K from the 12 bytes at `q`.
#[inline(always)]
unsafe fn scale_min_k4<M: Mem>(q: M, s: u32) -> (u32, u32) {
    if s < 4 {
        (q.u8(s) & 63, q.u8(s + 4) & 63)
    } else {
        ((q.u8(s + 4) & 0xF) | ((q.u8(s - 4) >> 6) << 4), (q.u8(s + 4) >> 4) | ((q.u8(s) >> 6) << 4))
    }
}

// ----------------------------------------------------------------------------
// Plain float types: "blocks" of 8 elements, one unit of two runs
// ----------------------------------------------------------------------------

/// f32 values; block = 8 elements (32 bytes).
pub struct F32;
impl QType for F32 {
    const BS: u32 = 8;
    const TS: u32 = 32;
    const UPB: u32 = 1;
    const RUNS: u32 = 2;
    const NSUB: u32 = 0;
    const PLAIN: bool = true;
    fn run_start(_j: u32, k: u32) -> u32 {
        4 * k
    }
    fn run_sub(_j: u32, _k: u32) -> u32 {
        0
    }
    #[inline(always)]
    unsafe fn unit<M: Mem>(b: M, _j: u32) -> [[f32; 4]; 4] {
        let mut r = [[0.0; 4]; 4];
        for i in 0..8u32 {
            r[(i / 4) as usize][(i % 4) as usize] = f32::from_bits(b.u32a(4 * i));
        }
        r
    }
    #[inline(always)]
    unsafe fn scale<M: Mem>(_b: M, _s: u32) -> (f32, f32) {
        (1.0, 0.0)
    }
    #[inline(always)]
    unsafe fn elem<M: Mem>(b: M, i: u32) -> f32 {
        f32::from_bits(b.u32a(4 * i))
    }
}

/// IEEE half values; block = 8 elements (16 bytes, 2-aligned in general).
pub struct F16;
impl QType for F16 {
    const BS: u32 = 8;
    const TS: u32 = 16;
    const UPB: u32 = 1;
    const RUNS: u32 = 2;
    const NSUB: u32 = 0;
    const PLAIN: bool = true;
    fn run_start(_j: u32, k: u32) -> u32 {
        4 * k
    }
    fn run_sub(_j: u32, _k: u32) -> u32 {
        0
    }
    #[inline(always)]
    unsafe fn unit<M: Mem>(b: M, _j: u32) -> [[f32; 4]; 4] {
        let mut r = [[0.0; 4]; 4];
        for i in 0..8u32 {
            r[(i / 4) as usize][(i % 4) as usize] = f16(b.u16(2 * i));
        }
        r
    }
    #[inline(always)]
    unsafe fn scale<M: Mem>(_b: M, _s: u32) -> (f32, f32) {
        (1.0, 0.0)
    }
    #[inline(always)]
    unsafe fn elem<M: Mem>(b: M, i: u32) -> f32 {
        f16(b.u16(2 * i))
    }
}

/// bfloat16 values (the high half of an f32); block = 8 elements (16 bytes, 2-aligned in general).
pub struct BF16;
impl QType for BF16 {
    const BS: u32 = 8;
    const TS: u32 = 16;
    const UPB: u32 = 1;
    const RUNS: u32 = 2;
    const NSUB: u32 = 0;
    const PLAIN: bool = true;
    fn run_start(_j: u32, k: u32) -> u32 {
        4 * k
    }
    fn run_sub(_j: u32, _k: u32) -> u32 {
        0
    }
    #[inline(always)]
    unsafe fn unit<M: Mem>(b: M, _j: u32) -> [[f32; 4]; 4] {
        let mut r = [[0.0; 4]; 4];
        for i in 0..8u32 {
            r[(i / 4) as usize][(i % 4) as usize] = f32::from_bits(b.u16(2 * i) << 16);
        }
        r
    }
    #[inline(always)]
    unsafe fn scale<M: Mem>(_b: M, _s: u32) -> (f32, f32) {
        (1.0, 0.0)
    }
    #[inline(always)]
    unsafe fn elem<M: Mem>(b: M, i: u32) -> f32 {
        f32::from_bits(b.u16(2 * i) << 16)
    }
}

// ----------------------------------------------------------------------------
// Legacy 32-element blocks
// ----------------------------------------------------------------------------

/// Low nibbles (run 0) and high nibbles (run 1) of one word.
const NIBBLES: [(u32, u32); 4] = [(0, 0xF), (4, 0xF), (0, 0), (0, 0)];
/// Bytes masked to 5, 6, 8 bits, one word per run.
const BYTES5: [(u32, u32); 4] = [(0, 0x1F); 4];
const BYTES6: [(u32, u32); 4] = [(0, 0x3F); 4];
const BYTES8: [(u32, u32); 4] = [(0, 0xFF); 4];

/// Q4_0: x = (q - 8) * d. Unit j (0..4) = qs word j: low nibbles are elements 4j.., high nibbles 16 + 4j...
pub struct Q4_0;
impl QType for Q4_0 {
    const BS: u32 = 32;
    const TS: u32 = 18;
    const UPB: u32 = 4;
    const RUNS: u32 = 2;
    const NSUB: u32 = 1;
    const FIELDS: [(u32, u32); 4] = NIBBLES;
    const OFF: f32 = 8.0;
    fn run_start(j: u32, k: u32) -> u32 {
        4 * j + 16 * k
    }
    fn run_sub(_j: u32, _k: u32) -> u32 {
        0
    }
    #[inline(always)]
    unsafe fn words<M: Mem>(b: M, j: u32) -> [u32; 4] {
        let w = b.u32u(2 + 4 * j);
        [w, w, 0, 0]
    }
    #[inline(always)]
    unsafe fn scale<M: Mem>(b: M, _s: u32) -> (f32, f32) {
        (f16(b.u16(0)), 0.0)
    }
}

/// Q4_1: x = q * d + m. Units as Q4_0 (qs at byte 4).
pub struct Q4_1;
impl QType for Q4_1 {
    const BS: u32 = 32;
    const TS: u32 = 20;
    const UPB: u32 = 4;
    const RUNS: u32 = 2;
    const NSUB: u32 = 1;
    const HAS_MIN: bool = true;
    const FIELDS: [(u32, u32); 4] = NIBBLES;
    fn run_start(j: u32, k: u32) -> u32 {
        4 * j + 16 * k
    }
    fn run_sub(_j: u32, _k: u32) -> u32 {
        0
    }
    #[inline(always)]
    unsafe fn words<M: Mem>(b: M, j: u32) -> [u32; 4] {
        let w = b.u32a(4 + 4 * j);
        [w, w, 0, 0]
    }
    #[inline(always)]
    unsafe fn scale<M: Mem>(b: M, _s: u32) -> (f32, f32) {
        (f16(b.u16(0)), f16(b.u16(2)))
    }
}

/// The 5-bit quants of a Q5_0 / Q5_1 unit: nibbles of qs word `w` with bit 4 from `qh` (already shifted so that
/// bits 0..4 belong to run 0 and bits 16..20 to run 1).
#[inline(always)]
fn q5_words(w: u32, qh: u32) -> [u32; 4] {
    [(w & 0x0F0F_0F0F) | (spread4(qh) << 4), ((w >> 4) & 0x0F0F_0F0F) | (spread4(qh >> 16) << 4), 0, 0]
}

/// Q5_0: x = (q - 16) * d, q = nibble | bit j of qh << 4. Units as Q4_0 (qh at byte 2, qs at 6).
pub struct Q5_0;
impl QType for Q5_0 {
    const BS: u32 = 32;
    const TS: u32 = 22;
    const UPB: u32 = 4;
    const RUNS: u32 = 2;
    const NSUB: u32 = 1;
    const FIELDS: [(u32, u32); 4] = BYTES5;
    const OFF: f32 = 16.0;
    fn run_start(j: u32, k: u32) -> u32 {
        4 * j + 16 * k
    }
    fn run_sub(_j: u32, _k: u32) -> u32 {
        0
    }
    #[inline(always)]
    unsafe fn words<M: Mem>(b: M, j: u32) -> [u32; 4] {
        q5_words(b.u32u(6 + 4 * j), b.u32u(2) >> (4 * j))
    }
    #[inline(always)]
    unsafe fn scale<M: Mem>(b: M, _s: u32) -> (f32, f32) {
        (f16(b.u16(0)), 0.0)
    }
}

/// Q5_1: x = q * d + m, q as Q5_0 (qh at byte 4, qs at 8).
pub struct Q5_1;
impl QType for Q5_1 {
    const BS: u32 = 32;
    const TS: u32 = 24;
    const UPB: u32 = 4;
    const RUNS: u32 = 2;
    const NSUB: u32 = 1;
    const HAS_MIN: bool = true;
    const FIELDS: [(u32, u32); 4] = BYTES5;
    fn run_start(j: u32, k: u32) -> u32 {
        4 * j + 16 * k
    }
    fn run_sub(_j: u32, _k: u32) -> u32 {
        0
    }
    #[inline(always)]
    unsafe fn words<M: Mem>(b: M, j: u32) -> [u32; 4] {
        q5_words(b.u32a(8 + 4 * j), b.u32a(4) >> (4 * j))
    }
    #[inline(always)]
    unsafe fn scale<M: Mem>(b: M, _s: u32) -> (f32, f32) {
        (f16(b.u16(0)), f16(b.u16(2)))
    }
}

/// Q8_0: x = q * d, q signed bytes at byte 2 (read with the sign bit flipped, i.e. q + 128, and OFF = 128).
/// Unit j (0..4) = elements 8j..8j+8.
pub struct Q8_0;
impl QType for Q8_0 {
    const BS: u32 = 32;
    const TS: u32 = 34;
    const UPB: u32 = 4;
    const RUNS: u32 = 2;
    const NSUB: u32 = 1;
    const FIELDS: [(u32, u32); 4] = BYTES8;
    const OFF: f32 = 128.0;
    fn run_start(j: u32, k: u32) -> u32 {
        8 * j + 4 * k
    }
    fn run_sub(_j: u32, _k: u32) -> u32 {
        0
    }
    #[inline(always)]
    unsafe fn words<M: Mem>(b: M, j: u32) -> [u32; 4] {
        [b.u32u(2 + 8 * j) ^ 0x8080_8080, b.u32u(6 + 8 * j) ^ 0x8080_8080, 0, 0]
    }
    #[inline(always)]
    unsafe fn scale<M: Mem>(b: M, _s: u32) -> (f32, f32) {
        (f16(b.u16(0)), 0.0)
    }
}

// ----------------------------------------------------------------------------
// K-quants: 256-element super-blocks
// ----------------------------------------------------------------------------

/// Q2_K: x = d * (sc & 15) * q - dmin * (sc >> 4), 16 groups of 16. Element e: byte 32 (e / 128) + e % 32 of qs,
/// bits 2 ((e % 128) / 32). Unit j (0..16): h = j / 8, l0 = 4 (j % 8); its qs word holds runs 128h + 32k + l0.
pub struct Q2K;
impl QType for Q2K {
    const BS: u32 = 256;
    const TS: u32 = 84;
    const UPB: u32 = 16;
    const RUNS: u32 = 4;
    const NSUB: u32 = 16;
    const HAS_MIN: bool = true;
    const FIELDS: [(u32, u32); 4] = [(0, 3), (2, 3), (4, 3), (6, 3)];
    fn run_start(j: u32, k: u32) -> u32 {
        128 * (j >> 3) + 32 * k + 4 * (j & 7)
    }
    fn run_sub(j: u32, k: u32) -> u32 {
        Self::run_start(j, k) >> 4
    }
    #[inline(always)]
    unsafe fn words<M: Mem>(b: M, j: u32) -> [u32; 4] {
        let w = b.u32a(16 + 32 * (j >> 3) + 4 * (j & 7));
        [w; 4]
    }
    #[inline(always)]
    unsafe fn scale<M: Mem>(b: M, s: u32) -> (f32, f32) {
        let sc = b.u8(s);
        let (d, dmin) = (f16(b.u16(80)), f16(b.u16(82)));
        (d * (sc & 0xF) as f32, -(dmin * (sc >> 4) as f32))
    }
}

/// Q3_K: x = d * (sc - 32) * (q - 4), q = 2 bits of qs | hmask bit << 2, 16 groups of 16 with 6-bit scales.
/// Units as Q2_K; the hmask word at byte 4 (j % 8) holds bit 4h + k of each element of run k.
pub struct Q3K;
impl QType for Q3K {
    const BS: u32 = 256;
    const TS: u32 = 110;
    const UPB: u32 = 16;
    const RUNS: u32 = 4;
    const NSUB: u32 = 16;
    const FIELDS: [(u32, u32); 4] = [(0, 7); 4];
    const OFF: f32 = 4.0;
    fn run_start(j: u32, k: u32) -> u32 {
        128 * (j >> 3) + 32 * k + 4 * (j & 7)
    }
    fn run_sub(j: u32, k: u32) -> u32 {
        Self::run_start(j, k) >> 4
    }
    #[inline(always)]
    unsafe fn words<M: Mem>(b: M, j: u32) -> [u32; 4] {
        let (h, l0) = (j >> 3, 4 * (j & 7));
        let w = b.u32u(32 + 32 * h + l0);
        let hm = b.u32u(l0) >> (4 * h);
        let mut r = [0; 4];
        unroll::<4>(|k| r[k] = ((w >> (2 * k)) & 0x0303_0303) | (((hm >> k) & 0x0101_0101) << 2));
        r
    }
    #[inline(always)]
    unsafe fn scale<M: Mem>(b: M, s: u32) -> (f32, f32) {
        let low = if s < 8 { b.u8(96 + s) & 0xF } else { b.u8(88 + s) >> 4 };
        let high = (b.u8(104 + (s & 3)) >> (2 * (s >> 2))) & 3;
        let sc = (low | (high << 4)) as i32 - 32;
        (f16(b.u16(108)) * sc as f32, 0.0)
    }
}

/// Q4_K: x = d * sc * q - dmin * m, 8 groups of 32 with 6-bit scales and mins. Element e: byte 32 (e / 64) +
/// e % 32 of qs, low nibble if (e / 32) is even. Unit j (0..32): c = j / 8, l0 = 4 (j % 8): runs 64c + l0 (low
/// nibbles, group 2c) and 64c + 32 + l0 (high nibbles, group 2c + 1).
pub struct Q4K;
impl QType for Q4K {
    const BS: u32 = 256;
    const TS: u32 = 144;
    const UPB: u32 = 32;
    const RUNS: u32 = 2;
    const NSUB: u32 = 8;
    const HAS_MIN: bool = true;
    const FIELDS: [(u32, u32); 4] = NIBBLES;
    fn run_start(j: u32, k: u32) -> u32 {
        64 * (j >> 3) + 32 * k + 4 * (j & 7)
    }
    fn run_sub(j: u32, k: u32) -> u32 {
        2 * (j >> 3) + k
    }
    #[inline(always)]
    unsafe fn words<M: Mem>(b: M, j: u32) -> [u32; 4] {
        let w = b.u32a(16 + 32 * (j >> 3) + 4 * (j & 7));
        [w, w, 0, 0]
    }
    #[inline(always)]
    unsafe fn scale<M: Mem>(b: M, s: u32) -> (f32, f32) {
        let (sc, m) = scale_min_k4(b.at(4), s);
        (f16(b.u16(0)) * sc as f32, -(f16(b.u16(2)) * m as f32))
    }
}

/// Q5_K: as Q4_K with a fifth bit: bit (e / 32) of qh byte e % 32 adds 16. qh at byte 16, qs at 48.
pub struct Q5K;
impl QType for Q5K {
    const BS: u32 = 256;
    const TS: u32 = 176;
    const UPB: u32 = 32;
    const RUNS: u32 = 2;
    const NSUB: u32 = 8;
    const HAS_MIN: bool = true;
    const FIELDS: [(u32, u32); 4] = BYTES5;
    fn run_start(j: u32, k: u32) -> u32 {
        64 * (j >> 3) + 32 * k + 4 * (j & 7)
    }
    fn run_sub(j: u32, k: u32) -> u32 {
        2 * (j >> 3) + k
    }
    #[inline(always)]
    unsafe fn words<M: Mem>(b: M, j: u32) -> [u32; 4] {
        let (c, l0) = (j >> 3, 4 * (j & 7));
        let w = b.u32a(48 + 32 * c + l0);
        let qh = b.u32a(16 + l0) >> (2 * c);
        [(w & 0x0F0F_0F0F) | ((qh & 0x0101_0101) << 4), ((w >> 4) & 0x0F0F_0F0F) | (((qh >> 1) & 0x0101_0101) << 4), 0, 0]
    }
    #[inline(always)]
    unsafe fn scale<M: Mem>(b: M, s: u32) -> (f32, f32) {
        let (sc, m) = scale_min_k4(b.at(4), s);
        (f16(b.u16(0)) * sc as f32, -(f16(b.u16(2)) * m as f32))
    }
}

/// Q6_K: x = d * sc * (q - 32), q = 4 bits of ql | 2 bits of qh << 4, 16 groups of 16 with i8 scales. Element e:
/// h = e / 128, k = (e % 128) / 32, l = e % 32: ql byte 64h + 32 (k & 1) + l (high nibble if k >= 2), qh byte
/// 32h + l bits 2k. Units as Q2_K.
pub struct Q6K;
impl QType for Q6K {
    const BS: u32 = 256;
    const TS: u32 = 210;
    const UPB: u32 = 16;
    const RUNS: u32 = 4;
    const NSUB: u32 = 16;
    const FIELDS: [(u32, u32); 4] = BYTES6;
    const OFF: f32 = 32.0;
    fn run_start(j: u32, k: u32) -> u32 {
        128 * (j >> 3) + 32 * k + 4 * (j & 7)
    }
    fn run_sub(j: u32, k: u32) -> u32 {
        Self::run_start(j, k) >> 4
    }
    #[inline(always)]
    unsafe fn words<M: Mem>(b: M, j: u32) -> [u32; 4] {
        let (h, l0) = (j >> 3, 4 * (j & 7));
        let (l0w, l1w) = (b.u32u(64 * h + l0), b.u32u(64 * h + 32 + l0));
        let hw = b.u32u(128 + 32 * h + l0);
        let lows = [l0w, l1w, l0w >> 4, l1w >> 4];
        let mut r = [0; 4];
        unroll::<4>(|k| r[k] = (lows[k] & 0x0F0F_0F0F) | (((hw >> (2 * k)) & 0x0303_0303) << 4));
        r
    }
    #[inline(always)]
    unsafe fn scale<M: Mem>(b: M, s: u32) -> (f32, f32) {
        let sc = b.u8(192 + s) as u8 as i8;
        (f16(b.u16(208)) * sc as f32, 0.0)
    }
}

/// Q8_K: x = q * d with an f32 d; qs at byte 4 (bsums unused here). Unit j (0..32) = elements 8j..8j+8.
pub struct Q8K;
impl QType for Q8K {
    const BS: u32 = 256;
    const TS: u32 = 292;
    const UPB: u32 = 32;
    const RUNS: u32 = 2;
    const NSUB: u32 = 1;
    const FIELDS: [(u32, u32); 4] = BYTES8;
    const OFF: f32 = 128.0;
    fn run_start(j: u32, k: u32) -> u32 {
        8 * j + 4 * k
    }
    fn run_sub(_j: u32, _k: u32) -> u32 {
        0
    }
    #[inline(always)]
    unsafe fn words<M: Mem>(b: M, j: u32) -> [u32; 4] {
        [b.u32a(4 + 8 * j) ^ 0x8080_8080, b.u32a(8 + 8 * j) ^ 0x8080_8080, 0, 0]
    }
    #[inline(always)]
    unsafe fn scale<M: Mem>(b: M, _s: u32) -> (f32, f32) {
        (f32::from_bits(b.u32a(0)), 0.0)
    }
}

// The host sizes dequantize grids from `geometry::units_per_block`; keep it in step with the decoders.
macro_rules! agree {
    ($($id:literal: $ty:ty),*) => {$(
        const _: () = assert!(super::geometry::units_per_block($id) == <$ty as QType>::UPB);
        const _: () = assert!(<$ty as QType>::UPB * 4 * <$ty as QType>::RUNS == <$ty as QType>::BS);
    )*};
}
agree!(0: F32, 1: F16, 30: BF16, 2: Q4_0, 3: Q4_1, 6: Q5_0, 7: Q5_1, 8: Q8_0, 10: Q2K, 11: Q3K, 12: Q4K, 13: Q5K,
       14: Q6K, 15: Q8K);
