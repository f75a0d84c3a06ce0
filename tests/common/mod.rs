//! Helpers shared by the integration tests: a seeded RNG, the CUDA context or a printed reason to skip, and
//! tolerance checks.
#![allow(dead_code)]

use host::backend::cuda::{self, Cuda};

/// xorshift64* — small, seeded, good enough for test inputs.
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
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// The CUDA context, or `None` after printing why the GPU test is skipped.
pub fn cuda_or_skip(test: &str) -> Option<Cuda> {
    if let Err(why) = cuda::availability() {
        eprintln!("skipping {test}: {why}");
        return None;
    }
    Some(Cuda::new(0).expect("CUDA is available but the context failed to open"))
}

/// Largest element-wise relative error, |a - b| / max(|b|, floor).
pub fn max_rel_err(got: &[f32], want: &[f32], floor: f32) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(g, w)| (g - w).abs() / w.abs().max(floor)).fold(0.0, f32::max)
}
