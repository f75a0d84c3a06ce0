//! Typed model configuration, read once from GGUF metadata. Forward code reads these fields, never metadata keys.

/// The model families the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3, Mistral, SmolLM2.
    Llama,
    Qwen2,
    Gemma3,
}

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
}
