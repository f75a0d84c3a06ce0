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
use crate::model::{Activation, Mat, Model, Scratch, MAX_BATCH};
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
struct Plan {
    rows: Vec<usize>,
    segs: Vec<Seg>,
}

struct Seg {
    seq: SeqId,
    /// First row in the reordered batch, number of rows, position of the first.
    row0: usize,
    n: usize,
    pos0: usize,
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
        if batch.is_empty() {
            return Err(Error::Generate("batch: no entries".into()));
        }
        let n_vocab = self.model.n_vocab();
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
            let len = self.cache.seq_len(seq).ok_or_else(|| Error::Generate(format!("batch: sequence {seq} does not exist")))?;
            for (k, &i) in idx.iter().enumerate() {
                if batch.entries[i].pos != len + k {
                    return Err(Error::Generate(format!(
                        "batch entry {i}: sequence {seq} at position {}, expected {} (it holds {len} positions)",
                        batch.entries[i].pos,
                        len + k
                    )));
                }
            }
            if idx.len() > MAX_BATCH {
                return Err(Error::Generate(format!(
                    "batch: sequence {seq} has {} entries, at most {MAX_BATCH} per call",
                    idx.len()
                )));
            }
            if len + idx.len() > self.ctx_size {
                return Err(Error::Generate(format!(
                    "sequence {seq}: positions {len}..{} exceed the context size of {} tokens",
                    len + idx.len(),
                    self.ctx_size
                )));
            }
            segs.push(Seg { seq, row0: rows.len(), n: idx.len(), pos0: len });
            rows.extend_from_slice(idx);
        }
        Ok(Plan { rows, segs })
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
        let (q_dim, kv_dim, kv_dim_v) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim_v);
        let att_dim = c.n_heads * c.head_dim_v;
        // rows whose logits are wanted (row order), and their count per segment
        let sel: Vec<usize> = (0..n).filter(|&r| batch.entries[plan.rows[r]].logits).collect();
        let sel_n: Vec<usize> = plan
            .segs
            .iter()
            .map(|g| sel.iter().filter(|&&r| r >= g.row0 && r < g.row0 + g.n).count())
            .collect();
        let sel_segs: Vec<usize> = sel_n.iter().copied().filter(|&k| k > 0).collect();

        for (il, l) in m.layers.iter().enumerate() {
            // ---- attention ----
            cpu::rmsnorm(&mut s.xb[..n * dim], &s.x[..n * dim], &l.attn_norm, dim, c.rms_eps);
            num.project(&l.wq, &s.xb, &mut s.q, &seg_n);
            num.project(&l.wk, &s.xb, &mut s.k, &seg_n);
            num.project(&l.wv, &s.xb, &mut s.v, &seg_n);
            let (q, k, v) = (&mut s.q[..n * q_dim], &mut s.k[..n * kv_dim], &mut s.v[..n * kv_dim_v]);
            if let Some(b) = &l.q_bias {
                cpu::add_bias(q, b);
            }
            if let Some(b) = &l.k_bias {
                cpu::add_bias(k, b);
            }
            if let Some(b) = &l.v_bias {
                cpu::add_bias(v, b);
            }
            if let Some(w) = &l.q_norm {
                cpu::rmsnorm_inplace(q, w, c.head_dim, c.rms_eps);
            }
            if let Some(w) = &l.k_norm {
                cpu::rmsnorm_inplace(k, w, c.head_dim, c.rms_eps);
            }
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
            for g in &plan.segs {
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
            {
                use rayon::prelude::*;
                let cache = &self.cache;
                let q = &*q;
                // each sequence's attention over its own keys, the sequences in parallel
                let mut outs: Vec<(&Seg, &mut [f32])> = Vec::with_capacity(plan.segs.len());
                let mut rest = &mut s.att[..n * att_dim];
                for g in &plan.segs {
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
                })?;
            }
            num.project(&l.wo, &s.att, &mut s.o, &seg_n);
            if let Some(w) = &l.post_attn_norm {
                cpu::rmsnorm_inplace(&mut s.o[..n * dim], w, dim, c.rms_eps);
            }
            cpu::add_inplace(&mut s.x[..n * dim], &s.o[..n * dim]);

            // ---- feed-forward ----
            // llama.cpp (and `CpuForward`) run the last layer's feed-forward only on the rows whose logits are
            // wanted: move them to the front, in order, and run it on them alone
            let last = il + 1 == m.layers.len();
            let (nf, segs_f): (usize, &[usize]) = if last && round {
                for (k, &r) in sel.iter().enumerate() {
                    s.x.copy_within(r * dim..(r + 1) * dim, k * dim);
                }
                (sel.len(), &sel_segs)
            } else {
                (n, &seg_n)
            };
            if nf == 0 {
                continue;
            }
            let x = &mut s.x[..nf * dim];
            cpu::rmsnorm(&mut s.xb[..nf * dim], x, &l.ffn_norm, dim, c.rms_eps);
            num.project(&l.w_gate, &s.xb, &mut s.gate, segs_f);
            num.project(&l.w_up, &s.xb, &mut s.up, segs_f);
            let hn = nf * c.hidden_dim;
            let (act, gate, up) = (&mut s.act[..hn], &s.gate[..hn], &s.up[..hn]);
            num.glu(m.activation, act, gate, up);
            num.project(&l.w_down, &s.act, &mut s.o, segs_f);
            if let Some(w) = &l.post_ffw_norm {
                cpu::rmsnorm_inplace(&mut s.o[..nf * dim], w, dim, c.rms_eps);
            }
            cpu::add_inplace(x, &s.o[..nf * dim]);
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
}
