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

// ----------------------------------------------------------------------------
// Against llama.cpp's CPU build, bit for bit
// ----------------------------------------------------------------------------

/// One teacher-forced case of `llama_cpp.bin`: `ids[..prompt]` as one batch with every position's logits, then
/// the rest one token at a time, in a context of `n_ctx` positions.
struct Case {
    prompt: usize,
    n_ctx: usize,
    ids: Vec<u32>,
    hashes: Vec<u64>,
    rows: Vec<(usize, Vec<f32>)>,
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
}

fn llama_cpp_cases(arch: &str) -> (usize, Vec<Case>) {
    let bytes = std::fs::read(fixture(arch, "llama_cpp.bin")).unwrap();
    let mut r = Reader(&bytes);
    assert_eq!(r.take(4), b"ALG1");
    let (nv, n_cases) = (r.u32() as usize, r.u32());
    let cases = (0..n_cases)
        .map(|_| {
            let (prompt, decode, n_ctx) = (r.u32() as usize, r.u32() as usize, r.u32() as usize);
            let ids = (0..prompt + decode).map(|_| r.u32()).collect();
            let hashes = (0..prompt + decode).map(|_| r.u64()).collect();
            let rows = (0..r.u32())
                .map(|_| {
                    let pos = r.u32() as usize;
                    let v = r.take(4 * nv).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
                    (pos, v)
                })
                .collect();
            Case { prompt, n_ctx, ids, hashes, rows }
        })
        .collect();
    assert!(r.0.is_empty(), "trailing bytes");
    (nv, cases)
}

/// FNV-1a 64 of the f32 logits' little-endian bytes (as arch_logits.cpp hashes them).
fn fnv1a64(x: &[f32]) -> u64 {
    x.iter()
        .flat_map(|v| v.to_le_bytes())
        .fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3))
}

fn check_llama_cpp(arch: &str) {
    let (nv, cases) = llama_cpp_cases(arch);
    let file = GgufFile::open(fixture(arch, "model.gguf")).unwrap();
    let model = Model::load(&file).unwrap();
    assert_eq!(model.n_vocab(), nv);
    let mut failures = Vec::new();
    for c in &cases {
        // the context llama.cpp ran with: it sizes the attended cache, and picks Phi-3's LongRoPE factors
        let mut fwd = CpuForward::new(&model, c.n_ctx, CacheType::F16).unwrap();
        let mut got = fwd.forward_all(&c.ids[..c.prompt], 0).unwrap();
        for p in c.prompt..c.ids.len() {
            got.extend_from_slice(fwd.forward(&c.ids[p..p + 1], p).unwrap());
        }
        let rows: Vec<&[f32]> = got.chunks(nv).collect();
        let first_bad = (0..c.ids.len()).find(|&p| fnv1a64(rows[p]) != c.hashes[p]);
        // max |diff| over the positions whose full logits the fixture holds
        let max_diff = c
            .rows
            .iter()
            .map(|(p, want)| rows[*p].iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max))
            .fold(0.0f32, f32::max);
        let bitwise_rows =
            c.rows.iter().all(|(p, want)| rows[*p].iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()));
        eprintln!(
            "{arch}: prompt {} + {} decode steps (ctx {}): first differing position {first_bad:?}, \
             max |diff| {max_diff:.3e} over {} full rows",
            c.prompt,
            c.ids.len() - c.prompt,
            c.n_ctx,
            c.rows.len()
        );
        if first_bad.is_some() || !bitwise_rows {
            failures.push(format!(
                "prompt {}: first differing position {first_bad:?} of {}, max |diff| {max_diff:e} over the stored rows",
                c.prompt,
                c.ids.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{arch} differs from llama.cpp:\n{}", failures.join("\n"));
}

#[test]
fn qwen3_logits_match_llama_cpp_bit_for_bit() {
    check_llama_cpp("qwen3");
}

#[test]
fn phi3_logits_match_llama_cpp_bit_for_bit() {
    check_llama_cpp("phi3");
}

#[test]
fn mistral3_logits_match_llama_cpp_bit_for_bit() {
    check_llama_cpp("mistral3");
}
