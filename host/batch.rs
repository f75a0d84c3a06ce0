//! Many sequences through one forward, like llama.cpp's `llama_batch`: a batch is a list of (sequence, token,
//! position, wants-logits) entries, so prompt chunks of some sequences and single decode tokens of others go
//! through the same layer calls, every weight row decoded once for all of them. Sequences are added, removed
//! (their cache pages freed) and forked (their prefix shared) between calls; their keys and values live in a
//! `PagedKvCache`.
//!
//! On the CPU a sequence's logits are bit-identical whether it runs alone or beside others: each sequence's rows
//! of a mat-mul use the kernels llama.cpp picks for that sequence's own row count (`Mat::apply_segments`), its
//! attention runs over its own keys, and the last layer's feed-forward and the output head run only on the rows
//! whose logits are wanted, as `CpuForward` does. "Alone" is `CpuForward` fed the same chunks: a decode step
//! of one token is a one-row mat-mul, a prompt chunk of n tokens an n-row one.
//!
//! Sampling is not part of the forward here: the caller keeps one `Sampler` per sequence and samples the logits
//! of `BatchForward::logits` after each call.

use crate::backend::cpu::{self, AttnParams, RopeParams};
use crate::kv_cache::CacheType;
use crate::kv_paged::{PagedKvCache, SeqId};
use crate::layer::{self, Buf, LayerOps, Part, Proj};
use crate::model::{Activation, Layer, Mat, Model, Scratch, MAX_BATCH};
use crate::{Error, Result};

/// One entry of a batch: `token` of sequence `seq` at position `pos`; `logits`: its logits are wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEntry {
    pub seq: SeqId,
    pub token: u32,
    pub pos: usize,
    pub logits: bool,
}

/// The entries of one forward call.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub entries: Vec<BatchEntry>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn add(&mut self, seq: SeqId, token: u32, pos: usize, logits: bool) {
        self.entries.push(BatchEntry { seq, token, pos, logits });
    }

    /// `tokens` of `seq` at positions pos0.., the logits of the last one wanted.
    pub fn add_tokens(&mut self, seq: SeqId, tokens: &[u32], pos0: usize) {
        for (i, &t) in tokens.iter().enumerate() {
            self.add(seq, t, pos0 + i, i + 1 == tokens.len());
        }
    }
}

/// A backend that runs batches of many sequences. The CPU implements it here; a GPU backend implements the same
/// calls over its own paged cache.
pub trait BatchForward {
    /// A new, empty sequence.
    fn add_seq(&mut self, seq: SeqId) -> Result<()>;
    /// Drop a sequence and free its cache.
    fn remove_seq(&mut self, seq: SeqId) -> Result<()>;
    /// A new sequence `dst` starting with the first `len` positions of `src` (all: None), sharing their cache.
    fn fork_seq(&mut self, src: SeqId, dst: SeqId, len: Option<usize>) -> Result<()>;
    /// Cut a sequence back to its first `len` positions.
    fn truncate_seq(&mut self, seq: SeqId, len: usize) -> Result<()>;
    /// Positions cached for `seq` (None: no such sequence).
    fn seq_len(&self, seq: SeqId) -> Option<usize>;
    /// Run one batch. Each sequence's entries must continue it: positions len, len + 1, ... in batch order.
    /// Checked before anything runs: an error leaves every sequence as it was.
    fn decode(&mut self, batch: &Batch) -> Result<()>;
    /// The logits (n_vocab) of entry `i` of the last batch, if it asked for them.
    fn logits(&self, i: usize) -> Option<&[f32]>;
    /// Positions the cache holds for all sequences together.
    fn capacity(&self) -> usize;
    /// Positions one sequence may reach.
    fn ctx_size(&self) -> usize;
    /// Bytes of the KV cache (host or device memory).
    fn kv_bytes(&self) -> usize;
    /// Run one batch and give, for each entry, its greedy token (argmax of its logits, the lowest id on ties) if
    /// it asked for logits. A backend may choose on the device and not keep the logits (`logits` then gives None).
    fn decode_greedy(&mut self, batch: &Batch) -> Result<Vec<Option<u32>>> {
        self.decode(batch)?;
        Ok((0..batch.len()).map(|i| self.logits(i).map(argmax)).collect())
    }
}

/// The index of the largest value, the lowest among equal ones.
pub fn argmax(x: &[f32]) -> u32 {
    x.iter().enumerate().fold(0, |b, (i, &v)| if v > x[b] { i } else { b }) as u32
}

/// The float numerics of the CPU layer's operations: `LlamaCpp` (the operations of llama.cpp's x86 CPU build, in
/// its order: bit-identical logits) or `ExactF32` (exact f32 products, the oracle the GPU's exact mode matches).
pub trait CpuNumerics: Sync {
    /// y = W x for the rows of each segment (`Mat::apply_segments`).
    fn project(&self, w: &Mat, x: &[f32], y: &mut [f32], segs: &[usize]);
    /// RoPE of rows at positions pos0.. .
    fn rope(&self, x: &mut [f32], n_heads: usize, pos0: usize, p: &RopeParams);
    /// out = act(gate) * up.
    fn glu(&self, act: Activation, out: &mut [f32], gate: &[f32], up: &[f32]);
    /// Final logit soft-capping.
    fn softcap(&self, x: &mut [f32], cap: f32);
    /// As llama.cpp: q scaled before attention where the model asks (gemma3, phi3), the f16 cache attended as
    /// ggml's flash attention, the last layer's feed-forward only on the rows whose logits are wanted.
    fn like_llama_cpp(&self) -> bool;
}

/// llama.cpp's CPU numerics (`quant::ggml_avx2`, `cpu::*_ggml`).
pub struct LlamaCpp;
/// Exact f32 products.
pub struct ExactF32;

impl CpuNumerics for LlamaCpp {
    fn project(&self, w: &Mat, x: &[f32], y: &mut [f32], segs: &[usize]) {
        w.apply_segments(x, y, segs, true);
    }
    fn rope(&self, x: &mut [f32], n_heads: usize, pos0: usize, p: &RopeParams) {
        cpu::rope_ggml(x, n_heads, pos0, p);
    }
    fn glu(&self, act: Activation, out: &mut [f32], gate: &[f32], up: &[f32]) {
        match act {
            Activation::SwiGlu => cpu::swiglu_ggml(out, gate, up),
            Activation::GeluTanh => cpu::geglu_ggml(out, gate, up),
        }
    }
    fn softcap(&self, x: &mut [f32], cap: f32) {
        // ggml: scale by 1 / cap, tanh, scale by cap
        for v in x.iter_mut() {
            *v = (*v * (1.0 / cap)).tanh() * cap;
        }
    }
    fn like_llama_cpp(&self) -> bool {
        true
    }
}

impl CpuNumerics for ExactF32 {
    fn project(&self, w: &Mat, x: &[f32], y: &mut [f32], segs: &[usize]) {
        w.apply_segments(x, y, segs, false);
    }
    fn rope(&self, x: &mut [f32], n_heads: usize, pos0: usize, p: &RopeParams) {
        cpu::rope(x, n_heads, pos0, p);
    }
    fn glu(&self, act: Activation, out: &mut [f32], gate: &[f32], up: &[f32]) {
        match act {
            Activation::SwiGlu => cpu::swiglu(out, gate, up),
            Activation::GeluTanh => cpu::gelu_tanh_mul(out, gate, up),
        }
    }
    fn softcap(&self, x: &mut [f32], cap: f32) {
        cpu::softcap(x, cap);
    }
    fn like_llama_cpp(&self) -> bool {
        false
    }
}

/// The CPU's batch forward: llama.cpp's numerics (default) or exact f32 products.
pub struct CpuBatchForward<'a> {
    model: &'a Model<'a>,
    cache: PagedKvCache,
    s: Scratch,
    /// (rows wanting logits, n_vocab), and for each entry of the last batch its row there.
    logits: Vec<f32>,
    logit_row: Vec<Option<usize>>,
    numerics: &'static dyn CpuNumerics,
    ctx_size: usize,
    rope_factors: Option<&'a [f32]>,
}

/// A batch's entries grouped by sequence: the order of rows (entry indices, each sequence's contiguous), and
/// each sequence's segment.
pub(crate) struct Plan {
    pub(crate) rows: Vec<usize>,
    pub(crate) segs: Vec<Seg>,
}

pub(crate) struct Seg {
    pub(crate) seq: SeqId,
    /// First row in the reordered batch, number of rows, position of the first.
    pub(crate) row0: usize,
    pub(crate) n: usize,
    pub(crate) pos0: usize,
}

/// Check `batch` against the vocabulary (`n_vocab`), the sequences (`seq_len`: the positions each holds) and the
/// context (`ctx_size` positions per sequence, at most `max_per_seq` entries of one sequence per call); group its
/// entries by sequence, in the order the sequences first appear. Shared by the CPU and GPU batch forwards.
pub(crate) fn plan_batch(batch: &Batch, n_vocab: usize, ctx_size: usize, max_per_seq: usize,
                         seq_len: impl Fn(SeqId) -> Option<usize>) -> Result<Plan> {
    if batch.is_empty() {
        return Err(Error::Generate("batch: no entries".into()));
    }
    let mut order: Vec<SeqId> = Vec::new();
    let mut by_seq: std::collections::HashMap<SeqId, Vec<usize>> = Default::default();
    for (i, e) in batch.entries.iter().enumerate() {
        if e.token as usize >= n_vocab {
            return Err(Error::Generate(format!(
                "batch entry {i}: token id {} of sequence {} is out of the vocabulary of {n_vocab} tokens",
                e.token, e.seq
            )));
        }
        by_seq
            .entry(e.seq)
            .or_insert_with(|| {
                order.push(e.seq);
                Vec::new()
            })
            .push(i);
    }
    let (mut rows, mut segs) = (Vec::with_capacity(batch.len()), Vec::with_capacity(order.len()));
    for seq in order {
        let idx = &by_seq[&seq];
        let len = seq_len(seq).ok_or_else(|| Error::Generate(format!("batch: sequence {seq} does not exist")))?;
        for (k, &i) in idx.iter().enumerate() {
            if batch.entries[i].pos != len + k {
                return Err(Error::Generate(format!(
                    "batch entry {i}: sequence {seq} at position {}, expected {} (it holds {len} positions)",
                    batch.entries[i].pos,
                    len + k
                )));
            }
        }
        if idx.len() > max_per_seq {
            return Err(Error::Generate(format!(
                "batch: sequence {seq} has {} entries, at most {max_per_seq} per call",
                idx.len()
            )));
        }
        if len + idx.len() > ctx_size {
            return Err(Error::Generate(format!(
                "sequence {seq}: positions {len}..{} exceed the context size of {ctx_size} tokens",
                len + idx.len(),
            )));
        }
        segs.push(Seg { seq, row0: rows.len(), n: idx.len(), pos0: len });
        rows.extend_from_slice(idx);
    }
    Ok(Plan { rows, segs })
}

impl<'a> CpuBatchForward<'a> {
    /// A batch forward over a cache of `capacity` positions in pages of `page_size`, each sequence reaching at
    /// most `ctx_size` positions (which also picks the RoPE factors, `Model::rope_factors`).
    pub fn new(
        model: &'a Model<'a>,
        capacity: usize,
        page_size: usize,
        ctx_size: usize,
        cache_type: CacheType,
    ) -> Result<CpuBatchForward<'a>> {
        let c = &model.config;
        if cache_type == CacheType::Q8_0 && (!c.head_dim.is_multiple_of(32) || !c.head_dim_v.is_multiple_of(32)) {
            return Err(Error::Generate(format!(
                "a q8_0 KV cache needs head dimensions that are multiples of 32; this model's are {} and {}",
                c.head_dim, c.head_dim_v
            )));
        }
        Ok(CpuBatchForward {
            cache: PagedKvCache::new(
                c.n_layers,
                capacity,
                page_size,
                c.n_kv_heads * c.head_dim,
                c.n_kv_heads * c.head_dim_v,
                cache_type,
            )?,
            model,
            s: Scratch::default(),
            logits: Vec::new(),
            logit_row: Vec::new(),
            numerics: &LlamaCpp,
            ctx_size,
            rope_factors: model.rope_factors(ctx_size),
        })
    }

    /// Round like llama.cpp's CPU backend (on by default), or compute exact f32 products.
    pub fn set_llama_rounding(&mut self, on: bool) {
        self.numerics = if on { &LlamaCpp } else { &ExactF32 };
    }

    pub fn cache(&self) -> &PagedKvCache {
        &self.cache
    }

    /// Check `batch` against the vocabulary, the sequences and the context; group its entries by sequence.
    fn plan(&self, batch: &Batch) -> Result<Plan> {
        plan_batch(batch, self.model.n_vocab(), self.ctx_size, MAX_BATCH, |s| self.cache.seq_len(s))
    }

    fn run(&mut self, batch: &Batch) -> Result<()> {
        let plan = self.plan(batch)?;
        let wants: Vec<(SeqId, usize)> = plan.segs.iter().map(|g| (g.seq, g.n)).collect();
        self.cache.append(&wants)?;
        let m = self.model;
        let c = &m.config;
        let n = batch.len();
        let num = self.numerics;
        let round = num.like_llama_cpp();
        self.s.fit(c, n);
        let s = &mut self.s;
        let dim = c.dim;
        let seg_n: Vec<usize> = plan.segs.iter().map(|g| g.n).collect();

        // token embedding, in row order
        let rb = m.token_embd.row_bytes();
        for (r, &i) in plan.rows.iter().enumerate() {
            let id = batch.entries[i].token as usize;
            cpu::embedding_row(m.token_embd.ty, &m.token_embd.data[id * rb..][..rb], &mut s.x[r * dim..(r + 1) * dim])?;
        }
        if let Some(e) = m.embd_scale {
            cpu::scale(&mut s.x[..n * dim], e);
        }
        // rows whose logits are wanted (row order), and their count per segment
        let sel: Vec<usize> = (0..n).filter(|&r| batch.entries[plan.rows[r]].logits).collect();
        let sel_n: Vec<usize> = plan
            .segs
            .iter()
            .map(|g| sel.iter().filter(|&&r| r >= g.row0 && r < g.row0 + g.n).count())
            .collect();
        let sel_segs: Vec<usize> = sel_n.iter().copied().filter(|&k| k > 0).collect();

        let mut ops = CpuOps {
            m,
            s: &mut *s,
            cache: &mut self.cache,
            num,
            rope_factors: self.rope_factors,
            segs: &plan.segs,
            seg_n: &seg_n,
            sel: &sel,
            sel_segs: &sel_segs,
            narrowed: false,
        };
        for (il, l) in m.layers.iter().enumerate() {
            layer::layer(&mut ops, l, il, m.activation, n)?;
        }
        if !round {
            for (k, &r) in sel.iter().enumerate() {
                s.x.copy_within(r * dim..(r + 1) * dim, k * dim);
            }
        }

        // ---- head on the wanted rows ----
        let n_vocab = m.n_vocab();
        let ns = sel.len();
        self.logits.clear();
        self.logits.resize(ns * n_vocab, 0.0);
        if ns > 0 {
            let x = &mut s.x[..ns * dim];
            cpu::rmsnorm_inplace(x, &m.output_norm, dim, c.rms_eps);
            num.project(&m.output, x, &mut self.logits, &sel_segs);
            if let Some(cap) = m.final_softcap {
                num.softcap(&mut self.logits, cap);
            }
        }
        self.logit_row = vec![None; n];
        for (k, &r) in sel.iter().enumerate() {
            self.logit_row[plan.rows[r]] = Some(k);
        }
        Ok(())
    }
}

/// The CPU's steps of `layer::layer` over one batch: its scratch, cache and numerics, and the batch's segments
/// (the rows of each sequence, for the mat-muls and the attention).
struct CpuOps<'r, 'a> {
    m: &'a Model<'a>,
    s: &'r mut Scratch,
    cache: &'r mut PagedKvCache,
    num: &'static dyn CpuNumerics,
    rope_factors: Option<&'a [f32]>,
    segs: &'r [Seg],
    /// Rows per segment; after `ffn_rows` narrowed them (`narrowed`), the wanted rows per segment instead.
    seg_n: &'r [usize],
    sel: &'r [usize],
    sel_segs: &'r [usize],
    narrowed: bool,
}

impl CpuOps<'_, '_> {
    /// The scratch's activation buffers in `Buf` order.
    fn bufs(&mut self) -> [&mut Vec<f32>; 10] {
        let s = &mut *self.s;
        [&mut s.x, &mut s.xb, &mut s.q, &mut s.k, &mut s.v, &mut s.att, &mut s.o, &mut s.gate, &mut s.up, &mut s.act]
    }

    fn buf(&mut self, b: Buf) -> &mut Vec<f32> {
        self.bufs().into_iter().nth(b as usize).expect("ten buffers")
    }
}

impl<'a> LayerOps for CpuOps<'_, 'a> {
    type Layer = Layer<'a>;

    fn has(&self, l: &Layer<'a>, p: Part) -> bool {
        l.w.part(p).is_some()
    }

    fn rmsnorm(&mut self, l: &Layer<'a>, p: Part, dst: Buf, src: Buf, rows: usize) -> Result<()> {
        let c = &self.m.config;
        let (eps, dim) = (c.rms_eps, c.dim);
        let w = l.w.part(p).expect("the layer asked has() first");
        if matches!(p, Part::QNorm | Part::KNorm) {
            let len = rows * dst.width(&self.m.config);
            cpu::rmsnorm_inplace(&mut self.buf(dst)[..len], w, c.head_dim, eps);
        } else if dst == src {
            cpu::rmsnorm_inplace(&mut self.buf(dst)[..rows * dim], w, dim, eps);
        } else {
            let (d, s) = layer::pair(self.bufs(), dst, src);
            cpu::rmsnorm(&mut d[..rows * dim], &s[..rows * dim], w, dim, eps);
        }
        Ok(())
    }

    fn project(&mut self, l: &Layer<'a>, w: Proj, src: Buf, dst: Buf, _rows: usize) -> Result<()> {
        let (num, segs) = (self.num, if self.narrowed { self.sel_segs } else { self.seg_n });
        let (d, s) = layer::pair(self.bufs(), dst, src);
        num.project(l.w.mat(w), s, d, segs);
        Ok(())
    }

    fn add_bias(&mut self, l: &Layer<'a>, p: Part, dst: Buf, rows: usize) -> Result<()> {
        let len = rows * dst.width(&self.m.config);
        cpu::add_bias(&mut self.buf(dst)[..len], l.w.part(p).expect("the layer asked has() first"));
        Ok(())
    }

    fn attend(&mut self, l: &Layer<'a>, il: usize, rows: usize) -> Result<()> {
        let (m, num) = (self.m, self.num);
        let c = &m.config;
        let round = num.like_llama_cpp();
        let (q_dim, kv_dim, kv_dim_v) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim_v);
        let att_dim = c.n_heads * c.head_dim_v;
        let s = &mut *self.s;
        let (q, k, v) = (&mut s.q[..rows * q_dim], &mut s.k[..rows * kv_dim], &s.v[..rows * kv_dim_v]);
        let rp = RopeParams {
            head_dim: c.head_dim,
            rope_dim: c.rope_dim,
            theta_base: l.rope_theta,
            freq_scale: l.rope_freq_scale,
            pairing: m.rope_pairing,
            freq_factors: self.rope_factors,
            mscale: c.rope_attn_factor,
        };
        let mut scale = m.attn_scale;
        for g in self.segs {
            let (qs, ks) = (&mut q[g.row0 * q_dim..(g.row0 + g.n) * q_dim], &mut k[g.row0 * kv_dim..(g.row0 + g.n) * kv_dim]);
            num.rope(qs, c.n_heads, g.pos0, &rp);
            num.rope(ks, c.n_kv_heads, g.pos0, &rp);
            for t in 0..g.n {
                let r = g.row0 + t;
                self.cache.write(il, g.seq, g.pos0 + t, &k[r * kv_dim..(r + 1) * kv_dim], &v[r * kv_dim_v..(r + 1) * kv_dim_v])?;
            }
        }
        if round && m.q_prescale {
            // llama.cpp's gemma3 and phi3 scale q before attention, which then scales by 1
            cpu::scale(q, scale);
            scale = 1.0;
        }
        use rayon::prelude::*;
        let cache = &*self.cache;
        let q = &*q;
        // each sequence's attention over its own keys, the sequences in parallel
        let mut outs: Vec<(&Seg, &mut [f32])> = Vec::with_capacity(self.segs.len());
        let mut rest = &mut s.att[..rows * att_dim];
        for g in self.segs {
            let (a, b) = rest.split_at_mut(g.n * att_dim);
            outs.push((g, a));
            rest = b;
        }
        outs.into_par_iter().try_for_each(|(g, out)| {
            let ap = AttnParams {
                n_tok: g.n,
                pos0: g.pos0,
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_dim: c.head_dim,
                head_dim_v: c.head_dim_v,
                scale,
                window: l.window,
                round_like_cache: round,
            };
            cache.attend(il, g.seq, out, &q[g.row0 * q_dim..(g.row0 + g.n) * q_dim], &ap)
        })
    }

    fn glu(&mut self, act: Activation, rows: usize) -> Result<()> {
        let hn = rows * self.m.config.hidden_dim;
        let s = &mut *self.s;
        self.num.glu(act, &mut s.act[..hn], &s.gate[..hn], &s.up[..hn]);
        Ok(())
    }

    fn add_residual(&mut self, rows: usize) -> Result<()> {
        let n = rows * self.m.config.dim;
        cpu::add_inplace(&mut self.s.x[..n], &self.s.o[..n]);
        Ok(())
    }

    /// llama.cpp (and `CpuForward`) run the last layer's feed-forward only on the rows whose logits are wanted:
    /// they move to the front, in order, and the mat-muls take their segments.
    fn ffn_rows(&mut self, il: usize, rows: usize) -> Result<usize> {
        if il + 1 < self.m.layers.len() || !self.num.like_llama_cpp() {
            return Ok(rows);
        }
        let dim = self.m.config.dim;
        for (k, &r) in self.sel.iter().enumerate() {
            self.s.x.copy_within(r * dim..(r + 1) * dim, k * dim);
        }
        self.narrowed = true;
        Ok(self.sel.len())
    }
}

impl BatchForward for CpuBatchForward<'_> {
    fn add_seq(&mut self, seq: SeqId) -> Result<()> {
        self.cache.add_seq(seq)
    }

    fn remove_seq(&mut self, seq: SeqId) -> Result<()> {
        self.cache.remove_seq(seq)
    }

    fn fork_seq(&mut self, src: SeqId, dst: SeqId, len: Option<usize>) -> Result<()> {
        self.cache.fork_seq(src, dst, len)
    }

    fn truncate_seq(&mut self, seq: SeqId, len: usize) -> Result<()> {
        self.cache.truncate_seq(seq, len)
    }

    fn seq_len(&self, seq: SeqId) -> Option<usize> {
        self.cache.seq_len(seq)
    }

    fn decode(&mut self, batch: &Batch) -> Result<()> {
        self.logit_row.clear();
        // the whole step on a thread of the pool: each of its ~15 parallel operations per layer then starts on
        // this thread at once instead of waking the pool's threads and putting the caller to sleep
        rayon::scope(|_| self.run(batch))
    }

    fn logits(&self, i: usize) -> Option<&[f32]> {
        let n_vocab = self.model.n_vocab();
        self.logit_row.get(i).copied().flatten().map(|k| &self.logits[k * n_vocab..(k + 1) * n_vocab])
    }

    fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    fn ctx_size(&self) -> usize {
        self.ctx_size
    }

    fn kv_bytes(&self) -> usize {
        self.cache.bytes()
    }
}
