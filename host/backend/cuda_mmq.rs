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

/// The kernels of weight type `ty`: the prefill tile's, then the thin tile's for each of `layout::THIN_TOKS`.
fn kernels_of(ty: GgmlType) -> Option<(&'static str, [&'static str; 3])> {
    use GgmlType::*;
    macro_rules! k {
        ($t:literal) => {
            (concat!("mmq_", $t), [concat!("mmqt_", $t, "_t8"), concat!("mmqt_", $t, "_t16"), concat!("mmqt_", $t, "_t32")])
        };
    }
    Some(match ty {
        Q4_0 => k!("q4_0"),
        Q4_1 => k!("q4_1"),
        Q5_0 => k!("q5_0"),
        Q5_1 => k!("q5_1"),
        Q8_0 => k!("q8_0"),
        Q4_K => k!("q4_k"),
        Q5_K => k!("q5_k"),
        Q6_K => k!("q6_k"),
        _ => return None,
    })
}

/// Whether `matmul_q8` has a tensor-core kernel for weights of type `ty` (Q2_K, Q3_K and the float types take
/// the f32 `Cuda::matmul` path).
pub fn supports_mmq(ty: GgmlType) -> bool {
    kernels_of(ty).is_some()
}

/// The prefill tile layout of type `ty` (a supported type).
pub fn geom(ty: GgmlType) -> MmqGeom {
    MmqGeom::of(ty.block_size() as u32, ty.type_size() as u32)
}

/// The thin tile layout of type `ty` for `toks` (one of `layout::THIN_TOKS`) tokens.
pub fn thin_geom(ty: GgmlType, toks: u32) -> MmqGeom {
    MmqGeom::thin(ty.block_size() as u32, ty.type_size() as u32, toks)
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
        let (kernel, g) = self
            .mmq_kernel(ty, n_tok)
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
        let grid_y = n_tok.div_ceil(g.toks as usize);
        if grid_y > 65535 {
            return Err(err(kernel, format!("n_tok {n_tok} needs {grid_y} token tiles, over the grid limit 65535")));
        }
        if n_rows == 0 || n_tok == 0 {
            return Ok(());
        }
        let f = self.func(kernel)?;
        let n_kt = n_cols.div_ceil(g.kt as usize);
        let splits = self.mmq_splits(g, n_rows, n_cols, n_tok);
        let kt_split = n_kt.div_ceil(splits);
        let smem = g.smem_bytes();
        // Over 48 KiB of dynamic shared memory must be allowed per function (a cheap driver call; idempotent).
        f.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32)
            .map_err(cuda_err(format!("{kernel}: allow {smem} bytes of dynamic shared memory")))?;
        let cfg = LaunchConfig {
            grid_dim: (n_rows.div_ceil(g.rows as usize) as u32, grid_y as u32, splits as u32),
            block_dim: (g.threads, 1, 1),
            shared_mem_bytes: smem,
        };
        let (nr, nc, nt, ks, wp) = (n_rows as u32, n_cols as u32, n_tok as u32, kt_split as u32, w.addr(self));
        // The tile's last block adds the splits up when that is one round of loads per thread (tiles of up to 8
        // tokens); larger tiles take a launch of its own, which was faster end to end on the H100 (session 12,
        // 7B-shape Q4_0 thin tile: 8 sequences 1,767 t/s in-launch against 1,735; 32: 3,867 against 4,148).
        let fixup = splits > 1 && g.toks <= FIXUP_MAX_TOKS && self.split_fixup.load(Ordering::Relaxed);
        let mut b = self.args(&f);
        b.arg(&wp).arg(xq).arg(y).arg(&self.split_scratch);
        if fixup { b.arg(&self.split_done) } else { b.arg(&0u64) };
        b.arg(&nr).arg(&nc).arg(&nt).arg(&ks);
        // SAFETY: argument order and types match the kernel; lengths and index limits checked above, the scratch
        // holds `splits` slices of n_out and the counters one per tile when split (`mmq_splits`).
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {kernel} {n_rows}x{n_cols} n_tok={n_tok}")))?;
        if splits > 1 && !fixup {
            self.sum_splits(y, n_out, splits)?;
        }
        Ok(())
    }

    /// Let a split `matmul_q8` of up to 8 tokens add its splits up in the same launch (the default), or always
    /// in a launch of its own (for comparisons; `HOST_GPU_OFF=fixup`).
    pub fn set_split_fixup(&self, on: bool) {
        self.split_fixup.store(on, Ordering::Relaxed);
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

    /// The kernel `matmul_q8` launches for `n_tok` tokens of type `ty`, and its tile layout: the thin tile of the
    /// fewest tokens that holds them for up to 32 tokens (unless turned off, `set_thin_mmq`), else the prefill
    /// tile. None for a type without an int8 kernel.
    pub fn mmq_kernel(&self, ty: GgmlType, n_tok: usize) -> Option<(&'static str, MmqGeom)> {
        let (wide, thin) = kernels_of(ty)?;
        let pick = layout::THIN_TOKS.iter().position(|&t| n_tok <= t as usize);
        Some(match pick.filter(|_| self.thin_mmq.load(Ordering::Relaxed)) {
            Some(i) => (thin[i], thin_geom(ty, layout::THIN_TOKS[i])),
            None => (wide, geom(ty)),
        })
    }

    /// Let `matmul_q8` take the thin tile for decode batches of up to 32 tokens (the default), or always the
    /// prefill tile (for comparisons; `HOST_GPU_OFF=thin`).
    pub fn set_thin_mmq(&self, on: bool) {
        self.thin_mmq.store(on, Ordering::Relaxed);
    }

    /// The k-splits `matmul_q8` launches for this shape in tile layout `g` (`mmq_kernel`): the count s that
    /// minimizes the waves of blocks (every SM holding the blocks that fit there at once) times the k-tiles each
    /// block takes, ceil(tiles s / wave) ceil(k-tiles / s), the fewest splits on a tie; each split at least
    /// `MIN_KT_PER_SPLIT` k-tiles, all of them within the scratch and at most `SPLIT_TILES` tiles. The splits are
    /// added up in order, by each tile's last block in the same launch for tiles of up to 8 tokens, else by a
    /// `sum_splits_f32` launch. A 7B decode batch of 33 to 64 tokens: 32
    /// prefill tiles of a 4096-row Q4_0 weight (two blocks per SM, 264 a wave on an H100) take 8 splits of 4
    /// k-tiles; 512 tokens (256 tiles) take none.
    pub fn mmq_splits(&self, g: MmqGeom, n_rows: usize, n_cols: usize, n_tok: usize) -> usize {
        let tiles = n_rows.div_ceil(g.rows as usize) * n_tok.div_ceil(g.toks as usize);
        let wave = self.n_sm * g.min_blocks() as usize;
        let n_kt = n_cols.div_ceil(g.kt as usize);
        if !self.split_k.load(Ordering::Relaxed) || tiles == 0 || wave == 0 || tiles > SPLIT_TILES {
            return 1;
        }
        let most = (n_kt / MIN_KT_PER_SPLIT).min(SPLIT_SCRATCH / (n_tok * n_rows).max(1)).max(1);
        let cost = |s: usize| (tiles * s).div_ceil(wave) * n_kt.div_ceil(s);
        // splits of equal k-tile counts, none empty
        let best = (1..=most).min_by_key(|&s| (cost(s), s)).unwrap_or(1);
        n_kt.div_ceil(n_kt.div_ceil(best))
    }
}

/// Floats of the split-K scratch (16 MiB): partial sums of up to 512 rows of 4096 in two splits, or of 32 rows of
/// 4096 in 32; `mmq_splits` takes fewer splits where more would not fit.
pub const SPLIT_SCRATCH: usize = 4 << 20;

/// Largest token tile whose splits are added up inside the mat-mul launch (`matmul_q8`).
const FIXUP_MAX_TOKS: u32 = 8;

/// Tiles a split launch may have (the kernels' per-tile counters, `Cuda::split_done`).
pub const SPLIT_TILES: usize = 1 << 16;

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
            for toks in layout::THIN_TOKS {
                let t = thin_geom(ty, toks);
                let tt = format!("{ty} thin {toks}");
                assert_eq!((t.kt, t.nb, t.kq), (g.kt, g.nb, g.kq), "{tt}: the prefill tile's k-tiles");
                assert!(t.raw_stride >= g.raw_stride && (t.raw_stride / 16) % 2 == 1, "{tt}: odd chunks per raw row");
                for off in [t.stage_bytes(), t.raw_bytes(), t.act_bytes(), t.smem_bytes()] {
                    assert_eq!(off % 16, 0, "{tt}: offset {off} not 16-aligned");
                }
                assert_eq!(t.smem_bytes(), t.stages * t.stage_bytes(), "{tt}: stages only");
                // one copy pass of 128 threads covers the metadata, four the activation quants
                let meta_copies = if t.kq { 2 * toks } else { toks * t.nsub() };
                assert!(meta_copies <= t.threads && toks * t.kt / 16 <= 4 * t.threads, "{tt}");
                assert!(t.rows * t.raw_stride / 16 <= 16 * t.threads, "{tt}: raw copy in 16 passes");
                assert!(t.min_blocks() >= 2, "{tt}: {} bytes of shared memory", t.smem_bytes());
            }
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
