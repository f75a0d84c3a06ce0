//! Device layout of one layer's KV cache (its keys or its values): the one definition shared by the kernel crate
//! (`kv.rs`) and the host launchers (`host/backend/cuda.rs` includes this file by path), so the two sides cannot
//! disagree. A row is one position: the `width` = n_kv_heads * head_dim elements of every KV head.
//!
//! - f16: row j is `width` halves at byte `2 * width * j`.
//! - q8_0 (llama.cpp's `-ctk q8_0 -ctv q8_0`): the row's `width / 32` blocks of ggml's `block_q8_0` (an f16 scale d
//!   and 32 i8 quants q, x = q * d, the numbers of the CPU cache) with the two parts split into arrays, at byte
//!   `q8_0_row_bytes(width) * j`:
//!
//! | part | offset in the row | contents |
//! |---|---|---|
//! | quants | 0 | `width` i8: block b's at `32 b` |
//! | scales | `width` | `width / 32` f16: block b's d at `width + 2 b` |
//! | padding | `width + width / 16` | zeros up to a multiple of 16 bytes |
//!
//! Why not ggml's 34-byte blocks back to back: the attention kernels read a key's quants as 16-byte pieces, and a
//! 34-byte stride leaves them 2-byte aligned. Split, every row starts 16-byte aligned (its stride is a multiple of
//! 16), a head's quants start at a multiple of 32 bytes within it (head dims are multiples of 32), and its scales
//! lie together after the quants. A row per position (rather than the scales of many positions in one array)
//! keeps the address of position j a function of `width` alone, so no kernel needs the context size. The padding
//! costs at most 14 bytes a row (SmolLM2's 192-wide rows: 208 bytes instead of 204).

/// Elements per q8_0 block.
pub const QK8_0: u32 = 32;

/// Bytes of one q8_0 row of `width` elements (`width` a multiple of 32): quants, scales, padding.
#[inline(always)]
pub const fn q8_0_row_bytes(width: u32) -> u32 {
    (width + width / 16 + 15) & !15
}

/// Byte offset within a q8_0 row of the scale of the block holding element `e`.
#[inline(always)]
pub const fn q8_0_scale_offset(width: u32, e: u32) -> u32 {
    width + e / QK8_0 * 2
}
