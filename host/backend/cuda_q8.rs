//! Launchers of the 8-bit-activation kernels (`gpu-kernels/src/quant/q8.rs`): quantize an activation vector once,
//! then y = W x_q for each weight with `dp4a` integer dot products. CPU twin: `quant::matvec_q8` (same
//! activation rounding and integer block sums as llama.cpp's CPU backend; only the f32 summation order differs).
//!
//! Use in a forward pass:
//! ```ignore
//! let mut xq = cuda.zeros::<u8>(cuda_q8::act_row_bytes(n_embd) * max_tok)?;  // once
//! cuda.quantize_act(&x, 1, n_embd, &mut xq)?;                                 // per input vector
//! cuda.matvec_q8(ty_q, &wq, n_q, n_embd, &xq, &mut q)?;                       // per weight sharing it
//! cuda.matvec_q8(ty_k, &wk, n_kv, n_embd, &xq, &mut k)?;
//! ```
//! One quantized buffer serves every weight type (it holds both the q8_1 and, for widths that are a multiple of
//! 256, the q8_K format). Layout and geometry come from the kernels' own `q8_layout.rs`, included here by path.

use cudarc::driver::{CudaSlice, LaunchConfig};

use super::cuda::{cuda_err, Cuda, Dev};
use super::cuda_quant::{check_len, err};
use crate::gguf::GgmlType;
use crate::Result;

/// Activation layout and kernel geometry shared with the kernel crate.
#[path = "../../gpu-kernels/src/quant/q8_layout.rs"]
pub mod layout;

use layout::MqGeom;

/// The kernels of a weight type and their geometry: the single-column mat-vec, its fused variant
/// (`matvec_q8_fused`) and the multi-column mat-vecs (`matvec_q8_cols`) for up to 2, 4 and 8 activation rows.
struct MvKernels {
    one: (&'static str, MqGeom),
    fused: &'static str,
    cols: [(&'static str, MqGeom); 3],
}

fn kernels_of(ty: GgmlType) -> Option<MvKernels> {
    use GgmlType::*;
    macro_rules! k {
        ($t:literal, $one:expr, $cols:expr) => {
            MvKernels {
                one: (concat!("mmvq_", $t), $one),
                fused: concat!("mmvq_fused_", $t),
                cols: [
                    (concat!("mmvq_", $t, "_c2"), $cols[0]),
                    (concat!("mmvq_", $t, "_c4"), $cols[1]),
                    (concat!("mmvq_", $t, "_c8"), $cols[2]),
                ],
            }
        };
    }
    Some(match ty {
        Q4_0 => k!("q4_0", layout::MQ_Q4_0, layout::MC_Q4_0),
        Q4_1 => k!("q4_1", layout::MQ_Q4_1, layout::MC_Q4_1),
        Q5_0 => k!("q5_0", layout::MQ_Q5_0, layout::MC_Q5_0),
        Q5_1 => k!("q5_1", layout::MQ_Q5_1, layout::MC_Q5_1),
        Q8_0 => k!("q8_0", layout::MQ_Q8_0, layout::MC_Q8_0),
        Q4_K => k!("q4_k", layout::MQ_Q4_K, layout::MC_Q4_K),
        Q5_K => k!("q5_k", layout::MQ_Q5_K, layout::MC_Q5_K),
        Q6_K => k!("q6_k", layout::MQ_Q6_K, layout::MC_Q6_K),
        _ => return None,
    })
}

/// How a q8 mat-vec runs (`Cuda::matvec_q8_opt`): on how many activation rows, whether it adds to y, and through
/// which kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MvOpts {
    /// Activation rows in xq, 1 to `MV_COLS_MAX`; y holds as many rows of n_rows outputs.
    pub n: usize,
    /// The first of them: rows first..first + n of xq make rows first..first + n of y.
    pub first: usize,
    /// y += W x (a residual add in the same launch) instead of y = W x.
    pub accumulate: bool,
    /// A named kernel of the weight type and its geometry (the benchmark's alternatives, `layout::MQ_VARIANTS`)
    /// instead of the type's own for `n`.
    pub kernel: Option<(&'static str, MqGeom)>,
}

impl MvOpts {
    /// One activation row, y = W x, the type's own kernel.
    pub const ONE: MvOpts = MvOpts { n: 1, first: 0, accumulate: false, kernel: None };
}

/// Most activation rows `matvec_q8_cols` takes in one launch.
pub const MV_COLS_MAX: usize = layout::MC_MAX as usize;

/// How a fused mat-vec makes its activations from f32 values (`gpu-kernels/src/quant/q8.rs`, `prologue`).
#[derive(Clone, Copy)]
pub enum Prologue<'a> {
    /// The vector itself.
    Quantize,
    /// `w * rmsnorm(x)` with epsilon, as `Cuda::rmsnorm_rows`.
    RmsNorm(&'a CudaSlice<f32>, f32),
    /// `silu(gate) * up` of the source (gate, up) of twice the width, as `Cuda::swiglu_rows`.
    SwiGlu,
    /// `gelu_tanh(gate) * up`, as `Cuda::gelu_tanh_mul_rows`.
    GeluTanh,
}

/// Whether `matvec_q8_fused` takes weights of type `ty` with `n_cols` columns.
pub fn supports_fused(ty: GgmlType, n_cols: usize) -> bool {
    supports_q8(ty) && n_cols.is_multiple_of(32) && n_cols > 0 && act_row_bytes(n_cols) <= layout::FUSED_ACT_BYTES as usize
}

/// Whether `matvec_q8` (and `matvec_q8_cols`) has a kernel for weights of type `ty`.
pub fn supports_q8(ty: GgmlType) -> bool {
    kernels_of(ty).is_some()
}

/// Bytes of one quantized activation row of `n_cols` columns (`n_cols` a multiple of 32).
pub fn act_row_bytes(n_cols: usize) -> usize {
    layout::row_bytes(n_cols as u32) as usize
}

/// Activation widths the kernels take: whole q8_1 blocks, within the u32 offsets of the layout.
pub(super) fn check_cols(op: &str, n_cols: usize) -> Result<()> {
    if !n_cols.is_multiple_of(32) || n_cols == 0 {
        return Err(err(op, format!("n_cols {n_cols} is not a positive multiple of 32")));
    }
    if n_cols > (1 << 28) {
        return Err(err(op, format!("n_cols {n_cols} exceeds the limit {}", 1 << 28)));
    }
    Ok(())
}

/// The (n_rows, n_cols) weight of type `ty` is whole blocks per row, within the kernels' 4 GiB of u32 byte
/// offsets, and `got` bytes hold it (a view may run past it).
pub(super) fn check_weight(kernel: &str, ty: GgmlType, n_rows: usize, n_cols: usize, got: usize) -> Result<()> {
    let row = ty.row_bytes(n_cols as u64).ok_or_else(|| {
        err(kernel, format!("n_cols {n_cols} is not a multiple of the {ty} block size {}", ty.block_size()))
    })? as usize;
    let bytes = row.checked_mul(n_rows).filter(|&b| b < u32::MAX as usize - 64).ok_or_else(|| {
        err(kernel, format!("a {n_rows} x {n_cols} {ty} weight exceeds the kernel's 4 GiB limit"))
    })?;
    check_len(kernel, "w", got, bytes)
}

impl Cuda {
    /// Quantize the activations x (n_tok, n_cols) into xq (n_tok rows of `act_row_bytes(n_cols)`) for
    /// `matvec_q8`: q8_1 blocks as `quant::quantize::q8_1_block` and, when `n_cols` is a multiple of 256, q8_K
    /// blocks as `q8_k_block`. Buffers may be longer than needed.
    pub fn quantize_act(&self, x: &CudaSlice<f32>, n_tok: usize, n_cols: usize, xq: &mut CudaSlice<u8>) -> Result<()> {
        const K: &str = "quantize_q8_act";
        check_cols(K, n_cols)?;
        check_len(K, "x", x.len(), n_tok * n_cols)?;
        check_len(K, "xq", xq.len(), n_tok * act_row_bytes(n_cols))?;
        if n_tok > 65535 {
            return Err(err(K, format!("n_tok {n_tok} exceeds the grid limit 65535")));
        }
        if n_tok == 0 {
            return Ok(());
        }
        let f = self.func(K)?;
        let per_block = layout::QA_THREADS as usize / 32 * 256;
        let cfg = LaunchConfig {
            grid_dim: (n_cols.div_ceil(per_block) as u32, n_tok as u32, 1),
            block_dim: (layout::QA_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let n = n_cols as u32;
        let mut b = self.args(&f);
        b.arg(x).arg(xq).arg(&n);
        // SAFETY: argument order and types match the kernel; lengths and limits checked above.
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {K} n_tok={n_tok} n_cols={n_cols}")))?;
        Ok(())
    }

    /// y = W x for the (n_rows, n_cols) weight `w` of type `ty` (GGUF blocks as in the file), with x given as
    /// `quantize_act` left it in `xq` (its first row); twin of `quant::matvec_q8`. y (n_rows,) or longer.
    pub fn matvec_q8(&self, ty: GgmlType, w: &impl Dev<u8>, n_rows: usize, n_cols: usize, xq: &CudaSlice<u8>,
                     y: &mut CudaSlice<f32>) -> Result<()> {
        self.matvec_q8_opt(ty, w, n_rows, n_cols, xq, y, MvOpts::ONE)
    }

    /// `matvec_q8`, or y += W x with `accumulate` (a residual add in the same launch).
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_q8_acc(&self, ty: GgmlType, w: &impl Dev<u8>, n_rows: usize, n_cols: usize, xq: &CudaSlice<u8>,
                         y: &mut CudaSlice<f32>, accumulate: bool) -> Result<()> {
        self.matvec_q8_opt(ty, w, n_rows, n_cols, xq, y, MvOpts { accumulate, ..MvOpts::ONE })
    }

    /// Y = X W^T for `n` activation rows X, quantized by `quantize_act` into `xq` (n rows of
    /// `act_row_bytes(n_cols)`): y (n, n_rows). Each weight step is read once for up to `MV_COLS_MAX` rows (decode
    /// of several sequences; more rows take one launch per `MV_COLS_MAX`), and each row of y is bit-identical to
    /// `matvec_q8` on that activation row alone.
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_q8_cols(&self, ty: GgmlType, w: &impl Dev<u8>, n_rows: usize, n_cols: usize, xq: &CudaSlice<u8>,
                          n: usize, y: &mut CudaSlice<f32>) -> Result<()> {
        if n == 0 {
            return Err(err("matvec_q8_cols", "0 activation rows".into()));
        }
        for first in (0..n).step_by(MV_COLS_MAX) {
            let opts = MvOpts { n: MV_COLS_MAX.min(n - first), first, ..MvOpts::ONE };
            self.matvec_q8_opt(ty, w, n_rows, n_cols, xq, y, opts)?;
        }
        Ok(())
    }

    /// The q8 mat-vec of `opts` (every other `matvec_q8*` launcher comes here): y (opts.n, n_rows) (+)= W x for
    /// the opts.n activation rows of `xq`, through the type's single-column kernel for one row and its
    /// multi-column kernel of 2, 4 or 8 rows (the fewest that hold n) otherwise, or through `opts.kernel`.
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_q8_opt(&self, ty: GgmlType, w: &impl Dev<u8>, n_rows: usize, n_cols: usize, xq: &CudaSlice<u8>,
                         y: &mut CudaSlice<f32>, opts: MvOpts) -> Result<()> {
        let ks = kernels_of(ty).ok_or_else(|| err("matvec_q8", format!("type {ty} has no 8-bit-activation kernel")))?;
        let n = opts.n;
        if !(1..=MV_COLS_MAX).contains(&n) {
            return Err(err(ks.one.0, format!("{n} activation rows: the q8 mat-vecs take 1 to {MV_COLS_MAX}")));
        }
        let (kernel, g) = opts.kernel.unwrap_or(if n == 1 { ks.one } else { ks.cols[(n > 2) as usize + (n > 4) as usize] });
        if n > g.cols as usize {
            return Err(err(kernel, format!("{n} activation rows exceed the kernel's {}", g.cols)));
        }
        check_cols(kernel, n_cols)?;
        check_weight(kernel, ty, n_rows, n_cols, w.elems())?;
        let rows_end = opts.first + n;
        check_len(kernel, "xq", xq.len(), rows_end * act_row_bytes(n_cols))?;
        check_len(kernel, "y", y.len(), rows_end * n_rows)?;
        if n_rows == 0 {
            return Ok(());
        }
        let f = self.func(kernel)?;
        let grid = n_rows.div_ceil(g.rows_per_block() as usize) as u32;
        let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (g.threads(), 1, 1), shared_mem_bytes: 0 };
        let (nr, nc, nx, acc, wp) = (n_rows as u32, n_cols as u32, n as u32, opts.accumulate as u32, w.addr(self));
        let (xp, yp) = (self.ptr(xq, opts.first * act_row_bytes(n_cols)), self.ptr(y, opts.first * n_rows));
        let mut b = self.args(&f);
        b.arg(&wp).arg(&xp).arg(&yp).arg(&nr).arg(&nc);
        if g.cols > 1 {
            b.arg(&nx); // the multi-column kernels' row count
        }
        b.arg(&acc);
        // SAFETY: argument order and types match the kernel (`mmvq_kernels` / `mmvq_cols_kernels` in q8.rs);
        // lengths, row counts and index limits checked above.
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {kernel} {n}x{n_rows}x{n_cols}")))?;
        Ok(())
    }

    /// xq = quantize(act(src)) for one token of `n_cols` columns, `act` as `pro` says (the fused mat-vec's
    /// prologue, once, for the plain mat-vecs that read `xq`): `src` holds n_cols floats (twice that for the
    /// gated prologues); bytes equal to the separate norm / gating kernel followed by `quantize_act`.
    pub fn act_prologue(&self, src: &CudaSlice<f32>, pro: Prologue, n_cols: usize, xq: &mut CudaSlice<u8>) -> Result<()> {
        const K: &str = "act_prologue_q8";
        check_cols(K, n_cols)?;
        check_len(K, "xq", xq.len(), act_row_bytes(n_cols))?;
        let (mode, nw, eps, src_len) = self.prologue_args(K, pro, n_cols)?;
        check_len(K, "src", src.len(), src_len)?;
        let f = self.func(K)?;
        let per_block = 256 * layout::PA_WARPS as usize;
        let cfg = LaunchConfig {
            grid_dim: (n_cols.div_ceil(per_block) as u32, 1, 1),
            block_dim: (32 * layout::PA_WARPS, 1, 1),
            shared_mem_bytes: 0,
        };
        let n = n_cols as u32;
        let mut b = self.args(&f);
        b.arg(src).arg(&nw).arg(&eps).arg(&mode).arg(xq).arg(&n);
        // SAFETY: argument order and types match the kernel; lengths checked above.
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {K} n_cols={n_cols}")))?;
        Ok(())
    }

    /// The kernel arguments of a prologue: (mode, norm weights' address or 0, epsilon, floats read from src).
    fn prologue_args(&self, kernel: &str, pro: Prologue, n_cols: usize) -> Result<(u32, u64, f32, usize)> {
        Ok(match pro {
            Prologue::Quantize => (layout::PRO_QUANT, 0u64, 0.0f32, n_cols),
            Prologue::RmsNorm(nw, eps) => {
                check_len(kernel, "norm weights", nw.len(), n_cols)?;
                (layout::PRO_RMSNORM, self.ptr(nw, 0), eps, n_cols)
            }
            Prologue::SwiGlu => (layout::PRO_SWIGLU, 0, 0.0, 2 * n_cols),
            Prologue::GeluTanh => (layout::PRO_GELU, 0, 0.0, 2 * n_cols),
        })
    }

    /// y = W act(src), or y += W act(src) with `accumulate` (a residual add), for one token in one launch: the
    /// kernel normalises or gates `src` as `pro` says and quantizes it itself (numbers equal to the separate ops
    /// followed by `quantize_act` and `matvec_q8`). `src` holds n_cols floats (twice that for the gated
    /// prologues). Only where `supports_fused(ty, n_cols)`.
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_q8_fused(
        &self,
        ty: GgmlType,
        w: &impl Dev<u8>,
        n_rows: usize,
        n_cols: usize,
        src: &CudaSlice<f32>,
        pro: Prologue,
        y: &mut CudaSlice<f32>,
        accumulate: bool,
    ) -> Result<()> {
        let ks =
            kernels_of(ty).ok_or_else(|| err("matvec_q8_fused", format!("type {ty} has no 8-bit-activation kernel")))?;
        let (kernel, g) = (ks.fused, ks.one.1);
        if !supports_fused(ty, n_cols) {
            return Err(err(kernel, format!("{n_cols} columns exceed the fused kernel's activation buffer")));
        }
        check_weight(kernel, ty, n_rows, n_cols, w.elems())?;
        check_len(kernel, "y", y.len(), n_rows)?;
        let (mode, nw, eps, src_len) = self.prologue_args(kernel, pro, n_cols)?;
        check_len(kernel, "src", src.len(), src_len)?;
        if n_rows == 0 {
            return Ok(());
        }
        let f = self.func(kernel)?;
        let grid = n_rows.div_ceil(g.rows_per_block() as usize) as u32;
        let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (g.threads(), 1, 1), shared_mem_bytes: 0 };
        let (nr, nc, acc, wp) = (n_rows as u32, n_cols as u32, accumulate as u32, w.addr(self));
        let mut b = self.args(&f);
        b.arg(&wp).arg(y).arg(&nr).arg(&nc).arg(src).arg(&nw).arg(&eps).arg(&mode).arg(&acc);
        // SAFETY: argument order and types match the kernel; lengths and index limits checked above.
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {kernel} {n_rows}x{n_cols}")))?;
        Ok(())
    }

    /// Benchmark-only: stream `buf` once through the `stream_probe` kernel (a pure 16-byte-load read, the floor a
    /// mat-vec over the same bytes can approach); `out` holds at least `blocks` elements.
    #[doc(hidden)]
    pub fn stream_probe(&self, buf: &CudaSlice<u8>, blocks: u32, out: &mut CudaSlice<u32>) -> Result<()> {
        const K: &str = "stream_probe";
        check_len(K, "out", out.len(), blocks as usize)?;
        let n16 =
            u32::try_from(buf.len() / 16).map_err(|_| err(K, format!("buffer of {} bytes too large", buf.len())))?;
        let f = self.func(K)?;
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut b = self.args(&f);
        b.arg(buf).arg(&n16).arg(out);
        // SAFETY: argument order and types match the kernel; `out` holds a slot per block.
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {K}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_parts_are_aligned_and_disjoint() {
        for n in [32u32, 96, 576, 640, 1024, 1536, 2048, 4096, 11008] {
            let kc = layout::k_cols(n);
            assert_eq!(kc, if n % 256 == 0 { n } else { 0 }, "{n}");
            let offs =
                [0, layout::off_meta(n), layout::off_kq(n), layout::off_kd(n), layout::off_ks(n), layout::row_bytes(n)];
            for o in offs {
                assert_eq!(o % 16, 0, "n {n}: offset {o} not 16-aligned");
            }
            assert_eq!(layout::off_kq(n) - layout::off_meta(n), n / 32 * layout::META_BYTES);
            assert!(layout::off_kd(n) - layout::off_kq(n) >= kc);
            assert!(layout::off_ks(n) - layout::off_kd(n) >= kc / 256 * 4);
            assert!(layout::row_bytes(n) - layout::off_ks(n) >= kc / 16 * 2);
        }
        // the group-sum order is a permutation
        let mut seen = [false; 16];
        for p in layout::BSUM_POS {
            seen[p as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn supported_types_and_shape_errors() {
        use GgmlType::*;
        for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K] {
            assert!(supports_q8(ty), "{ty}");
        }
        for ty in [F32, F16, Q8_1, Q8_K, IQ4_XS] {
            assert!(!supports_q8(ty), "{ty}");
        }
        let e = check_cols("k", 100).unwrap_err().to_string();
        assert!(e.contains("n_cols 100"), "{e}");
    }

    /// Each multi-column kernel keeps its type's items per lane and split-K (what fixes the order of every
    /// output's f32 sums, so its columns equal the single-column kernel's bits), takes 2, 4 and 8 rows, and has
    /// a lane for each of a warp group's outputs; so does every multi-column benchmark variant.
    #[test]
    fn multi_column_geometry_keeps_the_summation_order() {
        use GgmlType::*;
        for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K] {
            let ks = kernels_of(ty).unwrap();
            let one = ks.one.1;
            assert_eq!(one.cols, 1, "{ty}");
            for ((name, g), n) in ks.cols.iter().zip([2, 4, 8]) {
                assert_eq!((g.items, g.ksplit, g.cols), (one.items, one.ksplit, n), "{ty} {name}");
                assert!(g.rows * g.cols <= 32 && g.warps % g.ksplit == 0, "{ty} {name}: {g:?}");
                assert!(name.starts_with(ks.one.0) && name.ends_with(&format!("_c{n}")), "{name}");
            }
            let n_max = ks.cols.iter().map(|c| c.1.cols as usize).max();
            assert_eq!(n_max, Some(MV_COLS_MAX), "{ty}");
        }
        for &(name, id, g) in layout::MQ_VARIANTS {
            let one = kernels_of(GgmlType::from_id(id).unwrap()).unwrap().one.1;
            if g.cols > 1 {
                assert_eq!((g.items, g.ksplit), (one.items, one.ksplit), "{name}");
            }
        }
    }
}
