//! Attention of a batch of many sequences over a paged f16 KV cache, and the per-token RoPE and cache store that
//! feed it (`host::backend::cuda_batch`). CPU twins: `host::backend::cpu::rope` (each token at its own position),
//! `host::kv_paged::PagedKvCache::write` and `host::backend::cpu::attention_rows` over `cpu::Paged` rows.
//!
//! Pool layout (per layer): k (n_slots, n_kv_heads * head_dim), v (n_slots, n_kv_heads * head_dim_v) f16, where
//! slot = page * PAGE + offset. Batch token t is at position `pos[t]` of the sequence whose page table is row
//! `tok_table[t]` of `tables` (n_tables, max_pages): position j of it lies in slot
//! `tables[tok_table[t] * max_pages + j / PAGE] * PAGE + j % PAGE`. Every index array lives in device memory, so a
//! launch can be captured into a CUDA graph and replayed with new positions, slots and page tables.

use core::arch::asm;

use crate::attention::{attention_decode, attention_split, dec_floats};
use crate::common::*;
use crate::kv::F16;

/// Positions per page (`host::kv_paged::DEFAULT_PAGE_SIZE`; the launcher checks the pool's).
pub const PAGE: u32 = 16;

/// Cache row (slot) of position j through a page table row.
#[inline(always)]
unsafe fn paged_row(tbl: *const u32, j: u32) -> u32 {
    *tbl.add((j / PAGE) as usize) * PAGE + j % PAGE
}

/// Rotate each head of row t of x in place by the angles of position `pos[t]` (each batch token at its own
/// position); pairs as `rope::rope_f32`, whose rotation (`rope::rope_row`) it shares.
///
/// Launch: grid = (n_tok, ceil(n_heads * rope_dim / 2 / 256), 1), block = (256, 1, 1): a row's (head, pair) items
/// spread over its blocks, one item per thread (a decode batch of a few tokens would otherwise leave each thread a
/// serial chain of loads and stores). Traffic: one read and write of x, rope_dim floats of the table per row.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn rope_pos_f32(x: *mut f32 /* (n_tok, n_heads * head_dim) */,
                                               cos: *const f32 /* (ctx, rope_dim / 2) */, sin: *const f32,
                                               pos: *const u32 /* (n_tok,) */, n_heads: u32, head_dim: u32,
                                               rope_dim: u32, neox: u32) {
    crate::common::pdl_enter();
    let t = bid();
    crate::rope::rope_row(x.add((t * n_heads * head_dim) as usize), cos, sin, *pos.add(t as usize), n_heads, head_dim,
                          rope_dim, neox, bid_y() * ntid() + tid(), ntid() * nctaid_y());
}

/// Store row t of k and of v into the f16 pools at slot `slots[t]`: k_pool[slots[t] * kv_dim + i] = f16(k[t *
/// kv_dim + i]), likewise v; the conversion of `rope::kv_store_f16`.
///
/// Launch: grid = (n_tok, ceil(max(kv_dim, kv_dim_v) / 256), 1), block = (256, 1, 1): one element of k and of v
/// per thread. Traffic: 4 bytes read + 2 written per element of k and v.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn kv_store_slots_f16(k_pool: *mut u16, v_pool: *mut u16, k: *const f32, v: *const f32,
                                                     slots: *const u32 /* (n_tok,) */, kv_dim: u32, kv_dim_v: u32) {
    crate::common::pdl_enter();
    let t = bid();
    let slot = *slots.add(t as usize) as usize;
    let (kd, vd) = (k_pool.add(slot * kv_dim as usize), v_pool.add(slot * kv_dim_v as usize));
    let (ks, vs) = (k.add((t * kv_dim) as usize), v.add((t * kv_dim_v) as usize));
    let (first, step) = (bid_y() * ntid() + tid(), ntid() * nctaid_y());
    let mut i = first;
    while i < kv_dim {
        *kd.add(i as usize) = f32_to_f16(*ks.add(i as usize));
        i += step;
    }
    let mut i = first;
    while i < kv_dim_v {
        *vd.add(i as usize) = f32_to_f16(*vs.add(i as usize));
        i += step;
    }
}

/// Causal GQA attention of batch token t (query row t, at position pos[t]) over its own sequence's positions
/// max(0, pos - window + 1) ..= pos, read through its page table: `attention::attention_f16`'s split / online
/// softmax / last-block combine (the same body, `attention_split`), keys in chunks of `CHUNK` positions. Tokens of
/// one prompt chunk are causal among themselves because each sees only positions up to its own.
///
/// Launch: grid = (n_heads, n_tok, n_splits), block = (128, 1, 1); n_splits * CHUNK covers pos + 1 of every
/// token (chunks past a token's position find no keys and write an empty partial); `counters` zero.
/// Traffic: each block reads its chunk of K and V once (2 bytes per element, rows gathered by page), its page-table
/// entries and q once; the combining block reads n_splits * (head_dim_v + 2) floats.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn attention_paged_f16(
    out: *mut f32 /* (n_tok, n_heads * head_dim_v) */, part: *mut f32, counters: *mut u32,
    q: *const f32 /* (n_tok, n_heads * head_dim) */, k: *const u16, v: *const u16, pos: *const u32,
    tables: *const u32, tok_table: *const u32, max_pages: u32, n_heads: u32, n_kv_heads: u32, head_dim: u32,
    head_dim_v: u32, scale: f32, window: u32, n_splits: u32,
) {
    crate::common::pdl_enter();
    let t = bid_y();
    let tbl = tables.add((*tok_table.add(t as usize) * max_pages) as usize);
    attention_split::<F16>(out, part, counters, q, k as *const u8, v as *const u8, t, *pos.add(t as usize),
                           |j| paged_row(tbl, j), n_heads, n_kv_heads, head_dim, head_dim_v, scale, window, n_splits)
}

macro_rules! attention_paged_decode_kernels {
    ($($name:ident: $g:literal;)*) => {$(
        /// Flash-decoding attention (`attention::attention_decode`, groups of up to
        #[doc = stringify!($g)]
        /// heads) of batch token t = blockIdx.z at position pos[t] over its sequence's pages: the 16-byte K/V row
        /// loads, the per-chunk softmax and the last-active-chunk combine of `attention_decode_g*`, each key row
        /// found through the token's page table. q, out, the partials and the arrival counters are those of row t.
        ///
        /// Launch: grid = (n_kv_heads, n_splits, n_tok), block = (256, 1, 1); head dims as `attention_decode_g*`;
        /// n_splits * CHUNK covers every pos[t] + 1 (chunks past it exit at once); `counters` (n_tok * n_kv_heads)
        /// zero. Traffic: per token, its causal range of K and V once (2 bytes per element) plus one page-table
        /// entry per key row; partials group x (head_dim_v + 2) floats per active chunk.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            out: *mut f32 /* (n_tok, n_heads * head_dim_v) */, part: *mut f32, counters: *mut u32,
            q: *const f32 /* (n_tok, n_heads * head_dim) */, k: *const u16, v: *const u16, pos: *const u32,
            tables: *const u32, tok_table: *const u32, max_pages: u32, n_heads: u32, n_kv_heads: u32, head_dim: u32,
            head_dim_v: u32, scale: f32, window: u32, n_splits: u32,
        ) {
            crate::common::pdl_enter();
            let p: u64;
            // SAFETY: declares a shared array local to this asm scope and returns its generic address.
            asm!("{{", concat!(".shared .align 16 .b8 ", stringify!($name), "_smem[{n}];"),
                 concat!("cvta.shared.u64 {p}, ", stringify!($name), "_smem;"), "}}",
                 n = const dec_floats($g) * 4, p = out(reg64) p);
            let t = bid_z() as usize;
            let tbl = tables.add(*tok_table.add(t) as usize * max_pages as usize);
            let (nh, nkv) = (n_heads as usize, n_kv_heads as usize);
            let row = head_dim_v as usize + 2;
            attention_decode::<F16, $g>(p as *mut f32, out.add(t * nh * head_dim_v as usize),
                                        part.add(t * nh * n_splits as usize * row), counters.add(t * nkv),
                                        q.add(t * nh * head_dim as usize), k as *const u8, v as *const u8,
                                        *pos.add(t), |j| paged_row(tbl, j), n_heads, n_kv_heads, head_dim, head_dim_v,
                                        scale, window, n_splits)
        }
    )*};
}

attention_paged_decode_kernels! {
    attention_paged_decode_g1: 1;
    attention_paged_decode_g2: 2;
    attention_paged_decode_g4: 4;
    attention_paged_decode_g8: 8;
}
