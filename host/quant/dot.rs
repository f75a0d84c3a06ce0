//! Dot products of quantized weight rows with activations quantized the way llama.cpp's CPU backend does
//! (`vec_dot_type`: Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants, f16/bf16-rounded
//! activations for F16/BF16): integer sums per block, scaled in f32 as ggml's generic `ggml_vec_dot_*` does.
//! Using the same numerics keeps greedy decoding on the same tokens as llama.cpp where logits nearly tie.

// Index loops mirror ggml's reference code line for line, which is what makes the ports checkable.
#![allow(clippy::needless_range_loop)]

use super::blocks::*;
use super::dequant::{blocks, f16, q3k_scales, scale_min_k4};
use super::quantize::{q8_0_block, q8_1_block, q8_k_block};
use crate::gguf::GgmlType;

/// Activations quantized for one weight type.
pub enum Acts {
    F32(Vec<f32>),
    Q8_0(Vec<BlockQ8_0>),
    Q8_1(Vec<BlockQ8_1>),
    Q8K(Vec<BlockQ8K>),
}

impl Acts {
    /// Quantize `x` (a multiple of the weight type's block size) for dot products with rows of `ty`.
    pub fn new(ty: GgmlType, x: &[f32]) -> Acts {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => Acts::Q8_0(x.chunks_exact(QK8_0).map(q8_0_block).collect()),
            GgmlType::Q4_1 | GgmlType::Q5_1 => Acts::Q8_1(x.chunks_exact(QK8_1).map(q8_1_block).collect()),
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K | GgmlType::Q8_K => {
                Acts::Q8K(x.chunks_exact(QK_K).map(q8_k_block).collect())
            }
            GgmlType::F16 => Acts::F32(x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()),
            GgmlType::BF16 => Acts::F32(x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect()),
            _ => Acts::F32(x.to_vec()),
        }
    }
}

#[inline(always)]
fn idot<const N: usize>(a: &[i8; N], b: &[i8; N]) -> i32 {
    let mut s = 0i32;
    for i in 0..N {
        s += a[i] as i32 * b[i] as i32;
    }
    s
}

/// Sum over the 16-element groups of a super-block: sum_g sc[g] * (q . y)_g.
#[inline(always)]
fn group_dot(q: &[i8; QK_K], y: &[i8; QK_K], sc: &[i32; 16]) -> i32 {
    let mut sumi = 0i32;
    for g in 0..16 {
        let mut s = 0i32;
        for l in 0..16 {
            s += q[16 * g + l] as i32 * y[16 * g + l] as i32;
        }
        sumi += sc[g] * s;
    }
    sumi
}

/// The integer quants (element order), per-16 scales and per-16 mins of one K-quant block, and its (d, dmin).
#[inline(always)]
pub(super) fn decode_k(ty: GgmlType, blk: &[u8], q: &mut [i8; QK_K], sc: &mut [i32; 16], mn: &mut [i32; 16]) -> (f32, f32) {
    match ty {
        GgmlType::Q2_K => {
            let b = blocks::<BlockQ2K>(blk).next().expect("one block");
            let mut o = 0;
            for n in 0..2 {
                let qs = &b.qs[32 * n..32 * n + 32];
                for shift in [0, 2, 4, 6] {
                    for l in 0..32 {
                        q[o + l] = ((qs[l] >> shift) & 3) as i8;
                    }
                    o += 32;
                }
            }
            for g in 0..16 {
                sc[g] = (b.scales[g] & 0xF) as i32;
                mn[g] = (b.scales[g] >> 4) as i32;
            }
            (f16(b.d), f16(b.dmin))
        }
        GgmlType::Q3_K => {
            let b = blocks::<BlockQ3K>(blk).next().expect("one block");
            let s = q3k_scales(&b.scales);
            let (mut o, mut m) = (0, 1u8);
            for n in 0..2 {
                let qs = &b.qs[32 * n..32 * n + 32];
                for shift in [0, 2, 4, 6] {
                    for l in 0..32 {
                        let hi = if b.hmask[l] & m != 0 { 0 } else { 4 };
                        q[o + l] = (((qs[l] >> shift) & 3) as i32 - hi) as i8;
                    }
                    o += 32;
                    m <<= 1;
                }
            }
            for g in 0..16 {
                sc[g] = s[g] as i32 - 32;
                mn[g] = 0;
            }
            (f16(b.d), 0.0)
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let (d, dmin, scales, qs, qh) = if ty == GgmlType::Q4_K {
                let b = blocks::<BlockQ4K>(blk).next().expect("one block");
                (b.d, b.dmin, b.scales, b.qs, None)
            } else {
                let b = blocks::<BlockQ5K>(blk).next().expect("one block");
                (b.d, b.dmin, b.scales, b.qs, Some(b.qh))
            };
            for j in 0..4 {
                for l in 0..32 {
                    let (mut lo, mut hi) = (qs[32 * j + l] & 0xF, qs[32 * j + l] >> 4);
                    if let Some(qh) = &qh {
                        lo += if qh[l] & (1 << (2 * j)) != 0 { 16 } else { 0 };
                        hi += if qh[l] & (2 << (2 * j)) != 0 { 16 } else { 0 };
                    }
                    q[64 * j + l] = lo as i8;
                    q[64 * j + 32 + l] = hi as i8;
                }
            }
            for sub in 0..8 {
                let (s, m) = scale_min_k4(sub, &scales);
                sc[2 * sub] = s as i32;
                sc[2 * sub + 1] = s as i32;
                mn[2 * sub] = m as i32;
                mn[2 * sub + 1] = m as i32;
            }
            (f16(d), f16(dmin))
        }
        GgmlType::Q6_K => {
            let b = blocks::<BlockQ6K>(blk).next().expect("one block");
            for n in 0..2 {
                let (ql, qh) = (&b.ql[64 * n..], &b.qh[32 * n..]);
                let q = &mut q[128 * n..128 * n + 128];
                for l in 0..32 {
                    q[l] = (((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32) as i8;
                    q[l + 32] = (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32) as i8;
                    q[l + 64] = (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32) as i8;
                    q[l + 96] = (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32) as i8;
                }
            }
            for g in 0..16 {
                sc[g] = b.scales[g] as i32;
                mn[g] = 0;
            }
            (f16(b.d), 0.0)
        }
        GgmlType::Q8_K => {
            let b = blocks::<BlockQ8K>(blk).next().expect("one block");
            q.copy_from_slice(&b.qs);
            sc.fill(1);
            mn.fill(0);
            (b.d, 0.0)
        }
        other => unreachable!("decode_k: {other} is not a K-quant"),
    }
}

/// Two nibble (or 5-bit) halves of a legacy block as signed quants in element order.
#[inline(always)]
pub(super) fn legacy_quants(ty: GgmlType, blk: &[u8], q: &mut [i8; 32]) -> (f32, f32) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (d, m, qs, off) = if ty == GgmlType::Q4_0 {
                let b = blocks::<BlockQ4_0>(blk).next().expect("one block");
                (b.d, 0.0, b.qs, 8)
            } else {
                let b = blocks::<BlockQ4_1>(blk).next().expect("one block");
                (b.d, f16(b.m), b.qs, 0)
            };
            for j in 0..16 {
                q[j] = ((qs[j] & 0xF) as i32 - off) as i8;
                q[j + 16] = ((qs[j] >> 4) as i32 - off) as i8;
            }
            (f16(d), m)
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let (d, m, qh, qs, off) = if ty == GgmlType::Q5_0 {
                let b = blocks::<BlockQ5_0>(blk).next().expect("one block");
                (b.d, 0.0, b.qh, b.qs, 16)
            } else {
                let b = blocks::<BlockQ5_1>(blk).next().expect("one block");
                (b.d, f16(b.m), b.qh, b.qs, 0)
            };
            let qh = u32::from_le_bytes(qh);
            for j in 0..16 {
                let xh0 = ((qh >> j) << 4) & 0x10;
                let xh1 = (qh >> (j + 12)) & 0x10;
                q[j] = (((qs[j] & 0xF) as u32 | xh0) as i32 - off) as i8;
                q[j + 16] = (((qs[j] >> 4) as u32 | xh1) as i32 - off) as i8;
            }
            (f16(d), m)
        }
        GgmlType::Q8_0 => {
            let b = blocks::<BlockQ8_0>(blk).next().expect("one block");
            q.copy_from_slice(&b.qs);
            (f16(b.d), 0.0)
        }
        other => unreachable!("legacy_quants: {other}"),
    }
}

/// Row of `ty` . activations quantized by `Acts::new(ty, ..)`.
#[inline(always)]
pub fn dot_row(ty: GgmlType, row: &[u8], acts: &Acts) -> f32 {
    let ts = ty.type_size();
    match acts {
        Acts::Q8_0(ys) => {
            let mut q = [0i8; 32];
            let mut sumf = 0.0f32;
            for (blk, y) in row.chunks_exact(ts).zip(ys) {
                let (d, _) = legacy_quants(ty, blk, &mut q);
                sumf += idot(&q, &y.qs) as f32 * (d * f16(y.d));
            }
            sumf
        }
        Acts::Q8_1(ys) => {
            let mut q = [0i8; 32];
            let mut sumf = 0.0f32;
            for (blk, y) in row.chunks_exact(ts).zip(ys) {
                let (d, m) = legacy_quants(ty, blk, &mut q);
                sumf += (d * f16(y.d)) * idot(&q, &y.qs) as f32 + m * f16(y.s);
            }
            sumf
        }
        Acts::Q8K(ys) => {
            let (mut q, mut sc, mut mn) = ([0i8; QK_K], [0i32; 16], [0i32; 16]);
            let mut sumf = 0.0f32;
            for (blk, y) in row.chunks_exact(ts).zip(ys) {
                let (d, dmin) = decode_k(ty, blk, &mut q, &mut sc, &mut mn);
                let sumi = group_dot(&q, &y.qs, &sc);
                let summ: i32 = (0..16).map(|g| mn[g] * y.bsums[g] as i32).sum();
                sumf += d * y.d * sumi as f32 - dmin * y.d * summ as f32;
            }
            sumf
        }
        Acts::F32(x) => super::dot_f32(ty, row, x),
    }
}
