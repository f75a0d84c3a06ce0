//! The real test models open, yield a config, and every tensor role resolves. Skipped when a model is absent
//! (CI fetches them with scripts/fetch-models.sh).

use host::config::{Arch, ModelConfig, RopeStyle};
use host::gguf::{GgmlType, GgufFile};
use host::weights::ModelTensors;

const SMOLLM2: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA3: &str = "models/gemma-3-270m-q4_k_m.gguf";

fn open(path: &str) -> Option<GgufFile> {
    if !std::path::Path::new(path).exists() {
        eprintln!("SKIP: {path} is absent (run scripts/fetch-models.sh)");
        return None;
    }
    let t0 = std::time::Instant::now();
    let f = GgufFile::open(path).unwrap();
    println!(
        "{path}: opened in {:.2} ms ({} kv, {} tensors)",
        t0.elapsed().as_secs_f64() * 1e3,
        f.metadata.len(),
        f.tensors.len()
    );
    Some(f)
}

#[test]
fn smollm2_config_and_tensors() {
    let Some(f) = open(SMOLLM2) else { return };
    let c = ModelConfig::from_gguf(&f).unwrap();
    // values from the file's metadata as gguf-py prints them
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!((c.n_layers, c.dim, c.hidden_dim, c.n_heads, c.n_kv_heads), (30, 576, 1536, 9, 3));
    assert_eq!((c.head_dim, c.vocab_size, c.context_len, c.rope_dim), (64, 49152, 8192, 64));
    assert_eq!((c.rope_theta, c.rope_style), (100000.0, RopeStyle::Normal));
    let w = ModelTensors::from_gguf(&f, &c).unwrap();
    assert_eq!(w.layers.len(), 30);
    assert_eq!(w.token_embd.ggml_type, GgmlType::Q8_0);
    assert_eq!((w.token_embd.n_cols(), w.token_embd.n_rows()), (576, 49152));
    assert_eq!(w.output.name, "token_embd.weight"); // tied: the file has no output.weight
    assert_eq!(w.layers[0].attn_k.unwrap().dims, &[576, 192]);
    assert_eq!(w.layers[0].attn_k.unwrap().data.len(), 192 * (576 / 32) * 20); // Q4_1: 20 bytes per 32 weights
}

#[test]
fn gemma3_config_and_tensors() {
    let Some(f) = open(GEMMA3) else { return };
    let c = ModelConfig::from_gguf(&f).unwrap();
    assert_eq!(c.arch, Arch::Gemma3);
    assert_eq!((c.n_layers, c.dim, c.hidden_dim, c.n_heads, c.n_kv_heads), (18, 640, 2048, 4, 1));
    assert_eq!((c.head_dim, c.head_dim_v, c.vocab_size, c.context_len), (256, 256, 262144, 32768));
    assert_eq!((c.rope_theta, c.rope_theta_local, c.sliding_window), (1e6, 10000.0, Some(512)));
    let w = ModelTensors::from_gguf(&f, &c).unwrap();
    assert_eq!(w.layers.len(), 18);
    assert_eq!(w.layers[0].attn_q.unwrap().dims, &[640, 1024]); // n_heads * head_dim = 4 * 256
    assert_eq!(w.layers[0].attn_q_norm.unwrap().dims, &[256]);
    assert!(w.layers[3].post_ffw_norm.is_some());
    assert_eq!(w.output.name, "token_embd.weight");
}
