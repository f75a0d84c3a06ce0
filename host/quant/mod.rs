//! Quantized tensor formats on the CPU: the reference every GPU kernel is tested against.
//!
//! Weights stay in their file format; rows are expanded block by block into a small stack buffer and dotted with
//! f32 activations (f32 accumulate, no activation quantization), so every result is the dequantize-then-dot value
//! up to summation order. `dequantize_row` equals gguf-py's `gguf.quants.dequantize` bit for bit.
//!
//! Files: `float` (F32, F16, BF16), `legacy` (Q4_0 .. Q8_1), `kquants` (Q2_K .. Q8_K), `matvec` (threaded
//! mat-vec / mat-mul with per-CPU-feature instances of the inner loops).

/// Block layouts shared with the kernel crate (one definition, like ggml's `ggml-common.h`).
#[path = "../../gpu-kernels/src/blocks.rs"]
pub mod blocks;

pub mod float;
pub mod kquants;
pub mod legacy;
pub mod matvec;

pub use matvec::{matmul, matvec, vec_dot};

use crate::gguf::GgmlType;
use crate::{Error, Result};

/// One storage format: `QK` elements in `BYTES` bytes, and how whole blocks expand to f32.
pub trait Format {
    /// Elements per block (1 for the float formats).
    const QK: usize;
    /// Bytes per block.
    const BYTES: usize;
    /// Expands `src` (a whole number of blocks) into `dst` (`QK` elements per block).
    fn dequant(src: &[u8], dst: &mut [f32]);
}

/// Calls `$f::<Format>($args)` for the format of `$ty`, or evaluates `$other` for a type without one.
macro_rules! with_format {
    ($ty:expr, $f:ident ( $($args:expr),* ), $other:expr) => {{
        use $crate::quant::{float, kquants, legacy};
        match $ty {
            GgmlType::F32 => $f::<float::F32>($($args),*),
            GgmlType::F16 => $f::<float::F16>($($args),*),
            GgmlType::BF16 => $f::<float::BF16>($($args),*),
            GgmlType::Q4_0 => $f::<legacy::Q4_0>($($args),*),
            GgmlType::Q4_1 => $f::<legacy::Q4_1>($($args),*),
            GgmlType::Q5_0 => $f::<legacy::Q5_0>($($args),*),
            GgmlType::Q5_1 => $f::<legacy::Q5_1>($($args),*),
            GgmlType::Q8_0 => $f::<legacy::Q8_0>($($args),*),
            GgmlType::Q8_1 => $f::<legacy::Q8_1>($($args),*),
            GgmlType::Q2_K => $f::<kquants::Q2K>($($args),*),
            GgmlType::Q3_K => $f::<kquants::Q3K>($($args),*),
            GgmlType::Q4_K => $f::<kquants::Q4K>($($args),*),
            GgmlType::Q5_K => $f::<kquants::Q5K>($($args),*),
            GgmlType::Q6_K => $f::<kquants::Q6K>($($args),*),
            GgmlType::Q8_K => $f::<kquants::Q8K>($($args),*),
            _ => $other,
        }
    }};
}
pub(crate) use with_format;

/// Types the engine computes with: dequantization, dot products, mat-vec and mat-mul.
pub fn is_supported(ty: GgmlType) -> bool {
    fn yes<F: Format>() -> bool {
        true
    }
    with_format!(ty, yes(), false)
}

/// Types `quantize_row` can write.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | Q8_K
    )
}

/// Checks that `n` elements of `ty` are whole blocks stored in exactly `n_bytes` bytes.
fn check_row(op: &str, ty: GgmlType, n: usize, n_bytes: usize) -> Result<()> {
    let Some(want) = ty.row_bytes(n as u64) else {
        return Err(Error::Quant(format!(
            "{op} {ty}: {n} elements is not a multiple of the block size {}",
            ty.block_size()
        )));
    };
    if want != n_bytes as u64 {
        return Err(Error::Quant(format!(
            "{op} {ty}: {n} elements take {want} bytes, got a buffer of {n_bytes} bytes"
        )));
    }
    Ok(())
}

/// Expands one row of `ty` (`src`, whole blocks) into `dst.len()` f32 values.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    if !is_supported(ty) {
        return Err(Error::Quant(format!(
            "dequantize: type {ty} is not supported"
        )));
    }
    check_row("dequantize", ty, dst.len(), src.len())?;
    matvec::dequantize(ty, src, dst);
    Ok(())
}

/// Quantizes `src` into `dst` (`ty.row_bytes(src.len())` bytes) with ggml's reference rounding
/// (`quantize_row_*_ref`). Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q8_K.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    check_row("quantize", ty, src.len(), dst.len())?;
    match ty {
        GgmlType::F32 => float::quantize_f32(src, dst),
        GgmlType::F16 => float::quantize_f16(src, dst),
        GgmlType::BF16 => float::quantize_bf16(src, dst),
        GgmlType::Q4_0 => legacy::quantize_q4_0(src, dst),
        GgmlType::Q4_1 => legacy::quantize_q4_1(src, dst),
        GgmlType::Q5_0 => legacy::quantize_q5_0(src, dst),
        GgmlType::Q5_1 => legacy::quantize_q5_1(src, dst),
        GgmlType::Q8_0 => legacy::quantize_q8_0(src, dst),
        GgmlType::Q8_1 => legacy::quantize_q8_1(src, dst),
        GgmlType::Q8_K => kquants::quantize_q8_k(src, dst),
        _ => {
            return Err(Error::Quant(format!(
                "quantize: type {ty} is not supported"
            )))
        }
    }
    Ok(())
}
