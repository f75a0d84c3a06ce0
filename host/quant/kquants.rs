//! The K-quants Q2_K .. Q8_K: super-blocks of 256 elements split into sub-blocks of 16 or 32 with their own
//! small scales. Ports of ggml's `dequantize_row_q*_K` and `quantize_row_q8_K_ref` (ggml-quants.c); the
//! dequantization follows gguf-py's operation order (sub-block scale = d * sc first, then scale * q - min), so
//! the f32 results are identical bit for bit.

use core::mem::{offset_of, size_of};

use super::blocks::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, K_SCALE_SIZE, QK_K,
};
use super::float::f16_at;
use super::legacy::{each_block, each_block_mut};
use super::Format;

pub struct Q2K;
pub struct Q3K;
pub struct Q4K;
pub struct Q5K;
pub struct Q6K;
pub struct Q8K;

// ---------------------------------------------------------------------------------------------------------
// Q2_K: 16 sub-blocks of 16; x = (d * (sc & 15)) * q - dmin * (sc >> 4)
// element 128*h + 32*k + l (l < 32) is bits 2k..2k+2 of qs[32*h + l]; its sub-block is 8h + 2k + l/16

const Q2K_BYTES: usize = size_of::<BlockQ2K>();
const Q2K_SCALES: usize = offset_of!(BlockQ2K, scales);
const Q2K_QS: usize = offset_of!(BlockQ2K, qs);

impl Format for Q2K {
    const QK: usize = QK_K;
    const BYTES: usize = Q2K_BYTES;
    #[inline(always)]
    fn dequant(src: &[u8], dst: &mut [f32]) {
        each_block(src, dst, |b: &[u8; Q2K_BYTES], y: &mut [f32; QK_K]| {
            let d = f16_at(b, offset_of!(BlockQ2K, d));
            let dmin = f16_at(b, offset_of!(BlockQ2K, dmin));
            let scales: &[u8; 16] = b[Q2K_SCALES..Q2K_SCALES + 16].try_into().unwrap();
            let qs: &[u8; 64] = b[Q2K_QS..Q2K_QS + 64].try_into().unwrap();
            for (s, ys) in y.chunks_exact_mut(16).enumerate() {
                let dl = d * (scales[s] & 15) as f32;
                let ml = dmin * (scales[s] >> 4) as f32;
                let (h, k, half) = (s / 8, (s / 2) % 4, s % 2);
                let q = &qs[32 * h + 16 * half..][..16];
                for l in 0..16 {
                    ys[l] = dl * ((q[l] >> (2 * k)) & 3) as f32 - ml;
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------------------
// Q3_K: 16 sub-blocks of 16 with 6-bit scales stored as (value + 32); x = (d * (sc - 32)) * q, q in -4..4
// the low 2 bits of q are laid out as in Q2_K; element 32*i + l has its high bit in bit i of hmask[l],
// and the high bit SET means no offset (q = low), CLEAR means q = low - 4

const Q3K_BYTES: usize = size_of::<BlockQ3K>();
const Q3K_HMASK: usize = offset_of!(BlockQ3K, hmask);
const Q3K_QS: usize = offset_of!(BlockQ3K, qs);
const Q3K_SCALES: usize = offset_of!(BlockQ3K, scales);

/// The 16 signed 6-bit scales of a Q3_K block: low 4 bits are nibbles of bytes 0..8 (byte i % 8, the high
/// nibble for i >= 8), high 2 bits are 2-bit fields of bytes 8..12 (byte 8 + i % 4, field i / 4).
#[inline(always)]
fn q3k_scales(sc: &[u8; K_SCALE_SIZE]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let lo = (sc[i % 8] >> (4 * (i / 8))) & 15;
        let hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = (lo | (hi << 4)) as i32 - 32;
    }
    out
}

impl Format for Q3K {
    const QK: usize = QK_K;
    const BYTES: usize = Q3K_BYTES;
    #[inline(always)]
    fn dequant(src: &[u8], dst: &mut [f32]) {
        each_block(src, dst, |b: &[u8; Q3K_BYTES], y: &mut [f32; QK_K]| {
            let d = f16_at(b, offset_of!(BlockQ3K, d));
            let hmask: &[u8; 32] = b[Q3K_HMASK..Q3K_HMASK + 32].try_into().unwrap();
            let qs: &[u8; 64] = b[Q3K_QS..Q3K_QS + 64].try_into().unwrap();
            let scales = q3k_scales(b[Q3K_SCALES..Q3K_SCALES + K_SCALE_SIZE].try_into().unwrap());
            for (s, ys) in y.chunks_exact_mut(16).enumerate() {
                let dl = d * scales[s] as f32;
                let (h, k, half) = (s / 8, (s / 2) % 4, s % 2);
                let bit = s / 2; // 32-element group index = 4h + k
                let q = &qs[32 * h + 16 * half..][..16];
                let hm = &hmask[16 * half..][..16];
                for l in 0..16 {
                    let low = ((q[l] >> (2 * k)) & 3) as i32;
                    let off = if (hm[l] >> bit) & 1 != 0 { 0 } else { 4 };
                    ys[l] = dl * (low - off) as f32;
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------------------
// Q4_K / Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins; x = (d * sc) * q - dmin * m
// element 64*c + 32*n + l is nibble n of qs[32*c + l]; Q5_K adds bit (2c + n) of qh[l] as the fifth bit

/// Scales and mins of the 8 sub-blocks (ggml's `get_scale_min_k4`).
#[inline(always)]
fn k4_scales_mins(q: &[u8; K_SCALE_SIZE]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 15) | ((q[j] >> 6) << 4);
        mn[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

const Q4K_BYTES: usize = size_of::<BlockQ4K>();
const Q4K_SCALES: usize = offset_of!(BlockQ4K, scales);
const Q4K_QS: usize = offset_of!(BlockQ4K, qs);

impl Format for Q4K {
    const QK: usize = QK_K;
    const BYTES: usize = Q4K_BYTES;
    #[inline(always)]
    fn dequant(src: &[u8], dst: &mut [f32]) {
        each_block(src, dst, |b: &[u8; Q4K_BYTES], y: &mut [f32; QK_K]| {
            let d = f16_at(b, offset_of!(BlockQ4K, d));
            let dmin = f16_at(b, offset_of!(BlockQ4K, dmin));
            let (sc, mn) =
                k4_scales_mins(b[Q4K_SCALES..Q4K_SCALES + K_SCALE_SIZE].try_into().unwrap());
            let qs: &[u8; 128] = b[Q4K_QS..Q4K_QS + 128].try_into().unwrap();
            for (s, ys) in y.chunks_exact_mut(32).enumerate() {
                let dl = d * sc[s] as f32;
                let ml = dmin * mn[s] as f32;
                let q = &qs[32 * (s / 2)..][..32];
                let shift = 4 * (s % 2);
                for l in 0..32 {
                    ys[l] = dl * ((q[l] >> shift) & 15) as f32 - ml;
                }
            }
        });
    }
}

const Q5K_BYTES: usize = size_of::<BlockQ5K>();
const Q5K_SCALES: usize = offset_of!(BlockQ5K, scales);
const Q5K_QH: usize = offset_of!(BlockQ5K, qh);
const Q5K_QS: usize = offset_of!(BlockQ5K, qs);

impl Format for Q5K {
    const QK: usize = QK_K;
    const BYTES: usize = Q5K_BYTES;
    #[inline(always)]
    fn dequant(src: &[u8], dst: &mut [f32]) {
        each_block(src, dst, |b: &[u8; Q5K_BYTES], y: &mut [f32; QK_K]| {
            let d = f16_at(b, offset_of!(BlockQ5K, d));
            let dmin = f16_at(b, offset_of!(BlockQ5K, dmin));
            let (sc, mn) =
                k4_scales_mins(b[Q5K_SCALES..Q5K_SCALES + K_SCALE_SIZE].try_into().unwrap());
            let qh: &[u8; 32] = b[Q5K_QH..Q5K_QH + 32].try_into().unwrap();
            let qs: &[u8; 128] = b[Q5K_QS..Q5K_QS + 128].try_into().unwrap();
            for (s, ys) in y.chunks_exact_mut(32).enumerate() {
                let dl = d * sc[s] as f32;
                let ml = dmin * mn[s] as f32;
                let q = &qs[32 * (s / 2)..][..32];
                let shift = 4 * (s % 2);
                for l in 0..32 {
                    let v = ((q[l] >> shift) & 15) | (((qh[l] >> s) & 1) << 4);
                    ys[l] = dl * v as f32 - ml;
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------------------
// Q6_K: 16 sub-blocks of 16 with signed 8-bit scales; x = (d * sc) * (q - 32)
// element 128*h + 32*k + l (l < 32): low 4 bits = nibble (k / 2) of ql[64*h + 32*(k % 2) + l],
// high 2 bits = bits 2k..2k+2 of qh[32*h + l]

const Q6K_BYTES: usize = size_of::<BlockQ6K>();
const Q6K_QL: usize = offset_of!(BlockQ6K, ql);
const Q6K_QH: usize = offset_of!(BlockQ6K, qh);
const Q6K_SCALES: usize = offset_of!(BlockQ6K, scales);

impl Format for Q6K {
    const QK: usize = QK_K;
    const BYTES: usize = Q6K_BYTES;
    #[inline(always)]
    fn dequant(src: &[u8], dst: &mut [f32]) {
        each_block(src, dst, |b: &[u8; Q6K_BYTES], y: &mut [f32; QK_K]| {
            let d = f16_at(b, offset_of!(BlockQ6K, d));
            let ql: &[u8; 128] = b[Q6K_QL..Q6K_QL + 128].try_into().unwrap();
            let qh: &[u8; 64] = b[Q6K_QH..Q6K_QH + 64].try_into().unwrap();
            let scales: &[u8; 16] = b[Q6K_SCALES..Q6K_SCALES + 16].try_into().unwrap();
            for (g, yg) in y.chunks_exact_mut(32).enumerate() {
                let (h, k) = (g / 4, g % 4);
                let lo = &ql[64 * h + 32 * (k % 2)..][..32];
                let hi = &qh[32 * h..][..32];
                let (lshift, hshift) = (4 * (k / 2), 2 * k);
                for (half, ys) in yg.chunks_exact_mut(16).enumerate() {
                    let dl = d * scales[2 * g + half] as i8 as f32;
                    for l in 0..16 {
                        let i = 16 * half + l;
                        let q = ((lo[i] >> lshift) & 15) | (((hi[i] >> hshift) & 3) << 4);
                        ys[l] = dl * (q as i32 - 32) as f32;
                    }
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------------------
// Q8_K: x = d * q with an f32 d; `bsums` are sums of 16 quants, for the integer dot products

const Q8K_BYTES: usize = size_of::<BlockQ8K>();
const Q8K_D: usize = offset_of!(BlockQ8K, d);
const Q8K_QS: usize = offset_of!(BlockQ8K, qs);
const Q8K_BSUMS: usize = offset_of!(BlockQ8K, bsums);

impl Format for Q8K {
    const QK: usize = QK_K;
    const BYTES: usize = Q8K_BYTES;
    #[inline(always)]
    fn dequant(src: &[u8], dst: &mut [f32]) {
        each_block(src, dst, |b: &[u8; Q8K_BYTES], y: &mut [f32; QK_K]| {
            let d = f32::from_le_bytes(b[Q8K_D..Q8K_D + 4].try_into().unwrap());
            let qs: &[u8; QK_K] = b[Q8K_QS..Q8K_QS + QK_K].try_into().unwrap();
            for j in 0..QK_K {
                y[j] = d * qs[j] as i8 as f32;
            }
        });
    }
}

/// ggml's `nearest_int`: round half to even (exact for |x| < 2^22, which the callers guarantee).
#[inline(always)]
fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// ggml's `quantize_row_q8_K_ref`: scale -127 / (signed absmax), round to nearest even, clamp at 127.
pub fn quantize_q8_k(src: &[f32], dst: &mut [u8]) {
    each_block_mut(src, dst, |x: &[f32; QK_K], b: &mut [u8; Q8K_BYTES]| {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            b.fill(0);
            return;
        }
        let iscale = -127.0 / max;
        let mut qs = [0i8; QK_K];
        for (q, v) in qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (j, chunk) in qs.chunks_exact(16).enumerate() {
            let sum: i16 = chunk.iter().map(|&q| q as i16).sum();
            b[Q8K_BSUMS + 2 * j..Q8K_BSUMS + 2 * j + 2].copy_from_slice(&sum.to_le_bytes());
        }
        for (o, q) in b[Q8K_QS..Q8K_QS + QK_K].iter_mut().zip(qs) {
            *o = q as u8;
        }
        b[Q8K_D..Q8K_D + 4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k4_scales_unpack_six_bit_fields() {
        // sub-block 5: scale = low nibble of byte 9 | top 2 bits of byte 1 << 4; min = high nibble of byte 9 |
        // top 2 bits of byte 5 << 4
        let mut q = [0u8; K_SCALE_SIZE];
        q[1] = 0b11_000001; // scale 1 = 1, contributes 0b11 to scale 5
        q[5] = 0b10_000010; // min 1 = 2, contributes 0b10 to min 5
        q[9] = 0x7a; // scale 5 low = 0xa, min 5 low = 0x7
        let (sc, mn) = k4_scales_mins(&q);
        assert_eq!((sc[1], mn[1]), (1, 2));
        assert_eq!((sc[5], mn[5]), (0x3a, 0x27));
    }

    #[test]
    fn q3k_scales_unpack_and_center() {
        let mut q = [0u8; K_SCALE_SIZE];
        q[2] = 0x5f; // scale 2 low = 0xf, scale 10 low = 0x5
        q[10] = 0b00_11_00_01; // scale 2 high (field 0) = 1, scale 10 high (field 2) = 3
        let s = q3k_scales(&q);
        assert_eq!(s[2], 0x1f - 32);
        assert_eq!(s[10], 0x35 - 32);
        assert_eq!(s[0], -32);
    }
}
