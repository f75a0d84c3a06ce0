//! Launcher of the int8 tensor-core mat-mul kernels (`gpu-kernels/src/quant/mmq.rs`), the prefill path:
//! Y = X_q W^T for many activation rows quantized once by `Cuda::quantize_act`. CPU twin: `quant::matmul_q8`
//! (same activation rounding and exact integer block sums as llama.cpp's CPU backend; only the f32 summation
//! order differs).
//!
//! Use in a forward pass:
//! ```ignore
//! cuda.quantize_act(&x, n_tok, n_embd, &mut xq)?;                       // x (n_tok, n_embd)
//! cuda.matmul_q8(ty_q, &wq, n_q, n_embd, &xq, n_tok, &mut q)?;          // q (n_tok, n_q)
//! ```
//! Tile geometry and the dynamic shared-memory size come from the kernels' own `mmq_layout.rs`, included here by
//! path.

use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaSlice, LaunchConfig};

use std::sync::atomic::Ordering;

use super::cuda::{cuda_err, grid_1d, Cuda, Dev};
use super::cuda_q8::{act_row_bytes, check_cols, check_weight};
use super::cuda_quant::{check_len, err};
use crate::gguf::GgmlType;
use crate::Result;

/// Tile geometry and shared-memory layout shared with the kernel crate.
#[path = "../../gpu-kernels/src/quant/mmq_layout.rs"]
pub mod layout;

use layout::MmqGeom;

fn kernel_of(ty: GgmlType) -> Option<&'static str> {
    use GgmlType::*;
    Some(match ty {
        Q4_0 => "mmq_q4_0",
        Q4_1 => "mmq_q4_1",
        Q5_0 => "mmq_q5_0",
        Q5_1 => "mmq_q5_1",
        Q8_0 => "mmq_q8_0",
        Q4_K => "mmq_q4_k",
        Q5_K => "mmq_q5_k",
        Q6_K => "mmq_q6_k",
        _ => return None,
    })
}

/// Whether `matmul_q8` has a tensor-core kernel for weights of type `ty` (Q2_K, Q3_K and the float types take
/// the f32 `Cuda::matmul` path).
pub fn supports_mmq(ty: GgmlType) -> bool {
    kernel_of(ty).is_some()
}

/// The tile layout of type `ty` (a supported type).
pub fn geom(ty: GgmlType) -> MmqGeom {
    MmqGeom::of(ty.block_size() as u32, ty.type_size() as u32)
}

impl Cuda {
    /// y = X W^T for the (n_rows, n_cols) weight `w` of type `ty` (GGUF blocks as in the file) and the `n_tok`
    /// activation rows that `quantize_act` left in `xq`; y is (n_tok, n_rows), row-major. Twin of
    /// `quant::matmul_q8`. Buffers may be longer than needed.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_q8(
        &self,
        ty: GgmlType,
        w: &impl Dev<u8>,
        n_rows: usize,
        n_cols: usize,
        xq: &CudaSlice<u8>,
        n_tok: usize,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let kernel = kernel_of(ty)
            .ok_or_else(|| err("matmul_q8", format!("type {ty} has no int8 tensor-core kernel (supports_mmq)")))?;
        check_cols(kernel, n_cols)?;
        check_weight(kernel, ty, n_rows, n_cols, w.elems())?;
        check_len(kernel, "xq", xq.len(), n_tok * act_row_bytes(n_cols))?;
        let n_out = n_tok
            .checked_mul(n_rows)
            .ok_or_else(|| err(kernel, format!("n_tok {n_tok} x n_rows {n_rows} overflows")))?;
        check_len(kernel, "y", y.len(), n_out)?;
        if n_rows > u32::MAX as usize / 2 {
            return Err(err(kernel, format!("n_rows {n_rows} exceeds the limit {}", u32::MAX / 2)));
        }
        let grid_y = n_tok.div_ceil(layout::TOKS as usize);
        if grid_y > 65535 {
            return Err(err(kernel, format!("n_tok {n_tok} needs {grid_y} token tiles, over the grid limit 65535")));
        }
        if n_rows == 0 || n_tok == 0 {
            return Ok(());
        }
        let f = self.func(kernel)?;
        let g = geom(ty);
        let n_kt = n_cols.div_ceil(g.kt as usize);
        let splits = self.mmq_splits(ty, n_rows, n_cols, n_tok);
        let kt_split = n_kt.div_ceil(splits);
        let smem = g.smem_bytes();
        // Over 48 KiB of dynamic shared memory must be allowed per function (a cheap driver call; idempotent).
        f.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32)
            .map_err(cuda_err(format!("{kernel}: allow {smem} bytes of dynamic shared memory")))?;
        let cfg = LaunchConfig {
            grid_dim: (n_rows.div_ceil(layout::ROWS as usize) as u32, grid_y as u32, splits as u32),
            block_dim: (layout::THREADS, 1, 1),
            shared_mem_bytes: smem,
        };
        let (nr, nc, nt, ks, wp) = (n_rows as u32, n_cols as u32, n_tok as u32, kt_split as u32, w.addr(self));
        let mut b = self.args(&f);
        b.arg(&wp).arg(xq);
        if splits > 1 { b.arg(&self.split_scratch) } else { b.arg(y) };
        b.arg(&nr).arg(&nc).arg(&nt).arg(&ks);
        // SAFETY: argument order and types match the kernel; lengths and index limits checked above, the scratch
        // holds `splits` slices of n_out (`mmq_splits`).
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {kernel} {n_rows}x{n_cols} n_tok={n_tok}")))?;
        if splits > 1 {
            self.sum_splits(y, n_out, splits)?;
        }
        Ok(())
    }

    /// The k-splits `matmul_q8` launches for this shape: the count s that minimizes the waves of blocks (every SM
    /// holding the blocks that fit there at once) times the k-tiles each block takes, ceil(tiles s / wave)
    /// ceil(k-tiles / s), the fewest splits on a tie; each split at least `MIN_KT_PER_SPLIT` k-tiles and all of
    /// them within the scratch. A 7B decode batch of 32 tokens: 32 tiles of a 4096-row Q4_0 weight (two blocks
    /// per SM, 264 a wave on an H100) take 8 splits of 4 k-tiles; 512 tokens (256 tiles) take none.
    pub fn mmq_splits(&self, ty: GgmlType, n_rows: usize, n_cols: usize, n_tok: usize) -> usize {
        let g = geom(ty);
        let tiles = n_rows.div_ceil(layout::ROWS as usize) * n_tok.div_ceil(layout::TOKS as usize);
        let wave = self.n_sm * g.min_blocks() as usize;
        let n_kt = n_cols.div_ceil(g.kt as usize);
        if !self.split_k.load(Ordering::Relaxed) || tiles == 0 || wave == 0 {
            return 1;
        }
        let most = (n_kt / MIN_KT_PER_SPLIT).min(SPLIT_SCRATCH / (n_tok * n_rows).max(1)).max(1);
        let cost = |s: usize| (tiles * s).div_ceil(wave) * n_kt.div_ceil(s);
        // splits of equal k-tile counts, none empty
        let best = (1..=most).min_by_key(|&s| (cost(s), s)).unwrap_or(1);
        n_kt.div_ceil(n_kt.div_ceil(best))
    }

    /// y[..n] = the sum of the `splits` slices of n floats in the split-K scratch, in order.
    fn sum_splits(&self, y: &mut CudaSlice<f32>, n: usize, splits: usize) -> Result<()> {
        const K: &str = "sum_splits_f32";
        let f = self.func(K)?;
        let (n32, s32) = (n as u32, splits as u32);
        let mut l = self.args(&f);
        l.arg(y).arg(&self.split_scratch).arg(&n32).arg(&s32);
        self.go(K, l, grid_1d(n), || format!("n={n} splits={splits}"))
    }
}

/// Floats of the split-K scratch (16 MiB): partial sums of up to 512 rows of 4096 in two splits, or of 32 rows of
/// 4096 in 32; `mmq_splits` takes fewer splits where more would not fit.
pub const SPLIT_SCRATCH: usize = 4 << 20;

/// Fewest k-tiles one split takes (a block's pipeline fills over its first two).
const MIN_KT_PER_SPLIT: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_types_and_layouts() {
        use GgmlType::*;
        for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K] {
            assert!(supports_mmq(ty), "{ty}");
            let g = geom(ty);
            assert_eq!(g.kt % ty.block_size() as u32, 0, "{ty}: k-tile of whole blocks");
            assert_eq!(g.kq, ty.block_size() == 256, "{ty}");
            assert!(g.raw_stride >= g.nb * ty.type_size() as u32 + 14, "{ty}: room for the alignment phase");
            for off in [g.stage_bytes(), g.off_wq(), g.off_ws(), g.off_as(), g.smem_bytes()] {
                assert_eq!(off % 16, 0, "{ty}: offset {off} not 16-aligned");
            }
            assert!(g.smem_bytes() <= 227 * 1024, "{ty}: {} bytes of shared memory", g.smem_bytes());
        }
        for ty in [F32, F16, BF16, Q2_K, Q3_K, Q8_K, IQ4_XS] {
            assert!(!supports_mmq(ty), "{ty}");
        }
    }
}
