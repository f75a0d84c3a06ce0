//! Tile geometry and shared-memory layout of the int8 tensor-core mat-mul kernels (`mmq.rs`): the one definition
//! shared by the kernel crate and the host launcher (`host/backend/cuda_mmq.rs` includes this file by path), so
//! the dynamic shared-memory size the host asks for is the one the kernel carves up.
//!
//! Two tilings share one layout scheme. The prefill tile (`MmqGeom::of`, kernel `mmq`): a block of `THREADS`
//! computes `ROWS` weight rows x `TOKS` tokens, with the weights decoded once per k-tile into shared memory. The
//! thin tile for decode batches (`MmqGeom::thin`, kernel `mmq_thin`): a block of `THIN_THREADS` computes
//! `THIN_ROWS` rows x 8, 16 or 32 tokens (`THIN_TOKS`), each lane decoding its own fragments from the raw weights
//! in registers, so that no decoded tile (and no second barrier per k-tile) is needed. Either steps over the
//! columns in k-tiles of `kt` columns (128 for the legacy types: 4 blocks of 32; 256 for the K-quants: one
//! super-block). Shared memory:
//!
//! | part | bytes | contents |
//! |---|---|---|
//! | `stages` stages, each: | `stage_bytes` | filled by `cp.async` `stages - 1` k-tiles ahead |
//! | - raw weights | `rows * raw_stride + 16` | the k-tile's bytes of each row as in the file, from its 16-aligned start |
//! | - activation quants | `toks * (kt + 16)` | i8, one row per token (16 bytes of padding against bank conflicts) |
//! | - activation meta | `meta_bytes` | q8_1: 16-byte records per block; q8_K: d per token, then its 16 group sums |
//! | prefill tile only: | | |
//! | - weight quants | `rows * (kt + 16)` | the k-tile decoded to i8 (`q - offset`), one row per weight row |
//! | - weight scales | `kt / 32 * rows * 8` | per sub-block of 32 and row: (scale, min or second scale) as f32 |
//! | - activation scales | `kt / 32 * toks * 8` | per sub-block of 32 and token: (d, d * sum) as f32 |

/// Weight rows per block.
pub const ROWS: u32 = 128;
/// Tokens per block.
pub const TOKS: u32 = 64;
/// Threads per block: 8 warps as 4 (rows) x 2 (tokens), each computing 32 rows x 32 tokens.
pub const THREADS: u32 = 256;
/// Weight rows per block of the thin tile.
pub const THIN_ROWS: u32 = 64;
/// Threads per block of the thin tile: 4 warps, each computing 16 rows x all the block's tokens.
pub const THIN_THREADS: u32 = 128;
/// The thin tile's token counts (one kernel instance each).
pub const THIN_TOKS: [u32; 3] = [8, 16, 32];

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
    /// Weight rows, tokens and threads per block.
    pub rows: u32,
    pub toks: u32,
    pub threads: u32,
    /// Pipeline stages.
    pub stages: u32,
    /// Whether the block decodes each k-tile's weights into shared memory (the prefill tile).
    pub decoded: bool,
}

impl MmqGeom {
    pub const fn of(bs: u32, ts: u32) -> MmqGeom {
        let kt = if bs == 256 { 256 } else { 128 };
        let nb = kt / bs;
        MmqGeom {
            kt,
            nb,
            raw_stride: round16(nb * ts + 14),
            kq: bs == 256,
            rows: ROWS,
            toks: TOKS,
            threads: THREADS,
            stages: 2,
            decoded: true,
        }
    }
    /// The thin tile of `toks` tokens: 4 stages, no decoded tile, and a raw row stride of an odd number of 16-byte
    /// chunks, so that the 8 rows one fragment load reads start in different banks.
    pub const fn thin(bs: u32, ts: u32, toks: u32) -> MmqGeom {
        let g = MmqGeom::of(bs, ts);
        let raw_stride = if g.raw_stride & 16 == 0 { g.raw_stride + 16 } else { g.raw_stride };
        MmqGeom { raw_stride, rows: THIN_ROWS, toks, threads: THIN_THREADS, stages: 4, decoded: false, ..g }
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
        self.rows * self.raw_stride + 16
    }
    pub const fn act_bytes(&self) -> u32 {
        self.toks * self.q_stride()
    }
    /// q8_1: a 16-byte record per token and block of 32; q8_K: 16 bytes per token holding d (4), then 32 bytes
    /// of group sums per token.
    pub const fn meta_bytes(&self) -> u32 {
        if self.kq {
            self.toks * 48
        } else {
            self.toks * self.nsub() * 16
        }
    }
    pub const fn stage_bytes(&self) -> u32 {
        self.raw_bytes() + self.act_bytes() + self.meta_bytes()
    }
    /// Shared address offset of stage `i` (any k-tile index: taken modulo the stage count, a power of two).
    pub const fn stage(&self, i: u32) -> u32 {
        (i & (self.stages - 1)) * self.stage_bytes()
    }
    /// Offset of the decoded weight tile.
    pub const fn off_wq(&self) -> u32 {
        self.stages * self.stage_bytes()
    }
    /// Offset of the weight scales.
    pub const fn off_ws(&self) -> u32 {
        self.off_wq() + self.rows * self.q_stride()
    }
    /// Offset of the activation scales.
    pub const fn off_as(&self) -> u32 {
        self.off_ws() + self.nsub() * self.rows * 8
    }
    /// Dynamic shared memory of one block.
    pub const fn smem_bytes(&self) -> u32 {
        if self.decoded {
            self.off_as() + self.nsub() * self.toks * 8
        } else {
            self.off_wq()
        }
    }
    /// Resident blocks per SM the kernel's registers are budgeted for (its launch bounds): as many as fit an H100
    /// SM's shared memory (228 KiB, plus 1 KiB reserved per block) while every thread keeps 128 registers (512
    /// threads per SM). No division: this is also compiled into the kernels, where one would bring in a panic.
    pub const fn min_blocks(&self) -> u32 {
        let mut b = 1;
        while (b + 1) * self.threads <= 512 && (b + 1) * (self.smem_bytes() + 1024) <= 228 * 1024 {
            b += 1;
        }
        b
    }
}
