//! Launch geometry of the quantized kernels: the one definition shared by the kernel crate (which sizes its loops
//! and shared memory from it) and the host launchers (which size grids and blocks from it). The host includes this
//! file by path, as it does `blocks.rs`, so the two sides cannot disagree.

/// Shape of a mat-vec kernel: a block has `warps` warps in groups of `ksplit`; the warps of a group share
/// `rows_per_warp` rows and take turns over the row's steps (split-K, summed through shared memory at the end).
/// Each step a warp stages `units * 32` decode units per row through a `stages`-deep cp.async pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MvGeom {
    pub rows_per_warp: u32,
    pub warps: u32,
    pub units: u32,
    pub stages: u32,
    pub ksplit: u32,
}

impl MvGeom {
    /// Rows computed by one block.
    pub const fn rows_per_block(&self) -> u32 {
        self.rows_per_warp * self.warps / self.ksplit
    }
    /// Threads per block.
    pub const fn threads(&self) -> u32 {
        self.warps * 32
    }
}

const fn g(rows_per_warp: u32, warps: u32, units: u32, stages: u32, ksplit: u32) -> MvGeom {
    MvGeom { rows_per_warp, warps, units, stages, ksplit }
}

// Default mat-vec geometry per type (chosen by benches/gpu_quant.rs on the H100; see the notes there).
pub const MV_F32: MvGeom = g(4, 4, 1, 2, 1);
pub const MV_F16: MvGeom = g(4, 4, 1, 4, 1);
pub const MV_BF16: MvGeom = g(4, 4, 1, 4, 1);
pub const MV_Q4_0: MvGeom = g(4, 8, 2, 3, 2);
pub const MV_Q4_1: MvGeom = g(4, 8, 2, 3, 2);
pub const MV_Q5_0: MvGeom = g(4, 8, 2, 3, 2);
pub const MV_Q5_1: MvGeom = g(4, 8, 2, 3, 2);
pub const MV_Q8_0: MvGeom = g(4, 8, 1, 3, 2);
pub const MV_Q2_K: MvGeom = g(4, 8, 1, 3, 2);
pub const MV_Q3_K: MvGeom = g(4, 8, 1, 3, 2);
pub const MV_Q4_K: MvGeom = g(4, 8, 2, 3, 2);
pub const MV_Q5_K: MvGeom = g(4, 8, 2, 3, 2);
pub const MV_Q6_K: MvGeom = g(2, 8, 1, 3, 2);
pub const MV_Q8_K: MvGeom = g(4, 8, 1, 3, 2);

/// Alternative geometries compiled for the benchmark only: (kernel name, ggml type id, geometry).
pub const MV_VARIANTS: &[(&str, u32, MvGeom)] = &[
    ("matvec_q4_0_r2k2", 2, g(2, 8, 2, 3, 2)),
    ("matvec_q4_0_r4k4", 2, g(4, 8, 2, 3, 4)),
    ("matvec_q4_0_r4k1", 2, g(4, 4, 2, 4, 1)),
    ("matvec_q4_0_r2k1", 2, g(2, 4, 2, 4, 1)),
    ("matvec_q4_k_r2k2", 12, g(2, 8, 2, 3, 2)),
    ("matvec_q4_k_r4k4", 12, g(4, 8, 2, 3, 4)),
    ("matvec_q4_k_r4k1", 12, g(4, 4, 2, 4, 1)),
    ("matvec_q4_k_r2k1", 12, g(2, 4, 2, 4, 1)),
];
/// Mat-mul tile: `MM_ROWS` weight rows x `MM_TOK` tokens per block, `MM_K` columns per shared-memory step,
/// `MM_THREADS` threads each computing a 4 x 4 patch of outputs.
pub const MM_ROWS: u32 = 64;
pub const MM_TOK: u32 = 32;
pub const MM_K: u32 = 128;
pub const MM_THREADS: u32 = 128;

/// Threads per block of the dequantize kernels (one decode unit per thread).
pub const DQ_THREADS: u32 = 256;

/// Decode units per block of each type (by ggml type id), as the dequantize grid counts them; plain float types
/// count 8-element blocks. 0 for types without kernels. `types.rs` asserts each decoder agrees.
pub const fn units_per_block(type_id: u32) -> u32 {
    match type_id {
        0 | 1 | 30 => 1,          // F32, F16, BF16
        2 | 3 | 6 | 7 | 8 => 4,   // Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
        10 | 11 | 14 => 16,       // Q2_K, Q3_K, Q6_K
        12 | 13 | 15 => 32,       // Q4_K, Q5_K, Q8_K
        _ => 0,
    }
}
