//! qwen3, phi3 and mistral3 on small random-weight models written by `scripts/arch_fixtures.py` with gguf-py in
//! llama.cpp's converter layout (`tests/fixtures/{arch}/model.gguf`; Q4_0, Q8_0, F16 and F32 tensors), against
//! two independent implementations:
//! - llama.cpp's CPU build (`scripts/llama-cpp-greedy/arch_logits.cpp`, `llama_cpp.bin`): teacher-forced logits
//!   of prompts of 5, 70 and 600 random tokens, each followed by single-token decode steps, must be bit-identical
//!   (a 64-bit hash of every position's f32 logits, and full rows at some positions);
//! - Hugging Face `transformers` in float64 (`hf_logits.f32`): our exact-f32 forward within 1e-3 relative.

use std::path::{Path, PathBuf};

use host::gguf::GgufFile;
use host::kv_cache::CacheType;
use host::model::{CpuForward, Forward, Model};

fn fixture(arch: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(arch).join(name)
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn argmax(x: &[f32]) -> usize {
    (0..x.len()).fold(0, |best, i| if x[i] > x[best] { i } else { best })
}

/// max |got - want| / max |want| over each position's logits, the worst position.
fn max_rel_err(got: &[f32], want: &[f32], vocab: usize) -> f32 {
    got.chunks(vocab)
        .zip(want.chunks(vocab))
        .map(|(g, w)| {
            let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale
        })
        .fold(0.0, f32::max)
}

// ----------------------------------------------------------------------------
// Against transformers (float64)
// ----------------------------------------------------------------------------

fn check_transformers(arch: &str) {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(arch, "hf.json")).unwrap()).unwrap();
    let tokens: Vec<u32> = meta["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    let vocab = meta["vocab"].as_u64().unwrap() as usize;
    let want = read_f32(&fixture(arch, "hf_logits.f32"));
    assert_eq!(want.len(), tokens.len() * vocab);

    let file = GgufFile::open(fixture(arch, "model.gguf")).unwrap();
    let model = Model::load(&file).unwrap();
    assert_eq!(model.config.arch.name(), arch);
    assert_eq!(model.n_vocab(), vocab);
    // exact f32 products and an f32 cache: the comparison measures our f32 error against float64
    let mut fwd = CpuForward::new(&model, 64, CacheType::F32).unwrap();
    fwd.set_llama_rounding(false);
    let got = fwd.forward_all(&tokens, 0).unwrap();
    let err = max_rel_err(&got, &want, vocab);
    eprintln!("{arch}: batch of {} against transformers: max relative error {err:.2e}", tokens.len());
    assert!(err < 1e-3, "{arch}: max relative error {err}");
    for (p, (g, w)) in got.chunks(vocab).zip(want.chunks(vocab)).enumerate() {
        assert_eq!(argmax(g), argmax(w), "{arch}: argmax at position {p}");
    }

    // the same positions one token at a time through the cache
    fwd.reset();
    let mut worst = 0.0f32;
    for (p, &t) in tokens.iter().enumerate() {
        let row = fwd.forward(&[t], p).unwrap().to_vec();
        worst = worst.max(max_rel_err(&row, &want[p * vocab..(p + 1) * vocab], vocab));
    }
    eprintln!("{arch}: one token at a time against transformers: max relative error {worst:.2e}");
    assert!(worst < 1e-3, "{arch}: incremental max relative error {worst}");
}

#[test]
fn qwen3_logits_match_transformers() {
    check_transformers("qwen3");
}

#[test]
fn phi3_logits_match_transformers() {
    check_transformers("phi3");
}

#[test]
fn mistral3_logits_match_transformers() {
    check_transformers("mistral3");
}
