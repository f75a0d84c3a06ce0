//! The whole forward pass on the GPU: weights uploaded once in their file format, the KV cache in device memory
//! (f16, or q8_0 blocks: `--cache-type`), every activation on the device. Mirrors `model::CpuForward` op for op,
//! so the CPU path is its oracle.
//!
//! Decode steps read the token and its position from device memory, so one step can be captured into a CUDA
//! graph and replayed; with device-side greedy selection only the chosen token id crosses to the host.

use std::sync::Arc;

use cudarc::driver::{CudaGraph, CudaSlice};

use crate::backend::cuda::{check_cache_type, cuda_err, gpu_off, kv_row_bytes, At, AttnScratch, AttnShape, Cuda, DevKv,
                           ATTN_CHUNK};
use crate::backend::cuda_q8::{act_row_bytes, supports_q8, Prologue};
use crate::backend::cuda_weights::{DevLayer, DevMat, DevWeights, MvPrologue, RopeTable};
use crate::backend::cuda_sample::GpuSampler;
use crate::sampler::SamplingParams;
use crate::config::ModelConfig;
use crate::kv_cache::CacheType;
use crate::layer::{self, steps, Buf, LayerOps, Part, Proj};
use crate::model::{check_batch, Activation, Forward, Model, MAX_BATCH};
use crate::{Error, Result};

/// One layer's KV cache (f16 or q8_0, contiguous).
struct LayerKv {
    k_cache: DevKv, // (ctx, n_kv_heads * head_dim) f16 or q8_0
    v_cache: DevKv, // (ctx, n_kv_heads * head_dim_v) f16 or q8_0
}

/// Activations of one batch of up to MAX_BATCH tokens (of `CudaForward`; `CudaBatchForward` sizes its own).
pub(crate) struct Scratch {
    pub(crate) x: CudaSlice<f32>,    // (n, dim) residual stream
    pub(crate) xb: CudaSlice<f32>,   // (n, dim)
    pub(crate) q: CudaSlice<f32>,    // (n, n_heads * head_dim)
    pub(crate) k: CudaSlice<f32>,    // (n, n_kv_heads * head_dim)
    pub(crate) v: CudaSlice<f32>,    // (n, n_kv_heads * head_dim_v)
    pub(crate) att: CudaSlice<f32>,  // (n, n_heads * head_dim_v)
    pub(crate) o: CudaSlice<f32>,    // (n, dim)
    pub(crate) gate: CudaSlice<f32>, // (n, hidden_dim)
    pub(crate) up: CudaSlice<f32>,   // (n, hidden_dim)
    pub(crate) act: CudaSlice<f32>,  // (n, hidden_dim)
    pub(crate) attn: AttnScratch,    // attention split partials and counters
    pub(crate) qkv: CudaSlice<f32>,  // (q_dim + kv_dim + kv_dim_v,) one decode token's fused projection
    pub(crate) gate_up: CudaSlice<f32>, // (2 * hidden_dim,)
    pub(crate) xq: CudaSlice<u8>,       // (n, act_row_bytes(widest input)) quantized activation rows
    pub(crate) logits: CudaSlice<f32>, // (n_logit_rows, n_vocab)
}

impl Scratch {
    /// Activations for batches of up to `n` tokens, `n_logits` rows of logits, attention over `splits` chunks.
    pub(crate) fn new(gpu: &Cuda, c: &ModelConfig, n: usize, n_logits: usize, n_vocab: usize, splits: usize)
                      -> Result<Scratch> {
        let (kv_dim, kv_dim_v) = (c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim_v);
        Ok(Scratch {
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
            attn: AttnScratch::new(gpu, &attn_shape(c, n, 1.0, 0), splits)?,
            qkv: gpu.zeros(c.n_heads * c.head_dim + kv_dim + kv_dim_v)?,
            gate_up: gpu.zeros(2 * c.hidden_dim)?,
            xq: gpu.zeros(n * xq_row_bytes(c))?,
            logits: gpu.zeros(n_logits * n_vocab)?,
        })
    }
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

/// The memory plan for `model` with a context of `ctx_size` and an f16 KV cache.
pub fn memory_plan(model: &Model, ctx_size: usize) -> MemoryPlan {
    memory_plan_with(model, ctx_size, CacheType::F16)
}

/// The memory plan for `model` with a context of `ctx_size` and a KV cache of `cache` elements.
pub fn memory_plan_with(model: &Model, ctx_size: usize, cache: CacheType) -> MemoryPlan {
    let c = &model.config;
    let (kv_dim, kv_dim_v) = (c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim_v);
    let kv_cache = c.n_layers * ctx_size * (kv_row_bytes(cache, kv_dim) + kv_row_bytes(cache, kv_dim_v));
    let n = MAX_BATCH;
    let per_tok = 3 * c.dim + c.n_heads * c.head_dim + c.n_kv_heads * (c.head_dim + c.head_dim_v)
        + c.n_heads * c.head_dim_v + 3 * c.hidden_dim;
    let attn = AttnScratch::bytes(&attn_shape(c, n, 1.0, 0), n_splits(ctx_size));
    let logits = n * model.n_vocab();
    let rope = model.layers.len().min(2) * ctx_size * c.rope_dim * 4;
    MemoryPlan { weights: model.weight_bytes(), kv_cache, scratch: (n * per_tok + logits) * 4 + n * xq_row_bytes(c) + attn + rope }
}

/// Bytes of one quantized activation row of the widest mat-mul input (dim, hidden_dim or the attention output).
pub(crate) fn xq_row_bytes(c: &ModelConfig) -> usize {
    act_row_bytes(c.dim.max(c.hidden_dim).max(c.n_heads * c.head_dim_v).next_multiple_of(256))
}

pub(crate) fn n_splits(n_keys: usize) -> usize {
    n_keys.div_ceil(ATTN_CHUNK).max(1)
}

pub(crate) fn attn_shape(c: &ModelConfig, n_tok: usize, scale: f32, window: usize) -> AttnShape {
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
    gpu: Arc<Cuda>,
    config: ModelConfig,
    n_vocab: usize,
    attn_scale: f32,
    embd_scale: Option<f32>,
    final_softcap: Option<f32>,
    activation: Activation,
    neox: bool,
    /// The weights (shareable with a `CudaBatchForward`) and this forward's own KV cache per layer.
    w: Arc<DevWeights>,
    kv: Vec<LayerKv>,
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

impl CudaForward {
    /// Upload `model` to CUDA device `ordinal` with an f16 KV cache of `ctx_size` positions (`new_with_cache`).
    pub fn new(model: &Model, ctx_size: usize, ordinal: usize) -> Result<CudaForward> {
        Self::new_with_cache(model, ctx_size, ordinal, CacheType::F16)
    }

    /// Upload `model` to CUDA device `ordinal` with a KV cache of `ctx_size` positions of `cache` elements (f16
    /// or q8_0; a q8_0 cache needs head dims that are multiples of 32). Prints the memory plan to stderr and fails
    /// with the amount needed when the device has too little free memory.
    pub fn new_with_cache(model: &Model, ctx_size: usize, ordinal: usize, cache: CacheType) -> Result<CudaForward> {
        check_cache_type(cache, model.config.head_dim, model.config.head_dim_v)?;
        let gpu = Cuda::new(ordinal)?;
        let c = model.config.clone();
        let plan = memory_plan_with(model, ctx_size, cache);
        let (free, total) = gpu.ctx.mem_get_info().map_err(cuda_err("query free memory"))?;
        let ty = cache.name();
        eprintln!("cuda: {} ({ty} KV cache; device {ordinal}: {:.1} of {:.1} GiB free)", plan, gib(free), gib(total));
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

        let w = Arc::new(DevWeights::upload(&gpu, model, ctx_size)?);
        let (kv_dim, kv_dim_v) = (c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim_v);
        let kv = (0..model.layers.len())
            .map(|_| {
                Ok(LayerKv {
                    k_cache: DevKv::new(&gpu, cache, ctx_size, kv_dim)?,
                    v_cache: DevKv::new(&gpu, cache, ctx_size, kv_dim_v)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;

        let n = MAX_BATCH;
        let n_vocab = model.n_vocab();
        let s = Scratch::new(&gpu, &c, n, n, n_vocab, n_splits(ctx_size))?;
        Ok(CudaForward {
            n_vocab,
            attn_scale: model.attn_scale,
            embd_scale: model.embd_scale,
            final_softcap: model.final_softcap,
            activation: model.activation,
            neox: w.neox,
            w,
            kv,
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
            gpu: Arc::new(gpu),
        })
    }

    /// Exact f32 products in every mat-vec (the oracle mode the CPU's `set_llama_rounding(false)` matches), or
    /// llama.cpp's 8-bit activations in the decode mat-vecs (the default).
    pub fn set_q8_activations(&mut self, on: bool) {
        self.q8_activations = on;
        self.graphs = [None, None];
    }

    /// A batch forward of many sequences (`CudaBatchForward`) on this forward's device and stream, reading the
    /// same uploaded weights, with its own paged cache of `capacity` positions, each sequence reaching at most
    /// `ctx_size` (at most this forward's).
    pub fn batch_forward(&self, capacity: usize, ctx_size: usize) -> Result<crate::backend::cuda_batch::CudaBatchForward> {
        crate::backend::cuda_batch::CudaBatchForward::with_weights(self.gpu.clone(), self.w.clone(), capacity, ctx_size)
    }

    /// The CUDA context and stream (for benchmarks and tests).
    pub fn gpu(&self) -> &Cuda {
        &self.gpu
    }

    fn check(&self, tokens: &[u32], pos: usize) -> Result<()> {
        check_batch(tokens, pos, self.ctx_size, self.n_past, self.w.token_embd.rows)
    }

    /// Every layer for the batch whose ids are in `self.tokens[..n]` at device position `self.pos`;
    /// `pos_host` is the same position, for the launchers' bounds checks and the number of attention splits
    /// (`n_keys_max` keys are covered: the context size when captured into a graph).
    fn layers(&mut self, n: usize, pos_host: usize, n_keys_max: usize) -> Result<()> {
        let (g, c, s) = (&self.gpu, &self.config, &mut self.s);
        let e = &self.w.token_embd;
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
        let (kv, rope) = (&mut self.kv, &self.w.rope);
        let attend = |x: &LayerCtx, s: &mut Scratch, l: &DevLayer, il: usize, n: usize, fused: bool| {
            attend_contiguous(x, s, l, &mut kv[il], &rope[l.rope], n, fused)
        };
        let mut ops = CudaOps { x: &ctx, s, fused: false, attend, xq_of: None };
        for (il, l) in self.w.layers.iter().enumerate() {
            ops.fused = n == 1 && ctx.q8 && self.fused_decode && l.wqkv.is_some() && l.w_gate_up.is_some();
            layer::layer(&mut ops, l, il, ctx.activation, n)?;
        }
        Ok(())
    }

    /// Final norm and output projection of rows `first..first + rows` of `s.x` into `s.logits[..rows]`.
    fn head(&mut self, first: usize, rows: usize) -> Result<()> {
        let (g, c, s) = (&self.gpu, &self.config, &mut self.s);
        let dim = c.dim;
        let out = self.w.output();
        if (first, rows, self.q8_activations, supports_q8(out.ty)) == (0, 1, true, true) {
            let pro = Prologue::RmsNorm(&self.w.output_norm, c.rms_eps);
            out.project(g, self.prologue, &s.x, pro, &mut s.logits, false, &mut s.xq)?;
        } else {
            g.copy_rows(&mut s.xb, &s.x, first * dim, rows * dim)?;
            g.rmsnorm_inplace_rows(&s.xb, &self.w.output_norm, rows, dim, c.rms_eps)?;
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

/// What every layer of one forward call shares (`pos`, `pos_host` and `splits` are read by `CudaForward`'s own
/// attention step only).
pub(crate) struct LayerCtx<'a> {
    pub(crate) g: &'a Cuda,
    pub(crate) c: &'a ModelConfig,
    pub(crate) pos: &'a CudaSlice<u32>,
    pub(crate) pos_host: usize,
    pub(crate) splits: usize,
    pub(crate) attn_scale: f32,
    pub(crate) neox: bool,
    pub(crate) activation: Activation,
    pub(crate) q8: bool,
    /// Batches may use the int8 tensor-core mat-mul (with q8).
    pub(crate) mmq: bool,
    pub(crate) prologue: MvPrologue,
}

impl LayerCtx<'_> {
    /// The quantized-activation scratch for a mat-mul of `n` tokens when 8-bit activations apply to it, else
    /// None (exact f32 products).
    fn xq<'s>(&self, xq: &'s mut CudaSlice<u8>, n: usize) -> Option<&'s mut CudaSlice<u8>> {
        (self.q8 && (n == 1 || self.mmq)).then_some(xq)
    }
}

/// RoPE, the cache store and attention of one layer over `CudaForward`'s contiguous cache at positions pos..:
/// one op per launch from `s.q`, `s.k`, `s.v`, or (`fused`, one decode token) from `s.qkv` with the per-head
/// q/k norms folded into the RoPE + store kernel.
fn attend_contiguous(x: &LayerCtx, s: &mut Scratch, l: &DevLayer, kv: &mut LayerKv, rt: &RopeTable, n: usize,
                     fused: bool) -> Result<()> {
    let (g, c) = (x.g, x.c);
    let shape = attn_shape(c, n, x.attn_scale, l.window);
    let q = if fused {
        g.rope_store_decode(&s.qkv, &mut kv.k_cache, &mut kv.v_cache, &shape, c.rope_dim, x.neox, &rt.cos, &rt.sin,
                            x.pos, x.pos_host, l.w.q_norm.as_ref(), l.w.k_norm.as_ref(), c.rms_eps)?;
        &s.qkv
    } else {
        let (kv_dim, kv_dim_v) = (c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim_v);
        g.rope_rows(&s.q, n, c.n_heads, c.head_dim, c.rope_dim, x.neox, &rt.cos, &rt.sin, x.pos, x.pos_host)?;
        g.rope_rows(&s.k, n, c.n_kv_heads, c.head_dim, c.rope_dim, x.neox, &rt.cos, &rt.sin, x.pos, x.pos_host)?;
        g.kv_store_rows(&mut kv.k_cache, &s.k, n, kv_dim, x.pos, x.pos_host)?;
        g.kv_store_rows(&mut kv.v_cache, &s.v, n, kv_dim_v, x.pos, x.pos_host)?;
        &s.q
    };
    g.attention_rows(&mut s.att, q, &kv.k_cache, &kv.v_cache, &mut s.attn, &shape, x.splits, x.pos, x.pos_host)
}

/// The GPU's steps of `layer::layer`, one op per launch (`DevMat::apply` for the projections); the attention
/// step is the caller's (`attend`: the contiguous cache of `CudaForward`, the pages of `CudaBatchForward`).
/// With `fused` (one decode token on 8-bit activations, the layer's q/k/v and gate/up weights concatenated) the
/// composite steps run in as few launches as the weights allow: each mat-vec makes its own input (norm, gating,
/// quantization) and adds its output to the residual itself (`DevMat::project`).
pub(crate) struct CudaOps<'r, 'a, A> {
    pub(crate) x: &'r LayerCtx<'a>,
    pub(crate) s: &'r mut Scratch,
    pub(crate) fused: bool,
    /// (ctx, scratch, layer, its index, rows, fused) -> `s.att`.
    pub(crate) attend: A,
    /// The buffer and row count whose 8-bit activations `s.xq` holds, set by a projection and cleared by every
    /// other step (each may write a buffer), so that k and v reuse q's and up reuses gate's.
    pub(crate) xq_of: Option<(Buf, usize)>,
}

/// The scratch's activation buffers in `layer::Buf` order, and the quantized-activation scratch.
fn bufs(s: &mut Scratch) -> ([&mut CudaSlice<f32>; 10], &mut CudaSlice<u8>) {
    let Scratch { x, xb, q, k, v, att, o, gate, up, act, xq, .. } = s;
    ([x, xb, q, k, v, att, o, gate, up, act], xq)
}

impl<A> LayerOps for CudaOps<'_, '_, A>
where
    A: FnMut(&LayerCtx, &mut Scratch, &DevLayer, usize, usize, bool) -> Result<()>,
{
    type Layer = DevLayer;

    fn has(&self, l: &DevLayer, p: Part) -> bool {
        l.w.part(p).is_some()
    }

    fn rmsnorm(&mut self, l: &DevLayer, p: Part, dst: Buf, src: Buf, rows: usize) -> Result<()> {
        self.xq_of = None;
        let (g, c) = (self.x.g, self.x.c);
        let (w, eps) = (l.w.part(p).expect("the layer asked has() first"), c.rms_eps);
        let (b, _) = bufs(self.s);
        match p {
            Part::QNorm => g.rmsnorm_inplace_rows(&*b[Buf::Q as usize], w, rows * c.n_heads, c.head_dim, eps),
            Part::KNorm => g.rmsnorm_inplace_rows(&*b[Buf::K as usize], w, rows * c.n_kv_heads, c.head_dim, eps),
            _ if dst == src => g.rmsnorm_inplace_rows(&*b[dst as usize], w, rows, c.dim, eps),
            _ => {
                let (d, s) = layer::pair(b, dst, src);
                g.rmsnorm_rows(d, s, w, rows, c.dim, eps)
            }
        }
    }

    fn project(&mut self, l: &DevLayer, w: Proj, src: Buf, dst: Buf, rows: usize) -> Result<()> {
        let (b, xq) = bufs(self.s);
        let (d, s) = layer::pair(b, dst, src);
        let quantized = self.xq_of == Some((src, rows));
        let held = l.w.mat(w).apply_q(self.x.g, s, d, rows, self.x.xq(xq, rows), quantized)?;
        self.xq_of = held.then_some((src, rows));
        Ok(())
    }

    fn add_bias(&mut self, l: &DevLayer, p: Part, dst: Buf, rows: usize) -> Result<()> {
        self.xq_of = None;
        let (b, _) = bufs(self.s);
        let y = b.into_iter().nth(dst as usize).expect("ten buffers");
        self.x.g.add_bias_rows(y, l.w.part(p).expect("the layer asked has() first"), rows)
    }

    fn attend(&mut self, l: &DevLayer, il: usize, rows: usize) -> Result<()> {
        self.xq_of = None;
        (self.attend)(self.x, self.s, l, il, rows, self.fused)
    }

    fn glu(&mut self, act: Activation, rows: usize) -> Result<()> {
        self.xq_of = None;
        let (g, s, hn) = (self.x.g, &mut *self.s, rows * self.x.c.hidden_dim);
        match act {
            Activation::SwiGlu => g.swiglu_rows(&mut s.act, &s.gate, &s.up, hn),
            Activation::GeluTanh => g.gelu_tanh_mul_rows(&mut s.act, &s.gate, &s.up, hn),
        }
    }

    fn add_residual(&mut self, rows: usize) -> Result<()> {
        self.xq_of = None;
        let s = &mut *self.s;
        self.x.g.add_inplace_rows(&mut s.x, &s.o, rows * self.x.c.dim)
    }

    fn qkv(&mut self, l: &DevLayer, rows: usize) -> Result<()> {
        self.xq_of = None;
        if !self.fused {
            return steps::qkv(self, l, rows);
        }
        // q, k, v into `s.qkv`; the per-head norms follow in `attend_contiguous`
        norm_proj(self.x, self.s, l.wqkv.as_ref().expect("fused"), &l.w.attn_norm, Out::Qkv)?;
        if let Some(b) = &l.qkv_bias {
            self.x.g.add_bias_rows(&mut self.s.qkv, b, 1)?;
        }
        Ok(())
    }

    fn residual(&mut self, l: &DevLayer, w: Proj, src: Buf, post_norm: Part, rows: usize) -> Result<()> {
        self.xq_of = None;
        if self.fused && w == Proj::O {
            return residual_proj(self.x, &l.w.wo, ProjInput::Attention, l.w.post_attn_norm.as_ref(), self.s);
        }
        steps::residual(self, l, w, src, post_norm, rows)
    }

    fn gate_up(&mut self, l: &DevLayer, rows: usize) -> Result<()> {
        self.xq_of = None;
        if !self.fused {
            return steps::gate_up(self, l, rows);
        }
        norm_proj(self.x, self.s, l.w_gate_up.as_ref().expect("fused"), &l.w.ffn_norm, Out::GateUp)
    }

    fn ffn_down(&mut self, l: &DevLayer, act: Activation, rows: usize) -> Result<()> {
        self.xq_of = None;
        if !self.fused {
            return steps::ffn_down(self, l, act, rows);
        }
        residual_proj(self.x, &l.w.w_down, ProjInput::Gated(act), l.w.post_ffw_norm.as_ref(), self.s)
    }
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
