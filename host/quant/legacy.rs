//! The legacy block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q8_1: 32 elements per block, one f16 scale (and
//! for the `_1` formats an f16 min). Ports of ggml's `dequantize_row_*` and `quantize_row_*_ref`
//! (ggml-quants.c); the operation order of the dequantization is that of gguf-py's `gguf.quants`, so the f32
//! results are identical bit for bit.

use core::mem::{offset_of, size_of};

use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, QK4_0};
use super::float::{f16_at, f32_to_f16};
use super::Format;

const QK: usize = QK4_0; // every legacy format has 32 elements per block

/// Runs `f` on each block of `src` (`B` bytes) and the matching `QK` outputs of `dst`.
#[inline(always)]
pub(crate) fn each_block<const B: usize, const Q: usize>(
    src: &[u8],
    dst: &mut [f32],
    f: impl Fn(&[u8; B], &mut [f32; Q]),
) {
    for (b, y) in src.chunks_exact(B).zip(dst.chunks_exact_mut(Q)) {
        f(b.try_into().unwrap(), y.try_into().unwrap());
    }
}

/// Runs `f` on each `Q` inputs of `src` and the matching block of `dst` (`B` bytes).
#[inline(always)]
pub(crate) fn each_block_mut<const B: usize, const Q: usize>(
    src: &[f32],
    dst: &mut [u8],
    f: impl Fn(&[f32; Q], &mut [u8; B]),
) {
    for (x, b) in src.chunks_exact(Q).zip(dst.chunks_exact_mut(B)) {
        f(x.try_into().unwrap(), b.try_into().unwrap());
    }
}

/// The element of largest magnitude (the first one on ties), with its sign.
#[inline]
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        min = min.min(v);
        max = max.max(v);
    }
    (min, max)
}

pub struct Q4_0;
pub struct Q4_1;
pub struct Q5_0;
pub struct Q5_1;
pub struct Q8_0;
pub struct Q8_1;

// ---------------------------------------------------------------------------------------------------------
// Q4_0: x = (q - 8) * d; low nibbles are elements 0..16, high nibbles 16..32

const Q4_0_BYTES: usize = size_of::<BlockQ4_0>();
const Q4_0_QS: usize = offset_of!(BlockQ4_0, qs);

impl Format for Q4_0 {
    const QK: usize = QK;
    const BYTES: usize = Q4_0_BYTES;
    #[inline(always)]
    fn dequant(src: &[u8], dst: &mut [f32]) {
        each_block(src, dst, |b: &[u8; Q4_0_BYTES], y: &mut [f32; QK]| {
            let d = f16_at(b, offset_of!(BlockQ4_0, d));
            let qs: &[u8; 16] = b[Q4_0_QS..].try_into().unwrap();
            for j in 0..16 {
                y[j] = d * ((qs[j] & 15) as i32 - 8) as f32;
                y[j + 16] = d * ((qs[j] >> 4) as i32 - 8) as f32;
            }
        });
    }
}

pub fn quantize_q4_0(src: &[f32], dst: &mut [u8]) {
    each_block_mut(src, dst, |x: &[f32; QK], b: &mut [u8; Q4_0_BYTES]| {
        let d = signed_absmax(x) / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        for j in 0..16 {
            let x0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let x1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
            b[Q4_0_QS + j] = x0 | (x1 << 4);
        }
    });
}

// ---------------------------------------------------------------------------------------------------------
// Q4_1: x = q * d + m

const Q4_1_BYTES: usize = size_of::<BlockQ4_1>();
const Q4_1_QS: usize = offset_of!(BlockQ4_1, qs);

impl Format for Q4_1 {
    const QK: usize = QK;
    const BYTES: usize = Q4_1_BYTES;
    #[inline(always)]
    fn dequant(src: &[u8], dst: &mut [f32]) {
        each_block(src, dst, |b: &[u8; Q4_1_BYTES], y: &mut [f32; QK]| {
            let d = f16_at(b, offset_of!(BlockQ4_1, d));
            let m = f16_at(b, offset_of!(BlockQ4_1, m));
            let qs: &[u8; 16] = b[Q4_1_QS..].try_into().unwrap();
            for j in 0..16 {
                y[j] = d * (qs[j] & 15) as f32 + m;
                y[j + 16] = d * (qs[j] >> 4) as f32 + m;
            }
        });
    }
}

pub fn quantize_q4_1(src: &[f32], dst: &mut [u8]) {
    each_block_mut(src, dst, |x: &[f32; QK], b: &mut [u8; Q4_1_BYTES]| {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        b[2..4].copy_from_slice(&f32_to_f16(min).to_le_bytes());
        for j in 0..16 {
            let x0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let x1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
            b[Q4_1_QS + j] = x0 | (x1 << 4);
        }
    });
}

// ---------------------------------------------------------------------------------------------------------
// Q5_0: x = (q - 16) * d; bit j of `qh` is the fifth bit of element j

const Q5_0_BYTES: usize = size_of::<BlockQ5_0>();
const Q5_0_QH: usize = offset_of!(BlockQ5_0, qh);
const Q5_0_QS: usize = offset_of!(BlockQ5_0, qs);

impl Format for Q5_0 {
    const QK: usize = QK;
    const BYTES: usize = Q5_0_BYTES;
    #[inline(always)]
    fn dequant(src: &[u8], dst: &mut [f32]) {
        each_block(src, dst, |b: &[u8; Q5_0_BYTES], y: &mut [f32; QK]| {
            let d = f16_at(b, offset_of!(BlockQ5_0, d));
            let qh = u32::from_le_bytes(b[Q5_0_QH..Q5_0_QH + 4].try_into().unwrap());
            let qs: &[u8; 16] = b[Q5_0_QS..].try_into().unwrap();
            for j in 0..16 {
                let h0 = ((qh >> j) & 1) as i32;
                let h1 = ((qh >> (j + 16)) & 1) as i32;
                y[j] = d * (((qs[j] & 15) as i32 | (h0 << 4)) - 16) as f32;
                y[j + 16] = d * (((qs[j] >> 4) as i32 | (h1 << 4)) - 16) as f32;
            }
        });
    }
}

pub fn quantize_q5_0(src: &[f32], dst: &mut [u8]) {
    each_block_mut(src, dst, |x: &[f32; QK], b: &mut [u8; Q5_0_BYTES]| {
        let d = signed_absmax(x) / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        let mut qh = 0u32;
        for j in 0..16 {
            let x0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
            let x1 = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
            b[Q5_0_QS + j] = (x0 & 15) | ((x1 & 15) << 4);
            qh |= (((x0 >> 4) & 1) as u32) << j;
            qh |= (((x1 >> 4) & 1) as u32) << (j + 16);
        }
        b[Q5_0_QH..Q5_0_QH + 4].copy_from_slice(&qh.to_le_bytes());
    });
}

// ---------------------------------------------------------------------------------------------------------
// Q5_1: x = q * d + m; bit j of `qh` is the fifth bit of element j

const Q5_1_BYTES: usize = size_of::<BlockQ5_1>();
const Q5_1_QH: usize = offset_of!(BlockQ5_1, qh);
const Q5_1_QS: usize = offset_of!(BlockQ5_1, qs);

impl Format for Q5_1 {
    const QK: usize = QK;
    const BYTES: usize = Q5_1_BYTES;
    #[inline(always)]
    fn dequant(src: &[u8], dst: &mut [f32]) {
        each_block(src, dst, |b: &[u8; Q5_1_BYTES], y: &mut [f32; QK]| {
            let d = f16_at(b, offset_of!(BlockQ5_1, d));
            let m = f16_at(b, offset_of!(BlockQ5_1, m));
            let qh = u32::from_le_bytes(b[Q5_1_QH..Q5_1_QH + 4].try_into().unwrap());
            let qs: &[u8; 16] = b[Q5_1_QS..].try_into().unwrap();
            for j in 0..16 {
                let h0 = ((qh >> j) & 1) as u8;
                let h1 = ((qh >> (j + 16)) & 1) as u8;
                y[j] = d * ((qs[j] & 15) | (h0 << 4)) as f32 + m;
                y[j + 16] = d * ((qs[j] >> 4) | (h1 << 4)) as f32 + m;
            }
        });
    }
}

pub fn quantize_q5_1(src: &[f32], dst: &mut [u8]) {
    each_block_mut(src, dst, |x: &[f32; QK], b: &mut [u8; Q5_1_BYTES]| {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        b[2..4].copy_from_slice(&f32_to_f16(min).to_le_bytes());
        let mut qh = 0u32;
        for j in 0..16 {
            let x0 = (((x[j] - min) * id + 0.5) as i8).min(31) as u8;
            let x1 = (((x[j + 16] - min) * id + 0.5) as i8).min(31) as u8;
            b[Q5_1_QS + j] = (x0 & 15) | ((x1 & 15) << 4);
            qh |= (((x0 >> 4) & 1) as u32) << j;
            qh |= (((x1 >> 4) & 1) as u32) << (j + 16);
        }
        b[Q5_1_QH..Q5_1_QH + 4].copy_from_slice(&qh.to_le_bytes());
    });
}

// ---------------------------------------------------------------------------------------------------------
// Q8_0: x = q * d

const Q8_0_BYTES: usize = size_of::<BlockQ8_0>();
const Q8_0_QS: usize = offset_of!(BlockQ8_0, qs);

impl Format for Q8_0 {
    const QK: usize = QK;
    const BYTES: usize = Q8_0_BYTES;
    #[inline(always)]
    fn dequant(src: &[u8], dst: &mut [f32]) {
        each_block(src, dst, |b: &[u8; Q8_0_BYTES], y: &mut [f32; QK]| {
            let d = f16_at(b, offset_of!(BlockQ8_0, d));
            let qs: &[u8; QK] = b[Q8_0_QS..].try_into().unwrap();
            for j in 0..QK {
                y[j] = qs[j] as i8 as f32 * d;
            }
        });
    }
}

/// amax / 127 scale, round half away from zero (C `roundf`).
#[inline(always)]
fn quantize_8bit(x: &[f32; QK], qs: &mut [u8]) -> (f32, i32) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(x) {
        let r = (v * id).round() as i8;
        sum += r as i32;
        *q = r as u8;
    }
    (d, sum)
}

pub fn quantize_q8_0(src: &[f32], dst: &mut [u8]) {
    each_block_mut(src, dst, |x: &[f32; QK], b: &mut [u8; Q8_0_BYTES]| {
        let (d, _) = quantize_8bit(x, &mut b[Q8_0_QS..]);
        b[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    });
}

// ---------------------------------------------------------------------------------------------------------
// Q8_1: x = q * d; `s` = d * sum(q), used by the dot products with Q4_1 / Q5_1

const Q8_1_BYTES: usize = size_of::<BlockQ8_1>();
const Q8_1_QS: usize = offset_of!(BlockQ8_1, qs);

impl Format for Q8_1 {
    const QK: usize = QK;
    const BYTES: usize = Q8_1_BYTES;
    #[inline(always)]
    fn dequant(src: &[u8], dst: &mut [f32]) {
        each_block(src, dst, |b: &[u8; Q8_1_BYTES], y: &mut [f32; QK]| {
            let d = f16_at(b, offset_of!(BlockQ8_1, d));
            let qs: &[u8; QK] = b[Q8_1_QS..].try_into().unwrap();
            for j in 0..QK {
                y[j] = qs[j] as i8 as f32 * d;
            }
        });
    }
}

pub fn quantize_q8_1(src: &[f32], dst: &mut [u8]) {
    each_block_mut(src, dst, |x: &[f32; QK], b: &mut [u8; Q8_1_BYTES]| {
        let (d, sum) = quantize_8bit(x, &mut b[Q8_1_QS..]);
        b[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        b[2..4].copy_from_slice(&f32_to_f16(sum as f32 * d).to_le_bytes());
    });
}
