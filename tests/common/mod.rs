//! Helpers shared by the integration tests: a seeded RNG and random quantized tensors (`quant_data`), the CUDA
//! context or a printed reason to skip, tolerance checks, temporary files, the `tiny` synthetic model and the real
//! models under `models/`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use host::backend::cpu::AttnParams;
use host::backend::cuda::{self, Cuda};
use host::gguf::GgmlType;
use host::model::Forward;
use host::synth::{write_model, Preset, SynthSpec, Vocab};

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

/// max |a - b| / max |b|: how far a vector of logits is from another, relative to the other's largest.
pub fn rel_dist(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// How far two 8-bit-activation paths may be apart, in units of the 8-bit rounding's own reach on the same
/// steps: the CPU's default logits are some distance from its exact ones (`set_llama_rounding(false)`), another
/// rounding of the same products (the GPU's kernels, or the batch's, sum in other orders, so other values land on
/// either side of a quantization step) is about as far from exact, so the two defaults are within twice that; the
/// rest is room for the GPU's own roundings reaching a little further. Measured on the CPU (2026-12-07): SmolLM2's
/// 8-bit rounding moves the logits at the reference prompts' greedy steps by 1.2-5.9% of the largest, and moves
/// the argmax where the two best were up to 0.195 apart, so no fixed near-tie holds for 8-bit paths.
pub const ROUNDING_REACH: f32 = 2.5;

/// The logits of `fwd` after `prompt` and after each of `toks`, one token per call (teacher-forced).
pub fn forced_logits(fwd: &mut dyn Forward, prompt: &[u32], toks: &[u32]) -> Vec<Vec<f32>> {
    fwd.reset();
    let mut out = vec![fwd.forward(prompt, 0).unwrap().to_vec()];
    for (i, &t) in toks.iter().enumerate() {
        out.push(fwd.forward(&[t], prompt.len() + i).unwrap().to_vec());
    }
    out
}

/// A path under the temp directory, unique to this process and call (tests run side by side), removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// A fresh path ending in `name` (which keeps its extension).
    pub fn new(name: &str) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempFile(std::env::temp_dir().join(format!("host-test-{}-{n}-{name}", std::process::id())))
    }

    /// The path as a command-line argument.
    pub fn path(&self) -> &str {
        self.0.to_str().expect("temp paths are UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The `tiny` preset (2 layers, dim 256) with random weights of type `ty` from `seed` and the built-in 257-token
/// byte vocabulary, in a file of its own (about 1 MB).
pub fn synth_tiny(ty: GgmlType, seed: u64) -> TempFile {
    let out = TempFile::new(&format!("tiny-{ty}-{seed}.gguf"));
    write_model(&out.0, &SynthSpec::preset(Preset::Tiny, ty, seed), &Vocab::byte_level()).unwrap();
    out
}

/// `models/NAME` (relative to the repository root, where tests run) when scripts/fetch-models.sh got it; else
/// None, after printing that the test skips.
pub fn model_path(name: &str) -> Option<PathBuf> {
    let p = Path::new("models").join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} not present (scripts/fetch-models.sh)", p.display());
        None
    }
}

/// `n` pseudo-random token ids below `n_vocab` from `seed`.
pub fn tokens(n: usize, seed: u64, n_vocab: usize) -> Vec<u32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n_vocab as u64) as u32
        })
        .collect()
}

/// The CPU attention's parameters for `n_tok` query rows from position `pos0`, equal q/k and v head sizes `hd`,
/// exact f32 (not rounded like a cache), `window` 0 for none: the GPU attention tests' CPU twin.
pub fn attn_params(n_tok: usize, pos0: usize, n_heads: usize, n_kv: usize, hd: usize, scale: f32, window: usize)
                   -> AttnParams {
    AttnParams {
        n_tok,
        pos0,
        n_heads,
        n_kv_heads: n_kv,
        head_dim: hd,
        head_dim_v: hd,
        scale,
        window: (window > 0).then_some(window),
        round_like_cache: false,
    }
}
