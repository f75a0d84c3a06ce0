//! Tile geometry and shared-memory layout of the tensor-core flash attention (`attention::attention_flash`):
//! the one definition shared by the kernel crate and the host launcher (`host/backend/cuda_flash.rs` includes
//! this file by path), so the dynamic shared-memory size the host asks for is the one the kernel carves up.
//!
//! | part | bytes | contents |
//! |---|---|---|
//! | q | `ROWS * row_bytes(head_dim)` | the block's query rows as f16 (zeros for rows past the batch) |
//! | k | `KEYS * row_bytes(head_dim)` | one key tile, f16 as in the cache, filled by `cp.async` |
//! | v | `KEYS * row_bytes(head_dim_v)` | one value tile, likewise |
//!
//! Each row carries 16 bytes of padding: rows then start 16 bytes apart modulo 128, so the 8 row addresses of
//! an `ldmatrix` fall in 8 different bank groups.

/// Query rows per block: 4 warps of 16 rows ((token, head) pairs).
pub const ROWS: u32 = 64;
/// Keys per tile.
pub const KEYS: u32 = 64;
/// Threads per block.
pub const THREADS: u32 = 128;

/// Bytes of one shared row of `d` f16 values, padding included.
pub const fn row_bytes(d: u32) -> u32 {
    (d + 8) * 2
}

/// Offset of the key tile.
pub const fn off_k(d: u32) -> u32 {
    ROWS * row_bytes(d)
}

/// Offset of the value tile.
pub const fn off_v(d: u32) -> u32 {
    off_k(d) + KEYS * row_bytes(d)
}

/// Dynamic shared memory of the kernel for head dims `d` (q, k) and `dv` (v).
pub const fn smem_bytes(d: u32, dv: u32) -> u32 {
    off_v(d) + KEYS * row_bytes(dv)
}
