//! Quantization of f32 rows to the block formats activations and `host synth` use. Ports of ggml's
//! `quantize_row_*_ref` (ggml-quants.c), same rounding rules, so bytes equal ggml's and gguf-py's.

use super::blocks::*;

/// ggml `nearest_int`: round half to even through the 1.5 * 2^23 trick (valid for |x| < 2^22).
#[inline(always)]
fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

#[inline(always)]
fn f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// The value of largest magnitude in `x` (first one on ties) and that magnitude.
#[inline(always)]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

pub fn q8_0_block(x: &[f32]) -> BlockQ8_0 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK8_0];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    BlockQ8_0 { d: f16_bits(d), qs }
}

pub fn q8_1_block(x: &[f32]) -> BlockQ8_1 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK8_1];
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
        sum += *q as i32;
    }
    BlockQ8_1 { d: f16_bits(d), s: f16_bits(sum as f32 * d), qs }
}

pub fn q4_0_block(x: &[f32]) -> BlockQ4_0 {
    let (max, _) = signed_absmax(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; QK4_0 / 2];
    for (j, q) in qs.iter_mut().enumerate() {
        let x0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let x1 = ((x[j + QK4_0 / 2] * id + 8.5) as i8).min(15) as u8;
        *q = x0 | (x1 << 4);
    }
    BlockQ4_0 { d: f16_bits(d), qs }
}

pub fn q4_1_block(x: &[f32]) -> BlockQ4_1 {
    let min = x.iter().fold(f32::MAX, |m, &v| m.min(v));
    let max = x.iter().fold(-f32::MAX, |m, &v| m.max(v));
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; QK4_1 / 2];
    for (j, q) in qs.iter_mut().enumerate() {
        let x0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
        let x1 = (((x[j + QK4_1 / 2] - min) * id + 0.5) as i8).min(15) as u8;
        *q = x0 | (x1 << 4);
    }
    BlockQ4_1 { d: f16_bits(d), m: f16_bits(min), qs }
}

pub fn q8_k_block(x: &[f32]) -> BlockQ8K {
    let (max, amax) = signed_absmax(x);
    let mut b = BlockQ8K { d: 0.0, qs: [0; QK_K], bsums: [0; QK_K / 16] };
    if amax == 0.0 {
        return b;
    }
    let iscale = -127.0 / max;
    for (q, &v) in b.qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
        *s = g.iter().map(|&q| q as i16).sum();
    }
    b.d = 1.0 / iscale;
    b
}

/// Quantize `x` (whole blocks) into `B` blocks with `f`.
pub(crate) fn blocks_of<B>(x: &[f32], bs: usize, f: impl Fn(&[f32]) -> B) -> Vec<B> {
    x.chunks_exact(bs).map(f).collect()
}

/// The bytes of `blocks` (plain old data, no padding: sizes are asserted in `blocks.rs`).
pub(crate) fn as_bytes<B: Copy>(blocks: &[B]) -> &[u8] {
    // SAFETY: B is a #[repr(C)] block of integers (and f32) without padding.
    unsafe { std::slice::from_raw_parts(blocks.as_ptr() as *const u8, std::mem::size_of_val(blocks)) }
}
