//! Dequantization of one row to f32, per type. Ports of ggml's `dequantize_row_*` (ggml-quants.c): the same
//! operations in the same order, so the results equal ggml's and gguf-py's bit for bit.

// Index loops mirror ggml's reference code line for line, which is what makes the ports checkable.
#![allow(clippy::needless_range_loop)]

use super::blocks::*;
use crate::gguf::GgmlType;

#[inline(always)]
pub(crate) fn f16(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// View `src` as blocks of `B` (unaligned reads are fine: every block type here has alignment <= 4 and is
/// copied out with `read_unaligned`).
#[inline(always)]
pub(crate) fn blocks<B: Copy>(src: &[u8]) -> impl Iterator<Item = B> + '_ {
    src.chunks_exact(std::mem::size_of::<B>())
        // SAFETY: each chunk is exactly size_of::<B>() bytes and B is plain old data (integers only).
        .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr() as *const B) })
}

/// Q4_K / Q5_K: the 6-bit scale and min of sub-block `j` (ggml `get_scale_min_k4`).
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Q3_K: the 16 signed 6-bit scales (before the -32 offset) unpacked from 12 bytes.
#[inline(always)]
pub(crate) fn q3k_scales(s: &[u8; K_SCALE_SIZE]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let w = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a0, a1, tmp) = (w(0), w(1), w(2));
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut out = [0i8; 16];
    for (i, a) in aux.iter().enumerate() {
        for (k, b) in a.to_le_bytes().iter().enumerate() {
            out[4 * i + k] = *b as i8;
        }
    }
    out
}

/// Dequantize whole blocks of `ty` from `src` into `dst` (dst.len() == blocks * block_size).
pub(crate) fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        GgmlType::BF16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        GgmlType::Q4_0 => {
            for (y, b) in dst.chunks_exact_mut(QK4_0).zip(blocks::<BlockQ4_0>(src)) {
                let d = f16(b.d);
                for j in 0..QK4_0 / 2 {
                    y[j] = ((b.qs[j] & 0x0F) as i32 - 8) as f32 * d;
                    y[j + QK4_0 / 2] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (y, b) in dst.chunks_exact_mut(QK4_1).zip(blocks::<BlockQ4_1>(src)) {
                let (d, m) = (f16(b.d), f16(b.m));
                for j in 0..QK4_1 / 2 {
                    y[j] = (b.qs[j] & 0x0F) as f32 * d + m;
                    y[j + QK4_1 / 2] = (b.qs[j] >> 4) as f32 * d + m;
                }
            }
        }
        GgmlType::Q5_0 => {
            for (y, b) in dst.chunks_exact_mut(QK5_0).zip(blocks::<BlockQ5_0>(src)) {
                let d = f16(b.d);
                let qh = u32::from_le_bytes(b.qh);
                for j in 0..QK5_0 / 2 {
                    let xh0 = ((qh >> j) << 4) & 0x10;
                    let xh1 = (qh >> (j + 12)) & 0x10;
                    y[j] = (((b.qs[j] & 0x0F) as u32 | xh0) as i32 - 16) as f32 * d;
                    y[j + QK5_0 / 2] = (((b.qs[j] >> 4) as u32 | xh1) as i32 - 16) as f32 * d;
                }
            }
        }
        GgmlType::Q5_1 => {
            for (y, b) in dst.chunks_exact_mut(QK5_1).zip(blocks::<BlockQ5_1>(src)) {
                let (d, m) = (f16(b.d), f16(b.m));
                let qh = u32::from_le_bytes(b.qh);
                for j in 0..QK5_1 / 2 {
                    let xh0 = ((qh >> j) << 4) & 0x10;
                    let xh1 = (qh >> (j + 12)) & 0x10;
                    y[j] = ((b.qs[j] & 0x0F) as u32 | xh0) as f32 * d + m;
                    y[j + QK5_1 / 2] = ((b.qs[j] >> 4) as u32 | xh1) as f32 * d + m;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (y, b) in dst.chunks_exact_mut(QK8_0).zip(blocks::<BlockQ8_0>(src)) {
                let d = f16(b.d);
                for j in 0..QK8_0 {
                    y[j] = b.qs[j] as f32 * d;
                }
            }
        }
        GgmlType::Q8_1 => {
            for (y, b) in dst.chunks_exact_mut(QK8_1).zip(blocks::<BlockQ8_1>(src)) {
                let d = f16(b.d);
                for j in 0..QK8_1 {
                    y[j] = b.qs[j] as f32 * d;
                }
            }
        }
        GgmlType::Q2_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(blocks::<BlockQ2K>(src)) {
                let (d, min) = (f16(b.d), f16(b.dmin));
                let mut is = 0;
                let mut o = 0;
                for n in (0..QK_K).step_by(128) {
                    let q = &b.qs[n / 4..n / 4 + 32];
                    for shift in [0, 2, 4, 6] {
                        for half in 0..2 {
                            let sc = b.scales[is];
                            is += 1;
                            let (dl, ml) = (d * (sc & 0xF) as f32, min * (sc >> 4) as f32);
                            for l in 0..16 {
                                y[o] = dl * ((q[l + 16 * half] >> shift) & 3) as f32 - ml;
                                o += 1;
                            }
                        }
                    }
                }
            }
        }
        GgmlType::Q3_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(blocks::<BlockQ3K>(src)) {
                let d_all = f16(b.d);
                let scales = q3k_scales(&b.scales);
                let (mut is, mut o, mut m) = (0, 0, 1u8);
                for n in (0..QK_K).step_by(128) {
                    let q = &b.qs[n / 4..n / 4 + 32];
                    for shift in [0, 2, 4, 6] {
                        for half in 0..2 {
                            let dl = d_all * (scales[is] as i32 - 32) as f32;
                            is += 1;
                            for l in 0..16 {
                                let k = l + 16 * half;
                                let hi = if b.hmask[k] & m != 0 { 0 } else { 4 };
                                y[o] = dl * (((q[k] >> shift) & 3) as i32 - hi) as f32;
                                o += 1;
                            }
                        }
                        m <<= 1;
                    }
                }
            }
        }
        GgmlType::Q4_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(blocks::<BlockQ4K>(src)) {
                let (d, min) = (f16(b.d), f16(b.dmin));
                for (j, q) in b.qs.chunks_exact(32).enumerate() {
                    let (sc1, m1) = scale_min_k4(2 * j, &b.scales);
                    let (sc2, m2) = scale_min_k4(2 * j + 1, &b.scales);
                    let (d1, m1, d2, m2) = (d * sc1 as f32, min * m1 as f32, d * sc2 as f32, min * m2 as f32);
                    let y = &mut y[64 * j..64 * j + 64];
                    for l in 0..32 {
                        y[l] = d1 * (q[l] & 0xF) as f32 - m1;
                        y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
                    }
                }
            }
        }
        GgmlType::Q5_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(blocks::<BlockQ5K>(src)) {
                let (d, min) = (f16(b.d), f16(b.dmin));
                for (j, ql) in b.qs.chunks_exact(32).enumerate() {
                    let (sc1, m1) = scale_min_k4(2 * j, &b.scales);
                    let (sc2, m2) = scale_min_k4(2 * j + 1, &b.scales);
                    let (d1, m1, d2, m2) = (d * sc1 as f32, min * m1 as f32, d * sc2 as f32, min * m2 as f32);
                    let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
                    let y = &mut y[64 * j..64 * j + 64];
                    for l in 0..32 {
                        let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
                        let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
                        y[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
                        y[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(blocks::<BlockQ6K>(src)) {
                let d = f16(b.d);
                for n in 0..QK_K / 128 {
                    let (ql, qh, sc) = (&b.ql[64 * n..], &b.qh[32 * n..], &b.scales[8 * n..]);
                    let y = &mut y[128 * n..128 * n + 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        y[l] = d * sc[is] as f32 * q1 as f32;
                        y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                        y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                        y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
                    }
                }
            }
        }
        GgmlType::Q8_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(blocks::<BlockQ8K>(src)) {
                for j in 0..QK_K {
                    y[j] = b.d * b.qs[j] as f32;
                }
            }
        }
        other => unreachable!("dequantize: {other} is filtered out by is_supported"),
    }
}
