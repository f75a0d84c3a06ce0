//! Launchers of the quantized kernels (`gpu-kernels/src/quant/`): dequantize, mat-vec and mat-mul for every type
//! the engine computes on the GPU, reading the file's blocks as they are. CPU twins: `quant::{dequantize_row,
//! matvec, matmul}`.
//!
//! Grid and block shapes come from the kernels' own `geometry.rs`, included here by path (as `quant::blocks` is),
//! so the two sides cannot disagree. Every launcher checks its buffer lengths and the u32 index limits of the
//! kernels before launching; errors name the kernel and the bad value.

use cudarc::driver::{CudaSlice, LaunchConfig};

use super::cuda::{cuda_err, Cuda, Dev};
use crate::gguf::GgmlType;
use crate::{Error, Result};

/// Launch geometry shared with the kernel crate.
#[path = "../../gpu-kernels/src/quant/geometry.rs"]
pub mod geometry;

use geometry::MvGeom;

/// The three kernels of one type and its mat-vec geometry.
struct Kernels {
    dequantize: &'static str,
    matvec: &'static str,
    matmul: &'static str,
    mv: MvGeom,
}

macro_rules! kernels {
    ($ty:expr, $($variant:ident => $suffix:literal, $mv:ident;)*) => {
        match $ty {
            $(GgmlType::$variant => Some(Kernels {
                dequantize: concat!("dequantize_", $suffix),
                matvec: concat!("matvec_", $suffix),
                matmul: concat!("matmul_", $suffix),
                mv: geometry::$mv,
            }),)*
            _ => None,
        }
    };
}

fn kernels_of(ty: GgmlType) -> Option<Kernels> {
    kernels!(ty,
        F32 => "f32", MV_F32;
        F16 => "f16", MV_F16;
        BF16 => "bf16", MV_BF16;
        Q4_0 => "q4_0", MV_Q4_0;
        Q4_1 => "q4_1", MV_Q4_1;
        Q5_0 => "q5_0", MV_Q5_0;
        Q5_1 => "q5_1", MV_Q5_1;
        Q8_0 => "q8_0", MV_Q8_0;
        Q2_K => "q2_k", MV_Q2_K;
        Q3_K => "q3_k", MV_Q3_K;
        Q4_K => "q4_k", MV_Q4_K;
        Q5_K => "q5_k", MV_Q5_K;
        Q6_K => "q6_k", MV_Q6_K;
        Q8_K => "q8_k", MV_Q8_K;
    )
}

/// Whether the GPU has dequantize, mat-vec and mat-mul kernels for `ty`.
pub fn is_supported(ty: GgmlType) -> bool {
    kernels_of(ty).is_some()
}

pub(super) fn err(op: &str, msg: String) -> Error {
    Error::Cuda { op: op.into(), msg }
}

fn kernels(op: &str, ty: GgmlType) -> Result<Kernels> {
    kernels_of(ty).ok_or_else(|| err(op, format!("type {ty} has no cuda kernels")))
}

fn is_plain(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// Bytes of the (n_rows, n_cols) weight of type `ty`, after checking that `n_cols` is whole blocks and that the
/// sizes fit the kernels' u32 indices; `got` is the buffer's length, which may run past the weight (a view).
fn weight_bytes(op: &str, ty: GgmlType, n_rows: usize, n_cols: usize, got: usize) -> Result<usize> {
    if n_rows > i32::MAX as usize || n_cols > i32::MAX as usize {
        return Err(err(op, format!("shape {n_rows} x {n_cols} exceeds the kernels' limit of {} per dimension", i32::MAX)));
    }
    let row = ty.row_bytes(n_cols as u64).ok_or_else(|| {
        err(op, format!("n_cols {n_cols} is not a multiple of the {ty} block size {}", ty.block_size()))
    })?;
    if row > u32::MAX as u64 {
        return Err(err(op, format!("a {ty} row of {n_cols} columns is {row} bytes, over the limit {}", u32::MAX)));
    }
    let want = row as usize * n_rows;
    // a view into a longer buffer (the concatenated q/k/v or gate/up weights) holds more than its own rows
    if got < want {
        return Err(err(op, format!("weight has {got} bytes, expected {want} for {n_rows} x {n_cols} {ty}")));
    }
    Ok(want)
}

/// Buffers may be longer than the op needs (the forward pass sizes activations for its largest batch).
pub(super) fn check_len(op: &str, what: &str, got: usize, want: usize) -> Result<()> {
    if got < want {
        return Err(err(op, format!("{what} holds {got} elements, needs {want}")));
    }
    Ok(())
}

fn check_u32(op: &str, what: &str, n: usize) -> Result<()> {
    if n > u32::MAX as usize {
        return Err(err(op, format!("{what} = {n} exceeds the kernel's u32 index limit {}", u32::MAX)));
    }
    Ok(())
}

impl Cuda {
    /// out = every element of the (n_rows, n_cols) weight `w` of type `ty`, as f32 (row-major); twin of
    /// `quant::dequantize_row` applied to each row.
    pub fn dequantize(&self, ty: GgmlType, w: &CudaSlice<u8>, n_rows: usize, n_cols: usize, out: &mut CudaSlice<f32>) -> Result<()> {
        let k = kernels("dequantize", ty)?;
        weight_bytes(k.dequantize, ty, n_rows, n_cols, w.len())?;
        let n = n_rows * n_cols;
        check_len(k.dequantize, "out", out.len(), n)?;
        check_u32(k.dequantize, "n_rows * n_cols", n)?;
        let (n_blocks, n_tail) = if is_plain(ty) { (n / 8, n % 8) } else { (n / ty.block_size(), 0) };
        let upb = geometry::units_per_block(ty.id()) as usize;
        let threads = n_blocks * upb + n_tail;
        check_u32(k.dequantize, "decode units", threads)?;
        if threads == 0 {
            return Ok(());
        }
        let f = self.func(k.dequantize)?;
        let grid = threads.div_ceil(geometry::DQ_THREADS as usize) as u32;
        let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (geometry::DQ_THREADS, 1, 1), shared_mem_bytes: 0 };
        let (n_blocks, n_tail) = (n_blocks as u32, n_tail as u32);
        let mut b = self.args(&f);
        b.arg(w).arg(out).arg(&n_blocks).arg(&n_tail);
        // SAFETY: argument order and types match the kernel; lengths and index limits checked above.
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {} {n_rows}x{n_cols}", k.dequantize)))?;
        Ok(())
    }

    /// out[t, :] = row ids[t] of the (n_rows, n_cols) weight `w`, dequantized, for t < n_tok (ids on the
    /// device, checked by the caller against n_rows); twin of `quant::dequantize_row` of those rows.
    #[allow(clippy::too_many_arguments)]
    pub fn embed(&self, ty: GgmlType, w: &CudaSlice<u8>, n_rows: usize, n_cols: usize, ids: &CudaSlice<u32>,
                 n_tok: usize, out: &mut CudaSlice<f32>) -> Result<()> {
        use GgmlType::*;
        let kernel = match ty {
            F32 => "embed_f32", F16 => "embed_f16", BF16 => "embed_bf16", Q4_0 => "embed_q4_0", Q4_1 => "embed_q4_1",
            Q5_0 => "embed_q5_0", Q5_1 => "embed_q5_1", Q8_0 => "embed_q8_0", Q2_K => "embed_q2_k", Q3_K => "embed_q3_k",
            Q4_K => "embed_q4_k", Q5_K => "embed_q5_k", Q6_K => "embed_q6_k", Q8_K => "embed_q8_k",
            other => return Err(err("embed", format!("{other} has no cuda kernels"))),
        };
        let row_bytes = weight_bytes(kernel, ty, n_rows, n_cols, w.len())? / n_rows.max(1);
        check_len(kernel, "ids", ids.len(), n_tok)?;
        check_len(kernel, "out", out.len(), n_tok * n_cols)?;
        if !n_cols.is_multiple_of(4) {
            return Err(err(kernel, format!("n_cols {n_cols} must be a multiple of 4")));
        }
        let units = if is_plain(ty) { n_cols / 8 + n_cols % 8 } else { n_cols / ty.block_size() * geometry::units_per_block(ty.id()) as usize };
        if n_tok == 0 || units == 0 {
            return Ok(());
        }
        let f = self.func(kernel)?;
        let grid = units.div_ceil(geometry::DQ_THREADS as usize) as u32;
        let cfg = LaunchConfig { grid_dim: (grid, n_tok as u32, 1), block_dim: (geometry::DQ_THREADS, 1, 1), shared_mem_bytes: 0 };
        let (nc, rb) = (n_cols as u32, row_bytes as u32);
        let mut b = self.args(&f);
        b.arg(w).arg(ids).arg(out).arg(&nc).arg(&rb);
        // SAFETY: argument order and types match the kernel; lengths checked above, ids checked by the caller.
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {kernel} n_tok={n_tok} n_cols={n_cols}")))?;
        Ok(())
    }

    /// y = W x for the (n_rows, n_cols) weight `w` of type `ty`: x (n_cols,), y (n_rows,); twin of `quant::matvec`.
    pub fn matvec(&self, ty: GgmlType, w: &impl Dev<u8>, n_rows: usize, n_cols: usize, x: &CudaSlice<f32>,
                  y: &mut CudaSlice<f32>) -> Result<()> {
        let k = kernels("matvec", ty)?;
        self.matvec_with(k.matvec, k.mv, ty, w, n_rows, n_cols, x, y)
    }

    /// `matvec` through a named kernel of geometry `g` (the benchmark's alternatives in `geometry::MV_VARIANTS`).
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_with(&self, kernel: &'static str, g: MvGeom, ty: GgmlType, w: &impl Dev<u8>, n_rows: usize,
                       n_cols: usize, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<()> {
        weight_bytes(kernel, ty, n_rows, n_cols, w.elems())?;
        check_len(kernel, "x", x.len(), n_cols)?;
        check_len(kernel, "y", y.len(), n_rows)?;
        if n_rows == 0 {
            return Ok(());
        }
        let f = self.func(kernel)?;
        let grid = n_rows.div_ceil(g.rows_per_block() as usize) as u32;
        let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (g.threads(), 1, 1), shared_mem_bytes: 0 };
        let (nr, nc, wp) = (n_rows as u32, n_cols as u32, w.addr(self));
        let mut b = self.args(&f);
        b.arg(&wp).arg(x).arg(y).arg(&nr).arg(&nc);
        // SAFETY: argument order and types match the kernel; lengths and index limits checked above.
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {kernel} {n_rows}x{n_cols}")))?;
        Ok(())
    }

    /// y = x W^T for the (n_rows, n_cols) weight `w` of type `ty`: x (n_tok, n_cols), y (n_tok, n_rows); twin of
    /// `quant::matmul`.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(&self, ty: GgmlType, w: &impl Dev<u8>, n_rows: usize, n_cols: usize, x: &CudaSlice<f32>,
                  n_tok: usize, y: &mut CudaSlice<f32>) -> Result<()> {
        let k = kernels("matmul", ty)?;
        weight_bytes(k.matmul, ty, n_rows, n_cols, w.elems())?;
        check_len(k.matmul, "x", x.len(), n_tok * n_cols)?;
        check_len(k.matmul, "y", y.len(), n_tok * n_rows)?;
        check_u32(k.matmul, "n_tok * n_cols", n_tok * n_cols)?;
        check_u32(k.matmul, "n_tok * n_rows", n_tok * n_rows)?;
        let grid_y = n_tok.div_ceil(geometry::MM_TOK as usize);
        if grid_y > 65535 {
            return Err(err(k.matmul, format!("n_tok {n_tok} needs {grid_y} token tiles, over the grid limit 65535")));
        }
        if n_rows == 0 || n_tok == 0 {
            return Ok(());
        }
        let f = self.func(k.matmul)?;
        let grid_x = n_rows.div_ceil(geometry::MM_ROWS as usize) as u32;
        let cfg = LaunchConfig {
            grid_dim: (grid_x, grid_y as u32, 1),
            block_dim: (geometry::MM_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let (nr, nc, nt, wp) = (n_rows as u32, n_cols as u32, n_tok as u32, w.addr(self));
        let mut b = self.args(&f);
        b.arg(&wp).arg(x).arg(y).arg(&nr).arg(&nc).arg(&nt);
        // SAFETY: argument order and types match the kernel; lengths and index limits checked above.
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {} {n_rows}x{n_cols} n_tok={n_tok}", k.matmul)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_type_has_kernels_and_geometry_agrees() {
        use GgmlType::*;
        for ty in [F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K] {
            assert!(is_supported(ty), "{ty}");
            // a unit is RUNS (2 or 4) runs of 4 elements, so a block holds 8 or 16 elements per unit
            let upb = geometry::units_per_block(ty.id()) as usize;
            let per_unit = if is_plain(ty) { 8 } else { ty.block_size() / upb };
            assert!(per_unit == 8 || per_unit == 16, "{ty}: {per_unit} elements per unit");
        }
        assert!(!is_supported(Q8_1));
        assert!(!is_supported(IQ4_XS));
    }

    #[test]
    fn shape_checks_name_the_problem() {
        let e = weight_bytes("matvec_q4_0", GgmlType::Q4_0, 2, 33, 36).unwrap_err().to_string();
        assert!(e.contains("n_cols 33") && e.contains("block size 32"), "{e}");
        let e = weight_bytes("matvec_q4_0", GgmlType::Q4_0, 2, 64, 71).unwrap_err().to_string();
        assert!(e.contains("71 bytes") && e.contains("expected 72"), "{e}");
        assert_eq!(weight_bytes("matvec_f16", GgmlType::F16, 3, 5, 30).unwrap(), 30);
    }
}
