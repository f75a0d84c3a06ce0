//! Plain float formats: F32, F16 and BF16 (one element per "block"), and the f16 conversions every quantized
//! format uses for its scales.

use super::Format;

/// f16 bits -> f32, exact for every input (NaN payloads are kept, as numpy's `astype(np.float32)` keeps them).
/// Branch-light so that loops over many halves vectorise.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0x1f {
        0x7f80_0000 | (man << 13) // inf / NaN
    } else if exp == 0 {
        (man as f32 * (1.0 / 16_777_216.0)).to_bits() // zero or subnormal: man * 2^-24, exact
    } else {
        ((exp + 112) << 23) | (man << 13) // rebias 15 -> 127
    };
    f32::from_bits(sign | bits)
}

/// The f16 stored little-endian at `b[off..off + 2]`, as f32.
#[inline(always)]
pub fn f16_at(b: &[u8], off: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[off], b[off + 1]]))
}

/// f32 -> f16 bits, round to nearest even (as C's `GGML_FP32_TO_FP16` and numpy's `astype(np.float16)`).
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// f32 -> bf16 bits, round to nearest even, NaN forced quiet (ggml's `ggml_compute_fp32_to_bf16`).
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u as u64 + (0x7fff + ((u >> 16) & 1)) as u64) >> 16) as u16
}

pub struct F32;
pub struct F16;
pub struct BF16;

impl Format for F32 {
    const QK: usize = 1;
    const BYTES: usize = 4;
    #[inline(always)]
    fn dequant(src: &[u8], dst: &mut [f32]) {
        for (b, y) in src.chunks_exact(4).zip(dst.iter_mut()) {
            *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
}

impl Format for F16 {
    const QK: usize = 1;
    const BYTES: usize = 2;
    #[inline(always)]
    fn dequant(src: &[u8], dst: &mut [f32]) {
        for (b, y) in src.chunks_exact(2).zip(dst.iter_mut()) {
            *y = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
        }
    }
}

impl Format for BF16 {
    const QK: usize = 1;
    const BYTES: usize = 2;
    #[inline(always)]
    fn dequant(src: &[u8], dst: &mut [f32]) {
        for (b, y) in src.chunks_exact(2).zip(dst.iter_mut()) {
            *y = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
        }
    }
}

pub fn quantize_f32(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.iter().zip(dst.chunks_exact_mut(4)) {
        b.copy_from_slice(&x.to_le_bytes());
    }
}

pub fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.iter().zip(dst.chunks_exact_mut(2)) {
        b.copy_from_slice(&f32_to_f16(*x).to_le_bytes());
    }
}

pub fn quantize_bf16(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.iter().zip(dst.chunks_exact_mut(2)) {
        b.copy_from_slice(&f32_to_bf16(*x).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_to_f32_matches_half_for_every_non_nan() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h);
            if want.is_nan() {
                assert!(f16_to_f32(h).is_nan(), "{h:#06x}");
                continue;
            }
            assert_eq!(f16_to_f32(h).to_bits(), want.to_f32().to_bits(), "{h:#06x}");
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties to even -> 1.0
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: -> 1 + 2^-6
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(f32_to_bf16(-2.0), 0xc000);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0); // signalling NaN -> quiet
    }
}
