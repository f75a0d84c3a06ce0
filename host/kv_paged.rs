//! The KV cache of many sequences (CPU): a pool of pages of `page_size` positions, each page holding the keys and
//! values of those positions for every layer, and a page table per sequence. Pages are refcounted: a forked
//! sequence references its parent's pages, so a shared prompt prefix is stored once; the first write into a
//! shared, partly filled last page copies it first (copy on write). Positions of a sequence are appended in
//! order (a sequence may also be cut back to a shorter length). The capacity in positions is fixed at creation; a
//! sequence that does not fit is refused with an error naming it, and nothing is truncated. The bookkeeping
//! (`PageAllocator`) knows nothing of the storage; the GPU cache (`backend::cuda_batch`) uses it too.

use std::collections::BTreeMap;

use half::f16;

use crate::backend::cpu::{self, AttnParams, KvElem};
use crate::kv_cache::CacheType;
use crate::quant::blocks::BlockQ8_0;
use crate::quant::ggml_avx2::q8_0_block_avx;
use crate::{Error, Result};

/// A sequence's id in a batch and in the cache.
pub type SeqId = u32;

/// Positions per page unless the caller asks otherwise.
pub const DEFAULT_PAGE_SIZE: usize = 16;

/// One layer's pages: keys (n_pages * page_size, kv_dim), values (n_pages * page_size, kv_dim_v).
enum PagedLayer {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<f16>, v: Vec<f16> },
    /// Rows of kv_dim / 32 and kv_dim_v / 32 blocks.
    Q8_0 { k: Vec<BlockQ8_0>, v: Vec<BlockQ8_0> },
}

#[derive(Debug, Clone, Default)]
struct SeqKv {
    pages: Vec<u32>,
    len: usize,
}

/// The page bookkeeping of a paged KV cache, whatever holds the pages (host memory here, device memory in
/// `backend::cuda_batch`): a pool of `n_pages` pages of `page_size` positions, a page table and length per
/// sequence, a reference count per page (0: free), fork (pages shared by reference), copy on write of a shared,
/// partly filled last page (through the storage's own copy), truncate and remove. Written once for every
/// storage.
#[derive(Debug, Clone)]
pub struct PageAllocator {
    page_size: usize,
    n_pages: usize,
    /// References to each page (0: free).
    refs: Vec<u32>,
    /// Free pages, taken from the end.
    free: Vec<u32>,
    seqs: BTreeMap<SeqId, SeqKv>,
}

pub struct PagedKvCache {
    layers: Vec<PagedLayer>,
    ty: CacheType,
    kv_dim: usize,
    kv_dim_v: usize,
    alloc: PageAllocator,
}

fn alloc_vec<T: Clone>(n: usize, zero: T, bytes: usize, capacity: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::Generate(format!("kv cache of {capacity} positions needs {bytes} bytes: out of memory"))
    })?;
    v.resize(n, zero);
    Ok(v)
}

impl PageAllocator {
    /// Bookkeeping for `capacity` positions, rounded up to whole pages of `page_size`.
    pub fn new(capacity: usize, page_size: usize) -> Result<PageAllocator> {
        if page_size == 0 || capacity == 0 {
            return Err(Error::Generate(format!(
                "kv cache: capacity {capacity} and page size {page_size} must be positive"
            )));
        }
        let n_pages = capacity.div_ceil(page_size);
        Ok(PageAllocator {
            page_size,
            n_pages,
            refs: vec![0; n_pages],
            free: (0..n_pages as u32).rev().collect(),
            seqs: BTreeMap::new(),
        })
    }

    /// Positions the pool holds in all (whole pages).
    pub fn capacity(&self) -> usize {
        self.n_pages * self.page_size
    }

    pub fn page_size(&self) -> usize {
        self.page_size
    }

    pub fn n_pages(&self) -> usize {
        self.n_pages
    }

    pub fn free_pages(&self) -> usize {
        self.free.len()
    }

    /// Positions cached for `seq`, None when there is no such sequence.
    pub fn seq_len(&self, seq: SeqId) -> Option<usize> {
        self.seqs.get(&seq).map(|s| s.len)
    }

    pub fn seq_ids(&self) -> Vec<SeqId> {
        self.seqs.keys().copied().collect()
    }

    /// The pages of `seq` in order (a forked prefix shows the same page numbers).
    pub fn seq_pages(&self, seq: SeqId) -> Option<&[u32]> {
        self.seqs.get(&seq).map(|s| &s.pages[..])
    }

    /// References held on `page`.
    pub fn page_refs(&self, page: u32) -> u32 {
        self.refs[page as usize]
    }

    fn no_seq(seq: SeqId) -> Error {
        Error::Generate(format!("sequence {seq} does not exist"))
    }

    /// A new, empty sequence.
    pub fn add_seq(&mut self, seq: SeqId) -> Result<()> {
        if self.seqs.contains_key(&seq) {
            return Err(Error::Generate(format!("sequence {seq} already exists")));
        }
        self.seqs.insert(seq, SeqKv::default());
        Ok(())
    }

    /// Drop `seq`, freeing the pages no other sequence references.
    pub fn remove_seq(&mut self, seq: SeqId) -> Result<()> {
        let s = self.seqs.remove(&seq).ok_or_else(|| Self::no_seq(seq))?;
        for p in s.pages {
            self.unref(p);
        }
        Ok(())
    }

    fn unref(&mut self, p: u32) {
        let r = &mut self.refs[p as usize];
        *r -= 1;
        if *r == 0 {
            self.free.push(p);
        }
    }

    /// A new sequence `dst` holding the first `len` positions of `src` (all of them: None), sharing its pages.
    pub fn fork_seq(&mut self, src: SeqId, dst: SeqId, len: Option<usize>) -> Result<()> {
        let s = self.seqs.get(&src).ok_or_else(|| Self::no_seq(src))?;
        if self.seqs.contains_key(&dst) {
            return Err(Error::Generate(format!("sequence {dst} already exists")));
        }
        let len = len.unwrap_or(s.len);
        if len > s.len {
            return Err(Error::Generate(format!(
                "fork of sequence {src}: {len} positions asked, it holds {}",
                s.len
            )));
        }
        let pages = s.pages[..len.div_ceil(self.page_size)].to_vec();
        for &p in &pages {
            self.refs[p as usize] += 1;
        }
        self.seqs.insert(dst, SeqKv { pages, len });
        Ok(())
    }

    /// Cut `seq` back to its first `len` positions (a shorter length only), freeing pages past them.
    pub fn truncate_seq(&mut self, seq: SeqId, len: usize) -> Result<()> {
        let ps = self.page_size;
        let s = self.seqs.get_mut(&seq).ok_or_else(|| Self::no_seq(seq))?;
        if len > s.len {
            return Err(Error::Generate(format!(
                "sequence {seq} holds {} positions, cannot cut it to {len}",
                s.len
            )));
        }
        s.len = len;
        let dropped = s.pages.split_off(len.div_ceil(ps));
        for p in dropped {
            self.unref(p);
        }
        Ok(())
    }

    /// Pages `seq` needs to append `n` positions: new pages, plus one to copy a shared, partly filled last page.
    fn pages_needed(&self, s: &SeqKv, n: usize) -> usize {
        let ps = self.page_size;
        let cow = !s.len.is_multiple_of(ps) && n > 0 && self.refs[s.pages[s.len / ps] as usize] > 1;
        (s.len + n).div_ceil(ps) - s.pages.len() + cow as usize
    }

    /// Make room to append `n` positions to each `(seq, n)`, all or nothing: every sequence exists and the free
    /// pages suffice for all of them, else an error naming the sequence that does not fit (nothing changes).
    /// Then the shared last pages are copied (`copy_page(from, to)`: the storage copies page `from` into page
    /// `to`, in every layer) and new pages taken, and each length grows by its `n`.
    pub fn append(&mut self, wants: &[(SeqId, usize)], mut copy_page: impl FnMut(u32, u32) -> Result<()>) -> Result<()> {
        let mut total = 0;
        for &(seq, n) in wants {
            let s = self.seqs.get(&seq).ok_or_else(|| Self::no_seq(seq))?;
            let need = self.pages_needed(s, n);
            total += need;
            if total > self.free.len() {
                return Err(Error::Generate(format!(
                    "kv cache full: sequence {seq} needs {need} more pages of {} positions for positions {}..{}, \
                     but {} of the cache's {} pages ({} positions) are free for the whole batch",
                    self.page_size,
                    s.len,
                    s.len + n,
                    self.free.len() - (total - need),
                    self.n_pages,
                    self.capacity()
                )));
            }
        }
        let ps = self.page_size;
        for &(seq, n) in wants {
            if n == 0 {
                continue;
            }
            let mut s = self.seqs.remove(&seq).expect("checked above");
            if !s.len.is_multiple_of(ps) {
                let last = s.len / ps;
                let old = s.pages[last];
                if self.refs[old as usize] > 1 {
                    let new = self.free.pop().expect("counted above");
                    if let Err(e) = copy_page(old, new) {
                        self.free.push(new);
                        self.seqs.insert(seq, s);
                        return Err(e);
                    }
                    self.refs[new as usize] = 1;
                    self.unref(old);
                    s.pages[last] = new;
                }
            }
            while s.pages.len() < (s.len + n).div_ceil(ps) {
                let p = self.free.pop().expect("counted above");
                self.refs[p as usize] = 1;
                s.pages.push(p);
            }
            s.len += n;
            self.seqs.insert(seq, s);
        }
        Ok(())
    }

    /// The slot (row of the pool: page * page_size + offset) of position `pos` of `seq`, which `append` made
    /// room for.
    pub fn slot(&self, seq: SeqId, pos: usize) -> Result<usize> {
        let s = self.seqs.get(&seq).ok_or_else(|| Self::no_seq(seq))?;
        if pos >= s.len {
            return Err(Error::Generate(format!(
                "kv cache: position {pos} of sequence {seq} was not appended (it holds {})",
                s.len
            )));
        }
        Ok(s.pages[pos / self.page_size] as usize * self.page_size + pos % self.page_size)
    }

    /// The pages of `seq` that hold its positions 0..n, checked to be appended.
    pub fn pages_for(&self, seq: SeqId, n: usize) -> Result<&[u32]> {
        let s = self.seqs.get(&seq).ok_or_else(|| Self::no_seq(seq))?;
        if n > s.len {
            return Err(Error::Generate(format!(
                "kv cache: attention of sequence {seq} over {n} positions, it holds {}",
                s.len
            )));
        }
        Ok(&s.pages[..n.div_ceil(self.page_size)])
    }
}

impl PagedKvCache {
    /// A cache of `capacity` positions (rounded up to whole pages of `page_size`) for `n_layers` layers.
    pub fn new(
        n_layers: usize,
        capacity: usize,
        page_size: usize,
        kv_dim: usize,
        kv_dim_v: usize,
        ty: CacheType,
    ) -> Result<PagedKvCache> {
        let alloc = PageAllocator::new(capacity, page_size)?;
        if ty == CacheType::Q8_0 && (!kv_dim.is_multiple_of(32) || !kv_dim_v.is_multiple_of(32)) {
            return Err(Error::Generate(format!(
                "kv cache: q8_0 needs key and value widths that are multiples of 32, not {kv_dim} and {kv_dim_v}"
            )));
        }
        let positions = alloc.capacity();
        let bytes = crate::kv_cache::KvCache::bytes_for(n_layers, positions, kv_dim, kv_dim_v, ty);
        let mut layers = Vec::with_capacity(n_layers);
        for _ in 0..n_layers {
            layers.push(match ty {
                CacheType::F32 => PagedLayer::F32 {
                    k: alloc_vec(positions * kv_dim, 0.0, bytes, positions)?,
                    v: alloc_vec(positions * kv_dim_v, 0.0, bytes, positions)?,
                },
                CacheType::F16 => PagedLayer::F16 {
                    k: alloc_vec(positions * kv_dim, f16::ZERO, bytes, positions)?,
                    v: alloc_vec(positions * kv_dim_v, f16::ZERO, bytes, positions)?,
                },
                CacheType::Q8_0 => {
                    let zero = BlockQ8_0 { d: 0, qs: [0; 32] };
                    PagedLayer::Q8_0 {
                        k: alloc_vec(positions * kv_dim / 32, zero, bytes, positions)?,
                        v: alloc_vec(positions * kv_dim_v / 32, zero, bytes, positions)?,
                    }
                }
            });
        }
        Ok(PagedKvCache { layers, ty, kv_dim, kv_dim_v, alloc })
    }

    /// The page bookkeeping.
    pub fn pages(&self) -> &PageAllocator {
        &self.alloc
    }

    /// Positions the cache holds in all (whole pages).
    pub fn capacity(&self) -> usize {
        self.alloc.capacity()
    }

    pub fn page_size(&self) -> usize {
        self.alloc.page_size()
    }

    pub fn free_pages(&self) -> usize {
        self.alloc.free_pages()
    }

    pub fn cache_type(&self) -> CacheType {
        self.ty
    }

    pub fn bytes(&self) -> usize {
        crate::kv_cache::KvCache::bytes_for(self.layers.len(), self.capacity(), self.kv_dim, self.kv_dim_v, self.ty)
    }

    /// Positions cached for `seq`, None when there is no such sequence.
    pub fn seq_len(&self, seq: SeqId) -> Option<usize> {
        self.alloc.seq_len(seq)
    }

    pub fn seq_ids(&self) -> Vec<SeqId> {
        self.alloc.seq_ids()
    }

    /// The pages of `seq` in order (for tests: a forked prefix shows the same page numbers).
    pub fn seq_pages(&self, seq: SeqId) -> Option<&[u32]> {
        self.alloc.seq_pages(seq)
    }

    /// References held on `page`.
    pub fn page_refs(&self, page: u32) -> u32 {
        self.alloc.page_refs(page)
    }

    /// A new, empty sequence.
    pub fn add_seq(&mut self, seq: SeqId) -> Result<()> {
        self.alloc.add_seq(seq)
    }

    /// Drop `seq`, freeing the pages no other sequence references.
    pub fn remove_seq(&mut self, seq: SeqId) -> Result<()> {
        self.alloc.remove_seq(seq)
    }

    /// A new sequence `dst` holding the first `len` positions of `src` (all of them: None), sharing its pages.
    pub fn fork_seq(&mut self, src: SeqId, dst: SeqId, len: Option<usize>) -> Result<()> {
        self.alloc.fork_seq(src, dst, len)
    }

    /// Cut `seq` back to its first `len` positions (a shorter length only), freeing pages past them.
    pub fn truncate_seq(&mut self, seq: SeqId, len: usize) -> Result<()> {
        self.alloc.truncate_seq(seq, len)
    }

    /// `PageAllocator::append`, a shared last page copied in host memory.
    pub fn append(&mut self, wants: &[(SeqId, usize)]) -> Result<()> {
        let (layers, ps, kd, vd) = (&mut self.layers, self.alloc.page_size(), self.kv_dim, self.kv_dim_v);
        self.alloc.append(wants, |from, to| {
            copy_page(layers, ps, kd, vd, from, to);
            Ok(())
        })
    }

    /// Store one position's key (kv_dim) and value (kv_dim_v) at `layer`. The page must be the sequence's own
    /// (`append` copied a shared one).
    pub fn write(&mut self, layer: usize, seq: SeqId, pos: usize, k: &[f32], v: &[f32]) -> Result<()> {
        let slot = self.alloc.slot(seq, pos)?;
        debug_assert_eq!(self.alloc.page_refs((slot / self.page_size()) as u32), 1, "write into a shared page");
        let (kd, vd) = (self.kv_dim, self.kv_dim_v);
        fn store<T: KvElem>(dst: &mut [T], src: &[f32]) {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = T::from_f32(s);
            }
        }
        match &mut self.layers[layer] {
            PagedLayer::F32 { k: kc, v: vc } => {
                store(&mut kc[slot * kd..][..kd], k);
                store(&mut vc[slot * vd..][..vd], v);
            }
            PagedLayer::F16 { k: kc, v: vc } => {
                store(&mut kc[slot * kd..][..kd], k);
                store(&mut vc[slot * vd..][..vd], v);
            }
            PagedLayer::Q8_0 { k: kc, v: vc } => {
                // as ggml's set_rows into a q8_0 cache: `quantize_row_q8_0` (AVX2)
                let (kb, vb) = (kd / 32, vd / 32);
                for (b, x) in kc[slot * kb..][..kb].iter_mut().zip(k.chunks_exact(32)) {
                    *b = q8_0_block_avx(x);
                }
                for (b, x) in vc[slot * vb..][..vb].iter_mut().zip(v.chunks_exact(32)) {
                    *b = q8_0_block_avx(x);
                }
            }
        }
        Ok(())
    }

    /// Positions 0..n of `seq` at `layer` copied out contiguously (keys, values).
    #[cfg(test)]
    fn gather<T: Copy>(&self, s: &SeqKv, n: usize, kc: &[T], vc: &[T], k: &mut Vec<T>, v: &mut Vec<T>) {
        let (ps, kd, vd) = (self.page_size(), self.kv_dim, self.kv_dim_v);
        k.clear();
        v.clear();
        for (i, &p) in s.pages.iter().enumerate() {
            let take = ps.min(n.saturating_sub(i * ps));
            if take == 0 {
                break;
            }
            let base = p as usize * ps;
            k.extend_from_slice(&kc[base * kd..(base + take) * kd]);
            v.extend_from_slice(&vc[base * vd..(base + take) * vd]);
        }
    }

    /// Attention of `seq`'s queries `q` over its positions 0..p.pos0 + p.n_tok at `layer`, as `KvCache::attend`
    /// computes it over a contiguous cache (the same float operations, the keys and values read through the
    /// page table: `cpu::Paged`).
    pub fn attend(&self, layer: usize, seq: SeqId, out: &mut [f32], q: &[f32], p: &AttnParams) -> Result<()> {
        let n = p.pos0 + p.n_tok;
        let pages = self.alloc.pages_for(seq, n)?;
        fn paged<'a, T>(data: &'a [T], width: usize, pages: &'a [u32], page_size: usize, n_pos: usize) -> cpu::Paged<'a, T> {
            cpu::Paged { data, pages, page_size, width, n_pos }
        }
        let ps = self.page_size();
        match &self.layers[layer] {
            PagedLayer::F32 { k, v } => {
                cpu::attention_rows(out, q, &paged(k, self.kv_dim, pages, ps, n), &paged(v, self.kv_dim_v, pages, ps, n), p)
            }
            PagedLayer::F16 { k, v } => {
                let (k, v) = (paged(k, self.kv_dim, pages, ps, n), paged(v, self.kv_dim_v, pages, ps, n));
                if p.round_like_cache {
                    cpu::attention_ggml_rows(out, q, &k, &v, p);
                } else {
                    cpu::attention_rows(out, q, &k, &v, p);
                }
            }
            // a quantized cache has llama.cpp's numerics only
            PagedLayer::Q8_0 { k, v } => cpu::attention_q8_0_rows(
                out,
                q,
                &paged(k, self.kv_dim / 32, pages, ps, n),
                &paged(v, self.kv_dim_v / 32, pages, ps, n),
                p,
            ),
        }
        Ok(())
    }
}

/// Copy page `from` into page `to` in every layer of a host-memory pool.
fn copy_page(layers: &mut [PagedLayer], ps: usize, kd: usize, vd: usize, from: u32, to: u32) {
    let (f, t) = (from as usize * ps, to as usize * ps);
    for l in layers {
        match l {
            PagedLayer::F32 { k, v } => {
                k.copy_within(f * kd..(f + ps) * kd, t * kd);
                v.copy_within(f * vd..(f + ps) * vd, t * vd);
            }
            PagedLayer::F16 { k, v } => {
                k.copy_within(f * kd..(f + ps) * kd, t * kd);
                v.copy_within(f * vd..(f + ps) * vd, t * vd);
            }
            PagedLayer::Q8_0 { k, v } => {
                let (kb, vb) = (kd / 32, vd / 32);
                k.copy_within(f * kb..(f + ps) * kb, t * kb);
                v.copy_within(f * vb..(f + ps) * vb, t * vb);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize, ps: usize) -> PagedKvCache {
        PagedKvCache::new(2, capacity, ps, 4, 4, CacheType::F32).unwrap()
    }

    /// Write position markers: k = v = [seq * 1000 + pos + layer * 0.5; 4].
    fn fill(c: &mut PagedKvCache, seq: SeqId, from: usize, to: usize) {
        for pos in from..to {
            for l in 0..2 {
                let x = [seq as f32 * 1000.0 + pos as f32 + l as f32 * 0.5; 4];
                c.write(l, seq, pos, &x, &x).unwrap();
            }
        }
    }

    /// Keys of `seq` at layer 0 (first element of each position).
    fn keys(c: &PagedKvCache, seq: SeqId) -> Vec<f32> {
        let s = &c.alloc.seqs[&seq];
        let PagedLayer::F32 { k: kc, v: vc } = &c.layers[0] else { unreachable!() };
        let (mut k, mut v) = (Vec::new(), Vec::new());
        c.gather(s, s.len, kc, vc, &mut k, &mut v);
        assert_eq!(k, v);
        k.chunks(4).map(|r| r[0]).collect()
    }

    #[test]
    fn alloc_free_and_capacity() {
        let mut c = cache(30, 8); // rounded up to 4 pages, 32 positions
        assert_eq!((c.capacity(), c.free_pages()), (32, 4));
        c.add_seq(1).unwrap();
        assert!(c.add_seq(1).unwrap_err().to_string().contains("sequence 1 already exists"));
        c.append(&[(1, 10)]).unwrap();
        fill(&mut c, 1, 0, 10);
        assert_eq!((c.seq_len(1), c.free_pages()), (Some(10), 2));
        assert_eq!(keys(&c, 1), (0..10).map(|p| 1000.0 + p as f32).collect::<Vec<_>>());
        // a write past the appended positions is refused
        assert!(c.write(0, 1, 10, &[0.0; 4], &[0.0; 4]).is_err());
        // sequence 2 asks for 23 positions (3 pages) with 2 free: an error naming it, nothing changes
        c.add_seq(2).unwrap();
        let err = c.append(&[(1, 2), (2, 23)]).unwrap_err().to_string();
        assert!(err.contains("sequence 2 needs 3 more pages") && err.contains("32 positions"), "{err}");
        assert_eq!((c.seq_len(1), c.seq_len(2), c.free_pages()), (Some(10), Some(0), 2));
        c.append(&[(1, 2), (2, 16)]).unwrap();
        assert_eq!(c.free_pages(), 0);
        fill(&mut c, 1, 10, 12);
        fill(&mut c, 2, 0, 16);
        // removing frees its pages; the other sequence is untouched
        c.remove_seq(2).unwrap();
        assert_eq!(c.free_pages(), 2);
        assert_eq!(keys(&c, 1), (0..12).map(|p| 1000.0 + p as f32).collect::<Vec<_>>());
        assert!(c.remove_seq(2).unwrap_err().to_string().contains("sequence 2 does not exist"));
        c.truncate_seq(1, 3).unwrap();
        assert_eq!((c.seq_len(1), c.free_pages()), (Some(3), 3));
    }

    #[test]
    fn fork_shares_pages_and_copies_on_write() {
        let mut c = cache(64, 8);
        c.add_seq(0).unwrap();
        c.append(&[(0, 12)]).unwrap(); // one full page, one with 4 of 8 positions
        fill(&mut c, 0, 0, 12);
        c.fork_seq(0, 1, None).unwrap();
        c.fork_seq(0, 2, Some(8)).unwrap(); // the full page only
        let p0 = c.seq_pages(0).unwrap().to_vec();
        assert_eq!(c.seq_pages(1).unwrap(), &p0[..]);
        assert_eq!(c.seq_pages(2).unwrap(), &p0[..1]);
        assert_eq!((c.page_refs(p0[0]), c.page_refs(p0[1])), (3, 2));
        assert_eq!(c.free_pages(), 6);
        // sequence 1 appends into the shared partial page: it gets a copy, sequence 0 keeps the original
        c.append(&[(1, 2)]).unwrap();
        fill(&mut c, 1, 12, 14);
        let p1 = c.seq_pages(1).unwrap().to_vec();
        assert_eq!(p1[0], p0[0]);
        assert_ne!(p1[1], p0[1]);
        assert_eq!((c.page_refs(p0[1]), c.page_refs(p1[1])), (1, 1));
        let want0: Vec<f32> = (0..12).map(|p| p as f32).collect();
        assert_eq!(keys(&c, 0), want0);
        let mut want1 = want0.clone();
        want1.extend([1012.0, 1013.0]);
        assert_eq!(keys(&c, 1), want1);
        // now unshared, sequence 0 appends in place; 2 starts a page of its own after the shared full one
        c.append(&[(0, 1), (2, 1)]).unwrap();
        assert_eq!(c.seq_pages(0).unwrap(), &p0[..]);
        fill(&mut c, 0, 12, 13);
        fill(&mut c, 2, 8, 9);
        assert_eq!(keys(&c, 2), (0..8).map(|p| p as f32).chain([2008.0]).collect::<Vec<_>>());
        // removing every sequence gives every page back
        for s in [0, 1, 2] {
            c.remove_seq(s).unwrap();
        }
        assert_eq!(c.free_pages(), 8);
        assert!(c.alloc.refs.iter().all(|&r| r == 0));
    }

    #[test]
    fn fork_errors() {
        let mut c = cache(16, 4);
        c.add_seq(0).unwrap();
        c.append(&[(0, 3)]).unwrap();
        assert!(c.fork_seq(5, 6, None).unwrap_err().to_string().contains("sequence 5 does not exist"));
        assert!(c.fork_seq(0, 0, None).unwrap_err().to_string().contains("already exists"));
        assert!(c.fork_seq(0, 1, Some(4)).unwrap_err().to_string().contains("holds 3"));
    }
}
