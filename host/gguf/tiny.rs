//! Tiny synthetic models: a complete, valid GGUF (metadata, tokenizer arrays, every tensor role) with seeded
//! pseudo-random weights, small enough for unit tests, the hostile-file corpus and fuzz seeds.

use super::{Array, GgmlType, GgufWriter, Value};
use crate::rng::SplitMix64 as Rng;
use crate::Result;

/// The shape of a tiny model. `Default` is a 2-layer llama with dim 64 and a 64-token vocabulary.
#[derive(Debug, Clone)]
pub struct TinySpec {
    pub arch: &'static str, // "llama", "qwen2", "qwen3", "gemma3", "phi3" or "mistral3"
    pub n_layers: usize,
    pub dim: usize,
    pub hidden_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub context_len: usize,
    /// Type of the 2-D weights (norms and biases are always F32).
    pub weight_type: GgmlType,
    /// Type of `token_embd.weight`.
    pub embd_type: GgmlType,
    /// No `output.weight`: the output head reuses `token_embd`.
    pub tied: bool,
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            arch: "llama",
            n_layers: 2,
            dim: 64,
            hidden_dim: 128,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            vocab_size: 64,
            context_len: 256,
            weight_type: GgmlType::Q8_0,
            embd_type: GgmlType::F32,
            tied: false,
            seed: 1,
        }
    }
}

/// Byte offsets of the f16 scale fields inside one block, so that random blocks decode to finite values.
fn f16_scale_offsets(t: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match t {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL => &[0],
        Q4_1 | Q5_1 | Q8_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// `n` elements of type `t` (n a multiple of the block size): small random floats, or random quant blocks
/// with scales set to 1/64.
fn random_data(rng: &mut Rng, t: GgmlType, n: usize, scale: f32) -> Vec<u8> {
    match t {
        GgmlType::F32 => (0..n).flat_map(|_| (rng.f32() * scale).to_le_bytes()).collect(),
        GgmlType::F16 => (0..n).flat_map(|_| half::f16::from_f32(rng.f32() * scale).to_le_bytes()).collect(),
        GgmlType::BF16 => (0..n).flat_map(|_| half::bf16::from_f32(rng.f32() * scale).to_le_bytes()).collect(),
        _ => {
            let (bs, ts) = (t.block_size(), t.type_size());
            let mut out: Vec<u8> = (0..n / bs * ts).map(|_| rng.next_u64() as u8).collect();
            let d = half::f16::from_f32(1.0 / 64.0).to_le_bytes();
            for block in out.chunks_exact_mut(ts) {
                for &o in f16_scale_offsets(t) {
                    block[o..o + 2].copy_from_slice(&d);
                }
                if t == GgmlType::Q8_K {
                    block[..4].copy_from_slice(&(1.0f32 / 64.0).to_le_bytes());
                }
            }
            out
        }
    }
}

/// A writer holding the whole tiny model described by `s`.
pub fn tiny_model(s: &TinySpec) -> Result<GgufWriter> {
    let mut w = GgufWriter::new();
    let k = |name: &str| format!("{}.{name}", s.arch);
    let u32v = |n: usize| Value::U32(n as u32);
    w.add_kv("general.architecture", Value::str(s.arch))
        .add_kv("general.name", Value::str("tiny"))
        .add_kv(&k("block_count"), u32v(s.n_layers))
        .add_kv(&k("context_length"), u32v(s.context_len))
        .add_kv(&k("embedding_length"), u32v(s.dim))
        .add_kv(&k("feed_forward_length"), u32v(s.hidden_dim))
        .add_kv(&k("attention.head_count"), u32v(s.n_heads))
        .add_kv(&k("attention.head_count_kv"), u32v(s.n_kv_heads))
        .add_kv(&k("attention.key_length"), u32v(s.head_dim))
        .add_kv(&k("attention.value_length"), u32v(s.head_dim))
        .add_kv(&k("attention.layer_norm_rms_epsilon"), Value::F32(1e-6))
        .add_kv(&k("rope.freq_base"), Value::F32(10000.0));
    if s.arch == "gemma3" {
        w.add_kv(&k("attention.sliding_window"), u32v(16));
    }
    // Tokenizer: <unk> <s> </s>, then "t3", "t4", ...
    let tokens: Vec<Vec<u8>> = (0..s.vocab_size)
        .map(|i| match i {
            0 => b"<unk>".to_vec(),
            1 => b"<s>".to_vec(),
            2 => b"</s>".to_vec(),
            _ => format!("t{i}").into_bytes(),
        })
        .collect();
    let types: Vec<i32> = (0..s.vocab_size).map(|i| if i < 3 { 3 } else { 1 }).collect();
    w.add_kv("tokenizer.ggml.model", Value::str("llama"))
        .add_kv("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)))
        .add_kv("tokenizer.ggml.scores", Value::Array(Array::F32((0..s.vocab_size).map(|i| -(i as f32)).collect())))
        .add_kv("tokenizer.ggml.token_type", Value::Array(Array::I32(types)))
        .add_kv("tokenizer.ggml.bos_token_id", Value::U32(1))
        .add_kv("tokenizer.ggml.eos_token_id", Value::U32(2))
        .add_kv("tokenizer.ggml.add_bos_token", Value::Bool(true))
        .add_kv("general.quantization_version", Value::U32(2));

    let mut rng = Rng(s.seed);
    let (dim, hid, q_dim, kv_dim) = (s.dim, s.hidden_dim, s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim);
    let mut add = |w: &mut GgufWriter, name: &str, dims: &[usize], t: GgmlType| -> Result<()> {
        let n = dims.iter().product();
        let scale = if dims.len() == 1 && name.ends_with("norm.weight") { 0.1 } else { 0.5 };
        let mut data = random_data(&mut rng, t, n, scale);
        if dims.len() == 1 && name.ends_with("norm.weight") {
            // norms near 1
            data = data
                .chunks_exact(4)
                .flat_map(|c| (1.0 + f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes())
                .collect();
        }
        let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        w.add_tensor(name, &dims, t, data)?;
        Ok(())
    };
    let wt = s.weight_type;
    add(&mut w, "token_embd.weight", &[dim, s.vocab_size], s.embd_type)?;
    add(&mut w, "output_norm.weight", &[dim], GgmlType::F32)?;
    if !s.tied {
        add(&mut w, "output.weight", &[dim, s.vocab_size], wt)?;
    }
    for i in 0..s.n_layers {
        let n = |role: &str| format!("blk.{i}.{role}");
        add(&mut w, &n("attn_norm.weight"), &[dim], GgmlType::F32)?;
        if s.arch == "phi3" {
            add(&mut w, &n("attn_qkv.weight"), &[dim, q_dim + 2 * kv_dim], wt)?;
        } else {
            add(&mut w, &n("attn_q.weight"), &[dim, q_dim], wt)?;
            add(&mut w, &n("attn_k.weight"), &[dim, kv_dim], wt)?;
            add(&mut w, &n("attn_v.weight"), &[dim, kv_dim], wt)?;
        }
        add(&mut w, &n("attn_output.weight"), &[q_dim, dim], wt)?;
        if s.arch == "qwen2" {
            add(&mut w, &n("attn_q.bias"), &[q_dim], GgmlType::F32)?;
            add(&mut w, &n("attn_k.bias"), &[kv_dim], GgmlType::F32)?;
            add(&mut w, &n("attn_v.bias"), &[kv_dim], GgmlType::F32)?;
        }
        if s.arch == "gemma3" || s.arch == "qwen3" {
            add(&mut w, &n("attn_q_norm.weight"), &[s.head_dim], GgmlType::F32)?;
            add(&mut w, &n("attn_k_norm.weight"), &[s.head_dim], GgmlType::F32)?;
        }
        if s.arch == "gemma3" {
            add(&mut w, &n("post_attention_norm.weight"), &[dim], GgmlType::F32)?;
            add(&mut w, &n("post_ffw_norm.weight"), &[dim], GgmlType::F32)?;
        }
        add(&mut w, &n("ffn_norm.weight"), &[dim], GgmlType::F32)?;
        if s.arch == "phi3" {
            add(&mut w, &n("ffn_up.weight"), &[dim, 2 * hid], wt)?;
        } else {
            add(&mut w, &n("ffn_gate.weight"), &[dim, hid], wt)?;
            add(&mut w, &n("ffn_up.weight"), &[dim, hid], wt)?;
        }
        add(&mut w, &n("ffn_down.weight"), &[hid, dim], wt)?;
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Arch, ModelConfig};
    use crate::gguf::GgufFile;
    use crate::weights::ModelTensors;

    #[test]
    fn tiny_models_load_for_every_arch() {
        for (arch, want) in [
            ("llama", Arch::Llama),
            ("qwen2", Arch::Qwen2),
            ("qwen3", Arch::Qwen3),
            ("gemma3", Arch::Gemma3),
            ("phi3", Arch::Phi3),
            ("mistral3", Arch::Mistral3),
        ] {
            let spec = TinySpec { arch, tied: arch == "gemma3", ..TinySpec::default() };
            let bytes = tiny_model(&spec).unwrap().to_bytes().unwrap();
            let f = GgufFile::from_bytes(&bytes, "tiny.gguf").unwrap();
            let c = ModelConfig::from_gguf(&f).unwrap();
            assert_eq!((c.arch, c.n_layers, c.dim, c.vocab_size), (want, 2, 64, 64));
            let w = ModelTensors::from_gguf(&f, &c).unwrap();
            assert_eq!(w.layers[1].attn_q_bias.is_some(), arch == "qwen2");
            assert_eq!(w.layers[1].attn_q_norm.is_some(), arch == "gemma3" || arch == "qwen3");
            assert_eq!(w.layers[1].attn_qkv.is_some(), arch == "phi3");
            assert_eq!(w.layers[1].ffn_gate.is_none(), arch == "phi3");
            // Q8_0 attn_k (or attn_qkv: 64 + 2 * 32 rows): kv_dim rows of dim/32 blocks of 34 bytes
            match &w.layers[0].attn_k {
                Some(k) => assert_eq!(k.data.len(), 32 * (64 / 32) * 34),
                None => assert_eq!(w.layers[0].attn_qkv.unwrap().data.len(), 128 * (64 / 32) * 34),
            }
            // the model builds row views of the fused tensors with the same shapes as the separate ones
            let m = crate::model::Model::load(&f).unwrap();
            let l = &m.layers[0].w;
            assert_eq!((l.wq.rows, l.wk.rows, l.wv.rows, l.w_gate.rows, l.w_up.rows), (64, 32, 32, 128, 128));
            assert_eq!(l.wk.data.len(), 32 * (64 / 32) * 34);
        }
    }

    #[test]
    fn quant_scales_are_finite() {
        let mut rng = Rng(7);
        for t in [GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q2_K] {
            let data = random_data(&mut rng, t, 512, 1.0);
            for block in data.chunks_exact(t.type_size()) {
                for &o in f16_scale_offsets(t) {
                    assert_eq!(half::f16::from_le_bytes([block[o], block[o + 1]]).to_f32(), 1.0 / 64.0);
                }
            }
        }
    }
}
