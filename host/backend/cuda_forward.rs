//! The whole forward pass on the GPU: weights uploaded once in their file format, the KV cache in device memory
//! (f16), every activation on the device. Mirrors `model::CpuForward` op for op, so the CPU path is its oracle.
//!
//! Decode steps read the token and its position from device memory, so one step can be captured into a CUDA
//! graph and replayed; with device-side greedy selection only the chosen token id crosses to the host.

use cudarc::driver::{CudaGraph, CudaSlice};

use crate::backend::cpu::{self, RopeParams};
use crate::backend::cuda::{cuda_err, At, AttnShape, Cuda, ATTN_CHUNK};
use crate::backend::cuda_q8::{act_row_bytes, supports_q8};
use crate::config::ModelConfig;
use crate::gguf::GgmlType;
use crate::model::{check_batch, Activation, Forward, Mat, Model, MAX_BATCH};
use crate::{Error, Result};

/// A weight matrix in device memory, still in its file format.
struct DevMat {
    ty: GgmlType,
    rows: usize, // output features
    cols: usize, // input features
    data: CudaSlice<u8>,
}

impl DevMat {
    fn upload(gpu: &Cuda, m: &Mat) -> Result<DevMat> {
        Ok(DevMat { ty: m.ty, rows: m.rows, cols: m.cols, data: gpu.upload(m.data)? })
    }

    /// The row-wise concatenation of `mats` as one matrix, when they share type and width (one mat-vec launch
    /// computes all their outputs, back to back); None otherwise.
    fn concat(gpu: &Cuda, mats: &[&Mat]) -> Result<Option<DevMat>> {
        let (ty, cols) = (mats[0].ty, mats[0].cols);
        if mats.iter().any(|m| m.ty != ty || m.cols != cols) {
            return Ok(None);
        }
        let bytes: Vec<u8> = mats.iter().flat_map(|m| m.data.iter().copied()).collect();
        let rows = mats.iter().map(|m| m.rows).sum();
        Ok(Some(DevMat { ty, rows, cols, data: gpu.upload(&bytes)? }))
    }

    /// y = W x for n_tok rows: x (n_tok, cols), y (n_tok, rows). With `xq` (scratch for one quantized row), a
    /// single token goes through the 8-bit-activation `dp4a` kernel when the type has one: x is quantized as
    /// llama.cpp quantizes activations, so the GPU's numerics follow the CPU forward's.
    fn apply(&self, gpu: &Cuda, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>, n_tok: usize,
             xq: Option<&mut CudaSlice<u8>>) -> Result<()> {
        if let (1, Some(xq), true) = (n_tok, xq, supports_q8(self.ty)) {
            gpu.quantize_act(x, 1, self.cols, xq)?;
            return gpu.matvec_q8(self.ty, &self.data, self.rows, self.cols, xq, y);
        }
        if n_tok == 1 {
            gpu.matvec(self.ty, &self.data, self.rows, self.cols, x, y)
        } else {
            gpu.matmul(self.ty, &self.data, self.rows, self.cols, x, n_tok, y)
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
    part: CudaSlice<f32>, // attention split partials
    qkv: CudaSlice<f32>,  // (q_dim + kv_dim + kv_dim_v,) one decode token's fused projection
    gate_up: CudaSlice<f32>, // (2 * hidden_dim,)
    xq: CudaSlice<u8>,       // one quantized activation row (the widest input: dim or hidden_dim)
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
    let part = attn_shape(c, n, 1.0, 0).part_len(n_splits(ctx_size));
    let logits = n * model.n_vocab();
    let rope = model.layers.len().min(2) * ctx_size * c.rope_dim * 4;
    // the decode path keeps [wq; wk; wv] and [w_gate; w_up] a second time, concatenated, where the types agree
    let same = |ms: &[&Mat]| ms.iter().all(|m| m.ty == ms[0].ty && m.cols == ms[0].cols);
    let bytes = |ms: &[&Mat]| if same(ms) { ms.iter().map(|m| m.data.len()).sum() } else { 0 };
    let concat: usize =
        model.layers.iter().map(|l| bytes(&[&l.wq, &l.wk, &l.wv]) + bytes(&[&l.w_gate, &l.w_up])).sum();
    MemoryPlan { weights: model.weight_bytes() + concat, kv_cache, scratch: (n * per_tok + part + logits) * 4 + rope }
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
    /// The captured greedy decode step (built on first use).
    graph: Option<CudaGraph>,
    /// (token, position) the device buffers hold after the last graph step, if nothing ran since.
    graph_next: Option<(u32, usize)>,
    /// Decode mat-vecs quantize their input to 8 bits like llama.cpp (dp4a kernels); off: exact f32 products.
    q8_activations: bool,
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

        // RoPE tables, one per distinct (base, scale)
        let mut rope_keys: Vec<(f32, f32)> = Vec::new();
        let mut rope = Vec::new();
        let mut layers = Vec::with_capacity(model.layers.len());
        let (kv_dim, kv_dim_v) = (c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim_v);
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
                        freq_factors: model.rope_freqs.as_deref(),
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
            layers.push(DevLayer {
                attn_norm: gpu.upload(&l.attn_norm)?,
                wqkv: if biases_fuse { DevMat::concat(&gpu, &[&l.wq, &l.wk, &l.wv])? } else { None },
                w_gate_up: DevMat::concat(&gpu, &[&l.w_gate, &l.w_up])?,
                qkv_bias,
                wq: DevMat::upload(&gpu, &l.wq)?,
                wk: DevMat::upload(&gpu, &l.wk)?,
                wv: DevMat::upload(&gpu, &l.wv)?,
                wo: DevMat::upload(&gpu, &l.wo)?,
                q_bias: upload_vec(&gpu, &l.q_bias)?,
                k_bias: upload_vec(&gpu, &l.k_bias)?,
                v_bias: upload_vec(&gpu, &l.v_bias)?,
                q_norm: upload_vec(&gpu, &l.q_norm)?,
                k_norm: upload_vec(&gpu, &l.k_norm)?,
                post_attn_norm: upload_vec(&gpu, &l.post_attn_norm)?,
                ffn_norm: gpu.upload(&l.ffn_norm)?,
                w_gate: DevMat::upload(&gpu, &l.w_gate)?,
                w_up: DevMat::upload(&gpu, &l.w_up)?,
                w_down: DevMat::upload(&gpu, &l.w_down)?,
                post_ffw_norm: upload_vec(&gpu, &l.post_ffw_norm)?,
                rope: ri,
                window: l.window.unwrap_or(0),
                k_cache: gpu.zeros(ctx_size * kv_dim)?,
                v_cache: gpu.zeros(ctx_size * kv_dim_v)?,
            });
        }
        let token_embd = DevMat::upload(&gpu, &model.token_embd)?;
        let tied = std::ptr::eq(model.output.data, model.token_embd.data);
        let output = if tied { None } else { Some(DevMat::upload(&gpu, &model.output)?) };

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
            part: gpu.zeros(attn_shape(&c, n, 1.0, 0).part_len(n_splits(ctx_size)))?,
            qkv: gpu.zeros(c.n_heads * c.head_dim + kv_dim + kv_dim_v)?,
            gate_up: gpu.zeros(2 * c.hidden_dim)?,
            xq: gpu.zeros(act_row_bytes(c.dim.max(c.hidden_dim).max(c.n_heads * c.head_dim_v).next_multiple_of(256)))?,
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
            graph: None,
            q8_activations: true,
            graph_next: None,
            config: c,
            gpu,
        })
    }

    /// Exact f32 products in every mat-vec (the oracle mode the CPU's `set_llama_rounding(false)` matches), or
    /// llama.cpp's 8-bit activations in the decode mat-vecs (the default).
    pub fn set_q8_activations(&mut self, on: bool) {
        self.q8_activations = on;
        self.graph = None;
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
        let dim = c.dim;
        let (kv_dim, kv_dim_v) = (c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim_v);
        let e = &self.token_embd;
        g.embed(e.ty, &e.data, e.rows, e.cols, &self.tokens, n, &mut s.x)?;
        if let Some(sc) = self.embd_scale {
            g.scale_rows(&mut s.x, sc, n * dim)?;
        }
        let splits = n_splits(n_keys_max);
        let q_dim = c.n_heads * c.head_dim;
        let q8 = self.q8_activations;
        for l in &mut self.layers {
            // ---- attention ----
            g.rmsnorm_rows(&mut s.xb, &s.x, &l.attn_norm, n, dim, c.rms_eps)?;
            let shape = attn_shape(c, n, self.attn_scale, l.window);
            let rt = &self.rope[l.rope];
            if let (1, Some(wqkv)) = (n, &l.wqkv) {
                // one decode token: q, k, v from one launch, back to back in s.qkv
                wqkv.apply(g, &s.xb, &mut s.qkv, 1, q8.then_some(&mut s.xq))?;
                if let Some(b) = &l.qkv_bias {
                    g.add_bias_rows(&mut s.qkv, b, 1)?;
                }
                let (k_at, v_at) = (At(&s.qkv, q_dim), At(&s.qkv, q_dim + kv_dim));
                if let Some(w) = &l.q_norm {
                    g.rmsnorm_inplace_rows(&s.qkv, w, c.n_heads, c.head_dim, c.rms_eps)?;
                }
                if let Some(w) = &l.k_norm {
                    g.rmsnorm_inplace_rows(&k_at, w, c.n_kv_heads, c.head_dim, c.rms_eps)?;
                }
                // q's and k's heads are contiguous: one launch rotates both
                g.rope_rows(&s.qkv, 1, c.n_heads + c.n_kv_heads, c.head_dim, c.rope_dim, self.neox, &rt.cos, &rt.sin, &self.pos, pos_host)?;
                g.kv_store_rows(&mut l.k_cache, &k_at, 1, kv_dim, &self.pos, pos_host)?;
                g.kv_store_rows(&mut l.v_cache, &v_at, 1, kv_dim_v, &self.pos, pos_host)?;
                g.attention_rows(&mut s.att, &s.qkv, &l.k_cache, &l.v_cache, &mut s.part, &shape, splits, &self.pos, pos_host)?;
            } else {
                attention_unfused(g, c, s, l, rt, &self.pos, self.neox, &shape, splits, pos_host)?;
            }
            l.wo.apply(g, &s.att, &mut s.o, n, q8.then_some(&mut s.xq))?;
            if let Some(w) = &l.post_attn_norm {
                g.rmsnorm_inplace_rows(&s.o, w, n, dim, c.rms_eps)?;
            }
            g.add_inplace_rows(&mut s.x, &s.o, n * dim)?;

            // ---- feed-forward ----
            g.rmsnorm_rows(&mut s.xb, &s.x, &l.ffn_norm, n, dim, c.rms_eps)?;
            let hn = n * c.hidden_dim;
            if let (1, Some(wgu)) = (n, &l.w_gate_up) {
                wgu.apply(g, &s.xb, &mut s.gate_up, 1, q8.then_some(&mut s.xq))?;
                let up = At(&s.gate_up, c.hidden_dim);
                match self.activation {
                    Activation::SwiGlu => g.swiglu_rows(&mut s.act, &s.gate_up, &up, hn)?,
                    Activation::GeluTanh => g.gelu_tanh_mul_rows(&mut s.act, &s.gate_up, &up, hn)?,
                }
            } else {
                l.w_gate.apply(g, &s.xb, &mut s.gate, n, q8.then_some(&mut s.xq))?;
                l.w_up.apply(g, &s.xb, &mut s.up, n, q8.then_some(&mut s.xq))?;
                match self.activation {
                    Activation::SwiGlu => g.swiglu_rows(&mut s.act, &s.gate, &s.up, hn)?,
                    Activation::GeluTanh => g.gelu_tanh_mul_rows(&mut s.act, &s.gate, &s.up, hn)?,
                }
            }
            l.w_down.apply(g, &s.act, &mut s.o, n, q8.then_some(&mut s.xq))?;
            if let Some(w) = &l.post_ffw_norm {
                g.rmsnorm_inplace_rows(&s.o, w, n, dim, c.rms_eps)?;
            }
            g.add_inplace_rows(&mut s.x, &s.o, n * dim)?;
        }
        Ok(())
    }

    /// Final norm and output projection of rows `first..first + rows` of `s.x` into `s.logits[..rows]`.
    fn head(&mut self, first: usize, rows: usize) -> Result<()> {
        let (g, c, s) = (&self.gpu, &self.config, &mut self.s);
        let dim = c.dim;
        g.copy_rows(&mut s.xb, &s.x, first * dim, rows * dim)?;
        g.rmsnorm_inplace_rows(&s.xb, &self.output_norm, rows, dim, c.rms_eps)?;
        let out = self.output.as_ref().unwrap_or(&self.token_embd);
        out.apply(g, &s.xb, &mut s.logits, rows, self.q8_activations.then_some(&mut s.xq))?;
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
        self.check(&[token], pos)?;
        // The device holds this step's token and position only when the previous call was a graph step that
        // chose exactly this token at the previous position; otherwise (after a prefill, a reset, or a token
        // chosen elsewhere) upload them.
        if self.graph_next != Some((token, pos)) {
            self.set_batch(&[token], pos)?;
        }
        if self.graph.is_none() {
            self.graph = Some(self.capture_decode()?);
        }
        self.graph.as_ref().expect("captured above").launch().map_err(cuda_err("launch decode graph"))?;
        self.n_past = pos + 1;
        let id = self.gpu.stream.clone_dtoh(&self.chosen).map_err(cuda_err("download token id"))?[0];
        self.graph_next = Some((id, pos + 1));
        Ok(id)
    }

    /// Capture one greedy decode step (every launch reads the token and position from device memory, attention
    /// covers the whole context) into a graph.
    fn capture_decode(&mut self) -> Result<CudaGraph> {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        let stream = self.gpu.stream.clone();
        stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(cuda_err("begin graph capture"))?;
        let body = (|| -> Result<()> {
            self.layers(1, 0, self.ctx_size)?;
            self.head(0, 1)?;
            self.gpu.argmax(&self.s.logits, self.n_vocab, &mut self.chosen, Some(&mut self.tokens))?;
            self.gpu.advance_pos(&mut self.pos)
        })();
        let graph = stream.end_capture(CUgraphInstantiate_flags(0)).map_err(cuda_err("end graph capture"));
        body?;
        graph?.ok_or_else(|| Error::Cuda { op: "capture decode graph".into(), msg: "empty graph".into() })
    }
}

/// The attention block's projections, biases, q/k norms, RoPE, cache store and attention for a batch of
/// `shape.n_tok` tokens in `s.xb`, one op per launch; the result in `s.att`.
#[allow(clippy::too_many_arguments)]
fn attention_unfused(g: &Cuda, c: &ModelConfig, s: &mut Scratch, l: &mut DevLayer, rt: &RopeTable, pos: &CudaSlice<u32>,
                     neox: bool, shape: &AttnShape, splits: usize, pos_host: usize) -> Result<()> {
    let n = shape.n_tok;
    let (kv_dim, kv_dim_v) = (c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim_v);
    l.wq.apply(g, &s.xb, &mut s.q, n, None)?;
    l.wk.apply(g, &s.xb, &mut s.k, n, None)?;
    l.wv.apply(g, &s.xb, &mut s.v, n, None)?;
    for (b, x) in [(&l.q_bias, &mut s.q), (&l.k_bias, &mut s.k), (&l.v_bias, &mut s.v)] {
        if let Some(b) = b {
            g.add_bias_rows(x, b, n)?;
        }
    }
    if let Some(w) = &l.q_norm {
        g.rmsnorm_inplace_rows(&s.q, w, n * c.n_heads, c.head_dim, c.rms_eps)?;
    }
    if let Some(w) = &l.k_norm {
        g.rmsnorm_inplace_rows(&s.k, w, n * c.n_kv_heads, c.head_dim, c.rms_eps)?;
    }
    g.rope_rows(&s.q, n, c.n_heads, c.head_dim, c.rope_dim, neox, &rt.cos, &rt.sin, pos, pos_host)?;
    g.rope_rows(&s.k, n, c.n_kv_heads, c.head_dim, c.rope_dim, neox, &rt.cos, &rt.sin, pos, pos_host)?;
    g.kv_store_rows(&mut l.k_cache, &s.k, n, kv_dim, pos, pos_host)?;
    g.kv_store_rows(&mut l.v_cache, &s.v, n, kv_dim_v, pos, pos_host)?;
    g.attention_rows(&mut s.att, &s.q, &l.k_cache, &l.v_cache, &mut s.part, shape, splits, pos, pos_host)
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
