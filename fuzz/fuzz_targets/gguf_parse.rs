//! Fuzz target: any byte string through the GGUF reader; when it parses, through every tensor slice, both
//! `host inspect` renderings, the tokenizer (encode and decode of a fixed text), the config, the tensor-role
//! lookup and the model. A panic, abort, OOM or timeout is a bug. tests/gguf_fuzz_smoke.rs runs the same path
//! (plus a CPU forward) without cargo-fuzz.

#![no_main]

use host::cli::inspect;
use host::config::ModelConfig;
use host::gguf::GgufFile;
use host::model::Model;
use host::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data, "fuzz.gguf") else { return };
    let mut sum = 0u64;
    for t in &f.tensors {
        let d = f.tensor_data(t);
        assert_eq!(d.len() as u64, t.n_bytes, "tensor slice of the wrong length");
        sum = sum.wrapping_add(d.first().copied().unwrap_or(0) as u64);
    }
    let _ = inspect::to_json(&f);
    let _ = inspect::to_text(&f);
    if let Ok(tok) = Tokenizer::from_gguf(&f) {
        if let Ok(ids) = tok.encode(" t3t4 <s></s>\u{e9}\u{1F600}\n\t  x", true, true) {
            let n = tok.vocab_size() as u32;
            assert!(ids.iter().all(|&i| i < n), "token id outside the vocabulary");
            let _ = tok.decode(&ids);
        }
    }
    if ModelConfig::from_gguf(&f).is_ok() {
        let _ = Model::load(&f);
    }
    std::hint::black_box(sum);
});
