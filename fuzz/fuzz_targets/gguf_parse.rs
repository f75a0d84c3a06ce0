//! Fuzz target: any byte string through the GGUF reader; when it parses, through the config, the tensor-role
//! lookup, every tensor slice and both `host inspect` renderings. A panic, abort, OOM or timeout is a bug.

#![no_main]

use host::cli::inspect;
use host::config::ModelConfig;
use host::gguf::GgufFile;
use host::weights::ModelTensors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data, "fuzz.gguf") else { return };
    let mut sum = 0u64;
    for t in &f.tensors {
        let d = f.tensor_data(t);
        assert_eq!(d.len() as u64, t.n_bytes, "tensor slice of the wrong length");
        sum = sum.wrapping_add(d.first().copied().unwrap_or(0) as u64);
    }
    if let Ok(c) = ModelConfig::from_gguf(&f) {
        let _ = ModelTensors::from_gguf(&f, &c);
    }
    let _ = inspect::to_json(&f);
    let _ = inspect::to_text(&f);
    std::hint::black_box(sum);
});
