//! The whole forward pass on the GPU: weights uploaded once in their file format, the KV cache in device memory
//! (f16), every activation on the device. Mirrors `model::CpuForward` op for op, so the CPU path is its oracle.
//!
//! Decode steps read the token and its position from device memory, so one step can be captured into a CUDA
//! graph and replayed; with device-side greedy selection only the chosen token id crosses to the host.

use std::sync::Arc;

use cudarc::driver::{CudaGraph, CudaSlice};

use crate::backend::cpu::{self, RopeParams};
use crate::backend::cuda::{cuda_err, gpu_off, At, AttnScratch, AttnShape, Cuda, ATTN_CHUNK};
use crate::backend::cuda_mmq::supports_mmq;
use crate::backend::cuda_q8::{act_row_bytes, supports_fused, supports_q8, Prologue};
use crate::backend::cuda_sample::GpuSampler;
use crate::sampler::SamplingParams;
use crate::config::ModelConfig;
use crate::gguf::GgmlType;
use crate::model::{check_batch, Activation, Forward, Mat, Model, MAX_BATCH};
use crate::{Error, Result};

/// A weight matrix in device memory, still in its file format: its own buffer, or rows of a buffer it shares
/// with the matrices concatenated with it.
struct DevMat {
    ty: GgmlType,
    rows: usize, // output features
    cols: usize, // input features
    data: Arc<CudaSlice<u8>>,
    offset: usize, // bytes
}

impl DevMat {
    fn upload(gpu: &Cuda, m: &Mat) -> Result<DevMat> {
        Ok(DevMat { ty: m.ty, rows: m.rows, cols: m.cols, data: Arc::new(gpu.upload(m.data)?), offset: 0 })
    }

    /// `mats` as one matrix (their rows back to back: one mat-vec launch computes all their outputs) and as views
    /// into it, uploaded once; each on its own when they differ in type or width, or a part would start at an
    /// address that is not 16-byte aligned (the kernels' vector loads need it).
    fn concat(gpu: &Cuda, mats: &[&Mat]) -> Result<(Option<DevMat>, Vec<DevMat>)> {
        let (ty, cols) = (mats[0].ty, mats[0].cols);
        if mats.iter().any(|m| m.ty != ty || m.cols != cols || !m.data.len().is_multiple_of(16)) {
            return Ok((None, mats.iter().map(|m| DevMat::upload(gpu, m)).collect::<Result<_>>()?));
        }
        let bytes: Vec<u8> = mats.iter().flat_map(|m| m.data.iter().copied()).collect();
        let data = Arc::new(gpu.upload(&bytes)?);
        let mut offset = 0;
        let parts = mats
            .iter()
            .map(|m| {
                let d = DevMat { ty, rows: m.rows, cols, data: data.clone(), offset };
                offset += m.data.len();
                d
            })
            .collect();
        let rows = mats.iter().map(|m| m.rows).sum();
        Ok((Some(DevMat { ty, rows, cols, data, offset: 0 }), parts))
    }

    /// The weight bytes as the launchers take them.
    fn w(&self) -> At<'_, u8> {
        At(&self.data, self.offset)
    }

    /// y = W x for n_tok rows: x (n_tok, cols), y (n_tok, rows). With `xq` (scratch for n_tok quantized rows),
    /// the activations are quantized as llama.cpp quantizes them, so the GPU's numerics follow the CPU forward's:
    /// a single token goes through the `dp4a` mat-vec, a batch through the int8 tensor-core mat-mul, where the
    /// type has one; without `xq`, exact f32 products.
    fn apply(&self, gpu: &Cuda, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>, n_tok: usize,
             xq: Option<&mut CudaSlice<u8>>) -> Result<()> {
        let (w, ty) = (&self.w(), self.ty);
        match (n_tok, xq) {
            (1, Some(xq)) if supports_q8(ty) => {
                gpu.quantize_act(x, 1, self.cols, xq)?;
                gpu.matvec_q8(ty, w, self.rows, self.cols, xq, y)
            }
            (1, _) => gpu.matvec(ty, w, self.rows, self.cols, x, y),
            (_, Some(xq)) if supports_mmq(ty) => {
                gpu.quantize_act(x, n_tok, self.cols, xq)?;
                gpu.matmul_q8(ty, w, self.rows, self.cols, xq, n_tok, y)
            }
            _ => gpu.matmul(ty, w, self.rows, self.cols, x, n_tok, y),
        }
    }

    /// Whether one decode token can go through `matvec_q8_fused`.
    fn fusable(&self) -> bool {
        supports_fused(self.ty, self.cols)
    }

    /// y (+)= W act(src) for one decode token in one launch (`Cuda::matvec_q8_fused`).
    fn fused(&self, gpu: &Cuda, src: &CudaSlice<f32>, pro: Prologue, y: &mut CudaSlice<f32>, accumulate: bool) -> Result<()> {
        gpu.matvec_q8_fused(self.ty, &self.w(), self.rows, self.cols, src, pro, y, accumulate)
    }

    /// y (+)= W act(src) for one decode token on 8-bit activations (the type has a q8 kernel): one fused launch
    /// whose every block makes the activations itself, or, as `mode` decides for this weight, the activations
    /// made once by `act_prologue` into `xq` and then the plain mat-vec. Same numbers either way.
    #[allow(clippy::too_many_arguments)]
    fn project(&self, gpu: &Cuda, mode: MvPrologue, src: &CudaSlice<f32>, pro: Prologue, y: &mut CudaSlice<f32>,
               accumulate: bool, xq: &mut CudaSlice<u8>) -> Result<()> {
        if self.fusable() && !mode.once(self) {
            return self.fused(gpu, src, pro, y, accumulate);
        }
        gpu.act_prologue(src, pro, self.cols, xq)?;
        gpu.matvec_q8_acc(self.ty, &self.w(), self.rows, self.cols, xq, y, accumulate)
    }

    fn bytes(&self) -> usize {
        self.rows * self.ty.row_bytes(self.cols as u64).unwrap_or(0) as usize
    }
}

/// Where a decode mat-vec's 8-bit activations are made (`HOST_DECODE_PROLOGUE=fused|once|auto`, default auto):
/// by every block of the fused kernel (one launch; the norm is recomputed per block, which costs L2 reads that
/// grow with the grid), or once by `act_prologue` before the plain mat-vec (one more launch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MvPrologue {
    Fused,
    Once,
    /// Once for weights over `ONCE_ABOVE_BYTES`, fused below.
    Auto,
}

/// Auto: weights larger than this make their activations once.
const ONCE_ABOVE_BYTES: usize = 2 << 20;

impl MvPrologue {
    fn from_env() -> MvPrologue {
        match std::env::var("HOST_DECODE_PROLOGUE").as_deref() {
            Ok("fused") => MvPrologue::Fused,
            Ok("once") => MvPrologue::Once,
            _ => MvPrologue::Auto,
        }
    }

    fn once(self, w: &DevMat) -> bool {
        match self {
            MvPrologue::Fused => false,
            MvPrologue::Once => true,
            MvPrologue::Auto => w.bytes() > ONCE_ABOVE_BYTES,
        }
    }
}

/// One layer in device memory; norms and biases as f32.
struct DevLayer {
    attn_norm: CudaSlice<f32>,
    /// Decode path: [wq; wk; wv] and [w_gate; w_up] as single matrices (when their types agree), and the
    /// q/k/v biases concatenated likewise.
    wqkv: Option<DevMat>,
    w_gate_up: Option<DevMat>,
    qkv_bias: Option<CudaSlice<f32>>,
    wq: DevMat,
    wk: DevMat,
    wv: DevMat,
    wo: DevMat,
    q_bias: Option<CudaSlice<f32>>,
    k_bias: Option<CudaSlice<f32>>,
    v_bias: Option<CudaSlice<f32>>,
    q_norm: Option<CudaSlice<f32>>,
    k_norm: Option<CudaSlice<f32>>,
    post_attn_norm: Option<CudaSlice<f32>>,
    ffn_norm: CudaSlice<f32>,
    w_gate: DevMat,
    w_up: DevMat,
    w_down: DevMat,
    post_ffw_norm: Option<CudaSlice<f32>>,
    /// Index into `CudaForward::rope` of this layer's cos/sin table.
    rope: usize,
    window: usize, // 0 = global
    k_cache: CudaSlice<u16>, // (ctx, n_kv_heads * head_dim) f16
    v_cache: CudaSlice<u16>, // (ctx, n_kv_heads * head_dim_v) f16
}

/// cos/sin of every (position, pair) for one RoPE base and scale, computed by the CPU's own formula.
struct RopeTable {
    cos: CudaSlice<f32>, // (ctx, rope_dim / 2)
    sin: CudaSlice<f32>,
}

/// Activations of one batch of up to MAX_BATCH tokens.
struct Scratch {
    x: CudaSlice<f32>,    // (n, dim) residual stream
    xb: CudaSlice<f32>,   // (n, dim)
    q: CudaSlice<f32>,    // (n, n_heads * head_dim)
    k: CudaSlice<f32>,    // (n, n_kv_heads * head_dim)
    v: CudaSlice<f32>,    // (n, n_kv_heads * head_dim_v)
    att: CudaSlice<f32>,  // (n, n_heads * head_dim_v)
    o: CudaSlice<f32>,    // (n, dim)
    gate: CudaSlice<f32>, // (n, hidden_dim)
    up: CudaSlice<f32>,   // (n, hidden_dim)
    act: CudaSlice<f32>,  // (n, hidden_dim)
    attn: AttnScratch,    // attention split partials and counters
    qkv: CudaSlice<f32>,  // (q_dim + kv_dim + kv_dim_v,) one decode token's fused projection
    gate_up: CudaSlice<f32>, // (2 * hidden_dim,)
    xq: CudaSlice<u8>,       // (n, act_row_bytes(widest input)) quantized activation rows
    logits: CudaSlice<f32>, // (n_logit_rows, n_vocab)
}

/// Device memory the model needs, printed at load and checked against free memory first.
#[derive(Debug, Clone, Copy)]
pub struct MemoryPlan {
    pub weights: usize,
    pub kv_cache: usize,
    pub scratch: usize,
}

impl MemoryPlan {
    pub fn total(&self) -> usize {
        self.weights + self.kv_cache + self.scratch
    }
}

impl std::fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        write!(
            f,
            "weights {:.1} MiB + KV cache {:.1} MiB + scratch {:.1} MiB = {:.1} MiB",
            mib(self.weights),
            mib(self.kv_cache),
            mib(self.scratch),
            mib(self.total())
        )
    }
}

/// The memory plan for `model` with a context of `ctx_size`.
pub fn memory_plan(model: &Model, ctx_size: usize) -> MemoryPlan {
    let c = &model.config;
    let kv_cache = c.n_layers * ctx_size * c.n_kv_heads * (c.head_dim + c.head_dim_v) * 2;
    let n = MAX_BATCH;
    let per_tok = 3 * c.dim + c.n_heads * c.head_dim + c.n_kv_heads * (c.head_dim + c.head_dim_v)
        + c.n_heads * c.head_dim_v + 3 * c.hidden_dim;
    let attn = AttnScratch::bytes(&attn_shape(c, n, 1.0, 0), n_splits(ctx_size));
    let logits = n * model.n_vocab();
    let rope = model.layers.len().min(2) * ctx_size * c.rope_dim * 4;
    MemoryPlan { weights: model.weight_bytes(), kv_cache, scratch: (n * per_tok + logits) * 4 + n * xq_row_bytes(c) + attn + rope }
}

/// Bytes of one quantized activation row of the widest mat-mul input (dim, hidden_dim or the attention output).
fn xq_row_bytes(c: &ModelConfig) -> usize {
    act_row_bytes(c.dim.max(c.hidden_dim).max(c.n_heads * c.head_dim_v).next_multiple_of(256))
}

fn n_splits(n_keys: usize) -> usize {
    n_keys.div_ceil(ATTN_CHUNK).max(1)
}

fn attn_shape(c: &ModelConfig, n_tok: usize, scale: f32, window: usize) -> AttnShape {
    AttnShape {
        n_tok,
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        head_dim_v: c.head_dim_v,
        scale,
        window,
    }
}

pub struct CudaForward {
    gpu: Cuda,
    config: ModelConfig,
    n_vocab: usize,
    attn_scale: f32,
    embd_scale: Option<f32>,
    final_softcap: Option<f32>,
    activation: Activation,
    neox: bool,
    token_embd: DevMat,
    /// None: tied to the embedding.
    output: Option<DevMat>,
    output_norm: CudaSlice<f32>,
    layers: Vec<DevLayer>,
    rope: Vec<RopeTable>,
    s: Scratch,
    tokens: CudaSlice<u32>, // (MAX_BATCH,) ids of the batch; [0] is also the next decode input
    pos: CudaSlice<u32>,    // (1,) position of the batch's first token
    chosen: CudaSlice<u32>, // (1,) token chosen on the device
    logits_host: Vec<f32>,
    ctx_size: usize,
    n_past: usize,
    /// The captured decode steps, greedy and sampled (`Step`), built on first use.
    graphs: [Option<CudaGraph>; 2],
    /// The sampler of `start_device_sampling`, when the generation samples on the device.
    sampler: Option<GpuSampler>,
    /// (token, position) the device buffers hold after the last graph step, if nothing ran since.
    graph_next: Option<(u32, usize)>,
    /// Decode mat-vecs quantize their input to 8 bits like llama.cpp (dp4a kernels); off: exact f32 products.
    q8_activations: bool,
    /// Kernel paths that can be turned off for comparisons (`HOST_GPU_OFF=fused,mmq`): the fused decode layer
    /// (else one op per launch) and the tensor-core prefill mat-mul (else the f32 one).
    fused_decode: bool,
    mmq: bool,
    prologue: MvPrologue,
}

/// `DevMat::concat` of a fixed number of matrices.
fn concat_n<const N: usize>(gpu: &Cuda, mats: [&Mat; N]) -> Result<(Option<DevMat>, [DevMat; N])> {
    let (all, parts) = DevMat::concat(gpu, &mats)?;
    let parts: [DevMat; N] = parts.try_into().map_err(|_| Error::Generate("concat: part count".into()))?;
    Ok((all, parts))
}

fn upload_vec(gpu: &Cuda, v: &Option<Vec<f32>>) -> Result<Option<CudaSlice<f32>>> {
    v.as_ref().map(|v| gpu.upload(v)).transpose()
}

impl CudaForward {
    /// Upload `model` to CUDA device `ordinal` with a KV cache of `ctx_size` positions. Prints the memory plan
    /// to stderr and fails with the amount needed when the device has too little free memory.
    pub fn new(model: &Model, ctx_size: usize, ordinal: usize) -> Result<CudaForward> {
        let gpu = Cuda::new(ordinal)?;
        let c = model.config.clone();
        let plan = memory_plan(model, ctx_size);
        let (free, total) = gpu.ctx.mem_get_info().map_err(cuda_err("query free memory"))?;
        eprintln!("cuda: {} (device {ordinal}: {:.1} of {:.1} GiB free)", plan, gib(free), gib(total));
        // keep 256 MiB for the driver, the module and the graph
        if plan.total() + (256 << 20) > free {
            return Err(Error::Cuda {
                op: "load model".into(),
                msg: format!(
                    "out of device memory: need {:.2} GiB ({plan}) but only {:.2} GiB is free; lower --ctx-size or use --device cpu",
                    gib(plan.total()),
                    gib(free)
                ),
            });
        }

        // RoPE tables, one per distinct (base, scale), with the frequency divisors of this context size
        let rope_factors = model.rope_factors(ctx_size);
        let mut rope_keys: Vec<(f32, f32)> = Vec::new();
        let mut rope = Vec::new();
        let mut layers = Vec::with_capacity(model.layers.len());
        let (kv_dim, kv_dim_v) = (c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim_v);
        let n_steps = model.layers.len() as u64 + 1; // the layers, then the embedding and the output head
        let mut bar = crate::progress::Progress::new(n_steps, "uploading weights", crate::progress::Unit::Items);
        for l in &model.layers {
            let key = (l.rope_theta, l.rope_freq_scale);
            let ri = match rope_keys.iter().position(|k| *k == key) {
                Some(i) => i,
                None => {
                    let p = RopeParams {
                        head_dim: c.head_dim,
                        rope_dim: c.rope_dim,
                        theta_base: l.rope_theta,
                        freq_scale: l.rope_freq_scale,
                        pairing: model.rope_pairing,
                        freq_factors: rope_factors,
                        mscale: c.rope_attn_factor,
                    };
                    let (cos, sin) = cpu::rope_table(ctx_size, &p);
                    rope.push(RopeTable { cos: gpu.upload(&cos)?, sin: gpu.upload(&sin)? });
                    rope_keys.push(key);
                    rope.len() - 1
                }
            };
            let qkv_bias = match (&l.q_bias, &l.k_bias, &l.v_bias) {
                (Some(q), Some(k), Some(v)) => Some(gpu.upload(&[&q[..], &k[..], &v[..]].concat())?),
                _ => None,
            };
            let biases_fuse = qkv_bias.is_some() || (l.q_bias.is_none() && l.k_bias.is_none() && l.v_bias.is_none());
            let (wqkv, [wq, wk, wv]) = concat_n(&gpu, [&l.wq, &l.wk, &l.wv])?;
            let (w_gate_up, [w_gate, w_up]) = concat_n(&gpu, [&l.w_gate, &l.w_up])?;
            layers.push(DevLayer {
                attn_norm: gpu.upload(&l.attn_norm)?,
                wqkv: if biases_fuse { wqkv } else { None },
                w_gate_up,
                qkv_bias,
                wq,
                wk,
                wv,
                wo: DevMat::upload(&gpu, &l.wo)?,
                q_bias: upload_vec(&gpu, &l.q_bias)?,
                k_bias: upload_vec(&gpu, &l.k_bias)?,
                v_bias: upload_vec(&gpu, &l.v_bias)?,
                q_norm: upload_vec(&gpu, &l.q_norm)?,
                k_norm: upload_vec(&gpu, &l.k_norm)?,
                post_attn_norm: upload_vec(&gpu, &l.post_attn_norm)?,
                ffn_norm: gpu.upload(&l.ffn_norm)?,
                w_gate,
                w_up,
                w_down: DevMat::upload(&gpu, &l.w_down)?,
                post_ffw_norm: upload_vec(&gpu, &l.post_ffw_norm)?,
                rope: ri,
                window: l.window.unwrap_or(0),
                k_cache: gpu.zeros(ctx_size * kv_dim)?,
                v_cache: gpu.zeros(ctx_size * kv_dim_v)?,
            });
            bar.inc(1);
        }
        let token_embd = DevMat::upload(&gpu, &model.token_embd)?;
        let tied = std::ptr::eq(model.output.data, model.token_embd.data);
        let output = if tied { None } else { Some(DevMat::upload(&gpu, &model.output)?) };
        bar.finish();

        let n = MAX_BATCH;
        let n_vocab = model.n_vocab();
        let s = Scratch {
            x: gpu.zeros(n * c.dim)?,
            xb: gpu.zeros(n * c.dim)?,
            q: gpu.zeros(n * c.n_heads * c.head_dim)?,
            k: gpu.zeros(n * kv_dim)?,
            v: gpu.zeros(n * kv_dim_v)?,
            att: gpu.zeros(n * c.n_heads * c.head_dim_v)?,
            o: gpu.zeros(n * c.dim)?,
            gate: gpu.zeros(n * c.hidden_dim)?,
            up: gpu.zeros(n * c.hidden_dim)?,
            act: gpu.zeros(n * c.hidden_dim)?,
            attn: AttnScratch::new(&gpu, &attn_shape(&c, n, 1.0, 0), n_splits(ctx_size))?,
            qkv: gpu.zeros(c.n_heads * c.head_dim + kv_dim + kv_dim_v)?,
            gate_up: gpu.zeros(2 * c.hidden_dim)?,
            xq: gpu.zeros(n * xq_row_bytes(&c))?,
            logits: gpu.zeros(n * n_vocab)?,
        };
        Ok(CudaForward {
            n_vocab,
            attn_scale: model.attn_scale,
            embd_scale: model.embd_scale,
            final_softcap: model.final_softcap,
            activation: model.activation,
            neox: model.rope_pairing == cpu::RopePairing::Neox,
            token_embd,
            output,
            output_norm: gpu.upload(&model.output_norm)?,
            layers,
            rope,
            s,
            tokens: gpu.zeros(n)?,
            pos: gpu.zeros(1)?,
            chosen: gpu.zeros(1)?,
            logits_host: vec![0.0; n_vocab],
            ctx_size,
            n_past: 0,
            graphs: [None, None],
            sampler: None,
            q8_activations: true,
            fused_decode: !gpu_off("fused"),
            mmq: !gpu_off("mmq"),
            prologue: MvPrologue::from_env(),
            graph_next: None,
            config: c,
            gpu,
        })
    }

    /// Exact f32 products in every mat-vec (the oracle mode the CPU's `set_llama_rounding(false)` matches), or
    /// llama.cpp's 8-bit activations in the decode mat-vecs (the default).
    pub fn set_q8_activations(&mut self, on: bool) {
        self.q8_activations = on;
        self.graphs = [None, None];
    }

    /// The CUDA context and stream (for benchmarks and tests).
    pub fn gpu(&self) -> &Cuda {
        &self.gpu
    }

    fn check(&self, tokens: &[u32], pos: usize) -> Result<()> {
        check_batch(tokens, pos, self.ctx_size, self.n_past, self.token_embd.rows)
    }

    /// Every layer for the batch whose ids are in `self.tokens[..n]` at device position `self.pos`;
    /// `pos_host` is the same position, for the launchers' bounds checks and the number of attention splits
    /// (`n_keys_max` keys are covered: the context size when captured into a graph).
    fn layers(&mut self, n: usize, pos_host: usize, n_keys_max: usize) -> Result<()> {
        let (g, c, s) = (&self.gpu, &self.config, &mut self.s);
        let e = &self.token_embd;
        g.embed(e.ty, &e.data, e.rows, e.cols, &self.tokens, n, &mut s.x)?;
        if let Some(sc) = self.embd_scale {
            g.scale_rows(&mut s.x, sc, n * c.dim)?;
        }
        let ctx = LayerCtx {
            g,
            c,
            pos: &self.pos,
            pos_host,
            splits: n_splits(n_keys_max),
            attn_scale: self.attn_scale,
            neox: self.neox,
            activation: self.activation,
            q8: self.q8_activations,
            mmq: self.mmq,
            prologue: self.prologue,
        };
        for l in &mut self.layers {
            let rt = &self.rope[l.rope];
            if n == 1 && ctx.q8 && self.fused_decode && l.wqkv.is_some() && l.w_gate_up.is_some() {
                decode_layer(&ctx, s, l, rt)?;
            } else {
                batch_layer(&ctx, s, l, rt, n)?;
            }
        }
        Ok(())
    }

    /// Final norm and output projection of rows `first..first + rows` of `s.x` into `s.logits[..rows]`.
    fn head(&mut self, first: usize, rows: usize) -> Result<()> {
        let (g, c, s) = (&self.gpu, &self.config, &mut self.s);
        let dim = c.dim;
        let out = self.output.as_ref().unwrap_or(&self.token_embd);
        if (first, rows, self.q8_activations, supports_q8(out.ty)) == (0, 1, true, true) {
            let pro = Prologue::RmsNorm(&self.output_norm, c.rms_eps);
            out.project(g, self.prologue, &s.x, pro, &mut s.logits, false, &mut s.xq)?;
        } else {
            g.copy_rows(&mut s.xb, &s.x, first * dim, rows * dim)?;
            g.rmsnorm_inplace_rows(&s.xb, &self.output_norm, rows, dim, c.rms_eps)?;
            out.apply(g, &s.xb, &mut s.logits, rows, self.q8_activations.then_some(&mut s.xq))?;
        }
        if let Some(cap) = self.final_softcap {
            g.softcap_rows(&mut s.logits, cap, rows * self.n_vocab)?;
        }
        Ok(())
    }

    /// Upload a batch's ids and position (prefill and the first decode step; graphs reuse the device values).
    fn set_batch(&mut self, tokens: &[u32], pos: usize) -> Result<()> {
        self.graph_next = None;
        let mut tv = self.tokens.slice_mut(..tokens.len());
        self.gpu.stream.memcpy_htod(tokens, &mut tv).map_err(cuda_err("upload token ids"))?;
        self.gpu.stream.memcpy_htod(&[pos as u32], &mut self.pos).map_err(cuda_err("upload position"))?;
        Ok(())
    }

    fn run(&mut self, tokens: &[u32], pos: usize, all: bool) -> Result<Vec<f32>> {
        self.check(tokens, pos)?;
        let mut out = Vec::new();
        let mut p = pos;
        for chunk in tokens.chunks(MAX_BATCH) {
            self.set_batch(chunk, p)?;
            self.layers(chunk.len(), p, p + chunk.len())?;
            p += chunk.len();
            self.n_past = p;
            if all {
                self.head(0, chunk.len())?;
                let v = self.s.logits.slice(..chunk.len() * self.n_vocab);
                out.extend(self.gpu.stream.clone_dtoh(&v).map_err(cuda_err("download logits"))?);
            } else if p == pos + tokens.len() {
                self.head(chunk.len() - 1, 1)?;
            }
        }
        Ok(out)
    }

    /// Greedy decode step on the device: the token in `tokens[0]` at position `pos` (both already on the
    /// device, as the previous step left them) runs through a captured CUDA graph that ends by writing the
    /// argmax into `tokens[0]` and advancing `pos`; only that id is copied back.
    pub fn greedy_step(&mut self, token: u32, pos: usize) -> Result<u32> {
        self.graph_step(token, pos, Step::Greedy)
    }

    /// As `greedy_step`, the token drawn by the device sampler set up by `start_device_sampling`.
    pub fn sampled_step(&mut self, token: u32, pos: usize) -> Result<u32> {
        if self.sampler.is_none() {
            return Err(Error::Generate("sampled decode step without a device sampler".into()));
        }
        self.graph_step(token, pos, Step::Sampled)
    }

    fn graph_step(&mut self, token: u32, pos: usize, step: Step) -> Result<u32> {
        self.check(&[token], pos)?;
        // The device holds this step's token and position only when the previous call was a graph step that
        // chose exactly this token at the previous position; otherwise (after a prefill, a reset, or a token
        // chosen elsewhere) upload them.
        if self.graph_next != Some((token, pos)) {
            self.set_batch(&[token], pos)?;
        }
        let slot = step as usize;
        if self.graphs[slot].is_none() {
            self.graphs[slot] = Some(self.capture_decode(step)?);
        }
        self.graphs[slot].as_ref().expect("captured above").launch().map_err(cuda_err("launch decode graph"))?;
        self.n_past = pos + 1;
        let id = self.gpu.stream.clone_dtoh(&self.chosen).map_err(cuda_err("download token id"))?[0];
        self.graph_next = Some((id, pos + 1));
        Ok(id)
    }

    /// Capture one decode step (every launch reads the token and position from device memory, attention covers
    /// the whole context) that ends by choosing the next token on the device, into a graph.
    fn capture_decode(&mut self, step: Step) -> Result<CudaGraph> {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        let stream = self.gpu.stream.clone();
        stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(cuda_err("begin graph capture"))?;
        let body = (|| -> Result<()> {
            self.layers(1, 0, self.ctx_size)?;
            self.head(0, 1)?;
            self.choose(step)?;
            self.gpu.advance_pos(&mut self.pos)
        })();
        let graph = stream.end_capture(CUgraphInstantiate_flags(0)).map_err(cuda_err("end graph capture"));
        body?;
        graph?.ok_or_else(|| Error::Cuda { op: "capture decode graph".into(), msg: "empty graph".into() })
    }

    /// The next token from the logits in `s.logits[..n_vocab]`, into `chosen` and `tokens[0]`.
    fn choose(&mut self, step: Step) -> Result<()> {
        match (step, &mut self.sampler) {
            (Step::Greedy, _) => self.gpu.argmax(&self.s.logits, self.n_vocab, &mut self.chosen, Some(&mut self.tokens)),
            (Step::Sampled, Some(smp)) => smp.sample(&self.gpu, &self.s.logits, &mut self.chosen, Some(&mut self.tokens)),
            (Step::Sampled, None) => Err(Error::Generate("no device sampler".into())),
        }
    }
}

/// How a decode step chooses its next token on the device.
#[derive(Clone, Copy)]
enum Step {
    Greedy = 0,
    Sampled = 1,
}

/// What every layer of one forward call shares.
struct LayerCtx<'a> {
    g: &'a Cuda,
    c: &'a ModelConfig,
    pos: &'a CudaSlice<u32>,
    pos_host: usize,
    splits: usize,
    attn_scale: f32,
    neox: bool,
    activation: Activation,
    q8: bool,
    /// Batches may use the int8 tensor-core mat-mul (with q8).
    mmq: bool,
    prologue: MvPrologue,
}

impl LayerCtx<'_> {
    /// The quantized-activation scratch for a mat-mul of `n` tokens when 8-bit activations apply to it, else
    /// None (exact f32 products).
    fn xq<'s>(&self, xq: &'s mut CudaSlice<u8>, n: usize) -> Option<&'s mut CudaSlice<u8>> {
        (self.q8 && (n == 1 || self.mmq)).then_some(xq)
    }
}

/// One layer for a batch of `n` tokens in `s.x`, one op per launch (the prefill path, and the exact-f32 oracle
/// mode for single tokens).
fn batch_layer(x: &LayerCtx, s: &mut Scratch, l: &mut DevLayer, rt: &RopeTable, n: usize) -> Result<()> {
    let (g, c) = (x.g, x.c);
    let (dim, eps) = (c.dim, c.rms_eps);
    let (kv_dim, kv_dim_v) = (c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim_v);
    // ---- attention ----
    g.rmsnorm_rows(&mut s.xb, &s.x, &l.attn_norm, n, dim, eps)?;
    l.wq.apply(g, &s.xb, &mut s.q, n, x.xq(&mut s.xq, n))?;
    l.wk.apply(g, &s.xb, &mut s.k, n, x.xq(&mut s.xq, n))?;
    l.wv.apply(g, &s.xb, &mut s.v, n, x.xq(&mut s.xq, n))?;
    for (b, y) in [(&l.q_bias, &mut s.q), (&l.k_bias, &mut s.k), (&l.v_bias, &mut s.v)] {
        if let Some(b) = b {
            g.add_bias_rows(y, b, n)?;
        }
    }
    if let Some(w) = &l.q_norm {
        g.rmsnorm_inplace_rows(&s.q, w, n * c.n_heads, c.head_dim, eps)?;
    }
    if let Some(w) = &l.k_norm {
        g.rmsnorm_inplace_rows(&s.k, w, n * c.n_kv_heads, c.head_dim, eps)?;
    }
    g.rope_rows(&s.q, n, c.n_heads, c.head_dim, c.rope_dim, x.neox, &rt.cos, &rt.sin, x.pos, x.pos_host)?;
    g.rope_rows(&s.k, n, c.n_kv_heads, c.head_dim, c.rope_dim, x.neox, &rt.cos, &rt.sin, x.pos, x.pos_host)?;
    g.kv_store_rows(&mut l.k_cache, &s.k, n, kv_dim, x.pos, x.pos_host)?;
    g.kv_store_rows(&mut l.v_cache, &s.v, n, kv_dim_v, x.pos, x.pos_host)?;
    let shape = attn_shape(c, n, x.attn_scale, l.window);
    g.attention_rows(&mut s.att, &s.q, &l.k_cache, &l.v_cache, &mut s.attn, &shape, x.splits, x.pos, x.pos_host)?;
    l.wo.apply(g, &s.att, &mut s.o, n, x.xq(&mut s.xq, n))?;
    if let Some(w) = &l.post_attn_norm {
        g.rmsnorm_inplace_rows(&s.o, w, n, dim, eps)?;
    }
    g.add_inplace_rows(&mut s.x, &s.o, n * dim)?;

    // ---- feed-forward ----
    g.rmsnorm_rows(&mut s.xb, &s.x, &l.ffn_norm, n, dim, eps)?;
    l.w_gate.apply(g, &s.xb, &mut s.gate, n, x.xq(&mut s.xq, n))?;
    l.w_up.apply(g, &s.xb, &mut s.up, n, x.xq(&mut s.xq, n))?;
    let hn = n * c.hidden_dim;
    match x.activation {
        Activation::SwiGlu => g.swiglu_rows(&mut s.act, &s.gate, &s.up, hn)?,
        Activation::GeluTanh => g.gelu_tanh_mul_rows(&mut s.act, &s.gate, &s.up, hn)?,
    }
    l.w_down.apply(g, &s.act, &mut s.o, n, x.xq(&mut s.xq, n))?;
    if let Some(w) = &l.post_ffw_norm {
        g.rmsnorm_inplace_rows(&s.o, w, n, dim, eps)?;
    }
    g.add_inplace_rows(&mut s.x, &s.o, n * dim)
}

/// One layer for one decode token on 8-bit activations, in as few launches as the weights allow: each mat-vec
/// makes its own input (norm, gating, quantization) and adds its output to the residual stream itself
/// (`matvec_q8_fused`), q, k and v come from one mat-vec, as do gate and up. A weight the fused kernel cannot
/// take goes through the separate ops.
fn decode_layer(x: &LayerCtx, s: &mut Scratch, l: &mut DevLayer, rt: &RopeTable) -> Result<()> {
    let (g, c) = (x.g, x.c);
    let eps = c.rms_eps;
    let (wqkv, wgu) = (l.wqkv.as_ref().expect("checked by caller"), l.w_gate_up.as_ref().expect("checked by caller"));

    // ---- attention ----
    norm_proj(x, s, wqkv, &l.attn_norm, Out::Qkv)?;
    if let Some(b) = &l.qkv_bias {
        g.add_bias_rows(&mut s.qkv, b, 1)?;
    }
    let shape = attn_shape(c, 1, x.attn_scale, l.window);
    g.rope_store_decode(&s.qkv, &mut l.k_cache, &mut l.v_cache, &shape, c.rope_dim, x.neox, &rt.cos, &rt.sin, x.pos,
                        x.pos_host, l.q_norm.as_ref(), l.k_norm.as_ref(), eps)?;
    g.attention_rows(&mut s.att, &s.qkv, &l.k_cache, &l.v_cache, &mut s.attn, &shape, x.splits, x.pos, x.pos_host)?;
    residual_proj(x, &l.wo, ProjInput::Attention, l.post_attn_norm.as_ref(), s)?;

    // ---- feed-forward ----
    norm_proj(x, s, wgu, &l.ffn_norm, Out::GateUp)?;
    residual_proj(x, &l.w_down, ProjInput::Gated(x.activation), l.post_ffw_norm.as_ref(), s)
}

/// Which scratch vector a normed projection writes.
#[derive(Clone, Copy)]
enum Out {
    Qkv,
    GateUp,
}

/// out = W (nw * rmsnorm(x)) for one decode token: on 8-bit activations where the type has a kernel for them
/// (`DevMat::project`), else through the separate norm and the f32 mat-vec.
fn norm_proj(x: &LayerCtx, s: &mut Scratch, w: &DevMat, nw: &CudaSlice<f32>, out: Out) -> Result<()> {
    let (g, eps) = (x.g, x.c.rms_eps);
    let Scratch { x: res, xb, xq, qkv, gate_up, .. } = s;
    let y = match out {
        Out::Qkv => qkv,
        Out::GateUp => gate_up,
    };
    if supports_q8(w.ty) {
        return w.project(g, x.prologue, res, Prologue::RmsNorm(nw, eps), y, false, xq);
    }
    g.rmsnorm_rows(xb, res, nw, 1, x.c.dim, eps)?;
    w.apply(g, xb, y, 1, Some(xq))
}

/// The input of a projection that ends in the residual stream.
#[derive(Clone, Copy)]
enum ProjInput {
    /// `s.att`, the attention output.
    Attention,
    /// The gated activation of `s.gate_up`.
    Gated(Activation),
}

/// x += [post_norm](W input) for one decode token: the activation made and the sum added by the mat-vec itself
/// where the type has an 8-bit kernel and no norm follows (`DevMat::project`), else through `s.o` (and `s.act`
/// for the gated input).
fn residual_proj(x: &LayerCtx, w: &DevMat, input: ProjInput, post_norm: Option<&CudaSlice<f32>>, s: &mut Scratch)
                 -> Result<()> {
    let (g, eps) = (x.g, x.c.rms_eps);
    let Scratch { x: res, o, act, xq, att, gate_up, .. } = s;
    let (src, pro) = match input {
        ProjInput::Attention => (&*att, Prologue::Quantize),
        ProjInput::Gated(Activation::SwiGlu) => (&*gate_up, Prologue::SwiGlu),
        ProjInput::Gated(Activation::GeluTanh) => (&*gate_up, Prologue::GeluTanh),
    };
    let dim = w.rows;
    if supports_q8(w.ty) {
        if post_norm.is_none() {
            return w.project(g, x.prologue, src, pro, res, true, xq);
        }
        w.project(g, x.prologue, src, pro, o, false, xq)?;
    } else {
        let input = match input {
            ProjInput::Gated(a) => {
                let up = At(src, w.cols);
                match a {
                    Activation::SwiGlu => g.swiglu_rows(act, src, &up, w.cols)?,
                    Activation::GeluTanh => g.gelu_tanh_mul_rows(act, src, &up, w.cols)?,
                }
                &*act
            }
            ProjInput::Attention => src,
        };
        w.apply(g, input, o, 1, Some(xq))?;
    }
    if let Some(nw) = post_norm {
        g.rmsnorm_inplace_rows(&*o, nw, 1, dim, eps)?;
    }
    g.add_inplace_rows(res, o, dim)
}

fn gib(b: usize) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

impl Forward for CudaForward {
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<&[f32]> {
        self.run(tokens, pos, false)?;
        let v = self.s.logits.slice(..self.n_vocab);
        self.gpu.stream.memcpy_dtoh(&v, &mut self.logits_host).map_err(cuda_err("download logits"))?;
        Ok(&self.logits_host)
    }

    fn forward_all(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
        self.run(tokens, pos, true)
    }

    fn decode_greedy(&mut self, token: u32, pos: usize) -> Result<Option<u32>> {
        self.greedy_step(token, pos).map(Some)
    }

    fn start_device_sampling(&mut self, params: &SamplingParams, prompt: &[u32]) -> Result<bool> {
        if GpuSampler::supports(params, self.n_vocab).is_err() {
            return Ok(false);
        }
        let mut smp = GpuSampler::new(&self.gpu, params, self.n_vocab)?;
        smp.accept_prompt(&self.gpu, prompt)?;
        self.sampler = Some(smp);
        self.graphs[Step::Sampled as usize] = None; // the captured step launched the previous sampler
        Ok(true)
    }

    fn sample_next(&mut self) -> Result<Option<u32>> {
        if self.sampler.is_none() {
            return Ok(None);
        }
        self.choose(Step::Sampled)?;
        self.graph_next = None; // the device position is the batch's, not the next token's
        Ok(Some(self.gpu.stream.clone_dtoh(&self.chosen).map_err(cuda_err("download token id"))?[0]))
    }

    fn decode_sampled(&mut self, token: u32, pos: usize) -> Result<Option<u32>> {
        if self.sampler.is_none() {
            return Ok(None);
        }
        self.sampled_step(token, pos).map(Some)
    }

    fn reset(&mut self) {
        self.n_past = 0;
        self.graph_next = None;
    }

    fn ctx_size(&self) -> usize {
        self.ctx_size
    }

    fn synchronize(&self) -> Result<()> {
        self.gpu.synchronize()
    }
}
