//! Tensor lookup by role: `blk.{i}.attn_q.weight` ... as typed views of the map, each checked against the
//! shape the config implies and against the types the engine computes. Tied output embedding when
//! `output.weight` is absent. Every tensor in the file must be claimed by a role. The data of every claimed
//! tensor is prefaulted at the end (`GgufFile::populate`), so that a file truncated since open is an error
//! here rather than a SIGBUS later.

use std::collections::HashSet;

use crate::config::ModelConfig;
use crate::gguf::{GgmlType, GgufFile, TensorInfo};
use crate::{Error, Result};

// ----------------------------------------------------------------------------
// TensorRef: one tensor's name, type, shape and bytes
// ----------------------------------------------------------------------------

/// A tensor of the file: its bytes are a slice of the map (nothing copied).
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub name: &'a str,
    pub ggml_type: GgmlType,
    /// GGUF order: `dims[0]` is the row length.
    pub dims: &'a [u64],
    pub data: &'a [u8],
}

impl TensorRef<'_> {
    /// Product of `dims[1..]`.
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize // bounded by the file size at open
    }

    /// `dims[0]`, the row length in elements.
    pub fn n_cols(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.ggml_type.row_bytes(self.n_cols() as u64).unwrap_or(0) as usize // whole blocks: checked at open
    }
}

/// Tensor types the engine computes. The quant module will own this list (`quant::is_supported`).
pub fn is_computable(t: GgmlType) -> bool {
    use GgmlType::*;
    matches!(t, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K)
}

// ----------------------------------------------------------------------------
// Layer and model tensors, named after the GGUF roles
// ----------------------------------------------------------------------------

/// One transformer block. Shapes in GGUF order `[row length, rows]`.
#[derive(Debug, Clone)]
pub struct LayerTensors<'a> {
    pub attn_norm: TensorRef<'a>, // [dim]
    /// q, k and v as one tensor `attn_qkv` [dim, q_dim + kv_dim + kv_dim_v] (rows q, then k, then v; Phi-3),
    /// else the three below.
    pub attn_qkv: Option<TensorRef<'a>>,
    pub attn_q: Option<TensorRef<'a>>, // [dim, n_heads * head_dim]
    pub attn_k: Option<TensorRef<'a>>, // [dim, n_kv_heads * head_dim]
    pub attn_v: Option<TensorRef<'a>>, // [dim, n_kv_heads * head_dim_v]
    pub attn_output: TensorRef<'a>,    // [n_heads * head_dim_v, dim]
    /// qwen2: biases of q, k, v ([n_heads * head_dim], [kv_dim], [kv_dim_v]).
    pub attn_q_bias: Option<TensorRef<'a>>,
    pub attn_k_bias: Option<TensorRef<'a>>,
    pub attn_v_bias: Option<TensorRef<'a>>,
    /// gemma3, qwen3: per-head RMS norms of q and k ([head_dim]).
    pub attn_q_norm: Option<TensorRef<'a>>,
    pub attn_k_norm: Option<TensorRef<'a>>,
    /// gemma3: the norms after attention and feed-forward ([dim]).
    pub post_attention_norm: Option<TensorRef<'a>>,
    pub post_ffw_norm: Option<TensorRef<'a>>,
    pub ffn_norm: TensorRef<'a>, // [dim]
    /// [dim, hidden_dim]; None for Phi-3, whose `ffn_up` holds gate and up.
    pub ffn_gate: Option<TensorRef<'a>>,
    pub ffn_up: TensorRef<'a>,   // [dim, hidden_dim]; Phi-3: [dim, 2 * hidden_dim], gate rows first
    pub ffn_down: TensorRef<'a>, // [hidden_dim, dim]
}

/// Every weight of the model.
#[derive(Debug, Clone)]
pub struct ModelTensors<'a> {
    pub token_embd: TensorRef<'a>,  // [dim, vocab_size]
    pub output_norm: TensorRef<'a>, // [dim]
    /// [dim, vocab_size]; `token_embd` when the file has no `output.weight` (tied embeddings).
    pub output: TensorRef<'a>,
    /// llama (Llama 3.1 and later): `rope_freqs.weight`, F32 [rope_dim / 2], the per-pair RoPE frequency
    /// divisors of the long-context scaling.
    pub rope_freqs: Option<TensorRef<'a>>,
    /// phi3 (LongRoPE): `rope_factors_long.weight` / `rope_factors_short.weight`, F32 [rope_dim / 2] each, the
    /// divisors used when the context is longer than `rope_orig_ctx` / not.
    pub rope_factors_long: Option<TensorRef<'a>>,
    pub rope_factors_short: Option<TensorRef<'a>>,
    pub layers: Vec<LayerTensors<'a>>,
}

/// Looks tensors up by name, checks them, and remembers which were used.
struct Lookup<'a> {
    f: &'a GgufFile,
    used: HashSet<&'a str>,
}

impl<'a> Lookup<'a> {
    fn check(&mut self, t: &'a TensorInfo, shape: &[usize]) -> Result<TensorRef<'a>> {
        let terr = |msg: String| Error::Tensor { tensor: t.name.clone(), msg };
        // Compare as ggml does: missing trailing dims count as 1.
        let padded = |d: &[u64]| -> [u64; 4] {
            let mut p = [1u64; 4];
            for (slot, &v) in p.iter_mut().zip(d) {
                *slot = v;
            }
            p
        };
        let expected: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
        if t.dims.len() > 4 || padded(&t.dims) != padded(&expected) {
            return Err(terr(format!("wrong shape: expected {expected:?}, got {:?}", t.dims)));
        }
        if !is_computable(t.ggml_type) {
            return Err(terr(format!("unsupported tensor type {} (the engine cannot compute it)", t.ggml_type)));
        }
        self.used.insert(&t.name);
        Ok(TensorRef { name: &t.name, ggml_type: t.ggml_type, dims: &t.dims, data: self.f.tensor_bytes(t)? })
    }

    fn opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<TensorRef<'a>>> {
        match self.f.tensor(name) {
            Some(t) => self.check(t, shape).map(Some),
            None => Ok(None),
        }
    }

    fn req(&mut self, name: &str, shape: &[usize]) -> Result<TensorRef<'a>> {
        let f = self.f;
        match f.tensor(name) {
            Some(t) => self.check(t, shape),
            None => Err(Error::Tensor { tensor: name.into(), msg: "required tensor is missing".into() }),
        }
    }

    /// Required for `arch`, else must be absent.
    fn arch_only(&mut self, present: bool, name: &str, shape: &[usize]) -> Result<Option<TensorRef<'a>>> {
        if present {
            self.req(name, shape).map(Some)
        } else {
            self.opt(name, shape)
        }
    }
}

impl<'a> ModelTensors<'a> {
    /// Finds every role's tensor, checks shapes and types against `cfg`, and rejects tensors no role uses.
    pub fn from_gguf(f: &'a GgufFile, cfg: &ModelConfig) -> Result<Self> {
        let mut l = Lookup { f, used: HashSet::new() };
        let (dim, hidden) = (cfg.dim, cfg.hidden_dim);
        let (q_dim, kv_dim, kv_dim_v) = (cfg.q_dim(), cfg.kv_dim(), cfg.kv_dim_v());
        let o_in = cfg.n_heads * cfg.head_dim_v;

        let token_embd = l.req("token_embd.weight", &[dim, cfg.vocab_size])?;
        let output_norm = l.req("output_norm.weight", &[dim])?;
        let output = l.opt("output.weight", &[dim, cfg.vocab_size])?.unwrap_or(token_embd);
        // Rope frequency factors, read by the architectures llama.cpp reads them for (LLM_TENSOR_ROPE_FREQS,
        // ROPE_FACTORS_LONG/SHORT); elsewhere they stay unclaimed and are rejected below. The forward reads them
        // as f32.
        let half_rope = [cfg.rope_dim / 2];
        let rope_freqs = if cfg.arch.has_rope_freqs() { l.opt("rope_freqs.weight", &half_rope)? } else { None };
        let (rope_factors_long, rope_factors_short) = if cfg.arch.has_long_short_rope_factors() {
            (l.opt("rope_factors_long.weight", &half_rope)?, l.opt("rope_factors_short.weight", &half_rope)?)
        } else {
            (None, None)
        };
        if rope_factors_long.is_some() != rope_factors_short.is_some() {
            let (have, lack) = match rope_factors_long {
                Some(_) => ("rope_factors_long.weight", "rope_factors_short.weight"),
                None => ("rope_factors_short.weight", "rope_factors_long.weight"),
            };
            return Err(Error::Tensor { tensor: lack.into(), msg: format!("missing while {have} is present") });
        }
        for r in [rope_freqs, rope_factors_long, rope_factors_short].into_iter().flatten() {
            if r.ggml_type != GgmlType::F32 {
                return Err(Error::Tensor {
                    tensor: r.name.into(),
                    msg: format!("type {}, expected F32 (rope frequency factors)", r.ggml_type),
                });
            }
        }

        let arch = cfg.arch;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let n = |role: &str| format!("blk.{i}.{role}");
            // q/k/v: one fused tensor or three (llama.cpp takes the fused one when the file has it)
            let attn_qkv = l.opt(&n("attn_qkv.weight"), &[dim, q_dim + kv_dim + kv_dim_v])?;
            let (attn_q, attn_k, attn_v) = if attn_qkv.is_some() {
                (None, None, None)
            } else {
                (
                    Some(l.req(&n("attn_q.weight"), &[dim, q_dim])?),
                    Some(l.req(&n("attn_k.weight"), &[dim, kv_dim])?),
                    Some(l.req(&n("attn_v.weight"), &[dim, kv_dim_v])?),
                )
            };
            let fused_ffn = arch.fused_gate_up();
            layers.push(LayerTensors {
                attn_norm: l.req(&n("attn_norm.weight"), &[dim])?,
                attn_qkv,
                attn_q,
                attn_k,
                attn_v,
                attn_output: l.req(&n("attn_output.weight"), &[o_in, dim])?,
                attn_q_bias: l.arch_only(arch.has_qkv_bias(), &n("attn_q.bias"), &[q_dim])?,
                attn_k_bias: l.arch_only(arch.has_qkv_bias(), &n("attn_k.bias"), &[kv_dim])?,
                attn_v_bias: l.arch_only(arch.has_qkv_bias(), &n("attn_v.bias"), &[kv_dim_v])?,
                attn_q_norm: l.arch_only(arch.has_qk_norm(), &n("attn_q_norm.weight"), &[cfg.head_dim])?,
                attn_k_norm: l.arch_only(arch.has_qk_norm(), &n("attn_k_norm.weight"), &[cfg.head_dim])?,
                post_attention_norm: l.arch_only(arch.has_post_norms(), &n("post_attention_norm.weight"), &[dim])?,
                post_ffw_norm: l.arch_only(arch.has_post_norms(), &n("post_ffw_norm.weight"), &[dim])?,
                ffn_norm: l.req(&n("ffn_norm.weight"), &[dim])?,
                ffn_gate: if fused_ffn { None } else { Some(l.req(&n("ffn_gate.weight"), &[dim, hidden])?) },
                ffn_up: l.req(&n("ffn_up.weight"), &[dim, if fused_ffn { 2 * hidden } else { hidden }])?,
                ffn_down: l.req(&n("ffn_down.weight"), &[hidden, dim])?,
            });
        }

        // A tensor no role claims means the file is not the model the config describes (extra layers,
        // another architecture's tensors, rope_freqs for an architecture that would silently ignore them).
        let unused: Vec<&str> = f.tensors.iter().map(|t| t.name.as_str()).filter(|n| !l.used.contains(n)).collect();
        if let Some(first) = unused.first() {
            return Err(Error::Tensor {
                tensor: (*first).into(),
                msg: format!(
                    "unexpected tensor for {} with {} layers ({} unused tensors in all)",
                    cfg.arch.name(),
                    cfg.n_layers,
                    unused.len()
                ),
            });
        }
        // Everything is claimed: prefault it all, turning a file truncated since open into an error.
        let infos: Vec<&TensorInfo> = f.tensors.iter().collect();
        f.populate(&infos)?;
        Ok(ModelTensors { token_embd, output_norm, output, rope_freqs, rope_factors_long, rope_factors_short, layers })
    }
}
