//! Many sequences through one forward on the GPU (issue #15): `CudaBatchForward` runs a `Batch` (prompt chunks
//! of some sequences, single decode tokens of others) through the same launches, every weight read once for all
//! of them. Its keys and values live in a paged device cache: per layer one pool of pages of 16 positions for K
//! and one for V (f16), plus one scratch page that padding entries write; the page tables, refcounts, forks,
//! copy on write and truncation are `kv_paged::PageAllocator`'s, the same bookkeeping as the CPU cache (a copy on
//! write here is a device copy of the page in every layer). The weights are `cuda_weights::DevWeights`, which a
//! `CudaForward` on the same device may share (`CudaForward::batch_forward`); the layer is `layer::layer`
//! over `cuda_forward::CudaOps`, the one layer of every backend, with RoPE at each token's own position, the store into each token's cache slot
//! and attention through each token's page table (`gpu-kernels/src/attention_paged.rs`) as its attention step.
//!
//! Every index (token ids, positions, slots, page tables) is copied into fixed device buffers before the
//! launches, so a decode-only batch (each entry one token of a distinct sequence, all wanting logits) is padded
//! to its bucket (1, 2, 4, ..., 64 entries) and replayed from a CUDA graph captured once per bucket.
//!
//! Numerics: each row goes through the same kernels as in `CudaForward`'s prefill (`DevMat::apply`: the dp4a
//! mat-vec for a one-row call, the int8 tensor-core mat-mul for more), so a sequence's logits depend on how many
//! rows share its call (1 or more), not on its neighbours' values; its greedy output agrees with `CudaForward`'s
//! up to near-ties (`tests/gpu_batch.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaGraph, CudaSlice, LaunchConfig};

use crate::backend::cuda::{check_min, cuda_err, decode_kernel, gpu_off, spread_rows_cfg, AttnShape, Cuda, Dev,
                           ATTN_CHUNK, ATTN_MAX_HEAD_DIM};
use crate::backend::cuda_forward::{attn_shape, n_splits, xq_row_bytes, CudaOps, LayerCtx, Scratch};
use crate::layer;
use crate::backend::cuda_weights::{DevLayer, DevWeights, MvPrologue};
use crate::batch::{plan_batch, Batch, BatchForward};
use crate::kv_paged::{PageAllocator, SeqId};
use crate::model::{Model, MAX_BATCH};
use crate::kv_cache::CacheType;
use crate::{Error, Result};

/// Positions per page of the device pools (the kernels' `attention_paged::PAGE`).
pub const GPU_PAGE_SIZE: usize = 16;
/// Entry counts of the captured decode graphs: a decode-only batch is padded to the first that holds it.
pub const GRAPH_BUCKETS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

// ----------------------------------------------------------------------------
// Launchers of gpu-kernels/src/attention_paged.rs
// ----------------------------------------------------------------------------

impl Cuda {
    /// Rotate the heads of n_tok rows of x, row t by the angles of position pos[t] (device memory; `max_pos`
    /// bounds them, for the table check); twin of `cpu::rope` with each row at its own position.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_pos_rows(&self, x: &impl Dev<f32>, n_tok: usize, n_heads: usize, head_dim: usize, rope_dim: usize,
                         neox: bool, cos: &CudaSlice<f32>, sin: &CudaSlice<f32>, pos: &CudaSlice<u32>, max_pos: usize)
                         -> Result<()> {
        const K: &str = "rope_pos_f32";
        check_min(K, "x", x.elems(), n_tok * n_heads * head_dim)?;
        check_min(K, "positions", pos.len(), n_tok)?;
        let half = rope_dim / 2;
        if rope_dim > head_dim || !rope_dim.is_multiple_of(2) || cos.len() != sin.len() || (max_pos + 1) * half > cos.len() {
            return Err(Error::Cuda { op: K.into(), msg: format!(
                "rope_dim {rope_dim} (head_dim {head_dim}) or position {max_pos} outside the {}-entry table", cos.len()) });
        }
        let f = self.func(K)?;
        let (nh, hd, rd, nx, xp) = (n_heads as u32, head_dim as u32, rope_dim as u32, neox as u32, x.addr(self));
        let mut b = self.args(&f);
        b.arg(&xp).arg(cos).arg(sin).arg(pos).arg(&nh).arg(&hd).arg(&rd).arg(&nx);
        self.go(K, b, spread_rows_cfg(n_tok, n_heads * half), || format!("n_tok={n_tok} n_heads={n_heads}"))
    }

    /// Store row t of k (kv_dim) and of v (kv_dim_v) as f16 into the pools at slot slots[t] (device memory; the
    /// caller keeps every slot below the pools' row count); twin of `PagedKvCache::write` (f16).
    #[allow(clippy::too_many_arguments)]
    pub fn kv_store_slots(&self, k_pool: &mut CudaSlice<u16>, v_pool: &mut CudaSlice<u16>, k: &CudaSlice<f32>,
                          v: &CudaSlice<f32>, slots: &CudaSlice<u32>, n_tok: usize, kv_dim: usize, kv_dim_v: usize)
                          -> Result<()> {
        const K: &str = "kv_store_slots_f16";
        check_min(K, "k", k.len(), n_tok * kv_dim)?;
        check_min(K, "v", v.len(), n_tok * kv_dim_v)?;
        check_min(K, "slots", slots.len(), n_tok)?;
        check_min(K, "k pool", k_pool.len(), kv_dim)?;
        check_min(K, "v pool", v_pool.len(), kv_dim_v)?;
        let f = self.func(K)?;
        let (kd, vd) = (kv_dim as u32, kv_dim_v as u32);
        let mut b = self.args(&f);
        b.arg(k_pool).arg(v_pool).arg(k).arg(v).arg(slots).arg(&kd).arg(&vd);
        let cfg = spread_rows_cfg(n_tok, kv_dim.max(kv_dim_v));
        self.go(K, b, cfg, || format!("n_tok={n_tok} kv_dim={kv_dim}/{kv_dim_v}"))
    }

    /// Causal GQA attention of n_tok query rows, row t at position pos[t] of the sequence whose page table is row
    /// tok_table[t] (< n_tok) of `tables` (rows of `max_pages` pages of `GPU_PAGE_SIZE` positions), over the f16
    /// pools; `n_splits` chunks of `ATTN_CHUNK` keys must cover `max_pos` + 1 (the largest position: the context
    /// size when captured into a graph). Flash-decoding kernels where the head shape has one, else the general
    /// split kernel; twin of `cpu::attention_rows` over `cpu::Paged` rows.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_paged(&self, out: &mut CudaSlice<f32>, q: &impl Dev<f32>, k_pool: &CudaSlice<u16>,
                           v_pool: &CudaSlice<u16>, scratch: &mut crate::backend::cuda::AttnScratch, s: &AttnShape,
                           n_splits: usize, pos: &CudaSlice<u32>, tables: &CudaSlice<u32>, tok_table: &CudaSlice<u32>,
                           max_pages: usize, max_pos: usize) -> Result<()> {
        const K: &str = "attention_paged_f16";
        let bad = |msg: String| Err(Error::Cuda { op: K.into(), msg });
        if !s.head_dim.is_multiple_of(32) || !s.head_dim_v.is_multiple_of(32) || s.head_dim > ATTN_MAX_HEAD_DIM
            || s.head_dim_v > ATTN_MAX_HEAD_DIM {
            return bad(format!("head dims {}/{} must be multiples of 32 up to {ATTN_MAX_HEAD_DIM}", s.head_dim, s.head_dim_v));
        }
        if s.n_kv_heads == 0 || !s.n_heads.is_multiple_of(s.n_kv_heads) {
            return bad(format!("{} heads not a multiple of {} kv heads", s.n_heads, s.n_kv_heads));
        }
        if n_splits == 0 || n_splits * ATTN_CHUNK <= max_pos || max_pages * GPU_PAGE_SIZE <= max_pos {
            return bad(format!(
                "{n_splits} splits of {ATTN_CHUNK} or page tables of {max_pages} pages cannot cover position {max_pos}"));
        }
        let (kd, vd) = (s.n_kv_heads * s.head_dim, s.n_kv_heads * s.head_dim_v);
        if !k_pool.len().is_multiple_of(kd * GPU_PAGE_SIZE) || !v_pool.len().is_multiple_of(vd * GPU_PAGE_SIZE)
            || k_pool.len() / kd != v_pool.len() / vd || k_pool.len() >= u32::MAX as usize {
            return bad(format!("pools of {} and {} elements are not whole pages of {kd} / {vd} wide rows \
                                addressable in 32 bits", k_pool.len(), v_pool.len()));
        }
        check_min(K, "q", q.elems(), s.n_tok * s.n_heads * s.head_dim)?;
        check_min(K, "out", out.len(), s.n_tok * s.n_heads * s.head_dim_v)?;
        check_min(K, "partials", scratch.part.len(), s.part_len(n_splits))?;
        check_min(K, "counters", scratch.counters.len(), s.n_tok * s.n_heads)?;
        check_min(K, "positions", pos.len(), s.n_tok)?;
        check_min(K, "token tables", tok_table.len(), s.n_tok)?;
        check_min(K, "page tables", tables.len(), s.n_tok * max_pages)?;
        let (nh, nkv, hd, hdv, w, ns, mp) = (s.n_heads as u32, s.n_kv_heads as u32, s.head_dim as u32,
                                             s.head_dim_v as u32, s.window as u32, n_splits as u32, max_pages as u32);
        let one = AttnShape { n_tok: 1, ..*s };
        let paged_decode = match decode_kernel(&one, CacheType::F16).filter(|_| !gpu_off("flashdec")) {
            Some("attention_decode_g1") => Some("attention_paged_decode_g1"),
            Some("attention_decode_g2") => Some("attention_paged_decode_g2"),
            Some("attention_decode_g4") => Some("attention_paged_decode_g4"),
            Some("attention_decode_g8") => Some("attention_paged_decode_g8"),
            _ => None,
        };
        let nt = s.n_tok as u32;
        let (kernel, cfg) = match paged_decode {
            Some(dk) => (dk, LaunchConfig { grid_dim: (nkv, ns, nt), block_dim: (256, 1, 1), shared_mem_bytes: 0 }),
            None => (K, LaunchConfig { grid_dim: (nh, nt, ns), block_dim: (128, 1, 1), shared_mem_bytes: 0 }),
        };
        let f = self.func(kernel)?;
        let mut b = self.args(&f);
        let qp = q.addr(self);
        b.arg(out).arg(&scratch.part).arg(&scratch.counters).arg(&qp).arg(k_pool).arg(v_pool).arg(pos).arg(tables)
            .arg(tok_table).arg(&mp).arg(&nh).arg(&nkv).arg(&hd).arg(&hdv).arg(&s.scale).arg(&w).arg(&ns);
        self.go(kernel, b, cfg, || format!("{s:?} splits={n_splits} max_pages={max_pages}"))
    }

    /// dst[d_off..d_off + n] = src[s_off..s_off + n] on the stream, for buffers that may be the same one.
    fn copy_within<T>(&self, dst: &CudaSlice<T>, d_off: usize, src: &CudaSlice<T>, s_off: usize, n: usize) -> Result<()> {
        check_min("copy", "src", src.len(), s_off + n)?;
        check_min("copy", "dst", dst.len(), d_off + n)?;
        self.ctx.bind_to_thread().map_err(cuda_err("bind context"))?;
        let bytes = n * std::mem::size_of::<T>();
        // SAFETY: both ranges lie inside their buffers (checked above); the copy is ordered on the one stream.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(self.ptr(dst, d_off), self.ptr(src, s_off), bytes,
                                                       self.stream.cu_stream())
        }
        .map_err(cuda_err(format!("copy {bytes} bytes on the device")))
    }
}

// ----------------------------------------------------------------------------
// The batch forward
// ----------------------------------------------------------------------------

/// One layer's pools: (n_pages + 1) * GPU_PAGE_SIZE rows of n_kv_heads * head_dim(_v) f16 (the last page is the
/// scratch page of padding entries).
struct PagedKv {
    k: CudaSlice<u16>,
    v: CudaSlice<u16>,
}

/// One row of a forward call: entry `entry` of the batch.
#[derive(Clone, Copy)]
struct Row {
    entry: usize,
    seq: SeqId,
    token: u32,
    pos: usize,
    slot: usize,
    logits: bool,
}

/// The index buffers of one call, as the kernels read them: for `rows` padded to `n` rows, each row's token id,
/// position and cache slot, its page-table row (`tok_table`), and the page tables (`max_pages` entries each): one
/// per sequence in the order the sequences first appear, covering its positions up to its last in this call, and
/// one more for the padding rows, whose token 0 at position 0 writes to and reads from the scratch page.
struct Indices {
    tokens: Vec<u32>,
    pos: Vec<u32>,
    slots: Vec<u32>,
    tok_table: Vec<u32>,
    tables: Vec<u32>,
}

impl Indices {
    fn new(rows: &[Row], n: usize, pages: &PageAllocator, max_pages: usize, scratch: u32) -> Result<Indices> {
        let mp = max_pages;
        let mut tokens = vec![0u32; n];
        let mut pos = vec![0u32; n];
        let mut slots = vec![scratch * GPU_PAGE_SIZE as u32; n];
        let mut tok_table = vec![0u32; n];
        let mut seqs: Vec<(SeqId, usize)> = Vec::new(); // (sequence, largest position in this call)
        for (i, r) in rows.iter().enumerate() {
            tokens[i] = r.token;
            pos[i] = r.pos as u32;
            slots[i] = r.slot as u32;
            let k = match seqs.iter().position(|&(s, _)| s == r.seq) {
                Some(k) => k,
                None => {
                    seqs.push((r.seq, 0));
                    seqs.len() - 1
                }
            };
            seqs[k].1 = seqs[k].1.max(r.pos);
            tok_table[i] = k as u32;
        }
        let n_tables = seqs.len() + (n > rows.len()) as usize;
        for t in tok_table.iter_mut().skip(rows.len()) {
            *t = seqs.len() as u32; // the padding rows' table: the scratch page
        }
        let mut tables = vec![scratch; n_tables * mp];
        for (k, &(seq, last)) in seqs.iter().enumerate() {
            let p = pages.pages_for(seq, last + 1)?;
            if p.len() > mp {
                return Err(Error::Generate(format!(
                    "batch forward: sequence {seq} at position {last} needs {} pages, its table holds {mp}",
                    p.len()
                )));
            }
            tables[k * mp..k * mp + p.len()].copy_from_slice(p);
        }
        Ok(Indices { tokens, pos, slots, tok_table, tables })
    }
}

/// Copy `src` to the start of the device buffer `dst`.
fn upload(g: &Cuda, dst: &mut CudaSlice<u32>, src: &[u32]) -> Result<()> {
    check_min("upload", "batch index buffer", dst.len(), src.len())?;
    let mut d = dst.slice_mut(..src.len());
    g.stream.memcpy_htod(src, &mut d).map_err(cuda_err("upload batch indices"))
}

/// Device bytes of a batch forward's own buffers (the pools, activations, logits and index buffers).
pub fn batch_memory(model: &Model, capacity: usize, ctx_size: usize) -> usize {
    let c = &model.config;
    let slots = (capacity.div_ceil(GPU_PAGE_SIZE) + 1) * GPU_PAGE_SIZE;
    let pools = c.n_layers * slots * c.n_kv_heads * (c.head_dim + c.head_dim_v) * 2;
    let n = MAX_BATCH;
    let per_tok = 3 * c.dim + c.n_heads * c.head_dim + c.n_kv_heads * (c.head_dim + c.head_dim_v)
        + c.n_heads * c.head_dim_v + 3 * c.hidden_dim;
    let attn = crate::backend::cuda::AttnScratch::bytes(&attn_shape(c, n, 1.0, 0), n_splits(ctx_size));
    let index = n * (4 + ctx_size.div_ceil(GPU_PAGE_SIZE)) * 4;
    pools + (n * per_tok + n * model.n_vocab()) * 4 + n * xq_row_bytes(c) + attn + index
}

/// The GPU's batch forward over a paged f16 KV cache.
pub struct CudaBatchForward {
    gpu: Arc<Cuda>,
    w: Arc<DevWeights>,
    pages: PageAllocator,
    kv: Vec<PagedKv>,
    s: Scratch,
    /// Rows per forward call (larger batches run in several calls).
    max_tok: usize,
    /// Entries of a page-table row: the pages of one sequence of `ctx_size` positions.
    max_pages: usize,
    d_tokens: CudaSlice<u32>,
    d_pos: CudaSlice<u32>,
    d_slots: CudaSlice<u32>,
    d_tok_table: CudaSlice<u32>,
    d_tables: CudaSlice<u32>, // (max_tok, max_pages)
    /// Greedy tokens chosen on the device (`decode_greedy`), one per row wanting logits.
    d_chosen: CudaSlice<u32>,
    /// (rows wanting logits, n_vocab) of the last batch, and for each of its entries its row there.
    logits: Vec<f32>,
    logit_row: Vec<Option<usize>>,
    /// `decode_greedy`: the rows' argmax is taken on the device and only the ids come back, into `chosen`.
    greedy: bool,
    chosen: Vec<Option<u32>>,
    ctx_size: usize,
    /// Attention splits covering a whole sequence (the graphs' bound).
    splits: usize,
    q8: bool,
    mmq: bool,
    prologue: MvPrologue,
    /// Captured decode graphs by bucket size; off with `HOST_GPU_OFF=graphs` or `set_graphs(false)`.
    graphs: HashMap<usize, CudaGraph>,
    use_graphs: bool,
}

impl CudaBatchForward {
    /// Upload `model` to CUDA device `ordinal` and make a batch forward with a paged cache of `capacity`
    /// positions (whole pages of 16), each sequence reaching at most `ctx_size`. Prints the cache and memory and
    /// fails with the amount needed when the device has too little free memory.
    pub fn new(model: &Model, capacity: usize, ctx_size: usize, ordinal: usize) -> Result<CudaBatchForward> {
        let gpu = Cuda::new(ordinal)?;
        let need = model.weight_bytes() + batch_memory(model, capacity, ctx_size);
        let (free, _) = gpu.ctx.mem_get_info().map_err(cuda_err("query free memory"))?;
        if need + (256 << 20) > free {
            return Err(Error::Cuda {
                op: "load model".into(),
                msg: format!(
                    "out of device memory: the batch forward needs {:.2} GiB (weights and a KV cache of {capacity} \
                     positions) but only {:.2} GiB is free; lower --parallel or --ctx-size, or use --device cpu",
                    need as f64 / (1u64 << 30) as f64,
                    free as f64 / (1u64 << 30) as f64
                ),
            });
        }
        let w = Arc::new(DevWeights::upload(&gpu, model, ctx_size)?);
        CudaBatchForward::with_weights(Arc::new(gpu), w, capacity, ctx_size)
    }

    /// A batch forward over weights already on `gpu` (shared with a `CudaForward`).
    pub(crate) fn with_weights(gpu: Arc<Cuda>, w: Arc<DevWeights>, capacity: usize, ctx_size: usize)
                               -> Result<CudaBatchForward> {
        let c = &w.config;
        if ctx_size == 0 || ctx_size > w.ctx_size {
            return Err(Error::Generate(format!(
                "batch forward: a context of {ctx_size} positions per sequence; the uploaded RoPE tables cover {}",
                w.ctx_size
            )));
        }
        let pages = PageAllocator::new(capacity, GPU_PAGE_SIZE)?;
        let (kv_dim, kv_dim_v) = (c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim_v);
        let rows = (pages.n_pages() + 1) * GPU_PAGE_SIZE;
        if rows * kv_dim.max(kv_dim_v) >= u32::MAX as usize {
            return Err(Error::Generate(format!(
                "batch forward: a KV cache of {} positions x {} values per layer is too large for the kernels' \
                 32-bit indices; lower the capacity",
                rows,
                kv_dim.max(kv_dim_v)
            )));
        }
        let kv = (0..c.n_layers)
            .map(|_| Ok(PagedKv { k: gpu.zeros(rows * kv_dim)?, v: gpu.zeros(rows * kv_dim_v)? }))
            .collect::<Result<Vec<_>>>()?;
        let max_tok = MAX_BATCH;
        let max_pages = ctx_size.div_ceil(GPU_PAGE_SIZE);
        let splits = n_splits(ctx_size);
        let s = Scratch::new(&gpu, c, max_tok, max_tok, w.n_vocab, splits)?;
        let bytes = c.n_layers * rows * (kv_dim + kv_dim_v) * 2;
        eprintln!(
            "cuda batch: kv cache of {} positions in pages of {GPU_PAGE_SIZE} ({:.2} MiB), each sequence up to {ctx_size} positions",
            pages.capacity(),
            bytes as f64 / (1 << 20) as f64
        );
        Ok(CudaBatchForward {
            d_tokens: gpu.zeros(max_tok)?,
            d_pos: gpu.zeros(max_tok)?,
            d_slots: gpu.zeros(max_tok)?,
            d_tok_table: gpu.zeros(max_tok)?,
            d_tables: gpu.zeros(max_tok * max_pages)?,
            d_chosen: gpu.zeros(max_tok)?,
            greedy: false,
            chosen: Vec::new(),
            pages,
            kv,
            s,
            max_tok,
            max_pages,
            logits: Vec::new(),
            logit_row: Vec::new(),
            ctx_size,
            splits,
            q8: true,
            mmq: !gpu_off("mmq"),
            prologue: MvPrologue::from_env(),
            graphs: HashMap::new(),
            use_graphs: !gpu_off("graphs"),
            w,
            gpu,
        })
    }

    /// The page bookkeeping (tests: shared pages of forks).
    pub fn pages(&self) -> &PageAllocator {
        &self.pages
    }

    /// Replay decode-only batches from the per-bucket graphs (default on), or launch them op by op.
    pub fn set_graphs(&mut self, on: bool) {
        self.use_graphs = on;
    }

    /// Exact f32 products in every projection, or llama.cpp's 8-bit activations (the default).
    pub fn set_q8_activations(&mut self, on: bool) {
        self.q8 = on;
        self.graphs.clear();
    }

    /// The CUDA context and stream.
    pub fn gpu(&self) -> &Cuda {
        &self.gpu
    }

    /// The scratch page's first slot (padding entries write there).
    fn scratch_page(&self) -> u32 {
        self.pages.n_pages() as u32
    }

    /// Copy page `from` into page `to` in every layer's pools (copy on write).
    fn copy_page(gpu: &Cuda, kv: &[PagedKv], kv_dim: usize, kv_dim_v: usize, from: u32, to: u32) -> Result<()> {
        let (f, t) = (from as usize * GPU_PAGE_SIZE, to as usize * GPU_PAGE_SIZE);
        for l in kv {
            gpu.copy_within(&l.k, t * kv_dim, &l.k, f * kv_dim, GPU_PAGE_SIZE * kv_dim)?;
            gpu.copy_within(&l.v, t * kv_dim_v, &l.v, f * kv_dim_v, GPU_PAGE_SIZE * kv_dim_v)?;
        }
        Ok(())
    }

    /// Fill the index buffers for `rows` padded to `n` rows (`Indices::new`).
    fn set_rows(&mut self, rows: &[Row], n: usize) -> Result<()> {
        let ix = Indices::new(rows, n, &self.pages, self.max_pages, self.scratch_page())?;
        let (tokens, pos, slots, tok_table, tables) = (ix.tokens, ix.pos, ix.slots, ix.tok_table, ix.tables);
        let g = &*self.gpu;
        upload(g, &mut self.d_tokens, &tokens)?;
        upload(g, &mut self.d_pos, &pos)?;
        upload(g, &mut self.d_slots, &slots)?;
        upload(g, &mut self.d_tok_table, &tok_table)?;
        upload(g, &mut self.d_tables, &tables)?;
        Ok(())
    }

    /// Embedding and every layer for the `n` rows whose indices the device buffers hold; `splits` chunks of
    /// attention cover position `max_pos`.
    fn layers(&mut self, n: usize, splits: usize, max_pos: usize) -> Result<()> {
        let (g, w, s) = (&*self.gpu, &*self.w, &mut self.s);
        let c = &w.config;
        let e = &w.token_embd;
        g.embed(e.ty, &e.data, e.rows, e.cols, &self.d_tokens, n, &mut s.x)?;
        if let Some(sc) = w.embd_scale {
            g.scale_rows(&mut s.x, sc, n * c.dim)?;
        }
        let ctx = LayerCtx {
            g,
            c,
            pos: &self.d_pos,
            pos_host: 0,
            splits,
            attn_scale: w.attn_scale,
            neox: w.neox,
            activation: w.activation,
            q8: self.q8,
            mmq: self.mmq,
            prologue: self.prologue,
        };
        let (kv_dim, kv_dim_v) = (c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim_v);
        let (d_pos, d_slots, d_tables, d_tok_table, mp) =
            (&self.d_pos, &self.d_slots, &self.d_tables, &self.d_tok_table, self.max_pages);
        let kv = &mut self.kv;
        let attend = |_: &LayerCtx, s: &mut Scratch, l: &DevLayer, il: usize, n: usize, _fused: bool| {
            let (kv, rt) = (&mut kv[il], &w.rope[l.rope]);
            g.rope_pos_rows(&s.q, n, c.n_heads, c.head_dim, c.rope_dim, w.neox, &rt.cos, &rt.sin, d_pos, max_pos)?;
            g.rope_pos_rows(&s.k, n, c.n_kv_heads, c.head_dim, c.rope_dim, w.neox, &rt.cos, &rt.sin, d_pos, max_pos)?;
            g.kv_store_slots(&mut kv.k, &mut kv.v, &s.k, &s.v, d_slots, n, kv_dim, kv_dim_v)?;
            let shape = attn_shape(c, n, w.attn_scale, l.window);
            g.attention_paged(&mut s.att, &s.q, &kv.k, &kv.v, &mut s.attn, &shape, splits, d_pos, d_tables, d_tok_table,
                              mp, max_pos)
        };
        let mut ops = CudaOps { x: &ctx, s, fused: false, attend, xq_of: None };
        for (il, l) in w.layers.iter().enumerate() {
            layer::layer(&mut ops, l, il, w.activation, n)?;
        }
        Ok(())
    }

    /// Final norm and output projection of the rows `sel` of `s.x` (in order) into `s.logits[..sel.len()]`.
    fn head(&mut self, sel: &[usize]) -> Result<()> {
        let (g, w, s) = (&*self.gpu, &*self.w, &mut self.s);
        let (dim, eps, ns) = (w.config.dim, w.config.rms_eps, sel.len());
        if sel.iter().enumerate().all(|(k, &r)| k == r) {
            g.rmsnorm_rows(&mut s.xb, &s.x, &w.output_norm, ns, dim, eps)?;
        } else {
            for (k, &r) in sel.iter().enumerate() {
                g.copy_within(&s.xb, k * dim, &s.x, r * dim, dim)?;
            }
            g.rmsnorm_inplace_rows(&s.xb, &w.output_norm, ns, dim, eps)?;
        }
        let out = w.output();
        let xq = (self.q8 && (ns == 1 || self.mmq)).then_some(&mut s.xq);
        out.apply(g, &s.xb, &mut s.logits, ns, xq)?;
        if let Some(cap) = w.final_softcap {
            g.softcap_rows(&mut s.logits, cap, ns * w.n_vocab)?;
        }
        Ok(())
    }

    /// Download the first `ns` rows of logits, for the entries `entries` (greedy mode: their argmax ids only).
    fn take_logits(&mut self, entries: &[usize]) -> Result<()> {
        let nv = self.w.n_vocab;
        let ns = entries.len();
        if ns == 0 {
            return Ok(());
        }
        if self.greedy {
            self.gpu.argmax_rows(&self.s.logits, nv, ns, &mut self.d_chosen)?;
            let ids = self.gpu.stream.clone_dtoh(&self.d_chosen.slice(..ns)).map_err(cuda_err("download token ids"))?;
            for (&e, id) in entries.iter().zip(ids) {
                self.chosen[e] = Some(id);
            }
            return Ok(());
        }
        let k0 = self.logits.len() / nv;
        self.logits.resize((k0 + ns) * nv, 0.0);
        let src = self.s.logits.slice(..ns * nv);
        self.gpu.stream.memcpy_dtoh(&src, &mut self.logits[k0 * nv..]).map_err(cuda_err("download logits"))?;
        for (k, &e) in entries.iter().enumerate() {
            self.logit_row[e] = Some(k0 + k);
        }
        Ok(())
    }

    /// One call of at most `max_tok` rows, op by op.
    fn run_rows(&mut self, rows: &[Row]) -> Result<()> {
        let n = rows.len();
        self.set_rows(rows, n)?;
        let max_pos = rows.iter().map(|r| r.pos).max().unwrap_or(0);
        self.layers(n, n_splits(max_pos + 1), max_pos)?;
        let sel: Vec<usize> = (0..n).filter(|&r| rows[r].logits).collect();
        if sel.is_empty() {
            return Ok(());
        }
        self.head(&sel)?;
        let entries: Vec<usize> = sel.iter().map(|&r| rows[r].entry).collect();
        self.take_logits(&entries)
    }

    /// A decode-only batch (each row one token of a distinct sequence, all wanting logits) padded to its bucket
    /// and replayed from that bucket's graph (captured on first use).
    fn run_graph(&mut self, rows: &[Row], bucket: usize) -> Result<()> {
        self.set_rows(rows, bucket)?;
        if !self.graphs.contains_key(&bucket) {
            let g = self.capture(bucket)?;
            self.graphs.insert(bucket, g);
        }
        self.graphs[&bucket].launch().map_err(cuda_err(format!("launch the decode graph of {bucket} rows")))?;
        let entries: Vec<usize> = rows.iter().map(|r| r.entry).collect();
        self.take_logits(&entries)
    }

    /// Capture the layers and the head for `bucket` rows, attention covering the whole context.
    fn capture(&mut self, bucket: usize) -> Result<CudaGraph> {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        let stream = self.gpu.stream.clone();
        stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(cuda_err("begin graph capture"))?;
        let sel: Vec<usize> = (0..bucket).collect();
        let body = (|| -> Result<()> {
            self.layers(bucket, self.splits, self.ctx_size - 1)?;
            self.head(&sel)
        })();
        let graph = stream.end_capture(CUgraphInstantiate_flags(0)).map_err(cuda_err("end graph capture"));
        body?;
        graph?.ok_or_else(|| Error::Cuda { op: format!("capture the decode graph of {bucket} rows"), msg: "empty graph".into() })
    }

    fn run(&mut self, batch: &Batch) -> Result<()> {
        let n_vocab = self.w.n_vocab;
        let plan = plan_batch(batch, n_vocab, self.ctx_size, usize::MAX, |s| self.pages.seq_len(s))?;
        let wants: Vec<(SeqId, usize)> = plan.segs.iter().map(|g| (g.seq, g.n)).collect();
        let (gpu, kv, c) = (&*self.gpu, &self.kv, &self.w.config);
        let (kv_dim, kv_dim_v) = (c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim_v);
        self.pages.append(&wants, |from, to| Self::copy_page(gpu, kv, kv_dim, kv_dim_v, from, to))?;
        let mut rows = Vec::with_capacity(batch.len());
        for &i in &plan.rows {
            let e = &batch.entries[i];
            rows.push(Row { entry: i, seq: e.seq, token: e.token, pos: e.pos, slot: self.pages.slot(e.seq, e.pos)?,
                            logits: e.logits });
        }
        self.logit_row = vec![None; batch.len()];
        self.chosen = vec![None; batch.len()];
        let decode_only = plan.segs.iter().all(|g| g.n == 1) && rows.iter().all(|r| r.logits);
        let bucket = GRAPH_BUCKETS.iter().copied().find(|&b| b >= rows.len() && b <= self.max_tok);
        match bucket {
            Some(b) if decode_only && self.use_graphs => self.run_graph(&rows, b),
            _ => {
                for chunk in rows.chunks(self.max_tok) {
                    self.run_rows(chunk)?;
                }
                Ok(())
            }
        }
    }
}

impl BatchForward for CudaBatchForward {
    fn add_seq(&mut self, seq: SeqId) -> Result<()> {
        self.pages.add_seq(seq)
    }

    fn remove_seq(&mut self, seq: SeqId) -> Result<()> {
        self.pages.remove_seq(seq)
    }

    fn fork_seq(&mut self, src: SeqId, dst: SeqId, len: Option<usize>) -> Result<()> {
        self.pages.fork_seq(src, dst, len)
    }

    fn truncate_seq(&mut self, seq: SeqId, len: usize) -> Result<()> {
        self.pages.truncate_seq(seq, len)
    }

    fn seq_len(&self, seq: SeqId) -> Option<usize> {
        self.pages.seq_len(seq)
    }

    fn decode(&mut self, batch: &Batch) -> Result<()> {
        self.logit_row.clear();
        self.logits.clear();
        self.greedy = false;
        self.run(batch)
    }

    /// The batch's greedy tokens chosen on the device (`argmax_f32` per row), only the ids downloaded.
    fn decode_greedy(&mut self, batch: &Batch) -> Result<Vec<Option<u32>>> {
        self.logit_row.clear();
        self.logits.clear();
        self.greedy = true;
        let r = self.run(batch);
        self.greedy = false;
        r?;
        Ok(std::mem::take(&mut self.chosen))
    }

    fn logits(&self, i: usize) -> Option<&[f32]> {
        let nv = self.w.n_vocab;
        self.logit_row.get(i).copied().flatten().map(|k| &self.logits[k * nv..(k + 1) * nv])
    }

    fn capacity(&self) -> usize {
        self.pages.capacity()
    }

    fn ctx_size(&self) -> usize {
        self.ctx_size
    }

    fn kv_bytes(&self) -> usize {
        self.kv.iter().map(|l| (l.k.len() + l.v.len()) * 2).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of two sequences (one a forked prefix continuing on its own page) and padding: every row's slot and
    /// page-table row point at the positions the CPU cache would use, and padding uses the scratch page only.
    #[test]
    fn indices_follow_the_page_tables_and_pad_to_the_scratch_page() {
        let mut pages = PageAllocator::new(8 * GPU_PAGE_SIZE, GPU_PAGE_SIZE).unwrap();
        pages.add_seq(3).unwrap();
        pages.append(&[(3, 20)], |_, _| Ok(())).unwrap(); // pages 0 and 1 (free pages are taken from the end)
        pages.fork_seq(3, 9, Some(16)).unwrap(); // shares the full first page
        pages.append(&[(9, 2), (3, 1)], |_, _| Ok(())).unwrap();
        let row = |entry: usize, seq: SeqId, pos: usize| Row {
            entry,
            seq,
            token: 100 + entry as u32,
            pos,
            slot: pages.slot(seq, pos).unwrap(),
            logits: true,
        };
        let rows = [row(0, 9, 16), row(1, 3, 20), row(2, 9, 17)];
        let (mp, scratch) = (4, pages.n_pages() as u32);
        let ix = Indices::new(&rows, 4, &pages, mp, scratch).unwrap();
        assert_eq!(ix.tokens, [100, 101, 102, 0]);
        assert_eq!(ix.pos, [16, 20, 17, 0]);
        assert_eq!(ix.tok_table, [0, 1, 0, 2]);
        let (p3, p9) = (pages.seq_pages(3).unwrap().to_vec(), pages.seq_pages(9).unwrap().to_vec());
        assert_eq!(p9[0], p3[0], "the fork shares the first page");
        assert_ne!(p9[1], p3[1]);
        assert_eq!(ix.tables[..mp], [p9[0], p9[1], scratch, scratch]);
        assert_eq!(ix.tables[mp..2 * mp], [p3[0], p3[1], scratch, scratch]);
        assert_eq!(ix.tables[2 * mp..], [scratch; 4]);
        // each row's slot is the one its table and position give, as the kernels compute it
        for (i, r) in rows.iter().enumerate() {
            let t = &ix.tables[ix.tok_table[i] as usize * mp..];
            let slot = t[r.pos / GPU_PAGE_SIZE] as usize * GPU_PAGE_SIZE + r.pos % GPU_PAGE_SIZE;
            assert_eq!(ix.slots[i] as usize, slot);
        }
        assert_eq!(ix.slots[3], scratch * GPU_PAGE_SIZE as u32);
        // no padding: no extra table
        let ix = Indices::new(&rows, 3, &pages, mp, scratch).unwrap();
        assert_eq!(ix.tables.len(), 2 * mp);
        // a table too short for the sequence is an error, not an overrun
        assert!(Indices::new(&rows, 3, &pages, 1, scratch).is_err());
    }
}
