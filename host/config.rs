//! Typed model configuration, read once from GGUF metadata. Forward code reads these fields, never metadata keys.

use crate::gguf::{GgufFile, Value};
use crate::{Error, Result};

/// The model families the engine runs. Each is the one shared transformer layer with a few switches (the `Arch`
/// methods below); `host/model.rs` builds the layer from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3, Mistral, SmolLM2.
    Llama,
    Qwen2,
    /// Dense Qwen3: per-head RMS norms of q and k, no q/k/v biases.
    Qwen3,
    Gemma3,
    /// Phi-3 / Phi-4: fused `attn_qkv` and `ffn_up` (gate and up), LongRoPE frequency factors.
    Phi3,
    /// Mistral Small 3.x (the text model of `Mistral3ForConditionalGeneration`).
    Mistral3,
}

/// Every architecture the engine runs, by `general.architecture` name.
pub const SUPPORTED_ARCHS: &str = "llama, qwen2, qwen3, gemma3, phi3, mistral3";

/// Architectures whose feed-forward is a mixture of routed experts (llama.cpp names).
const MOE_ARCHS: &[&str] = &[
    "qwen2moe", "qwen3moe", "phimoe", "olmoe", "granitemoe", "dbrx", "grok", "arctic", "deepseek", "deepseek2",
    "gpt-oss", "llama4", "ernie4_5-moe", "bailingmoe", "bailingmoe2", "hunyuan-moe", "dots1", "glm4moe",
    "minimax-m2", "smallthinker", "grovemoe", "afmoe", "cohere2moe", "llada-moe", "mistral4",
];
/// Recurrent models without attention layers (llama.cpp's `llm_arch_is_recurrent`).
const RECURRENT_ARCHS: &[&str] = &["mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"];
/// Hybrids of attention with linear-attention or state-space layers (llama.cpp's `llm_arch_is_hybrid`).
const HYBRID_ARCHS: &[&str] = &[
    "jamba", "falcon-h1", "plamo2", "granitehybrid", "lfm2", "lfm2moe", "nemotron_h", "nemotron_h_moe", "qwen3next",
    "kimi-linear", "bailingmoe3", "kimi-k3", "glm5-next", "qwen35", "qwen35moe", "qwen4exp", "deepseek4",
    "minimax-01",
];

/// How RoPE pairs dimensions: `Normal` rotates (2i, 2i+1) (llama), `Neox` rotates (i, i + rope_dim/2) (qwen2, gemma3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    Normal,
    Neox,
}

/// RoPE frequency scaling (`{arch}.rope.scaling.type`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear { factor: f32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layers: usize,       // {arch}.block_count
    pub dim: usize,            // {arch}.embedding_length
    pub hidden_dim: usize,     // {arch}.feed_forward_length
    pub n_heads: usize,        // {arch}.attention.head_count
    pub n_kv_heads: usize,     // {arch}.attention.head_count_kv (default n_heads)
    pub head_dim: usize,       // {arch}.attention.key_length (default dim / n_heads)
    pub head_dim_v: usize,     // {arch}.attention.value_length (default head_dim)
    pub vocab_size: usize,     // {arch}.vocab_size or length of tokenizer.ggml.tokens
    pub context_len: usize,    // {arch}.context_length
    pub rms_eps: f32,          // {arch}.attention.layer_norm_rms_epsilon
    pub rope_theta: f32,       // {arch}.rope.freq_base (default 10000)
    pub rope_dim: usize,       // {arch}.rope.dimension_count (default head_dim)
    pub rope_style: RopeStyle,
    pub rope_scaling: RopeScaling,
    /// Gemma-3: window of the local (sliding) attention layers, `{arch}.attention.sliding_window`.
    pub sliding_window: Option<usize>,
    /// Gemma-3: RoPE base of the sliding-window layers (10000).
    pub rope_theta_local: f32,
    /// `{arch}.rope.scaling.original_context_length` (default context_len): Phi-3's LongRoPE uses its long
    /// factors when the context is longer than this.
    pub rope_orig_ctx: usize,
    /// `{arch}.rope.scaling.attn_factor` (default 1): RoPE's cos and sin are multiplied by it (Phi-3 LongRoPE).
    pub rope_attn_factor: f32,
}

// ----------------------------------------------------------------------------
// Limits: values outside these ranges are rejected as corrupt or hostile
// ----------------------------------------------------------------------------

/// Most transformer blocks (the largest open models have ~126; oss-fuzz clamps to 128).
pub const MAX_LAYERS: usize = 1024;
/// Largest embedding length.
pub const MAX_DIM: usize = 1 << 17;
/// Largest feed-forward length.
pub const MAX_HIDDEN_DIM: usize = 1 << 20;
/// Largest key/value head dimension.
pub const MAX_HEAD_DIM: usize = 1 << 12;
/// Longest training context (sizes the KV cache).
pub const MAX_CONTEXT_LEN: usize = 1 << 24;
/// Largest vocabulary.
pub const MAX_VOCAB: usize = 1 << 24;
/// RoPE base of Gemma-3's sliding-window layers.
pub const GEMMA3_ROPE_THETA_LOCAL: f32 = 10_000.0;
/// Gemma-3: every 6th layer (5, 11, ...) uses global attention, the others the sliding window.
pub const GEMMA3_SLIDING_PATTERN: usize = 6;

// ----------------------------------------------------------------------------
// From GGUF metadata: required keys first (all missing listed together), then typed reads, then range checks
// ----------------------------------------------------------------------------

impl Arch {
    /// The `general.architecture` string.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
            Arch::Phi3 => "phi3",
            Arch::Mistral3 => "mistral3",
        }
    }

    fn from_name(s: &str) -> Option<Arch> {
        Some(match s {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3" => Arch::Gemma3,
            "phi3" => Arch::Phi3,
            "mistral3" => Arch::Mistral3,
            _ => return None,
        })
    }

    /// q, k, v have biases (`attn_{q,k,v}.bias`).
    pub fn has_qkv_bias(self) -> bool {
        self == Arch::Qwen2
    }

    /// q and k are RMS-normed per head before RoPE (`attn_{q,k}_norm.weight`, [head_dim]).
    pub fn has_qk_norm(self) -> bool {
        matches!(self, Arch::Qwen3 | Arch::Gemma3)
    }

    /// Norms after attention and after the feed-forward (`post_attention_norm`, `post_ffw_norm`).
    pub fn has_post_norms(self) -> bool {
        self == Arch::Gemma3
    }

    /// Gate and up are one tensor, `ffn_up.weight` [dim, 2 * hidden_dim], gate rows first.
    pub fn fused_gate_up(self) -> bool {
        self == Arch::Phi3
    }

    /// q is multiplied by the attention scale before attention (which then scales by 1), as llama.cpp builds it.
    pub fn scales_q_before_attention(self) -> bool {
        matches!(self, Arch::Gemma3 | Arch::Phi3)
    }

    /// The RoPE pairing llama.cpp uses (`llama_model_rope_type`).
    pub fn rope_style(self) -> RopeStyle {
        match self {
            Arch::Llama | Arch::Mistral3 => RopeStyle::Normal,
            Arch::Qwen2 | Arch::Qwen3 | Arch::Gemma3 | Arch::Phi3 => RopeStyle::Neox,
        }
    }

    /// The file may hold `rope_freqs.weight` (per-pair frequency divisors).
    pub fn has_rope_freqs(self) -> bool {
        matches!(self, Arch::Llama | Arch::Mistral3)
    }

    /// The file may hold LongRoPE's `rope_factors_long.weight` and `rope_factors_short.weight`.
    pub fn has_long_short_rope_factors(self) -> bool {
        self == Arch::Phi3
    }
}

/// Why an architecture (or a file of a supported one) is one the engine cannot run yet: None when nothing says
/// so. Checked before any key is required, so that such a file fails with this reason rather than a missing key.
fn not_supported_reason(f: &GgufFile, arch: &str) -> Option<String> {
    let shown: String = arch.chars().take(64).collect();
    let why = if MOE_ARCHS.contains(&arch) {
        Some("a mixture-of-experts model (routed expert feed-forward layers)")
    } else if RECURRENT_ARCHS.contains(&arch) {
        Some("a recurrent model (state-space / RWKV layers instead of attention)")
    } else if HYBRID_ARCHS.contains(&arch) {
        Some("a hybrid model (linear-attention or state-space layers beside attention)")
    } else {
        None
    };
    if let Some(why) = why {
        return Some(format!(
            "unsupported architecture '{shown}': {why}, not supported yet (supported: {SUPPORTED_ARCHS})"
        ));
    }
    // A supported name with expert or state-space tensors (Mixtral is `llama` with experts).
    let moe = f.tensors.iter().find(|t| t.name.contains("_exps") || t.name.contains(".ffn_gate_inp."));
    if let Some(t) = moe {
        return Some(format!(
            "tensor '{}': mixture-of-experts models (routed expert layers) are not supported yet",
            t.name.chars().take(128).collect::<String>()
        ));
    }
    let ssm = f.tensors.iter().find(|t| t.name.contains(".ssm_") || t.name.contains(".time_mix_"));
    ssm.map(|t| {
        format!(
            "tensor '{}': recurrent / state-space layers are not supported yet",
            t.name.chars().take(128).collect::<String>()
        )
    })
}

fn cfg_err(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

/// Re-labels a metadata getter's error as a config error, keeping its message.
fn as_cfg(e: Error) -> Error {
    match e {
        Error::Gguf { msg, .. } => Error::Config(msg),
        e => e,
    }
}

/// Typed access to `{arch}.*` keys.
struct Keys<'a> {
    f: &'a GgufFile,
    arch: &'a str,
}

impl Keys<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    fn has(&self, k: &str) -> bool {
        self.f.get(&self.key(k)).is_some()
    }

    /// A count or length: any integer type, range-checked into `lo..=hi`.
    fn usize_in(&self, k: &str, lo: usize, hi: usize) -> Result<usize> {
        let key = self.key(k);
        let v = self.f.get_u64(&key).map_err(as_cfg)?;
        match usize::try_from(v) {
            Ok(v) if (lo..=hi).contains(&v) => Ok(v),
            _ => Err(cfg_err(format!("{key} = {v} is out of range {lo}..={hi}"))),
        }
    }

    fn opt_usize_in(&self, k: &str, lo: usize, hi: usize) -> Result<Option<usize>> {
        if self.has(k) {
            self.usize_in(k, lo, hi).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A float that must be finite and > 0.
    fn positive_f32(&self, k: &str) -> Result<f32> {
        let key = self.key(k);
        let v = self.f.get_f32(&key).map_err(as_cfg)?;
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(cfg_err(format!("{key} = {v} must be finite and > 0")))
        }
    }
}

impl ModelConfig {
    /// Builds the config from `{arch}.*` metadata for the architectures of `Arch`.
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig> {
        // --- architecture: spliced into key names, so it must be a known, plain name ---
        let arch_name = f.get_str("general.architecture").map_err(as_cfg)?;
        if let Some(why) = not_supported_reason(f, arch_name) {
            return Err(cfg_err(why));
        }
        let arch = Arch::from_name(arch_name).ok_or_else(|| {
            let shown: String = arch_name.chars().take(64).collect();
            cfg_err(format!("unsupported architecture '{shown}' (supported: {SUPPORTED_ARCHS})"))
        })?;
        let k = Keys { f, arch: arch_name };

        // --- required keys, all missing ones in one error ---
        let mut required = vec![
            "block_count",
            "context_length",
            "embedding_length",
            "feed_forward_length",
            "attention.head_count",
            "attention.layer_norm_rms_epsilon",
        ];
        if arch == Arch::Gemma3 {
            required.push("attention.sliding_window");
        }
        let mut missing: Vec<String> = required.iter().filter(|r| !k.has(r)).map(|r| k.key(r)).collect();
        let tokens_len = f.get("tokenizer.ggml.tokens").and_then(Value::as_array).map(|a| a.len());
        if !k.has("vocab_size") && tokens_len.is_none() {
            missing.push(format!("{} (or tokenizer.ggml.tokens)", k.key("vocab_size")));
        }
        if !missing.is_empty() {
            return Err(cfg_err(format!("missing required keys: {}", missing.join(", "))));
        }

        // --- mixture of experts (Mixtral, Qwen2-MoE, ...): not implemented; say so plainly rather than let the
        // expert tensors fail as unexpected (GGUF_SECURITY.md case 40: expert counts are never divided by) ---
        for key in ["expert_count", "expert_used_count"] {
            if let Some(n) = k.opt_usize_in(key, 0, usize::MAX)?.filter(|&n| n > 0) {
                return Err(cfg_err(format!("{} = {n}: mixture-of-experts models are not supported yet", k.key(key))));
            }
        }
        // --- Ministral-3's attention temperature (llama 4 scaling of q by position): not implemented ---
        if k.has("attention.temperature_scale") {
            let key = k.key("attention.temperature_scale");
            let v = f.get_f32(&key).map_err(as_cfg)?;
            if v != 0.0 {
                return Err(cfg_err(format!("{key} = {v}: attention temperature scaling is not supported yet")));
            }
        }

        // --- sizes ---
        let n_layers = k.usize_in("block_count", 1, MAX_LAYERS)?;
        let dim = k.usize_in("embedding_length", 1, MAX_DIM)?;
        let hidden_dim = k.usize_in("feed_forward_length", 1, MAX_HIDDEN_DIM)?;
        let context_len = k.usize_in("context_length", 1, MAX_CONTEXT_LEN)?;

        // --- heads (GQA): n_kv_heads divides n_heads; head_dim from key_length or dim / n_heads ---
        let n_heads = k.usize_in("attention.head_count", 1, dim)?;
        let n_kv_heads = k.opt_usize_in("attention.head_count_kv", 1, n_heads)?.unwrap_or(n_heads);
        if n_heads % n_kv_heads != 0 {
            return Err(cfg_err(format!(
                "{} = {n_heads} is not a multiple of {} = {n_kv_heads}",
                k.key("attention.head_count"),
                k.key("attention.head_count_kv")
            )));
        }
        let head_dim = match k.opt_usize_in("attention.key_length", 1, MAX_HEAD_DIM)? {
            Some(h) => h,
            None => {
                if dim % n_heads != 0 {
                    return Err(cfg_err(format!(
                        "{} = {dim} is not a multiple of {} = {n_heads} (and {} is absent)",
                        k.key("embedding_length"),
                        k.key("attention.head_count"),
                        k.key("attention.key_length")
                    )));
                }
                let h = dim / n_heads;
                if h > MAX_HEAD_DIM {
                    return Err(cfg_err(format!("head_dim {dim}/{n_heads} = {h} exceeds {MAX_HEAD_DIM}")));
                }
                h
            }
        };
        let head_dim_v = k.opt_usize_in("attention.value_length", 1, MAX_HEAD_DIM)?.unwrap_or(head_dim);

        // --- norms and rope ---
        let rms_eps = k.positive_f32("attention.layer_norm_rms_epsilon")?;
        if rms_eps >= 1.0 {
            return Err(cfg_err(format!("{} = {rms_eps} must be < 1", k.key("attention.layer_norm_rms_epsilon"))));
        }
        // rope_theta: absent in older files -> 10000 (llama.cpp's default)
        let rope_theta = if k.has("rope.freq_base") { k.positive_f32("rope.freq_base")? } else { 10_000.0 };
        let rope_dim = k.opt_usize_in("rope.dimension_count", 2, head_dim)?.unwrap_or(head_dim);
        if rope_dim % 2 != 0 {
            return Err(cfg_err(format!("{} = {rope_dim} must be even", k.key("rope.dimension_count"))));
        }
        let rope_style = arch.rope_style();
        let rope_scaling = rope_scaling(&k)?;
        let rope_orig_ctx =
            k.opt_usize_in("rope.scaling.original_context_length", 1, MAX_CONTEXT_LEN)?.unwrap_or(context_len);
        let rope_attn_factor =
            if k.has("rope.scaling.attn_factor") { k.positive_f32("rope.scaling.attn_factor")? } else { 1.0 };

        // --- vocabulary: {arch}.vocab_size, else the token list; both present must agree ---
        let vocab_size = match (k.has("vocab_size"), tokens_len) {
            (true, tokens) => {
                let v = k.usize_in("vocab_size", 1, MAX_VOCAB)?;
                if let Some(t) = tokens.filter(|&t| t != v) {
                    return Err(cfg_err(format!(
                        "{} = {v} but tokenizer.ggml.tokens has {t} entries",
                        k.key("vocab_size")
                    )));
                }
                v
            }
            (false, Some(t)) if (1..=MAX_VOCAB).contains(&t) => t,
            (false, t) => {
                return Err(cfg_err(format!(
                    "tokenizer.ggml.tokens has {} entries, out of range 1..={MAX_VOCAB}",
                    t.unwrap_or(0)
                )))
            }
        };

        // --- gemma3: sliding-window layers with their own rope base ---
        let sliding_window = match arch {
            Arch::Gemma3 => Some(k.usize_in("attention.sliding_window", 1, MAX_CONTEXT_LEN)?),
            _ => None,
        };

        // Products the model will allocate with: checked once here.
        for (what, a, b) in
            [("n_heads * head_dim", n_heads, head_dim), ("n_kv_heads * head_dim_v", n_kv_heads, head_dim_v)]
        {
            if a.checked_mul(b).is_none_or(|p| p > MAX_DIM * 8) {
                return Err(cfg_err(format!("{what} = {a} * {b} is too large")));
            }
        }

        Ok(ModelConfig {
            arch,
            n_layers,
            dim,
            hidden_dim,
            n_heads,
            n_kv_heads,
            head_dim,
            head_dim_v,
            vocab_size,
            context_len,
            rms_eps,
            rope_theta,
            rope_dim,
            rope_style,
            rope_scaling,
            sliding_window,
            rope_theta_local: GEMMA3_ROPE_THETA_LOCAL,
            rope_orig_ctx,
            rope_attn_factor,
        })
    }

    /// Query projection width: n_heads * head_dim.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Key projection width: n_kv_heads * head_dim.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Value projection width: n_kv_heads * head_dim_v.
    pub fn kv_dim_v(&self) -> usize {
        self.n_kv_heads * self.head_dim_v
    }

    /// Whether `layer` uses sliding-window (local) attention: Gemma-3 layers except every 6th (5, 11, ...).
    /// Those layers use `rope_theta_local` and no rope scaling; the others use `rope_theta` and `rope_scaling`.
    pub fn is_sliding_layer(&self, layer: usize) -> bool {
        self.sliding_window.is_some() && !(layer + 1).is_multiple_of(GEMMA3_SLIDING_PATTERN)
    }
}

/// `{arch}.rope.scaling.type` ("none" / "linear") with `{arch}.rope.scaling.factor` (legacy key:
/// `{arch}.rope.scale_linear`). As in llama.cpp, a factor without a type means linear, and 0 or 1 means none.
fn rope_scaling(k: &Keys) -> Result<RopeScaling> {
    let ty =
        if k.has("rope.scaling.type") { Some(k.f.get_str(&k.key("rope.scaling.type")).map_err(as_cfg)?) } else { None };
    let factor_key = ["rope.scaling.factor", "rope.scale_linear"].into_iter().find(|f| k.has(f));
    let factor = match factor_key {
        Some(fk) => {
            let key = k.key(fk);
            let v = k.f.get_f32(&key).map_err(as_cfg)?;
            if !v.is_finite() || v < 0.0 {
                return Err(cfg_err(format!("{key} = {v} must be finite and >= 0")));
            }
            v
        }
        None => 0.0,
    };
    match ty {
        Some("none") => Ok(RopeScaling::None),
        None | Some("linear") if factor == 0.0 || factor == 1.0 => Ok(RopeScaling::None),
        None | Some("linear") => Ok(RopeScaling::Linear { factor }),
        Some(other) => Err(cfg_err(format!(
            "{} = '{other}' is not supported (supported: none, linear)",
            k.key("rope.scaling.type")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{Array, GgufWriter};

    /// A llama-style metadata set (SmolLM2-135M's numbers) with `edit` applied.
    fn cfg_with(arch: &str, edit: impl FnOnce(&mut GgufWriter)) -> Result<ModelConfig> {
        let mut w = GgufWriter::new();
        let key = |s: &str| format!("{arch}.{s}");
        w.add_kv("general.architecture", Value::str(arch))
            .add_kv(&key("block_count"), Value::U32(30))
            .add_kv(&key("context_length"), Value::U32(8192))
            .add_kv(&key("embedding_length"), Value::U32(576))
            .add_kv(&key("feed_forward_length"), Value::U32(1536))
            .add_kv(&key("attention.head_count"), Value::U32(9))
            .add_kv(&key("attention.head_count_kv"), Value::U32(3))
            .add_kv(&key("rope.freq_base"), Value::F32(100000.0))
            .add_kv(&key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5))
            .add_kv(&key("vocab_size"), Value::U32(49152));
        if arch == "gemma3" {
            w.add_kv(&key("attention.sliding_window"), Value::U32(512));
        }
        edit(&mut w);
        let f = GgufFile::from_bytes(&w.to_bytes()?, "t.gguf")?;
        ModelConfig::from_gguf(&f)
    }

    fn cfg_err_msg(arch: &str, edit: impl FnOnce(&mut GgufWriter)) -> String {
        cfg_with(arch, edit).unwrap_err().to_string()
    }

    #[test]
    fn llama_config_reads_every_field() {
        let c = cfg_with("llama", |_| {}).unwrap();
        assert_eq!((c.n_layers, c.dim, c.hidden_dim), (30, 576, 1536));
        assert_eq!((c.n_heads, c.n_kv_heads, c.head_dim, c.head_dim_v), (9, 3, 64, 64)); // 576 / 9 = 64
        assert_eq!((c.vocab_size, c.context_len, c.rope_dim), (49152, 8192, 64));
        assert_eq!((c.rope_theta, c.rms_eps), (100000.0, 1e-5));
        assert_eq!((c.rope_style, c.rope_scaling, c.sliding_window), (RopeStyle::Normal, RopeScaling::None, None));
        assert!(!c.is_sliding_layer(0));
    }

    #[test]
    fn u64_and_other_integer_widths_are_accepted() {
        let c = cfg_with("qwen2", |w| {
            w.add_kv("qwen2.block_count", Value::U64(30)).add_kv("qwen2.embedding_length", Value::I32(576));
        })
        .unwrap();
        assert_eq!((c.n_layers, c.dim, c.rope_style), (30, 576, RopeStyle::Neox));
    }

    #[test]
    fn gemma3_sliding_window_and_local_theta() {
        let c = cfg_with("gemma3", |w| {
            w.add_kv("gemma3.attention.key_length", Value::U32(256));
        })
        .unwrap();
        assert_eq!((c.sliding_window, c.rope_theta_local, c.head_dim), (Some(512), 10000.0, 256));
        // layers 0..=4 local, 5 global, 6..=10 local, 11 global
        let pattern: Vec<bool> = (0..12).map(|l| c.is_sliding_layer(l)).collect();
        assert_eq!(pattern.iter().filter(|&&s| !s).count(), 2);
        assert!(!c.is_sliding_layer(5) && !c.is_sliding_layer(11) && c.is_sliding_layer(6));
    }

    #[test]
    fn missing_keys_are_listed_together() {
        let mut w = GgufWriter::new();
        w.add_kv("general.architecture", Value::str("gemma3")).add_kv("gemma3.block_count", Value::U32(2));
        let f = GgufFile::from_bytes(&w.to_bytes().unwrap(), "t.gguf").unwrap();
        let e = ModelConfig::from_gguf(&f).unwrap_err().to_string();
        for k in [
            "gemma3.context_length",
            "gemma3.embedding_length",
            "gemma3.feed_forward_length",
            "gemma3.attention.head_count",
            "gemma3.attention.layer_norm_rms_epsilon",
            "gemma3.attention.sliding_window",
            "gemma3.vocab_size (or tokenizer.ggml.tokens)",
        ] {
            assert!(e.contains(k), "{k} not in: {e}");
        }
        assert!(!e.contains("block_count"));
    }

    #[test]
    fn vocab_from_tokens_and_mismatch() {
        let tokens = Array::String((0..10).map(|i| format!("t{i}").into_bytes()).collect());
        // no llama.vocab_size: the token list gives the size
        let c = cfg_with("llama", |w| {
            w.remove_kv("llama.vocab_size").add_kv("tokenizer.ggml.tokens", Value::Array(tokens.clone()));
        })
        .unwrap();
        assert_eq!(c.vocab_size, 10);
        let e = cfg_err_msg("llama", |w| {
            w.add_kv("tokenizer.ggml.tokens", Value::Array(tokens.clone()));
        });
        assert!(e.contains("llama.vocab_size = 49152 but tokenizer.ggml.tokens has 10 entries"), "{e}");
        let e = cfg_err_msg("llama", |w| {
            w.add_kv("llama.vocab_size", Value::str("x"));
        });
        assert!(e.contains("key 'llama.vocab_size' has type string, expected an integer"), "{e}");
    }

    #[test]
    fn absurd_values_are_rejected_with_key_value_and_limit() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("llama.attention.head_count", Value::U32(0), "llama.attention.head_count = 0 is out of range 1..=576"),
            (
                "llama.attention.head_count_kv",
                Value::U32(2),
                "= 9 is not a multiple of llama.attention.head_count_kv = 2",
            ),
            ("llama.block_count", Value::U64(1 << 32), "llama.block_count = 4294967296 is out of range 1..=1024"),
            ("llama.context_length", Value::U64(1 << 32), "llama.context_length = 4294967296 is out of range"),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(f32::NAN), "must be finite and > 0"),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(-1e-5), "must be finite and > 0"),
            ("llama.rope.freq_base", Value::F32(f32::INFINITY), "llama.rope.freq_base = inf must be finite"),
            ("llama.rope.dimension_count", Value::U32(65), "llama.rope.dimension_count = 65 is out of range 2..=64"),
            ("llama.embedding_length", Value::I32(-576), "value -576 does not fit in u64"),
            ("llama.rope.scaling.type", Value::str("yarn"), "'yarn' is not supported"),
        ];
        for (key, v, want) in cases {
            let e = cfg_err_msg("llama", |w| {
                w.add_kv(key, v.clone());
            });
            assert!(e.contains(want), "{key}: '{e}' lacks '{want}'");
        }
        let e = cfg_err_msg("llama", |w| {
            w.add_kv("general.architecture", Value::str("gpt.neox"));
        });
        assert!(e.contains("unsupported architecture 'gpt.neox'"), "{e}");
    }

    #[test]
    fn linear_rope_scaling() {
        let c = cfg_with("llama", |w| {
            w.add_kv("llama.rope.scaling.type", Value::str("linear"))
                .add_kv("llama.rope.scaling.factor", Value::F32(4.0));
        })
        .unwrap();
        assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 4.0 });
        let c = cfg_with("llama", |w| {
            w.add_kv("llama.rope.scaling.type", Value::str("none"))
                .add_kv("llama.rope.scaling.factor", Value::F32(4.0));
        })
        .unwrap();
        assert_eq!(c.rope_scaling, RopeScaling::None);
    }
}
