//! Quantized tensor formats on the CPU: the reference every GPU kernel is tested against, and the CPU backend's
//! mat-vec / mat-mul.
//!
//! Two kinds of products:
//! - `vec_dot`, `matvec`, `matmul`: exact — each weight block is dequantized (bit-identical to ggml / gguf-py)
//!   and multiplied with f32 activations. These are the oracle of the GPU kernels.
//! - `matvec_q8`, `matmul_q8`: llama.cpp's CPU numerics — activations quantized to the weight type's
//!   `vec_dot_type` (Q8_0 / Q8_1 / Q8_K), integer block sums (see `dot`). Faster, and the same rounding as the
//!   reference outputs we are judged against.
//!
//! Rows of a weight are contiguous, `ty.row_bytes(n_cols)` bytes each.

/// Block layouts shared with the kernel crate (one definition, like ggml's `ggml-common.h`).
#[path = "../../gpu-kernels/src/blocks.rs"]
pub mod blocks;

mod dequant;
pub mod dot;
pub mod ggml_avx2;
pub mod quantize;

use rayon::prelude::*;

use crate::gguf::GgmlType;
use crate::{Error, Result};
pub use dot::Acts;

/// Types the engine computes with.
pub fn is_supported(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K)
}

fn check_row(ty: GgmlType, n: usize, bytes: usize) -> Result<()> {
    if !is_supported(ty) {
        return Err(Error::Quant(format!("type {ty} is not supported")));
    }
    match ty.row_bytes(n as u64) {
        Some(b) if b as usize == bytes => Ok(()),
        Some(b) => Err(Error::Quant(format!("{ty} row of {n} elements needs {b} bytes, got {bytes}"))),
        None => Err(Error::Quant(format!("{n} elements are not a whole number of {ty} blocks of {}", ty.block_size()))),
    }
}

/// Dequantize one row of `ty` (`src` holds exactly `dst.len()` elements' blocks) into `dst`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    check_row(ty, dst.len(), src.len())?;
    dequant::dequantize(ty, src, dst);
    Ok(())
}

/// Exact dot product of a row of `ty` with f32 `x` (blocks dequantized on the fly).
#[inline(always)]
pub(crate) fn dot_f32(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    let (bs, ts) = (ty.block_size(), ty.type_size());
    // plain types: several elements per "block" chunk keep the loop vectorisable
    let (bs, ts) = if bs == 1 { (64, 64 * ts) } else { (bs, ts) };
    let mut buf = [0.0f32; 256];
    let mut sum = 0.0f32;
    let full = row.len() / ts;
    for (blk, xb) in row.chunks_exact(ts).zip(x.chunks_exact(bs)) {
        dequant::dequantize(ty, blk, &mut buf[..bs]);
        sum += buf[..bs].iter().zip(xb).map(|(a, b)| a * b).sum::<f32>();
    }
    let tail = &row[full * ts..];
    if !tail.is_empty() {
        let n = x.len() - full * bs;
        dequant::dequantize(ty, tail, &mut buf[..n]);
        sum += buf[..n].iter().zip(&x[full * bs..]).map(|(a, b)| a * b).sum::<f32>();
    }
    sum
}

/// Exact dot product of one quantized row with f32 `x` (x.len() elements).
pub fn vec_dot(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    dot_f32(ty, row, x)
}

/// Rows per parallel task: enough work per task to amortise scheduling.
pub(crate) const ROWS_PER_TASK: usize = 16;

pub(crate) fn check_mat(ty: GgmlType, w: &[u8], n_rows: usize, n_cols: usize) -> usize {
    assert!(is_supported(ty), "matvec: unsupported type {ty}");
    let rb = ty.row_bytes(n_cols as u64).expect("n_cols is a whole number of blocks") as usize;
    assert_eq!(w.len(), rb * n_rows, "matvec: weight bytes");
    rb
}

/// Run `f(row_index, row_bytes, out)` for every row in parallel, AVX2-compiled where the CPU has it.
#[inline(always)]
pub(crate) fn par_rows(w: &[u8], rb: usize, y: &mut [f32], f: impl Fn(&[u8], &mut f32) + Sync) {
    y.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(ci, ys)| {
        let rows = &w[ci * ROWS_PER_TASK * rb..];
        simd_dispatch(|| {
            for (i, out) in ys.iter_mut().enumerate() {
                f(&rows[i * rb..(i + 1) * rb], out);
            }
        })
    });
}

/// y (n_tok, n_rows) = yt (n_rows, n_tok) transposed, as the row-parallel mat-muls leave it: blocks of 8 tokens in
/// parallel, each reading yt row by row (8 contiguous values) and writing 8 streams, instead of one strided pass over
/// all of yt per token.
pub(crate) fn untranspose(yt: &[f32], y: &mut [f32], n_rows: usize, n_tok: usize) {
    const TB: usize = 8;
    y[..n_rows * n_tok].par_chunks_mut(n_rows * TB).enumerate().for_each(|(b, ys)| {
        let nt = ys.len() / n_rows;
        for r in 0..n_rows {
            for (u, &v) in yt[r * n_tok + b * TB..][..nt].iter().enumerate() {
                ys[u * n_rows + r] = v;
            }
        }
    });
}

/// Call `f` inside a function compiled for AVX2 + FMA when the CPU has them (the closure is inlined into it,
/// so its loops vectorise with 256-bit registers), else directly.
#[inline(always)]
pub(crate) fn simd_dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected at run time.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// y = W x, exact: W (n_rows, n_cols) of `ty`, x (n_cols,), y (n_rows,). All cores.
pub fn matvec(ty: GgmlType, w: &[u8], n_rows: usize, n_cols: usize, x: &[f32], y: &mut [f32]) {
    let rb = check_mat(ty, w, n_rows, n_cols);
    par_rows(w, rb, &mut y[..n_rows], |row, out| *out = dot_f32(ty, row, &x[..n_cols]));
}

/// y = x W^T, exact: x (n_tok, n_cols), y (n_tok, n_rows). Each weight row is dequantized once. All cores.
pub fn matmul(ty: GgmlType, w: &[u8], n_rows: usize, n_cols: usize, x: &[f32], y: &mut [f32]) {
    let rb = check_mat(ty, w, n_rows, n_cols);
    let n_tok = x.len() / n_cols;
    // yt (n_rows, n_tok), transposed at the end so each task writes contiguous memory
    let mut yt = vec![0.0f32; n_rows * n_tok];
    yt.par_chunks_mut(n_tok).enumerate().for_each_init(
        || vec![0.0f32; n_cols],
        |buf, (r, out)| {
            dequant::dequantize(ty, &w[r * rb..(r + 1) * rb], buf);
            simd_dispatch(|| {
                for (t, o) in out.iter_mut().enumerate() {
                    *o = buf.iter().zip(&x[t * n_cols..(t + 1) * n_cols]).map(|(a, b)| a * b).sum();
                }
            })
        },
    );
    untranspose(&yt, y, n_rows, n_tok);
}

/// y = W x with llama.cpp's CPU numerics (x quantized to the type's vec-dot format). All cores.
pub fn matvec_q8(ty: GgmlType, w: &[u8], n_rows: usize, n_cols: usize, x: &[f32], y: &mut [f32]) {
    let rb = check_mat(ty, w, n_rows, n_cols);
    let acts = Acts::new(ty, &x[..n_cols]);
    par_rows(w, rb, &mut y[..n_rows], |row, out| *out = dot::dot_row(ty, row, &acts));
}

/// y = x W^T with llama.cpp's CPU numerics: x (n_tok, n_cols), y (n_tok, n_rows). All cores.
pub fn matmul_q8(ty: GgmlType, w: &[u8], n_rows: usize, n_cols: usize, x: &[f32], y: &mut [f32]) {
    let rb = check_mat(ty, w, n_rows, n_cols);
    let n_tok = x.len() / n_cols;
    let acts: Vec<Acts> = x.par_chunks(n_cols).map(|xr| Acts::new(ty, xr)).collect();
    let mut yt = vec![0.0f32; n_rows * n_tok];
    yt.par_chunks_mut(n_tok).enumerate().for_each(|(r, out)| {
        let row = &w[r * rb..(r + 1) * rb];
        simd_dispatch(|| {
            for (o, a) in out.iter_mut().zip(&acts) {
                *o = dot::dot_row(ty, row, a);
            }
        })
    });
    untranspose(&yt, y, n_rows, n_tok);
}

/// Quantize f32 `src` (whole blocks) into `dst` as `ty`: Q8_0, Q8_1, Q4_0, Q4_1, Q8_K, F32, F16, BF16.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    use quantize::*;
    let need = ty.row_bytes(src.len() as u64).ok_or_else(|| {
        Error::Quant(format!("{} elements are not a whole number of {ty} blocks", src.len()))
    })? as usize;
    if dst.len() != need {
        return Err(Error::Quant(format!("quantize {ty}: destination has {} bytes, need {need}", dst.len())));
    }
    match ty {
        GgmlType::Q8_0 => dst.copy_from_slice(as_bytes(&blocks_of(src, 32, q8_0_block))),
        GgmlType::Q8_1 => dst.copy_from_slice(as_bytes(&blocks_of(src, 32, q8_1_block))),
        GgmlType::Q4_0 => dst.copy_from_slice(as_bytes(&blocks_of(src, 32, q4_0_block))),
        GgmlType::Q4_1 => dst.copy_from_slice(as_bytes(&blocks_of(src, 32, q4_1_block))),
        GgmlType::Q8_K => dst.copy_from_slice(as_bytes(&blocks_of(src, 256, q8_k_block))),
        GgmlType::F32 => {
            for (d, v) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&half::f16::from_f32(*v).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&half::bf16::from_f32(*v).to_le_bytes());
            }
        }
        other => return Err(Error::Quant(format!("quantization to {other} is not implemented"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1), for comparisons against naive formulas.
    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        crate::rng::SplitMix64(seed).vec_f32(n)
    }

    /// Random but valid blocks of `ty`: random bytes with every f16 scale replaced by a small finite value.
    fn rand_row(ty: GgmlType, n: usize, seed: u64) -> Vec<u8> {
        // quantizing random floats gives valid blocks for the types we can quantize; others: random bytes with
        // sane scales written over the f16 fields
        let x = rand_vec(n, seed);
        let mut row = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
        if quantize_row(ty, &x, &mut row).is_ok() {
            return row;
        }
        let mut s = seed | 1;
        for b in row.iter_mut() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *b = s as u8;
        }
        let scale = half::f16::from_f32(0.01).to_le_bytes();
        let ts = ty.type_size();
        let offs: &[usize] = match ty {
            GgmlType::Q5_0 => &[0],
            GgmlType::Q5_1 => &[0, 2],
            GgmlType::Q2_K => &[80, 82],
            GgmlType::Q3_K => &[108],
            GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q6_K => &[208],
            _ => &[],
        };
        for blk in row.chunks_exact_mut(ts) {
            for &o in offs {
                blk[o..o + 2].copy_from_slice(&scale);
            }
        }
        row
    }

    const TYPES: [GgmlType; 14] = [
        GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
        GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K,
        GgmlType::Q6_K, GgmlType::Q8_K,
    ];

    #[test]
    fn q8_products_track_exact_products() {
        // llama.cpp's 8-bit activations cost ~1% relative error per product: |q8 - exact| <= 2% of sum|w x|
        let (n_rows, n_cols) = (7, 512);
        for ty in TYPES {
            let w: Vec<u8> = (0..n_rows).flat_map(|r| rand_row(ty, n_cols, 100 + r as u64)).collect();
            let x = rand_vec(n_cols, 7);
            let (mut exact, mut approx) = (vec![0.0; n_rows], vec![0.0; n_rows]);
            matvec(ty, &w, n_rows, n_cols, &x, &mut exact);
            matvec_q8(ty, &w, n_rows, n_cols, &x, &mut approx);
            let rb = w.len() / n_rows;
            for r in 0..n_rows {
                let mut wr = vec![0.0; n_cols];
                dequantize_row(ty, &w[r * rb..(r + 1) * rb], &mut wr).unwrap();
                let naive: f64 = wr.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
                let mag: f64 = wr.iter().zip(&x).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
                assert!((exact[r] as f64 - naive).abs() <= 1e-5 * mag + 1e-6, "{ty} exact row {r}");
                assert!((approx[r] as f64 - naive).abs() <= 0.02 * mag + 1e-6, "{ty} q8 row {r}: {} vs {naive}", approx[r]);
            }
        }
    }

    #[test]
    fn matmul_equals_matvec_per_token() {
        let (n_rows, n_cols, n_tok) = (5, 256, 3);
        for ty in TYPES {
            let w: Vec<u8> = (0..n_rows).flat_map(|r| rand_row(ty, n_cols, 300 + r as u64)).collect();
            let x = rand_vec(n_tok * n_cols, 9);
            type Op = fn(GgmlType, &[u8], usize, usize, &[f32], &mut [f32]);
            let pairs: [(Op, Op); 2] = [(matmul, matvec), (matmul_q8, matvec_q8)];
            for (mm, mv) in pairs {
                let mut y = vec![0.0; n_tok * n_rows];
                mm(ty, &w, n_rows, n_cols, &x, &mut y);
                for t in 0..n_tok {
                    let mut yv = vec![0.0; n_rows];
                    mv(ty, &w, n_rows, n_cols, &x[t * n_cols..(t + 1) * n_cols], &mut yv);
                    for r in 0..n_rows {
                        assert!((y[t * n_rows + r] - yv[r]).abs() <= 1e-5 * yv[r].abs().max(1.0), "{ty} t={t} r={r}");
                    }
                }
            }
        }
    }

    #[test]
    fn quantize_dequantize_error_is_bounded() {
        // per block, |x - deq(q(x))| <= step / 2 (+ f16 rounding of the scale): step = amax/127 (Q8), range/15 <= 2 amax/15
        // (Q4_1), amax/8 (Q4_0; the extreme opposite the signed max clips at +7, a whole step: rel 2/8)
        let x = rand_vec(1024, 3);
        for (ty, rel) in [(GgmlType::Q8_0, 1.0 / 127.0), (GgmlType::Q8_K, 1.0 / 127.0), (GgmlType::Q4_0, 2.0 / 8.0), (GgmlType::Q4_1, 2.0 / 15.0)] {
            let mut q = vec![0u8; ty.row_bytes(1024).unwrap() as usize];
            quantize_row(ty, &x, &mut q).unwrap();
            let mut y = vec![0.0; 1024];
            dequantize_row(ty, &q, &mut y).unwrap();
            let bs = ty.block_size();
            for (xb, yb) in x.chunks(bs).zip(y.chunks(bs)) {
                let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (a, b) in xb.iter().zip(yb) {
                    // half a step, plus the f16 rounding of the stored scale (2^-11 relative) at the largest quant
                    assert!((a - b).abs() <= 0.5 * rel * amax + amax / 2048.0 + 1e-6, "{ty}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn bad_rows_are_errors() {
        let mut out = vec![0.0; 33];
        assert!(dequantize_row(GgmlType::Q4_0, &[0; 18], &mut out).is_err());
        let mut out = vec![0.0; 32];
        assert!(dequantize_row(GgmlType::Q4_0, &[0; 17], &mut out).is_err());
        assert!(dequantize_row(GgmlType::IQ2_XXS, &[0; 66], &mut vec![0.0; 256]).is_err());
    }
}
