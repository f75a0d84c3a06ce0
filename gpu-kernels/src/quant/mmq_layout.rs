//! Tile geometry and shared-memory layout of the int8 tensor-core mat-mul kernels (`mmq.rs`): the one definition
//! shared by the kernel crate and the host launcher (`host/backend/cuda_mmq.rs` includes this file by path), so
//! the dynamic shared-memory size the host asks for is the one the kernel carves up.
//!
//! A block computes a tile of `ROWS` weight rows x `TOKS` tokens, stepping over the columns in k-tiles of `kt`
//! columns (128 for the legacy types: 4 blocks of 32; 256 for the K-quants: one super-block). Shared memory:
//!
//! | part | bytes | contents |
//! |---|---|---|
//! | 2 stages, each: | `stage_bytes` | filled by `cp.async` one k-tile ahead |
//! | - raw weights | `ROWS * raw_stride + 16` | the k-tile's bytes of each row as in the file, from its 16-aligned start |
//! | - activation quants | `TOKS * (kt + 16)` | i8, one row per token (16 bytes of padding against bank conflicts) |
//! | - activation meta | `meta_bytes` | q8_1: 16-byte records per block; q8_K: d per token, then its 16 group sums |
//! | weight quants | `ROWS * (kt + 16)` | the k-tile decoded to i8 (`q - offset`), one row per weight row |
//! | weight scales | `kt / 32 * ROWS * 8` | per sub-block of 32 and row: (scale, min or second scale) as f32 |
//! | activation scales | `kt / 32 * TOKS * 8` | per sub-block of 32 and token: (d, d * sum) as f32 |

/// Weight rows per block.
pub const ROWS: u32 = 128;
/// Tokens per block.
pub const TOKS: u32 = 64;
/// Threads per block: 8 warps as 4 (rows) x 2 (tokens), each computing 32 rows x 32 tokens.
pub const THREADS: u32 = 256;

#[inline(always)]
const fn round16(n: u32) -> u32 {
    (n + 15) & !15
}

/// The layout for a weight type of `bs`-element blocks of `ts` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmqGeom {
    /// Columns per k-tile.
    pub kt: u32,
    /// Weight blocks per row and k-tile.
    pub nb: u32,
    /// Bytes of one row of the raw weight stage: the k-tile's bytes plus up to 14 of 16-byte alignment phase.
    pub raw_stride: u32,
    /// q8_K activations (K-quants) rather than q8_1.
    pub kq: bool,
}

impl MmqGeom {
    pub const fn of(bs: u32, ts: u32) -> MmqGeom {
        let kt = if bs == 256 { 256 } else { 128 };
        let nb = kt / bs;
        MmqGeom { kt, nb, raw_stride: round16(nb * ts + 14), kq: bs == 256 }
    }
    /// Sub-blocks of 32 columns per k-tile.
    pub const fn nsub(&self) -> u32 {
        self.kt / 32
    }
    /// Row stride of the activation and decoded-weight tiles.
    pub const fn q_stride(&self) -> u32 {
        self.kt + 16
    }
    pub const fn raw_bytes(&self) -> u32 {
        ROWS * self.raw_stride + 16
    }
    pub const fn act_bytes(&self) -> u32 {
        TOKS * self.q_stride()
    }
    /// q8_1: a 16-byte record per token and block of 32; q8_K: 16 bytes per token holding d (4), then 32 bytes
    /// of group sums per token.
    pub const fn meta_bytes(&self) -> u32 {
        if self.kq {
            TOKS * 48
        } else {
            TOKS * self.nsub() * 16
        }
    }
    pub const fn stage_bytes(&self) -> u32 {
        self.raw_bytes() + self.act_bytes() + self.meta_bytes()
    }
    /// Offset of the decoded weight tile.
    pub const fn off_wq(&self) -> u32 {
        2 * self.stage_bytes()
    }
    /// Offset of the weight scales.
    pub const fn off_ws(&self) -> u32 {
        self.off_wq() + ROWS * self.q_stride()
    }
    /// Offset of the activation scales.
    pub const fn off_as(&self) -> u32 {
        self.off_ws() + self.nsub() * ROWS * 8
    }
    /// Dynamic shared memory of one block.
    pub const fn smem_bytes(&self) -> u32 {
        self.off_as() + self.nsub() * TOKS * 8
    }
    /// Resident blocks per SM the kernel's registers are budgeted for (its launch bounds): two when two blocks'
    /// shared memory (plus 1 KiB reserved per block) fits in an H100 SM (228 KiB), else one.
    pub const fn min_blocks(&self) -> u32 {
        if 2 * (self.smem_bytes() + 1024) <= 228 * 1024 {
            2
        } else {
            1
        }
    }
}
