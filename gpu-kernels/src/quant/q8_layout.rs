//! Layout of the 8-bit activations on the device and launch geometry of the dp4a mat-vec kernels (`q8.rs`): the
//! one definition shared by the kernel crate and the host launchers (`host/backend/cuda_q8.rs` includes this file
//! by path, as it does `geometry.rs`), so the two sides cannot disagree.
//!
//! One activation row of `n` columns (`n` a multiple of 32) holds both formats llama.cpp's CPU backend uses, with
//! the same numbers (`host::quant::quantize::{q8_1_block, q8_k_block}`), split into arrays for 16-byte loads:
//!
//! | part | offset | contents |
//! |---|---|---|
//! | q8_1 quants | 0 | `n` i8: blocks of 32 with `d = f16(amax / 127)`, `q = round(x / d)` (Q8_0 has the same `d`, `q`) |
//! | q8_1 meta | `n` | per block of 32, 16 bytes: `d` as f32 (f16-rounded), `s` = f16(d * sum q) as f32, `sum q` as i32, 0 |
//! | q8_K quants | `n + n/2` | `n` i8: blocks of 256 with `d = -max / 127` (signed max), `q = nearest(x / d)` |
//! | q8_K d | `n + n/2 + n` | per block of 256, f32 `d` |
//! | q8_K sums | after `d`, 16-aligned | per block of 256, 16 i16 sums of 16 quants, in the order `BSUM_ORDER` |
//!
//! The q8_K parts exist only when `n` is a multiple of 256 (every K-quant row is); otherwise they have length 0.
//! Legacy weight types (Q4_0 .. Q8_0) read the q8_1 parts, K-quants the q8_K parts.

/// Bytes of the q8_1 metadata of one block of 32.
pub const META_BYTES: u32 = 16;

/// Group g (0..16, 16 quants each) of a q8_K block is stored at position `BSUM_POS[g]`: groups 8n + m + 2o
/// (n, m in 0..2, o in 0..4) at 8n + 4m + o, so that the four groups one Q6_K lane reads (o = 0..3) and the two a
/// Q4_K lane reads (o, o + 1) are adjacent.
pub const BSUM_POS: [u32; 16] = [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15];

#[inline(always)]
const fn round16(n: u32) -> u32 {
    (n + 15) & !15
}

/// Columns covered by the q8_K parts: `n` when a multiple of 256, else 0.
#[inline(always)]
#[allow(clippy::manual_is_multiple_of)] // also compiled by the kernel crate, in a const fn
pub const fn k_cols(n: u32) -> u32 {
    if n.is_multiple_of(256) {
        n
    } else {
        0
    }
}

/// Offset of the q8_1 metadata.
#[inline(always)]
pub const fn off_meta(n: u32) -> u32 {
    n
}

/// Offset of the q8_K quants.
#[inline(always)]
pub const fn off_kq(n: u32) -> u32 {
    n + n / 32 * META_BYTES
}

/// Offset of the q8_K scales.
#[inline(always)]
pub const fn off_kd(n: u32) -> u32 {
    off_kq(n) + k_cols(n)
}

/// Offset of the q8_K group sums.
#[inline(always)]
pub const fn off_ks(n: u32) -> u32 {
    off_kd(n) + round16(k_cols(n) / 256 * 4)
}

/// Bytes of one activation row of `n` columns (a multiple of 16).
#[inline(always)]
pub const fn row_bytes(n: u32) -> u32 {
    off_ks(n) + round16(k_cols(n) / 16 * 2)
}

/// Shared bytes a fused mat-vec (`mmvq_fused_*`) keeps for the activation row it quantizes itself: rows of
/// `row_bytes(n) <= FUSED_ACT_BYTES` (n up to 4608) go through it, wider ones through `quantize_q8_act`.
pub const FUSED_ACT_BYTES: u32 = 12288;

/// Warps per block of `act_prologue_q8` (one per 256 columns).
pub const PA_WARPS: u32 = 4;

/// How a fused mat-vec makes its activations from f32 values `src` (see `q8.rs`, `prologue`).
pub const PRO_QUANT: u32 = 1; // src
pub const PRO_RMSNORM: u32 = 2; // nw * rmsnorm(src)
pub const PRO_SWIGLU: u32 = 3; // silu(src[..n]) * src[n..2n]
pub const PRO_GELU: u32 = 4; // gelu_tanh(src[..n]) * src[n..2n]

/// Threads per block of the quantize kernel: a warp per 256 columns (8 per lane).
pub const QA_THREADS: u32 = 128;

/// Shape of a dp4a mat-vec kernel: a block has `warps` warps in groups of `ksplit`, each group owning `rows`
/// consecutive rows; the warps of a group take turns over the rows' steps of `32 * items / items_per_block` weight
/// blocks (split-K, summed through shared memory at the end), staged global -> shared through a `stages`-deep
/// cp.async pipeline per warp, each lane computing `items` items (a fixed share of a block) per row and step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqGeom {
    pub rows: u32,
    pub warps: u32,
    pub items: u32,
    pub stages: u32,
    pub ksplit: u32,
    /// Resident blocks per SM the kernel's registers are budgeted for (its launch bounds).
    pub min_blocks: u32,
    /// Activation rows each weight read serves (1: the single-column kernels; up to `MC_MAX`).
    pub cols: u32,
}

impl MqGeom {
    /// Rows computed by one block.
    pub const fn rows_per_block(&self) -> u32 {
        self.rows * self.warps / self.ksplit
    }
    pub const fn threads(&self) -> u32 {
        self.warps * 32
    }
}

const fn g(rows: u32, warps: u32, items: u32, stages: u32, ksplit: u32, min_blocks: u32) -> MqGeom {
    MqGeom { rows, warps, items, stages, ksplit, min_blocks, cols: 1 }
}

/// The geometry of a multi-column kernel (`mmvq_*_c{2,4,8}`) of `cols` activation rows for the type whose
/// single-column geometry is `one`: its items per lane and split-K are `one`'s (they fix the order of every
/// output's f32 sums, so each column gives the single-column kernel's bits); rows, warps, stages and the register
/// budget are its own.
const fn mc(one: MqGeom, cols: u32, rows: u32, warps: u32, stages: u32, min_blocks: u32) -> MqGeom {
    MqGeom { rows, warps, items: one.items, stages, ksplit: one.ksplit, min_blocks, cols }
}

// Chosen on the H100 (bench `gpu_q8`, 2026-11-23): 2 rows per warp group, groups of 2 warps splitting the steps,
// 8 warps per block, 2 stages, registers capped at 64 (4 blocks of 256 threads per SM). More stages or more
// registers per thread (fewer resident warps) measured slower for every type; Q5_K and Q6_K keep their larger
// register budgets (they spill at 64).
pub const MQ_Q4_0: MqGeom = g(2, 8, 1, 2, 2, 4);
pub const MQ_Q4_1: MqGeom = g(2, 8, 1, 2, 2, 4);
pub const MQ_Q5_0: MqGeom = g(2, 8, 1, 2, 2, 4);
pub const MQ_Q5_1: MqGeom = g(2, 8, 1, 2, 2, 4);
pub const MQ_Q8_0: MqGeom = g(2, 8, 1, 2, 2, 4);
pub const MQ_Q4_K: MqGeom = g(2, 8, 1, 2, 2, 4);
pub const MQ_Q5_K: MqGeom = g(2, 4, 1, 4, 1, 4);
pub const MQ_Q6_K: MqGeom = g(2, 4, 1, 2, 2, 4);

/// Benchmark-only alternatives: (kernel, ggml type id, geometry); the previous defaults and the runners-up.
pub const MQ_VARIANTS: &[(&str, u32, MqGeom)] = &[
    ("mmvq_q4_0_r2w4u1s3k1m4", 2, g(2, 4, 1, 3, 1, 4)),
    ("mmvq_q4_k_r2w4u1s3k1m4", 12, g(2, 4, 1, 3, 1, 4)),
    ("mmvq_q4_k64_r2w8u1s2k2m3", 12, g(2, 8, 1, 2, 2, 3)),
    ("mmvq_q5_k_r2w8u1s2k2m3", 13, g(2, 8, 1, 2, 2, 3)),
    ("mmvq_q6_k_r2w4u1s2k1m4", 14, g(2, 4, 1, 2, 1, 4)),
    // multi-column: 8 activation rows on 2 weight rows per warp group (more resident warps, twice the activation
    // loads per weight byte), 4 rows on 4
    ("mmvq_q4_0_c8_r2w8s3m2", 2, mc(MQ_Q4_0, 8, 2, 8, 3, 2)),
    ("mmvq_q4_k_c8_r2w8s3m1", 12, mc(MQ_Q4_K, 8, 2, 8, 3, 1)),
    ("mmvq_q4_0_c4_r4w4s3m3", 2, mc(MQ_Q4_0, 4, 4, 4, 3, 3)),
    ("mmvq_q4_k_c4_r4w4s2m2", 12, mc(MQ_Q4_K, 4, 4, 4, 2, 2)),
    // 2 stages: half the weight bytes in flight per warp
    ("mmvq_q4_0_c2_r2w8s2m2", 2, mc(MQ_Q4_0, 2, 2, 8, 2, 2)),
    ("mmvq_q4_k_c2_r2w8s2m2", 12, mc(MQ_Q4_K, 2, 2, 8, 2, 2)),
];

/// Most activation rows one multi-column kernel takes (`Cuda::matvec_q8_cols`).
pub const MC_MAX: u32 = 8;

// Multi-column kernels for 2, 4 and 8 activation rows (3, 5..7 rows run the next larger with the rest masked).
// Not yet measured on a GPU (2026-12-06): chosen so that ptxas keeps every one spill-free (sm_80 and sm_90) and so
// that the weight bytes in flight per SM stay near the single-column kernel's (~37 KB: 32 warps x 1 stage ahead x 2
// rows x 576 bytes for Q4_0; Little's law at 3.35 TB/s and ~0.7 us wants ~18 KB). Each weight item is decoded once
// into registers for all the columns, so these need 95-220 registers, fewer resident warps, and a third stage
// (two ahead) to keep those bytes in flight; Q8_0 has no room for it. 2 and 4 rows keep 2 weight rows per warp group;
// 8 rows take 4 where the registers allow (each activation load from L1 then serves 4 weight rows: those loads
// grow with the columns while the weight bytes do not). `MQ_VARIANTS` holds the runners-up for the benchmark.
pub const MC_Q4_0: [MqGeom; 3] = [mc(MQ_Q4_0, 2, 2, 8, 3, 2), mc(MQ_Q4_0, 4, 2, 8, 3, 2), mc(MQ_Q4_0, 8, 4, 4, 3, 3)];
pub const MC_Q4_1: [MqGeom; 3] = [mc(MQ_Q4_1, 2, 2, 8, 3, 2), mc(MQ_Q4_1, 4, 2, 8, 3, 2), mc(MQ_Q4_1, 8, 4, 4, 3, 2)];
pub const MC_Q5_0: [MqGeom; 3] = [mc(MQ_Q5_0, 2, 2, 8, 3, 2), mc(MQ_Q5_0, 4, 2, 8, 3, 2), mc(MQ_Q5_0, 8, 4, 4, 3, 3)];
pub const MC_Q5_1: [MqGeom; 3] = [mc(MQ_Q5_1, 2, 2, 8, 3, 2), mc(MQ_Q5_1, 4, 2, 8, 3, 2), mc(MQ_Q5_1, 8, 4, 4, 3, 3)];
pub const MC_Q8_0: [MqGeom; 3] = [mc(MQ_Q8_0, 2, 2, 8, 2, 2), mc(MQ_Q8_0, 4, 2, 8, 2, 2), mc(MQ_Q8_0, 8, 4, 4, 2, 3)];
pub const MC_Q4_K: [MqGeom; 3] = [mc(MQ_Q4_K, 2, 2, 8, 3, 2), mc(MQ_Q4_K, 4, 2, 8, 3, 2), mc(MQ_Q4_K, 8, 2, 4, 4, 3)];
pub const MC_Q5_K: [MqGeom; 3] = [mc(MQ_Q5_K, 2, 2, 4, 3, 3), mc(MQ_Q5_K, 4, 2, 4, 3, 3), mc(MQ_Q5_K, 8, 4, 4, 3, 2)];
pub const MC_Q6_K: [MqGeom; 3] = [mc(MQ_Q6_K, 2, 2, 4, 3, 2), mc(MQ_Q6_K, 4, 2, 4, 3, 2), mc(MQ_Q6_K, 8, 2, 4, 3, 2)];
