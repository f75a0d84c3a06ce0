//! A seeded RNG and random tensors of every GGUF type for the tests and the GPU benchmarks (included by path):
//! random quant bytes with small finite scales, from a tiny seeded RNG so that every run sees the same data.

#![allow(dead_code)] // each includer uses a part

use half::{bf16, f16};
use host::gguf::GgmlType;

/// xorshift64* — deterministic, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn fill_bytes(&mut self, out: &mut [u8]) {
        for c in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
    pub fn vec_f32(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// Byte offsets of the f16 scale fields (d, dmin / m) in a block of `ty`; Q8_K's f32 d is handled apart.
fn f16_scale_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// A random (n_rows, n_cols) tensor of type `ty` in GGUF layout: plain types hold values in [-1, 1), quant types
/// random quants with scales of magnitude below 1/16 (finite, so every element is finite).
pub fn random_weights(ty: GgmlType, n_rows: usize, n_cols: usize, rng: &mut Rng) -> Vec<u8> {
    let n = n_rows * n_cols;
    match ty {
        GgmlType::F32 => return (0..n).flat_map(|_| rng.f32().to_le_bytes()).collect(),
        GgmlType::F16 => return (0..n).flat_map(|_| f16::from_f32(rng.f32()).to_le_bytes()).collect(),
        GgmlType::BF16 => return (0..n).flat_map(|_| bf16::from_f32(rng.f32()).to_le_bytes()).collect(),
        _ => {}
    }
    let bytes = ty.row_bytes(n_cols as u64).expect("whole blocks") as usize * n_rows;
    let mut w = vec![0u8; bytes];
    rng.fill_bytes(&mut w);
    for block in w.chunks_exact_mut(ty.type_size()) {
        if ty == GgmlType::Q8_K {
            block[..4].copy_from_slice(&(rng.f32() / 16.0).to_le_bytes());
        }
        for &o in f16_scale_fields(ty) {
            block[o..o + 2].copy_from_slice(&f16::from_f32(rng.f32() / 16.0).to_le_bytes());
        }
    }
    w
}

/// The types with GPU kernels, in the order the tables print them.
pub const TYPES: [GgmlType; 14] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
];
