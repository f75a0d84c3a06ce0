//! The transformer forward: token ids -> logits, for the `llama` (Llama 2/3, Mistral, SmolLM2), `qwen2`,
//! `qwen3`, `gemma3`, `phi3` and `mistral3` architectures: one layer, with the switches of `config::Arch`.
//!
//! `Model` is the backend-independent part: the config, the weight tensors (still quantized, borrowed from the
//! memory map) and what each layer needs beside them (norm weights and biases as f32, RoPE base and scale,
//! attention window). `Forward` is implemented once per backend; `CpuForward` here is the reference: one
//! sequence of the CPU's batch forward (`batch::CpuBatchForward`, where the CPU layer is written).
//!
//! One layer, as llama.cpp builds it (`src/models/llama.cpp`, `qwen2.cpp`, `qwen3.cpp`, `gemma3.cpp`, `phi3.cpp`,
//! `mistral3.cpp`):
//! ```text
//! h = x + [post_attention_norm] attn(rope(q), rope(k), v)      q, k, v = W (rmsnorm(x) * attn_norm) [+ bias]
//!                                                                 gemma3, qwen3: q, k rms-normed per head first
//! x = h + [post_ffw_norm] down(act(gate(n)) * up(n))           n = rmsnorm(h) * ffn_norm; act = silu | gelu-tanh
//! ```
//! then logits = output(rmsnorm(x) * output_norm) [soft-capped]. Gemma-3 also scales the embedding by sqrt(dim).
//! Its norm weights are used as stored: the GGUF converter already wrote (1 + w). Phi-3's fused `attn_qkv` and
//! `ffn_up` (gate and up) become row views (`Mat`) of the fused tensor here at load, so the forward is unchanged.

use crate::backend::cpu::RopePairing;
use crate::config::{Arch, ModelConfig, RopeScaling, RopeStyle};
use crate::gguf::{GgmlType, GgufFile};
use crate::batch::{Batch, BatchForward, CpuBatchForward};
use crate::kv_cache::{CacheType, KvCache};
use crate::kv_paged::{SeqId, DEFAULT_PAGE_SIZE};
use crate::layer::LayerWeights;
use crate::quant;
use crate::weights::{ModelTensors, TensorRef};
use crate::sampler::SamplingParams;
use crate::{Error, Result};

/// Runs the model on one backend. The generation loop and `host bench` drive it through this trait.
pub trait Forward {
    /// Run `tokens` at positions pos..pos+tokens.len() (prompt batch or one token), append K/V to the cache,
    /// return the logits of the last token (vocab_size).
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<&[f32]>;
    /// Logits for every position of the batch (needed for teacher-forced comparisons): (n_tok, vocab)
    fn forward_all(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>>;
    /// One decode step of `token` at `pos` that also picks the next token by argmax on the backend, so that
    /// only its id crosses from a device. `None`: the backend has no such path; sample `forward`'s logits.
    fn decode_greedy(&mut self, _token: u32, _pos: usize) -> Result<Option<u32>> {
        Ok(None)
    }
    /// Sample on the backend's device from here on with `params`, the prompt's tokens entering the penalty
    /// history: then `sample_next` draws the token after a forward call, and `decode_sampled` runs a decode step
    /// that draws the next one, so that only token ids cross from the device. Ok(false): the backend cannot
    /// (then the caller samples the logits itself).
    fn start_device_sampling(&mut self, _params: &SamplingParams, _prompt: &[u32]) -> Result<bool> {
        Ok(false)
    }
    /// The token drawn on the device from the logits of the last forward call; None without device sampling.
    fn sample_next(&mut self) -> Result<Option<u32>> {
        Ok(None)
    }
    /// One decode step of `token` at `pos` that also draws the next token on the device; None without device
    /// sampling.
    fn decode_sampled(&mut self, _token: u32, _pos: usize) -> Result<Option<u32>> {
        Ok(None)
    }
    /// Clear the KV cache.
    fn reset(&mut self);
    fn ctx_size(&self) -> usize;
    /// Wait until queued work is done (for timing; the CPU's calls return when done).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

/// What every backend checks before a forward call: a non-empty batch that fits the context of `ctx_size`
/// positions, starts no later than the `n_past` cached positions, and holds only ids of the `n_vocab` tokens.
pub fn check_batch(tokens: &[u32], pos: usize, ctx_size: usize, n_past: usize, n_vocab: usize) -> Result<()> {
    if tokens.is_empty() {
        return Err(Error::Generate("forward: no tokens".into()));
    }
    let end = pos + tokens.len();
    if end > ctx_size {
        return Err(Error::Generate(format!("positions {pos}..{end} exceed the context size of {ctx_size} tokens")));
    }
    if pos > n_past {
        return Err(Error::Generate(format!("forward at position {pos}, but the cache holds only {n_past} positions")));
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(Error::Generate(format!("token id {bad} is out of the vocabulary of {n_vocab} tokens")));
    }
    Ok(())
}

/// One greedy decode step of `token` at `pos`: the backend's own argmax when it has one, else the argmax of the
/// logits (first maximum wins). Returns the next token.
pub fn greedy_next(fwd: &mut dyn Forward, token: u32, pos: usize) -> Result<u32> {
    if let Some(t) = fwd.decode_greedy(token, pos)? {
        return Ok(t);
    }
    let logits = fwd.forward(&[token], pos)?;
    Ok(logits.iter().enumerate().fold(0, |b, (i, &v)| if v > logits[b] { i } else { b }) as u32)
}

// ----------------------------------------------------------------------------
// Model: config, weights, per-layer parameters
// ----------------------------------------------------------------------------

/// A 2-D weight, checked at load: `rows` rows of `cols` elements, `data` holds exactly them.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> Mat<'a> {
    /// Checks `t` against the expected shape (rows: None = any) and that the engine can compute its type.
    fn new(t: &TensorRef<'a>, cols: usize, rows: Option<usize>) -> Result<Mat<'a>> {
        let bad = |msg: String| Error::Tensor {
            tensor: t.name.to_string(),
            msg,
        };
        if t.dims.is_empty() || t.dims.len() > 2 {
            return Err(bad(format!("expected a matrix, got dims {:?}", t.dims)));
        }
        let (c, r) = (t.dims[0] as usize, t.dims.get(1).map_or(1, |&d| d as usize));
        if c != cols || rows.is_some_and(|n| n != r) {
            return Err(bad(format!(
                "dims {:?}, expected [{cols}, {}]",
                t.dims,
                rows.map_or("any".to_string(), |n| n.to_string())
            )));
        }
        if !quant::is_supported(t.ggml_type) {
            return Err(bad(format!(
                "type {} is not supported for computation",
                t.ggml_type.name()
            )));
        }
        let row_bytes = t.ggml_type.row_bytes(c as u64).ok_or_else(|| {
            bad(format!(
                "row of {c} elements is not a whole number of {} blocks",
                t.ggml_type.name()
            ))
        })? as usize;
        if t.data.len() != row_bytes * r {
            return Err(bad(format!(
                "{} bytes of data, expected {}",
                t.data.len(),
                row_bytes * r
            )));
        }
        Ok(Mat {
            name: t.name,
            ty: t.ggml_type,
            rows: r,
            cols: c,
            data: t.data,
        })
    }

    pub(crate) fn row_bytes(&self) -> usize {
        self.data.len() / self.rows
    }

    /// Rows `start..start + n` as a matrix of their own (a view of the same bytes): q, k and v of a fused
    /// `attn_qkv`, gate and up of a fused `ffn_up`.
    fn rows_view(&self, start: usize, n: usize) -> Mat<'a> {
        let rb = self.row_bytes();
        Mat { rows: n, data: &self.data[start * rb..(start + n) * rb], ..*self }
    }

    /// `apply` to a batch of independent segments (`segs`: their row counts, in order): every segment's rows
    /// come out bit-identical to `apply` on that segment alone; in llama rounding mode each weight row is decoded
    /// once for the whole batch (`ggml_avx2::matmul_segments`).
    pub(crate) fn apply_segments(&self, x: &[f32], y: &mut [f32], segs: &[usize], llama: bool) {
        let n_tok: usize = segs.iter().sum();
        if llama {
            let (x, y) = (&x[..n_tok * self.cols], &mut y[..n_tok * self.rows]);
            quant::ggml_avx2::matmul_segments(self.ty, self.data, self.rows, self.cols, x, y, segs);
            return;
        }
        let mut t0 = 0;
        for &n in segs {
            self.apply(&x[t0 * self.cols..], &mut y[t0 * self.rows..], n, false);
            t0 += n;
        }
    }

    /// y = W x for `n_tok` rows of x: x (n_tok, cols) -> y (n_tok, rows), on all cores. `llama`: with the float
    /// numerics of llama.cpp's CPU backend (`quant::ggml_avx2`), else exact f32 products.
    fn apply(&self, x: &[f32], y: &mut [f32], n_tok: usize, llama: bool) {
        let (x, y) = (&x[..n_tok * self.cols], &mut y[..n_tok * self.rows]);
        if llama {
            quant::ggml_avx2::matmul(self.ty, self.data, self.rows, self.cols, x, y);
        } else if n_tok == 1 {
            quant::matvec(self.ty, self.data, self.rows, self.cols, x, y);
        } else {
            quant::matmul(self.ty, self.data, self.rows, self.cols, x, y);
        }
    }
}

/// A vector weight (norm, bias) as f32, checked to hold `len` elements.
fn vector(t: &TensorRef, len: usize) -> Result<Vec<f32>> {
    let n: u64 = t.dims.iter().product();
    if n != len as u64 {
        return Err(Error::Tensor {
            tensor: t.name.to_string(),
            msg: format!("dims {:?}, expected [{len}]", t.dims),
        });
    }
    let want = t.ggml_type.row_bytes(n).unwrap_or(u64::MAX);
    if t.data.len() as u64 != want {
        return Err(Error::Tensor {
            tensor: t.name.to_string(),
            msg: format!("{} bytes of data, expected {want}", t.data.len()),
        });
    }
    let mut out = vec![0.0; len];
    quant::dequantize_row(t.ggml_type, t.data, &mut out)?;
    Ok(out)
}

fn opt_vector(t: &Option<TensorRef>, len: usize) -> Result<Option<Vec<f32>>> {
    t.as_ref().map(|t| vector(t, len)).transpose()
}

/// One layer's weights and parameters.
pub struct Layer<'a> {
    /// Norms, biases and matrices (`LayerWeights`, shared with the device's `DevLayer`).
    pub w: LayerWeights<Vec<f32>, Mat<'a>>,
    /// RoPE base of this layer (gemma3's sliding-window layers use their own).
    pub rope_theta: f32,
    /// Positions are multiplied by this (1 / linear scaling factor).
    pub rope_freq_scale: f32,
    /// Sliding window of this layer's attention; None = global.
    pub window: Option<usize>,
}

/// Feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// silu(gate) * up: llama, qwen2.
    SwiGlu,
    /// gelu_tanh(gate) * up: gemma3.
    GeluTanh,
}

pub struct Model<'a> {
    pub config: ModelConfig,
    pub tensors: ModelTensors<'a>,
    pub token_embd: Mat<'a>, // (n_vocab, dim)
    pub output: Mat<'a>,     // (n_vocab, dim), the embedding when tied
    pub output_norm: Vec<f32>,
    pub layers: Vec<Layer<'a>>,
    /// Multiplies q.k in attention.
    pub attn_scale: f32,
    /// Gemma-3: the embedding is multiplied by sqrt(dim).
    pub embd_scale: Option<f32>,
    /// Final logit soft-capping (`{arch}.final_logit_softcapping`), when the model has it.
    pub final_softcap: Option<f32>,
    pub activation: Activation,
    pub rope_pairing: RopePairing,
    /// Llama 3.1 `rope_freqs.weight`: per-pair frequency divisors, rope_dim / 2 of them.
    pub rope_freqs: Option<Vec<f32>>,
    /// Phi-3 LongRoPE: the divisors for contexts longer than `config.rope_orig_ctx`, and for the others.
    pub rope_factors_long: Option<Vec<f32>>,
    pub rope_factors_short: Option<Vec<f32>>,
    /// q is multiplied by `attn_scale` before attention, which then scales by 1 (gemma3, phi3).
    pub q_prescale: bool,
}

impl<'a> Model<'a> {
    /// Read the config and the weights of `f`, checking every shape and type the forward relies on.
    pub fn load(f: &'a GgufFile) -> Result<Model<'a>> {
        let config = ModelConfig::from_gguf(f)?;
        let tensors = ModelTensors::from_gguf(f, &config)?;
        Self::new(f, config, tensors)
    }

    fn new(f: &'a GgufFile, c: ModelConfig, t: ModelTensors<'a>) -> Result<Model<'a>> {
        let cfg_err = |msg: String| Error::Config(msg);
        if c.n_heads == 0 || c.n_kv_heads == 0 || !c.n_heads.is_multiple_of(c.n_kv_heads) {
            return Err(cfg_err(format!(
                "head_count {} is not a multiple of head_count_kv {}",
                c.n_heads, c.n_kv_heads
            )));
        }
        if c.rope_dim > c.head_dim || !c.rope_dim.is_multiple_of(2) {
            return Err(cfg_err(format!(
                "rope dimension {} must be even and <= head dim {}",
                c.rope_dim, c.head_dim
            )));
        }
        if c.n_layers != t.layers.len() {
            return Err(cfg_err(format!(
                "block_count {} but {} layers of tensors",
                c.n_layers,
                t.layers.len()
            )));
        }
        let (dim, q_dim) = (c.dim, c.n_heads * c.head_dim);
        let (kv_dim, kv_dim_v, att_dim) = (
            c.n_kv_heads * c.head_dim,
            c.n_kv_heads * c.head_dim_v,
            c.n_heads * c.head_dim_v,
        );
        let token_embd = Mat::new(&t.token_embd, dim, None)?;
        let output = Mat::new(&t.output, dim, None)?;
        let arch_name = f.get_str("general.architecture").unwrap_or("");
        let final_softcap = f
            .get_f32(&format!("{arch_name}.final_logit_softcapping"))
            .ok()
            .filter(|&v| v > 0.0);
        let is_gemma = c.arch == Arch::Gemma3;
        let global_freq_scale = match c.rope_scaling {
            RopeScaling::None => 1.0,
            RopeScaling::Linear { factor } => 1.0 / factor,
        };
        let mut layers = Vec::with_capacity(c.n_layers);
        for (il, l) in t.layers.iter().enumerate() {
            // llama.cpp's gemma3: 5 sliding-window layers then one global layer, the local ones with their own
            // RoPE base and no scaling.
            let sliding = c.is_sliding_layer(il);
            let missing = |role: &str| Error::Tensor {
                tensor: format!("blk.{il}.{role}.weight"),
                msg: "required tensor is missing".into(),
            };
            // q, k, v: three tensors or row views of the fused one
            let (wq, wk, wv) = match (&l.attn_qkv, &l.attn_q, &l.attn_k, &l.attn_v) {
                (Some(qkv), ..) => {
                    let m = Mat::new(qkv, dim, Some(q_dim + kv_dim + kv_dim_v))?;
                    (m.rows_view(0, q_dim), m.rows_view(q_dim, kv_dim), m.rows_view(q_dim + kv_dim, kv_dim_v))
                }
                (None, Some(q), Some(k), Some(v)) => (
                    Mat::new(q, dim, Some(q_dim))?,
                    Mat::new(k, dim, Some(kv_dim))?,
                    Mat::new(v, dim, Some(kv_dim_v))?,
                ),
                _ => return Err(missing("attn_q")),
            };
            // gate and up: two tensors, or the two halves of `ffn_up` (gate first, as ggml's swiglu splits it)
            let (w_gate, w_up) = match &l.ffn_gate {
                Some(g) => (Mat::new(g, dim, Some(c.hidden_dim))?, Mat::new(&l.ffn_up, dim, Some(c.hidden_dim))?),
                None => {
                    let m = Mat::new(&l.ffn_up, dim, Some(2 * c.hidden_dim))?;
                    (m.rows_view(0, c.hidden_dim), m.rows_view(c.hidden_dim, c.hidden_dim))
                }
            };
            layers.push(Layer {
                w: LayerWeights {
                    attn_norm: vector(&l.attn_norm, dim)?,
                    wq,
                    wk,
                    wv,
                    wo: Mat::new(&l.attn_output, att_dim, Some(dim))?,
                    q_bias: opt_vector(&l.attn_q_bias, q_dim)?,
                    k_bias: opt_vector(&l.attn_k_bias, kv_dim)?,
                    v_bias: opt_vector(&l.attn_v_bias, kv_dim_v)?,
                    q_norm: opt_vector(&l.attn_q_norm, c.head_dim)?,
                    k_norm: opt_vector(&l.attn_k_norm, c.head_dim)?,
                    post_attn_norm: opt_vector(&l.post_attention_norm, dim)?,
                    ffn_norm: vector(&l.ffn_norm, dim)?,
                    w_gate,
                    w_up,
                    w_down: Mat::new(&l.ffn_down, c.hidden_dim, Some(dim))?,
                    post_ffw_norm: opt_vector(&l.post_ffw_norm, dim)?,
                },
                rope_theta: if sliding {
                    c.rope_theta_local
                } else {
                    c.rope_theta
                },
                rope_freq_scale: if sliding { 1.0 } else { global_freq_scale },
                window: if sliding { c.sliding_window } else { None },
            });
        }
        let half_rope = c.rope_dim / 2;
        let rope_freqs = opt_vector(&t.rope_freqs, half_rope)?;
        let rope_factors_long = opt_vector(&t.rope_factors_long, half_rope)?;
        let rope_factors_short = opt_vector(&t.rope_factors_short, half_rope)?;
        // llama.cpp: 1/sqrt(head_dim), except Gemma-3 27B (62 layers), which scales by 1/sqrt(dim / n_heads)
        // (its query_pre_attn_scalar).
        let attn_scale = if is_gemma && c.n_layers == 62 {
            1.0 / ((c.dim / c.n_heads) as f32).sqrt()
        } else {
            1.0 / (c.head_dim as f32).sqrt()
        };
        Ok(Model {
            token_embd,
            output,
            output_norm: vector(&t.output_norm, dim)?,
            layers,
            attn_scale,
            embd_scale: is_gemma.then(|| (c.dim as f32).sqrt()),
            final_softcap,
            activation: if is_gemma {
                Activation::GeluTanh
            } else {
                Activation::SwiGlu
            },
            rope_pairing: match c.rope_style {
                RopeStyle::Normal => RopePairing::Normal,
                RopeStyle::Neox => RopePairing::Neox,
            },
            rope_freqs,
            rope_factors_long,
            rope_factors_short,
            q_prescale: c.arch.scales_q_before_attention(),
            config: c,
            tensors: t,
        })
    }

    /// The per-pair RoPE frequency divisors a context of `ctx_size` positions uses: `rope_freqs`, or Phi-3's
    /// long factors when llama.cpp's context (`ctx_size` padded to 256) is longer than `rope_orig_ctx`, else its
    /// short ones (`llama_model::get_rope_factors`).
    pub fn rope_factors(&self, ctx_size: usize) -> Option<&[f32]> {
        if let Some(f) = &self.rope_freqs {
            return Some(f);
        }
        if ctx_size.next_multiple_of(256) > self.config.rope_orig_ctx {
            self.rope_factors_long.as_deref()
        } else {
            self.rope_factors_short.as_deref()
        }
    }

    /// Number of logits per position.
    pub fn n_vocab(&self) -> usize {
        self.output.rows
    }

    /// The KV cache this model needs for `ctx_size` positions.
    pub fn new_cache(&self, ctx_size: usize, ty: CacheType) -> Result<KvCache> {
        let c = &self.config;
        KvCache::new(
            c.n_layers,
            ctx_size,
            c.n_kv_heads * c.head_dim,
            c.n_kv_heads * c.head_dim_v,
            ty,
        )
    }

    /// Bytes of weight data, for the load message.
    pub fn weight_bytes(&self) -> usize {
        let mut n = self.token_embd.data.len();
        if !std::ptr::eq(self.output.data, self.token_embd.data) {
            n += self.output.data.len();
        }
        for l in &self.layers {
            n += [l.w.wq, l.w.wk, l.w.wv, l.w.wo, l.w.w_gate, l.w.w_up, l.w.w_down]
                .iter()
                .map(|m| m.data.len())
                .sum::<usize>();
        }
        n
    }
}

// ----------------------------------------------------------------------------
// CpuForward: the reference forward on all cores
// ----------------------------------------------------------------------------

/// Tokens per forward pass: longer prompts go through in chunks of this many, bounding the scratch memory.
pub const MAX_BATCH: usize = 512;

/// Activations of one batch, allocated for the largest batch seen and reused.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) x: Vec<f32>,    // (n, dim) residual stream
    pub(crate) xb: Vec<f32>,   // (n, dim) normed input of a sub-block
    pub(crate) q: Vec<f32>,    // (n, n_heads * head_dim)
    pub(crate) k: Vec<f32>,    // (n, n_kv_heads * head_dim)
    pub(crate) v: Vec<f32>,    // (n, n_kv_heads * head_dim_v)
    pub(crate) att: Vec<f32>,  // (n, n_heads * head_dim_v)
    pub(crate) o: Vec<f32>,    // (n, dim) output of a sub-block
    pub(crate) gate: Vec<f32>, // (n, hidden_dim)
    pub(crate) up: Vec<f32>,   // (n, hidden_dim)
    pub(crate) act: Vec<f32>,  // (n, hidden_dim)
}

impl Scratch {
    pub(crate) fn fit(&mut self, c: &ModelConfig, n: usize) {
        let fit = |v: &mut Vec<f32>, len: usize| {
            if v.len() < len {
                v.resize(len, 0.0)
            }
        };
        fit(&mut self.x, n * c.dim);
        fit(&mut self.xb, n * c.dim);
        fit(&mut self.q, n * c.n_heads * c.head_dim);
        fit(&mut self.k, n * c.n_kv_heads * c.head_dim);
        fit(&mut self.v, n * c.n_kv_heads * c.head_dim_v);
        fit(&mut self.att, n * c.n_heads * c.head_dim_v);
        fit(&mut self.o, n * c.dim);
        fit(&mut self.gate, n * c.hidden_dim);
        fit(&mut self.up, n * c.hidden_dim);
        fit(&mut self.act, n * c.hidden_dim);
    }
}

/// The single-sequence forward on the CPU: sequence 0 of a `CpuBatchForward` (the one CPU layer), fed in
/// chunks of at most `MAX_BATCH` tokens. With llama.cpp's numerics (default) its logits are bit-identical to
/// llama.cpp's CPU build.
pub struct CpuForward<'a> {
    inner: CpuBatchForward<'a>,
    logits: Vec<f32>, // (n_vocab,) of the last token
    batch: Batch,
}

/// The sequence id `CpuForward` runs.
const SEQ: SeqId = 0;

impl<'a> CpuForward<'a> {
    pub fn new(model: &'a Model<'a>, ctx_size: usize, cache_type: CacheType) -> Result<CpuForward<'a>> {
        let page = DEFAULT_PAGE_SIZE;
        let mut inner = CpuBatchForward::new(model, ctx_size.max(1).next_multiple_of(page), page, ctx_size, cache_type)?;
        inner.add_seq(SEQ)?;
        Ok(CpuForward { inner, logits: vec![0.0; model.n_vocab()], batch: Batch::new() })
    }

    /// Round activations like llama.cpp's CPU backend before each projection (on by default), or compute exact
    /// f32 products.
    pub fn set_llama_rounding(&mut self, on: bool) {
        self.inner.set_llama_rounding(on);
    }

    /// Positions cached.
    pub fn n_past(&self) -> usize {
        self.inner.seq_len(SEQ).unwrap_or(0)
    }

    /// `tokens` at `pos` (the cache cut back to `pos` first), in chunks; `all`: every token's logits returned,
    /// else only the last one's, kept in `self.logits`.
    fn run(&mut self, tokens: &[u32], pos: usize, all: bool) -> Result<Vec<f32>> {
        let n_past = self.n_past();
        check_batch(tokens, pos, self.inner.ctx_size(), n_past, self.logits.len())?;
        if pos < n_past {
            self.inner.truncate_seq(SEQ, pos)?;
        }
        let n_vocab = self.logits.len();
        let mut out = Vec::new();
        if all {
            out.try_reserve_exact(tokens.len() * n_vocab).map_err(|_| {
                Error::Generate(format!("cannot allocate logits for {} positions", tokens.len()))
            })?;
        }
        let mut p = pos;
        for chunk in tokens.chunks(MAX_BATCH) {
            let last_chunk = p + chunk.len() == pos + tokens.len();
            self.batch.clear();
            for (i, &t) in chunk.iter().enumerate() {
                self.batch.add(SEQ, t, p + i, all || (last_chunk && i + 1 == chunk.len()));
            }
            self.inner.decode(&self.batch)?;
            if all {
                for i in 0..chunk.len() {
                    out.extend_from_slice(self.inner.logits(i).expect("every row asked for logits"));
                }
            } else if last_chunk {
                self.logits.copy_from_slice(self.inner.logits(chunk.len() - 1).expect("the last row has logits"));
            }
            p += chunk.len();
        }
        Ok(out)
    }
}

impl Forward for CpuForward<'_> {
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<&[f32]> {
        self.run(tokens, pos, false)?;
        Ok(&self.logits)
    }

    fn forward_all(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
        self.run(tokens, pos, true)
    }

    fn reset(&mut self) {
        // positions are written before they are read (`check_batch` refuses gaps): forgetting them frees them
        let _ = self.inner.truncate_seq(SEQ, 0);
    }

    fn ctx_size(&self) -> usize {
        self.inner.ctx_size()
    }
}
