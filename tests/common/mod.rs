//! Helpers shared by the integration tests: a seeded RNG and random quantized tensors (`quant_data`), the CUDA context or a printed reason to skip, and
//! tolerance checks.
#![allow(dead_code)]

use host::backend::cuda::{self, Cuda};

#[path = "../support/quant_data.rs"]
pub mod quant_data;
#[allow(unused_imports)] // not every test uses it
pub use quant_data::Rng;

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
