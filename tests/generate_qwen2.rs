//! Qwen2 against an independent implementation: `scripts/qwen2_reference.py` wrote a small random-weight Qwen2
//! model (F32 weights, `tests/fixtures/qwen2/qwen2-tiny.gguf`) and the logits Hugging Face `transformers` computes
//! for it in float64 over 32 positions (`logits.f32`). Our CPU forward must be within 1e-3 relative of them.

use std::path::{Path, PathBuf};

use host::gguf::GgufFile;
use host::kv_cache::CacheType;
use host::model::{CpuForward, Forward, Model};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/qwen2")
        .join(name)
}

/// (token ids, reference logits (n_pos, vocab), vocab)
fn reference() -> (Vec<u32>, Vec<f32>, usize) {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap();
    let tokens: Vec<u32> = meta["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let vocab = meta["vocab"].as_u64().unwrap() as usize;
    let bytes = std::fs::read(fixture("logits.f32")).unwrap();
    let logits: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(logits.len(), tokens.len() * vocab);
    (tokens, logits, vocab)
}

/// max |got - want| / max |want| over each position's logits, the worst position.
fn max_rel_err(got: &[f32], want: &[f32], vocab: usize) -> f32 {
    got.chunks(vocab)
        .zip(want.chunks(vocab))
        .map(|(g, w)| {
            let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            g.iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
                / scale
        })
        .fold(0.0, f32::max)
}

fn argmax(x: &[f32]) -> usize {
    (0..x.len()).fold(0, |best, i| if x[i] > x[best] { i } else { best })
}

#[test]
fn qwen2_batch_logits_match_transformers() {
    let (tokens, want, vocab) = reference();
    let file = GgufFile::open(fixture("qwen2-tiny.gguf")).unwrap();
    let model = Model::load(&file).unwrap();
    assert_eq!(model.n_vocab(), vocab);
    assert!(model.layers[0].w.q_bias.is_some(), "qwen2 has q/k/v biases");
    let mut fwd = CpuForward::new(&model, 64, CacheType::F32).unwrap();
    let got = fwd.forward_all(&tokens, 0).unwrap();
    let err = max_rel_err(&got, &want, vocab);
    eprintln!(
        "qwen2 batch of {}: max relative error {err:.2e}",
        tokens.len()
    );
    assert!(err < 1e-3, "max relative error {err}");
    for (g, w) in got.chunks(vocab).zip(want.chunks(vocab)) {
        assert_eq!(argmax(g), argmax(w));
    }
}

#[test]
fn qwen2_incremental_decoding_matches_transformers() {
    // 20 positions as one batch, then one token at a time through the KV cache: each step's last-token logits
    // are the reference row of that position.
    let (tokens, want, vocab) = reference();
    let file = GgufFile::open(fixture("qwen2-tiny.gguf")).unwrap();
    let model = Model::load(&file).unwrap();
    for (ty, tol) in [(CacheType::F32, 1e-3), (CacheType::F16, 5e-3)] {
        let mut fwd = CpuForward::new(&model, 32, ty).unwrap();
        let mut got = fwd.forward(&tokens[..20], 0).unwrap().to_vec();
        let mut worst = max_rel_err(&got, &want[19 * vocab..20 * vocab], vocab);
        for p in 20..tokens.len() {
            got = fwd.forward(&tokens[p..p + 1], p).unwrap().to_vec();
            worst = worst.max(max_rel_err(&got, &want[p * vocab..(p + 1) * vocab], vocab));
        }
        eprintln!("qwen2 incremental, {ty:?} cache: max relative error {worst:.2e}");
        assert!(worst < tol, "{ty:?} cache: max relative error {worst}");
        // the context of 32 is now full: one more position is an error naming both numbers, not a panic
        let err = fwd.forward(&tokens[..1], 32).unwrap_err().to_string();
        assert!(err.contains("32..33") && err.contains("32 tokens"), "{err}");
        // after reset, the first position again gives the reference's first row
        fwd.reset();
        let first = fwd.forward(&tokens[..1], 0).unwrap().to_vec();
        assert!(max_rel_err(&first, &want[..vocab], vocab) < tol);
        // a gap in the positions is refused
        assert!(fwd.forward(&tokens[..1], 5).is_err());
    }
}
